"""T4: ingest throughput, CSV -> store, against plain pandas read_csv + to_parquet.

The generated file is in the *long* sensor layout ``series_id,timestamp,value``: ``--series``
series x hourly steps, ``--rows`` lines in all (default 10,000,000), 1 % of values ``NA``
(gaps) and no bad rows. Measured:

- ``store``: ``recurra.data.loaders.load_sensor(layout="long")`` (parse, validate, quarantine
  checks)
  + ``Store.upsert`` (partition per series, catalogue) into a fresh store;
- ``reingest``: the same file again into the same store (everything unchanged, no writes);
- ``pandas``: ``pd.read_csv(parse_dates=["timestamp"])`` + ``DataFrame.to_parquet``.

``rows_per_s_*`` = CSV lines / wall seconds. ``train_s`` is the CSV -> store time and
``predict_s`` the time to read every series back from the store (``Store.read()``).

    python benchmarks/ingest.py [--rows 10000000] [--series 1000] [--csv FILE] [--quick]
                                [--out FILE]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
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


def generate(path: Path, n_rows: int, n_series: int, seed: int = 0) -> None:
    """Write the long-layout CSV (sorted by series then time, like an export)."""
    steps = n_rows // n_series
    rng = np.random.default_rng(seed)
    start = np.datetime64("2020-01-01T00:00:00", "us")
    stamps = start + np.arange(steps).astype("timedelta64[h]").astype("timedelta64[us]")
    values = np.round(rng.standard_normal(steps * n_series).cumsum() * 0.01, 4)
    frame = pl.DataFrame({
        "series_id": np.repeat([f"sensor_{i:05d}" for i in range(n_series)], steps),
        "timestamp": np.tile(stamps, n_series),
        "value": values,
    }).with_columns(
        pl.when(pl.Series(rng.random(steps * n_series) < 0.01)).then(None)
        .otherwise(pl.col("value")).alias("value"))
    frame.write_csv(path, datetime_format="%Y-%m-%d %H:%M:%S", null_value="NA")


def cpu_seconds() -> float:
    """CPU seconds of this process (all threads): steadier than wall time on a loaded CPU."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def run_store(csv: Path, root: Path) -> dict[str, float]:
    from recurra.data.loaders import load_sensor
    from recurra.data.store import Store

    store = Store(root)
    started, cpu_started = time.perf_counter(), cpu_seconds()
    result = load_sensor(csv, layout="long")
    loaded, cpu_loaded = time.perf_counter(), cpu_seconds()
    report = store.upsert(result.frame, source=str(csv))
    done, cpu_done = time.perf_counter(), cpu_seconds()
    again = load_sensor(csv, layout="long")
    unchanged = store.upsert(again.frame, source=str(csv))
    redone = time.perf_counter()
    read_back = store.read()
    read_done = time.perf_counter()
    assert report.n_new == result.frame.height and unchanged.n_unchanged == report.n_new
    assert read_back.height == report.n_new and result.rejected.is_empty()
    return {"load_s": loaded - started, "upsert_s": done - loaded, "store_s": done - started,
            "load_cpu_s": cpu_loaded - cpu_started, "upsert_cpu_s": cpu_done - cpu_loaded,
            "reingest_s": redone - done, "read_s": read_done - redone,
            "n_records": result.n_rows_in, "n_values_stored": report.n_new}


def run_pandas(csv: Path, out: Path) -> float:
    import pandas as pd

    started = time.perf_counter()
    frame = pd.read_csv(csv, parse_dates=["timestamp"])
    frame.to_parquet(out)
    return time.perf_counter() - started


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=10_000_000)
    parser.add_argument("--series", type=int, default=1_000)
    parser.add_argument("--csv", type=Path, help="use this long-layout CSV instead")
    parser.add_argument("--quick", action="store_true", help="500k rows, 100 series")
    parser.add_argument("--workdir", type=Path, default=None, help="temp folder parent")
    parser.add_argument("--out", type=Path, default=None,
                        help="write the JSON here instead of benchmarks/results/ingest.json "
                             "(--quick runs default to the temp folder)")
    _common.add_write_flag(parser)
    args = parser.parse_args(argv)
    _common.keep_out_of_results(args.write or args.out is not None or args.quick)
    if args.quick:
        args.rows, args.series = 500_000, 100
    try:
        import torch

        torch.set_num_threads(1)  # (polars keeps its own pool: POLARS_MAX_THREADS)
    except ImportError:  # pragma: no cover
        pass
    load_before = os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix="recurra-ingest-", dir=args.workdir))
    try:
        csv = args.csv or folder / "long.csv"
        if args.csv is None:
            t0 = time.perf_counter()
            generate(csv, args.rows, args.series)
            print(f"generated {csv} in {time.perf_counter() - t0:.1f}s", file=sys.stderr)
        n_lines = sum(1 for _ in csv.open("rb")) - 1
        csv_mb = csv.stat().st_size / 1e6
        store = run_store(csv, folder / "store")
        pandas_s = run_pandas(csv, folder / "pandas.parquet")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    out = args.out or (Path(tempfile.gettempdir()) / "ingest_quick.json" if args.quick
                       else None)
    if out is not None:  # exploratory runs stay out of benchmarks/results
        out.parent.mkdir(parents=True, exist_ok=True)
        _common.RESULTS_DIR = out.parent
    name = out.stem if out is not None else "ingest"
    write_result(name, {
        "rows": n_lines, "series": args.series, "csv_mb": round(csv_mb, 1),
        "layout": "long series_id,timestamp,value (1% NA)",
        "rows_per_s_store": n_lines / store["store_s"],
        "rows_per_s_pandas": n_lines / pandas_s,
        "rows_per_s_reingest": n_lines / store["reingest_s"],
        **{k: round(v, 3) if isinstance(v, float) else v for k, v in store.items()},
        "pandas_s": round(pandas_s, 3),
        "train_s": round(store["store_s"], 3), "predict_s": round(store["read_s"], 3),
        "epochs": 0, "target_rows_per_s": 2_000_000,
        "polars_threads": pl.thread_pool_size(),
        "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
        "method": "load_average_1min = before, after; train_s = CSV->store, "
                "predict_s = read all back; *_cpu_s = process CPU seconds (all threads)",
    }, device="cpu", extra_versions=("pandas", "pyarrow"))


if __name__ == "__main__":
    main()
