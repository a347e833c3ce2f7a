"""Property tests over the Parquet loader, folder ingest and the CLI's text escaping with
random unicode (control characters, Rich markup). Default run: 30 examples each; a nightly
run raises the count with ``RECURRA_FUZZ_EXAMPLES=2000``."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import hypothesis.strategies as st
import polars as pl
from hypothesis import HealthCheck, example, given, settings
from rich.console import Console

from recurra.data import loaders
from recurra.data.schema import RecurraError
from recurra.pipelines.cli_text import safe

N_EXAMPLES = int(os.environ.get("RECURRA_FUZZ_EXAMPLES", "30"))
FUZZ = settings(max_examples=N_EXAMPLES, deadline=None,
                suppress_health_check=[HealthCheck.too_slow])
HOSTILE_TEXT = st.text(alphabet=st.characters(codec="utf-8", exclude_categories=("Cs",)),
                       max_size=12) | st.sampled_from(["[/bold]", "[red]x", "\x1b[31m",
                                                        "\x1b]0;t\x07", "\x00", "\\"])


@FUZZ
@given(text=HOSTILE_TEXT)
def test_safe_text_prints_literally_and_never_raises(text):
    console = Console(file=open(os.devnull, "w"), width=80)  # noqa: SIM115
    with console.capture() as captured:
        console.print(safe(text))
    shown = captured.get()
    assert "\x1b" not in shown and "\x00" not in shown and "\x07" not in shown


@FUZZ
@given(ids=st.lists(HOSTILE_TEXT, min_size=1, max_size=6),
       values=st.lists(st.one_of(st.none(), st.floats(allow_nan=True), HOSTILE_TEXT),
                       min_size=1, max_size=6))
def test_parquet_loader_keeps_the_row_invariant(ids, values):
    n = min(len(ids), len(values))
    frame = pl.DataFrame({"series_id": ids[:n],
                          "timestamp": [f"2024-01-01 00:00:{i:02d}" for i in range(n)],
                          "value": [None if v is None else str(v) for v in values[:n]]})
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "fuzz.parquet"
        frame.write_parquet(path)
        try:
            result = loaders.load_sensor(path, layout="long")
        except RecurraError:
            return
        assert result.n_rows_in == result.n_rows_kept + result.rejected.height


@FUZZ
@given(files=st.lists(st.binary(max_size=120), min_size=2, max_size=4))
@example(files=[b"", b"\xa0"])  # cp1252 no-break space only: a blank file, not a crash
def test_folder_of_random_files_keeps_the_row_invariant(files):
    with tempfile.TemporaryDirectory() as folder:
        for index, data in enumerate(files):
            (Path(folder) / f"f{index}.csv").write_bytes(data)
        try:
            result = loaders.load_nab(folder)
        except RecurraError:
            return
        assert result.n_rows_in == result.n_rows_kept + result.rejected.height
