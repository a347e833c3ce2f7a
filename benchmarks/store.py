"""S1 store growth, T4 CSV -> store (Delta vs the legacy Parquet store), and read latency.

- ``S1``: ``--series`` series (default 1,000); each run writes 24-step forecasts for every
  series into ``forecasts`` (``write_table(..., key=FORECAST_KEY)`` as ``detect`` does) and
  upserts one new value per series into the series table.  Write seconds are the median of
  the 5 runs ending at runs 10, 100 and ``--runs`` (default 500); ``ratio`` = last / run 10.
  The same loop runs on the Delta store (``recurra.data.store``) and on the legacy Parquet store
  (``recurra.data._legacy_store``) in the same process (``--legacy-runs`` may stop it earlier: its
  writes grow with the table).
- ``T4``: the long-layout CSV of ``benchmarks/ingest.py`` (``--lines``, default 10 M) loaded
  with ``load_sensor`` and upserted into a fresh store; rows/s = CSV lines / wall seconds of
  load + upsert, legacy and Delta side by side.
- ``read``: median of 20 ``Store.read(series_ids=[one id], start=, end=)`` (one week of one
  series) on the T4 Delta store.

    python benchmarks/store.py [--quick] [--runs 500] [--legacy-runs N] [--lines 10000000]
                               [--write]

Results go to benchmarks/results/store.json only with ``--write`` (else the temp folder).
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import setup_paths, write_result  # noqa: E402

setup_paths()

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402

FORECAST_KEY = ["series_id", "channel", "issued_at", "timestamp"]
HORIZON = 24
START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def forecasts(ids: list[str], run: int) -> pl.DataFrame:
    issued = START + dt.timedelta(hours=run)
    steps = [issued + dt.timedelta(hours=h + 1) for h in range(HORIZON)]
    n = len(ids)
    return pl.DataFrame({
        "series_id": np.repeat(ids, HORIZON), "channel": ["value"] * (n * HORIZON),
        "issued_at": [issued] * (n * HORIZON), "timestamp": steps * n,
        "y_hat": np.random.default_rng(run).standard_normal(n * HORIZON),
    }).with_columns(pl.col("issued_at", "timestamp").cast(pl.Datetime("us", "UTC")))


def new_values(ids: list[str], run: int) -> pl.DataFrame:
    stamp = START + dt.timedelta(hours=run)
    return pl.DataFrame({
        "series_id": ids, "channel": ["value"] * len(ids), "timestamp": [stamp] * len(ids),
        "value": np.random.default_rng(10_000 + run).standard_normal(len(ids)),
        "observed": [True] * len(ids),
    }).with_columns(pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


def growth(store, ids: list[str], n_runs: int, checkpoints: list[int]) -> dict[str, float]:
    """S1 on one store: median write seconds of the 5 runs ending at each checkpoint."""
    times: dict[str, list[float]] = {"forecasts": [], "series": []}
    for run in range(1, n_runs + 1):
        started = time.perf_counter()
        store.write_table("forecasts", forecasts(ids, run), key=FORECAST_KEY)
        written = time.perf_counter()
        store.upsert(new_values(ids, run), source=f"run-{run}")
        times["forecasts"].append(written - started)
        times["series"].append(time.perf_counter() - written)
    out: dict[str, float] = {"runs": n_runs}
    for kind, values in times.items():
        for point in checkpoints:
            if point <= n_runs:
                out[f"{kind}_s_run{point}"] = statistics.median(values[max(0, point - 5):point])
                # amortized: the mean of up to 50 runs ending here includes the runs that
                # compacted small files, which the median of 5 can miss
                out[f"{kind}_mean50_s_run{point}"] = statistics.fmean(
                    values[max(0, point - 50):point])
        last = max(p for p in checkpoints if p <= n_runs)
        out[f"{kind}_ratio_run{last}_over_run10"] = out[f"{kind}_s_run{last}"] / \
            out[f"{kind}_s_run10"]
        out[f"{kind}_max_s"] = max(values)
    out["total_s"] = sum(times["forecasts"]) + sum(times["series"])
    return out


def ingest(store, csv: Path) -> tuple[float, int]:
    from recurra.data.loaders import load_sensor

    started = time.perf_counter()
    result = load_sensor(csv, layout="long")
    report = store.upsert(result.frame, source=str(csv))
    elapsed = time.perf_counter() - started
    assert report.n_new == result.frame.height
    return elapsed, result.frame.height


def read_latency(store, series_id: str) -> float:
    start = dt.datetime(2020, 1, 2, tzinfo=dt.UTC)  # the T4 file starts on 2020-01-01
    end = start + dt.timedelta(days=7)
    store.read(series_ids=[series_id], start=start, end=end)  # warm the log cache
    times = []
    for _ in range(20):
        started = time.perf_counter()
        frame = store.read(series_ids=[series_id], start=start, end=end)
        times.append(time.perf_counter() - started)
    assert frame.height == 7 * 24 + 1, frame.height
    return statistics.median(times)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=1_000)
    parser.add_argument("--runs", type=int, default=500)
    parser.add_argument("--legacy-runs", type=int, default=None,
                        help="stop the legacy store's S1 loop here (default --runs)")
    parser.add_argument("--lines", type=int, default=10_000_000, help="T4 CSV lines")
    parser.add_argument("--quick", action="store_true", help="50 runs, 100 series, 500k lines")
    parser.add_argument("--skip", nargs="*", default=[], choices=["s1", "t4"])
    parser.add_argument("--workdir", type=Path, default=None)
    parser.add_argument("--write", action="store_true",
                        help="write benchmarks/results/store.json (else the temp folder)")
    args = parser.parse_args(argv)
    if args.quick:
        args.runs, args.series, args.lines = 50, 100, 500_000
    legacy_runs = min(args.legacy_runs or args.runs, args.runs)
    import torch

    torch.set_num_threads(1)
    from ingest import generate

    from recurra.data._legacy_store import Store as LegacyStore
    from recurra.data.store import Store

    load_before = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="recurra-store-", dir=args.workdir))
    result: dict = {"series": args.series, "horizon": HORIZON}
    checkpoints = sorted({10, 100, args.runs, legacy_runs})
    try:
        if "s1" not in args.skip:
            ids = [f"series_{i:05d}" for i in range(args.series)]
            for name, store, runs in (("delta", Store(folder / "s1-delta"), args.runs),
                                      ("legacy", LegacyStore(folder / "s1-legacy"),
                                       legacy_runs)):
                for key, value in growth(store, ids, runs, checkpoints).items():
                    result[f"s1_{name}_{key}"] = value
                print(f"S1 {name} done", file=sys.stderr, flush=True)
        if "t4" not in args.skip:
            csv = folder / "long.csv"
            generate(csv, args.lines, 1_000)
            n_lines = sum(1 for _ in csv.open("rb")) - 1
            result["t4_lines"] = n_lines
            for name, store in (("legacy", LegacyStore(folder / "t4-legacy")),
                                ("delta", Store(folder / "t4-delta"))):
                seconds, n_rows = ingest(store, csv)
                result[f"t4_{name}_s"] = seconds
                result[f"t4_{name}_rows_per_s"] = n_lines / seconds
                print(f"T4 {name} done", file=sys.stderr, flush=True)
            result["read_store_rows"] = n_rows
            result["read_one_series_week_ms"] = 1000 * read_latency(Store(folder / "t4-delta"),
                                                                    "sensor_00042")
            result["read_one_series_week_ms_legacy"] = 1000 * read_latency(
                LegacyStore(folder / "t4-legacy"), "sensor_00042")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    result["load_average_1min"] = [round(load_before, 2), round(os.getloadavg()[0], 2)]
    result["method"] = ("S1: median of the 5 runs ending at each checkpoint; T4: wall s of "
                        "load_sensor + upsert into a fresh store; read: median of 20")
    if not args.write:
        _common.RESULTS_DIR = Path(tempfile.gettempdir())
    write_result("store" if args.write else "store_trial", result, device="cpu",
                 extra_versions=("deltalake",))


if __name__ == "__main__":
    main()
