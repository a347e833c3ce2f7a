"""The store's ingest shortcuts give what the general path gives: catalogue frequency, chunked
input, no temporary files left behind, stamps and lazy scans for readers."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from recurra.data.regular import infer_frequency
from recurra.data.store import Store, _frequency
from tests.conftest import make_frame

BASE = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def _stamps(offsets_s) -> pl.Series:
    return pl.Series([BASE + dt.timedelta(seconds=float(s)) for s in offsets_s]).cast(
        pl.Datetime("us", "UTC"))


@pytest.mark.parametrize("offsets", [
    [], [0], [0, 60], np.arange(10) * 3600, np.arange(50) * 86400, np.arange(5) * 0.5,
    [0, 3600, 7200, 14400, 18000],                              # a gap: not the shortcut
    [d * 86400 for d in range(60) if (d % 7) < 5],              # business days
    np.sort(np.random.default_rng(0).choice(5000, 200, replace=False)) * 60,
    list(np.arange(10) * 3600) * 2,                             # two channels
])
def test_frequency_shortcut_agrees_with_infer_frequency(offsets):
    stamps = _stamps(offsets)
    assert _frequency(stamps) == infer_frequency(stamps)


def test_chunked_input_round_trips_and_leaves_no_temporary_files(tmp_path):
    frame = make_frame(n_series=3, n_steps=120, seed=5)
    chunked = pl.concat([frame.slice(0, 100), frame.slice(100)], rechunk=False)
    assert max(chunked.n_chunks("all")) > 1
    store = Store(tmp_path / "store")
    store.upsert(chunked, source="chunked")
    assert store.read().equals(frame)
    assert not list((store.root / "series").rglob(".tmp-*"))
    catalogue = store.catalogue()
    assert set(catalogue["frequency"]) == {"1h"} and catalogue["n_rows"].sum() == frame.height


def test_stamps_change_only_when_a_file_is_rewritten(tmp_path):
    store = Store(tmp_path / "store")
    assert store.series_stamp("s0") is None and store.catalogue_stamp() is None
    frame = make_frame(n_series=2, n_steps=48, seed=6)
    store.upsert(frame, source="a")
    s0, s1, catalogue = store.series_stamp("s0"), store.series_stamp("s1"), \
        store.catalogue_stamp()
    store.upsert(frame, source="a")  # unchanged: nothing rewritten
    assert store.series_stamp("s0") == s0 and store.catalogue_stamp() == catalogue
    store.upsert(frame.filter(pl.col("series_id") == "s0").with_columns(
        pl.col("value") + 1.0, pl.col("observed")), source="b")
    assert store.series_stamp("s0") != s0 and store.series_stamp("s1") == s1
    assert store.catalogue_stamp() != catalogue
    assert store.scan_table("scores") is None and store.table_stamp("scores") is None
    assert store.scan(["s1"]).collect()["series_id"].unique().to_list() == ["s1"]
