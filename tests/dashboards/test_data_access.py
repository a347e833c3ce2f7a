"""DashboardData reads only what a view needs (lazy scans) and caches by file stamp."""

from __future__ import annotations

import polars as pl
import pytest

from recurra.dashboards.data_access import DashboardData
from tests.conftest import make_frame
from tests.dashboards.conftest import events_frame, scores_frame


class CountingStore:
    """Delegates to a real store and counts the reads that touch Parquet files."""

    def __init__(self, store):
        self.inner, self.reads = store, []

    def __getattr__(self, name):
        attribute = getattr(self.inner, name)
        if name in ("read", "read_table", "scan", "scan_table", "catalogue", "quarantine"):
            def counted(*args, **kwargs):
                self.reads.append((name, args))
                return attribute(*args, **kwargs)
            return counted
        return attribute


@pytest.fixture
def counting(store):
    return CountingStore(store)


def test_filtered_reads_return_only_the_requested_series(store, counting):
    store.write_table("scores", scores_frame("s0"), key=["series_id", "timestamp"])
    data = DashboardData(counting, registry=False)
    scores = data.scores("s1")
    assert scores["series_id"].unique().to_list() == ["s1"] and scores.height == 200
    assert data.scores("s0")["series_id"].unique().to_list() == ["s0"]
    assert data.scores("nope").is_empty()
    assert set(data.events("m0")["series_id"]) == {"m0"}
    assert set(data.latest_forecast("m0")["channel"]) == {"c0", "c1", "c2"}
    assert data.series("m0")["series_id"].unique().to_list() == ["m0"]
    used = {name for name, _ in counting.reads}
    assert "scan_table" in used and "read_table" not in used  # lazy scans, no whole tables
    # the series filter is pushed into the Parquet scan
    plan = store.scan_table("scores").filter(pl.col("series_id") == "s1").explain()
    assert "s1" in plan


def test_unchanged_tables_are_not_re_read_and_changes_invalidate(store, counting):
    data = DashboardData(counting, registry=False)
    first = data.scores("s1")
    n_reads = len(counting.reads)
    assert data.scores("s1").equals(first)
    assert len(counting.reads) == n_reads  # cached: no new read
    data.events()
    data.events()
    assert len(counting.reads) == n_reads + 1
    shifted = scores_frame("s1").with_columns(pl.col("score") + 10.0)
    store.write_table("scores", shifted, key=["series_id", "timestamp"])
    again = data.scores("s1")
    assert again is not first and again["score"].min() >= 10.0
    store.write_table("events", events_frame().head(1), key=["series_id", "start", "kind"])
    assert data.events().height == events_frame().height  # the upsert replaced one row


def test_series_cache_follows_the_partition(store, counting):
    data = DashboardData(counting, registry=False)
    before = data.series("s0")
    assert data.series("s0") is before
    later = make_frame(n_series=1, n_steps=10, seed=9).with_columns(
        pl.col("timestamp").dt.offset_by("300h"))
    store.upsert(later, source="late.csv")
    after = data.series("s0")
    assert after.height == before.height + 10
    catalogue = data.catalogue()
    assert catalogue.filter(pl.col("series_id") == "s0")["source"][0] == "late.csv"


def test_cache_off_and_stores_without_stamps(store):
    uncached = DashboardData(store, registry=False, cache_seconds=0)
    assert uncached.series("s1") is not uncached.series("s1")

    class Plain:  # only the read methods: no stamps, no scans (age-limited cache)
        def __init__(self, inner):
            self.inner = inner

        def read(self, **kwargs):
            return self.inner.read(**kwargs)

        def read_table(self, name):
            return self.inner.read_table(name)

        def quarantine(self):
            return self.inner.quarantine()

        def catalogue(self):
            return self.inner.catalogue()

    plain = DashboardData(Plain(store), registry=False)
    assert plain.scores("s1")["series_id"].unique().to_list() == ["s1"]
    assert plain.series("s1") is plain.series("s1")  # within cache_seconds
    assert plain.quarantine_by_reason()["n_rows"].sum() == 4
    share = plain.share_observed_by_day(["s0"])
    assert share["series_id"].unique().to_list() == ["s0"]


def test_quality_views_read_three_columns_and_match_a_full_read(store):
    data = DashboardData(store, registry=False)
    share = data.share_observed_by_day()
    full = store.read()
    expected = (full.with_columns(pl.col("timestamp").dt.truncate("1d").alias("day"))
                .group_by("series_id", "day")
                .agg(pl.col("observed").cast(pl.Float64).mean().alias("share_observed"))
                .sort("series_id", "day"))
    assert share.select("series_id", "day", "share_observed").equals(expected)
    assert set(share["period"]) == {"1d"}
    counts = data.quarantine_by_reason()
    assert counts.row(0) == ("unparseable timestamp", 2)


def test_time_windows_are_pushed_into_the_reads(store):
    import datetime as dt

    from recurra.data.schema import RecurraError

    data = DashboardData(store, registry=False)
    low, high = dt.datetime(2024, 1, 2, tzinfo=dt.UTC), dt.datetime(2024, 1, 3, tzinfo=dt.UTC)
    part = data.series("s0", start=low, end=high)
    assert part.height == 25 * part["channel"].n_unique()  # hourly, both ends inclusive
    assert part["timestamp"].min() == low and part["timestamp"].max() == high
    assert data.series("s0").height > part.height  # the whole series is another entry
    scores = data.scores("s1", start="2024-01-03T12:00:00", end="2024-01-04")
    assert scores.height == 13 and scores["timestamp"].min() == dt.datetime(
        2024, 1, 3, 12, tzinfo=dt.UTC)
    with pytest.raises(RecurraError, match=r"`start` \('soon'\) must be an ISO date"):
        data.scores("s1", start="soon")
    with pytest.raises(RecurraError, match=r"`end` \(3\) must be a datetime"):
        data.series("s0", end=3)
