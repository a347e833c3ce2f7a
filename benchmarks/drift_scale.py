"""The drift test of one scheduled detect run at fleet scale (M2).

A synthetic fleet of ``--series`` series x 2 channels (half AR(1) + daily-cycle sensors,
half random walks, so ``on="auto"`` picks both inputs), ``--reference`` reference rows per
channel with 2 % gaps (about 270 observed values for the default 276) and a recent window of
48 observed values.  Timed, best of ``--repeats``:

- ``drift_inputs_s``: ``monitoring.drift_inputs`` (aggregation + the ``"auto"`` unit-root
  choice per pair; a scheduled run does this once per champion and caches it);
- ``drift_by_series_cached_s``: ``monitoring.drift_by_series`` on that cached frame (what
  every scheduled detect run pays);
- ``drift_by_series_contract_s``: ``drift_by_series`` on the contract frames (both);
- ``drift_fleet_auto_s``: ``drift.drift_fleet`` with ``on="auto"`` on the same values.

Usage::

    python benchmarks/drift_scale.py                 # 10,000 series, best of 3
"""

from __future__ import annotations

import argparse
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_write_flag, keep_out_of_results, setup_paths, write_result  # noqa: E402

setup_paths()

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
CHANNELS = ("temperature", "pressure")


def fleet(n_series: int, n_reference: int, n_recent: int, seed: int = 0):
    """(reference, recent) contract frames: series x channels, 2 % of the rows unobserved."""
    import polars as pl

    rng = np.random.default_rng(seed)
    n_steps = n_reference + n_recent + 2
    n_paths = n_series * len(CHANNELS)
    noise = rng.normal(size=(n_paths, n_steps))
    paths = np.empty_like(noise)
    paths[:, 0] = noise[:, 0]
    for step in range(1, n_steps):
        paths[:, step] = 0.6 * paths[:, step - 1] + 0.8 * noise[:, step]
    paths += 10 + np.sin(2 * np.pi * np.arange(n_steps) / 24)
    walks = rng.random(n_paths) < 0.5
    paths[walks] = 100 + np.cumsum(noise[walks], axis=1)
    paths[:, n_reference:] += np.where(rng.random((n_paths, 1)) < 0.05, 2.0, 0.0)
    observed = rng.random(paths.shape) >= 0.02
    observed[:, n_reference:] = True   # the recent window: its last 48 observed values
    stamps = pl.datetime_range(T0, T0 + dt.timedelta(hours=n_steps - 1), "1h",
                               time_zone="UTC", eager=True)
    ids = np.repeat([f"sensor/{i:05d}" for i in range(n_series)], len(CHANNELS))
    channels = np.tile(CHANNELS, n_series)
    frame = pl.DataFrame({
        "series_id": np.repeat(ids, n_steps), "channel": np.repeat(channels, n_steps),
        "timestamp": pl.concat([stamps] * n_paths),
        "value": np.where(observed, paths, np.nan).reshape(-1),
        "observed": observed.reshape(-1)}).with_columns(
        pl.when(pl.col("observed")).then(pl.col("value")).otherwise(None).alias("value"))
    step = pl.col("timestamp").rank("dense").over(["series_id", "channel"])
    return frame.filter(step <= n_reference), frame.filter(step > n_steps - n_recent)


def best(function, repeats: int) -> tuple[float, object]:
    times, result = [], None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        times.append(time.perf_counter() - start)
    return round(min(times), 4), result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--reference", type=int, default=276)
    parser.add_argument("--recent", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=3)
    add_write_flag(parser)
    args = parser.parse_args()
    keep_out_of_results(args.write)

    import polars as pl

    from recurra.anomaly.drift import drift_fleet
    from recurra.pipelines import monitoring
    from recurra.pipelines.config import MonitoringConfig

    config = MonitoringConfig(drift_window=args.recent)
    reference, recent = fleet(args.series, args.reference, args.recent)
    inputs_s, cached = best(lambda: monitoring.drift_inputs(reference, "auto"), args.repeats)
    cached_s, results = best(lambda: monitoring.drift_by_series(cached, recent, config, "auto"),
                             args.repeats)
    contract_s, _ = best(lambda: monitoring.drift_by_series(reference, recent, config, "auto"),
                         args.repeats)
    tail = cached.select(["series_id", "channel"]).join(
        recent.filter(pl.col("observed")).group_by(["series_id", "channel"]).agg("value"),
        on=["series_id", "channel"], how="left", maintain_order="left")
    pairs = [(row[0], row[1], np.asarray(values, np.float64), np.asarray(new, np.float64))
             for row, values, new in zip(
                 cached.select(["series_id", "channel"]).iter_rows(),
                 cached[monitoring.REFERENCE].to_list(), tail["value"].to_list(), strict=True)]
    fleet_s, verdicts = best(lambda: drift_fleet(pairs, on="auto"), args.repeats)
    lengths = np.array([p[2].size for p in pairs])
    write_result("drift_scale", {
        "n_series": args.series, "n_pairs": len(pairs),
        "reference_values_per_pair": [int(lengths.min()), float(lengths.mean()),
                                      int(lengths.max())],
        "recent_values_per_pair": args.recent, "repeats": args.repeats,
        "drift_inputs_s": inputs_s, "drift_by_series_cached_s": cached_s,
        "drift_by_series_contract_s": contract_s, "drift_fleet_auto_s": fleet_s,
        "series_drifted": sum(r.drifted for r in results),
        "pairs_differenced": sum(v.on == "difference" for v in verdicts),
        "pairs_drifted_fleet": sum(v.drifted for v in verdicts)})


if __name__ == "__main__":
    main()
