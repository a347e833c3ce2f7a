"""Scheduled runs at scale (S2) and drift-monitor calibration (M1).

S2: ``--series`` hourly sensor series (two channels, 2 % gaps, spikes injected into 5 % of
the series and a level shift into 2 % during the detect period) are ingested through
``recurra.data.ingest.ingest`` (the loader + store path the ingest flow runs); one global stateful
LSTM forecaster and one rolling z-score detector are trained for the group with
``recurra.pipelines.tasks.train_group`` (MLflow registry on sqlite, ``max_windows_per_epoch``
budget); then ``--runs`` simulated hourly runs each ingest one new row per series and
call ``recurra.pipelines.tasks.detect_group`` (what the detect flow's task runs).  Each run
loads the saved models, as a served flow run (a new process) does; ``--warm`` keeps them in
memory instead.  Run 1, the champion's first (it loads the model from the registry and
builds the drift reference), and one run after the last run in a new Python process each:
their detect time, process wall time with imports, and the process's own peak RSS (what one
scheduled run costs; the sampled RSS of this script's process also holds its own data).
Reported besides: train wall time, detect seconds per run at runs 1, 2, middle and last
(and their ratios), points scored per second in detect (store reads and writes included)
and with the ingest, one run over a backlog of ``--catch-up`` rows per series (missed
runs), the series that drift flags and live-accuracy watch lists name against the injected
faults, and the recall / precision of the injected spikes.

M1: per method (the legacy uncorrected KS at p < 0.01 and PSI > 0.25 on raw values, KS with
Benjamini-Hochberg, and the default: mean-variance test on the model's inputs with BH at
FDR 0.05 and a 0.5-std minimum effect), the share of stationary AR(1) + daily-cycle
series flagged, of series flagged 48 rows after a 1-std level or variance shift, and of
random walks (prices) flagged; and the demo sample's drift flags before (PSI, the old
default) and after.

Size: over 400 lines because S2's data generator, its run loop and the new-process probe
share the fleet and config definitions with M1's calibration; they are one protocol.

Usage::

    python benchmarks/pipeline_scale.py --quick            # minutes: 200 series, 10 runs
    nice -n 10 python benchmarks/pipeline_scale.py --series 1000 --runs 50 --write
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import setup_paths, write_result  # noqa: E402

setup_paths()

T0 = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
N_REFERENCE, N_AFTER = 500, 48


# M1 ----------------------------------------------------------------------------------------
def _sensor_paths(rng: np.random.Generator, n_series: int, n_steps: int) -> np.ndarray:
    """(S, T) AR(1) (rho 0.6) noise plus a daily cycle, level 10: stationary hourly series."""
    noise = rng.normal(size=(n_series, n_steps)) * np.sqrt(1 - 0.36)
    paths = np.empty_like(noise)
    paths[:, 0] = rng.normal(size=n_series)
    for step in range(1, n_steps):
        paths[:, step] = 0.6 * paths[:, step - 1] + noise[:, step]
    phase = rng.uniform(0, 2 * np.pi, size=(n_series, 1))
    return 10 + paths + np.sin(2 * np.pi * np.arange(n_steps) / 24 + phase)


def calibration(n_series: int, seed: int = 0) -> dict:
    """M1 shares flagged per method and scenario."""
    from recurra.anomaly.drift import drift_fleet

    rng = np.random.default_rng(seed)
    total = N_REFERENCE + N_AFTER
    base = _sensor_paths(rng, n_series, total)
    std = base[:, :N_REFERENCE].std(axis=1, keepdims=True)
    level = base.copy()
    level[:, N_REFERENCE:] += std
    variance = base.copy()
    centre = base[:, :N_REFERENCE].mean(axis=1, keepdims=True)
    variance[:, N_REFERENCE:] = centre + 2 * (variance[:, N_REFERENCE:] - centre)
    walks = 100 + np.cumsum(rng.normal(size=(n_series, total)), axis=1)
    scenarios = {"no_drift": base, "level_shift_1std": level,
                 "variance_shift_1std": variance, "random_walk_no_drift": walks}
    methods = {
        "ks_raw_p0.01": dict(test="ks", on="scaled", correction="none", min_effect=0.0),
        "psi_raw_0.25": dict(test="psi", on="scaled"),
        "ks_bh": dict(test="ks", on="auto", correction="bh", min_effect=0.0),
        "mean_variance_bh (default)": dict(test="mean_variance", on="auto", correction="bh",
                                           min_effect=0.5),
    }
    result = {}
    for name, options in methods.items():
        row = {}
        for scenario, paths in scenarios.items():
            pairs = [(f"s{i}", "value", p[:N_REFERENCE], p[N_REFERENCE:])
                     for i, p in enumerate(paths)]
            flags = [d.drifted for d in drift_fleet(pairs, fdr=0.05, **options)]
            row[scenario] = round(float(np.mean(flags)), 4)
        result[name] = row
    return {"n_series": n_series, "reference_rows": N_REFERENCE, "recent_rows": N_AFTER,
            "fdr": 0.05, "shares_flagged": result}


def demo_flags() -> dict:
    """Drift flags on the demo's sample data (last 400 rows of each series vs the rest)."""
    import polars as pl

    from recurra.data.ingest import sample_sources
    from recurra.pipelines.config import MonitoringConfig
    from recurra.pipelines.monitoring import drift_by_series

    frame = pl.concat([s.load().frame for s in sample_sources()], how="diagonal_relaxed")
    rank = pl.col("timestamp").rank("dense", descending=True).over("series_id")
    recent = frame.filter(rank <= 400)
    out = {}
    for name, config, reference_rows in (
            ("before (psi, 4 x 168 reference rows)", MonitoringConfig(drift_test="psi"), 672),
            ("after (default)", MonitoringConfig(), MonitoringConfig().drift_reference_rows)):
        reference = frame.filter(rank > 400).group_by(["series_id", "channel"]).tail(
            reference_rows)
        on = "scaled" if config.drift_test == "psi" else "auto"
        out[name] = {r.series_id: {"drifted": r.drifted, "statistic": round(r.statistic, 3)}
                     for r in drift_by_series(reference, recent, config, on=on)}
    return out


# S2 ----------------------------------------------------------------------------------------
def sensor_fleet(n_series: int, n_steps: int, n_train: int, seed: int = 1):
    """Long frame of the S2 fleet plus the injected spikes {series: time} and shifts."""
    import polars as pl

    rng = np.random.default_rng(seed)
    ids = [f"sensor/{i:05d}" for i in range(n_series)]
    channels = ("temperature", "pressure")
    spikes, shifts = {}, {}
    parts = []
    stamps = np.array([np.datetime64(T0.replace(tzinfo=None), "us")
                       + np.timedelta64(h, "h") for h in range(n_steps)])
    for c, channel in enumerate(channels):
        values = _sensor_paths(rng, n_series, n_steps) * (1 + c)
        parts.append((channel, values))
    spiked = rng.choice(n_series, size=max(1, n_series // 20), replace=False)
    shifted = rng.choice(np.setdiff1d(np.arange(n_series), spiked),
                         size=max(1, n_series // 50), replace=False)
    for index in spiked:
        at = n_train + int(rng.integers(1, max(2, n_steps - n_train - 2)))
        parts[0][1][index, at] += 8.0
        spikes[ids[index]] = stamps[at]
    for index in shifted:
        at = n_train + int(rng.integers(1, max(2, (n_steps - n_train) // 2)))
        parts[1][1][index, at:] += 3.0
        shifts[ids[index]] = stamps[at]
    frames = []
    for channel, values in parts:
        hidden = rng.random(values.shape) < 0.02
        frames.append(pl.DataFrame({
            "series_id": np.repeat(ids, n_steps), "channel": channel,
            "timestamp": np.tile(stamps, n_series),
            "value": np.where(hidden, np.nan, values).reshape(-1)}))
    frame = pl.concat(frames).with_columns(
        pl.col("timestamp").dt.replace_time_zone("UTC"),
        pl.col("value").fill_nan(None)).with_columns(
        pl.col("value").is_not_null().alias("observed")).sort(
        ["series_id", "channel", "timestamp"])
    return frame, spikes, shifts


def _ingest(frame, folder: Path, store, name: str) -> float:
    from recurra.data.ingest import SourceSpec, ingest

    path = folder / f"{name}.parquet"
    frame.drop("observed").write_parquet(path)
    started = time.perf_counter()
    report = ingest([SourceSpec("sensor", path, {"layout": "long"})], store, strict=True)
    if report.errors:
        raise RuntimeError(report.errors)
    path.unlink()
    return time.perf_counter() - started


def _rss_now_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 1e6


class PeakRss:
    """Peak resident set size (MB) of this process while the block runs (sampled 100 Hz)."""

    def __enter__(self) -> PeakRss:
        import psutil

        self._process, self._stop, self.peak_mb = psutil.Process(), False, 0.0
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop:
            self.peak_mb = max(self.peak_mb, self._process.memory_info().rss / 1e6)
            time.sleep(0.01)

    def __exit__(self, *exc) -> None:
        self._stop = True
        self._thread.join()


def s2_config():
    """The S2 group and pipeline config: one global stateful LSTM forecaster and a rolling
    z-score detector with a SPOT threshold over every ``sensor/*`` series."""
    from recurra.pipelines.config import (
        GroupConfig,
        ModelConfig,
        MonitoringConfig,
        PipelineConfig,
        TrainingConfig,
    )

    group = GroupConfig("sensors", series=("sensor/*",), forecaster="lstm", detector="zscore")
    models = {
        "lstm": ModelConfig("lstm", "recurra.forecasting.RNNForecaster", {
            "encoder": {"cell": "lstm", "hidden_size": 16}, "lookback": 24, "horizon": 6,
            "stateful": True, "tbptt": {"length": 48}, "max_windows_per_epoch": 512,
            "train": {"max_epochs": 2, "batch_size": 64}}),
        "zscore": ModelConfig("zscore", "recurra.anomaly.baselines.RollingZScoreDetector",
                              {"window": 24, "threshold": {"kind": "spot", "risk": 1e-4}}),
    }
    config = PipelineConfig(sources=[], groups={"sensors": group}, models=models,
                            training=TrainingConfig(validation_share=0.2, backtest_folds=1),
                            monitoring=MonitoringConfig(drift_window=48))
    return group, config


def _use(folder: Path):
    """Point Recurra's home and MLflow at ``folder``; the store there."""
    from recurra.data.store import Store

    os.environ["RECURRA_HOME"] = str(folder / "home")
    os.environ["MLFLOW_TRACKING_URI"] = f"sqlite:///{folder / 'mlflow.db'}"
    return Store(folder / "store")


def detect_in_new_process(folder: Path, run_id: str) -> dict:
    """One detect run in a new Python process, as a served flow run is: its wall time
    (imports included), the time of the detect itself and the process's peak RSS."""
    import json
    import subprocess

    started = time.perf_counter()
    done = subprocess.run([sys.executable, __file__, "--detect-once", str(folder), run_id],
                          capture_output=True, text=True, check=False)
    if done.returncode:
        raise RuntimeError(f"detect in a new process failed:\n{done.stderr[-3000:]}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {**out, "process_s": round(time.perf_counter() - started, 3)}


def _detect_once(folder: str, run_id: str) -> None:
    """``--detect-once``: the body of :func:`detect_in_new_process` (prints one JSON line)."""
    import json

    import torch

    from recurra.pipelines import tasks

    torch.set_num_threads(1)
    store = _use(Path(folder))
    group, config = s2_config()
    started = time.perf_counter()
    with PeakRss() as rss:  # sampled: ru_maxrss keeps the parent's peak across fork/exec
        out = tasks.detect_group(group, config, store, run_id)
    print(json.dumps({"detect_s": round(time.perf_counter() - started, 3),
                      "peak_rss_mb": round(max(rss.peak_mb, _rss_now_mb()), 1),
                      **{k: out[k] for k in ("new_rows", "paths", "retrain", "reasons",
                                             "watch")}}))


def scale_run(n_series: int, n_runs: int, n_train: int, folder: Path,
              profile_run: int | None = None, warm: bool = False,
              catch_up: int = 24) -> dict:
    import polars as pl

    from recurra.pipelines import detect_tasks, tasks

    store = _use(folder)
    frame, spikes, shifts = sensor_fleet(n_series, n_train + n_runs + 1 + catch_up, n_train)
    stamps = frame["timestamp"].unique().sort()
    ingest_train_s = _ingest(frame.filter(pl.col("timestamp") < stamps[n_train]), folder,
                             store, "train")
    group, config = s2_config()
    started = time.perf_counter()
    trained = tasks.train_group(group, config, store, reason="benchmark")
    train_s = time.perf_counter() - started
    print(f"trained in {train_s:.1f}s", file=sys.stderr, flush=True)
    detect_s, ingest_s, peak, retrains, paths = [], [], 0.0, 0, []
    first: dict = {}
    watched: set[str] = set()
    drifted: set[str] = set()
    watch_share: list[float] = []
    kinds: dict[str, int] = {}
    for run in range(n_runs):
        rows = frame.filter(pl.col("timestamp") == stamps[n_train + run])
        ingest_s.append(_ingest(rows, folder, store, f"run{run}"))
        if not warm:  # as under `recurra serve`: each flow run is a new process
            detect_tasks._KEPT.clear()
        if run == 0 and not warm:  # the champion's first run: registry load, references
            out = first = detect_in_new_process(folder, "run0000")
            detect_s.append(first["detect_s"])
            rss = PeakRss()
            rss.peak_mb = first["peak_rss_mb"]
        else:
            profiler = _profiler(run == profile_run)
            started = time.perf_counter()
            with PeakRss() as rss:
                out = tasks.detect_group(group, config, store, f"run{run:04d}")
            detect_s.append(time.perf_counter() - started)
            _report_profile(profiler, run)
            peak = max(peak, rss.peak_mb)
        retrains += bool(out["retrain"])
        watched |= {line.split("'")[1] for line in out["watch"]}
        watch_share.append(len(out["watch"]) / n_series)
        for reason in out["reasons"]:
            kind = "live accuracy" if reason.startswith("live accuracy") else "input drift"
            kinds[kind] = kinds.get(kind, 0) + 1
            drifted |= {reason.split("'")[1]} if kind == "input drift" else set()
        paths = out["paths"]
        if run in (0, n_runs // 4, n_runs // 2, n_runs - 1):
            print(f"run {run + 1}: detect {detect_s[-1]:.2f}s ingest {ingest_s[-1]:.2f}s "
                  f"rss {rss.peak_mb:.0f} MB {paths}", file=sys.stderr, flush=True)
    _ingest(frame.filter(pl.col("timestamp") == stamps[n_train + n_runs]), folder, store,
            "fresh")
    fresh = detect_in_new_process(folder, "fresh-process")
    print(f"new process: detect {fresh['detect_s']} s, process {fresh['process_s']} s, "
          f"peak RSS {fresh['peak_rss_mb']} MB", file=sys.stderr, flush=True)
    backlog = frame.filter(pl.col("timestamp") > stamps[n_train + n_runs])
    _ingest(backlog, folder, store, "backlog")
    detect_tasks._KEPT.clear()
    started = time.perf_counter()
    caught = tasks.detect_group(group, config, store, "catch-up")
    catch_up_s = time.perf_counter() - started
    recall, precision = _event_scores(store.read_table("events"), spikes, shifts)
    points = n_series * 2
    middle = n_runs // 2
    return {
        "n_series": n_series, "n_channels": 2, "n_train_rows_per_series": n_train,
        "n_runs": n_runs, "ingest_train_s": round(ingest_train_s, 2),
        "train_s": round(train_s, 2), "train_windows_budget": 512,
        "trained_models": {k: v["version"] for k, v in trained["models"].items()},
        "models_loaded_each_run": not warm,
        "detect_s_run_1": round(detect_s[0], 3),
        **({"detect_s_run_2": round(detect_s[1], 3)} if n_runs > 1 else {}),
        f"detect_s_run_{middle + 1}": round(detect_s[middle], 3),
        f"detect_s_run_{n_runs}": round(detect_s[-1], 3),
        "detect_ratio_last_over_first": round(detect_s[-1] / detect_s[0], 3),
        "detect_ratio_last_over_second": round(detect_s[-1] / detect_s[min(1, n_runs - 1)],
                                               3),
        **({"detect_s_run_50": round(detect_s[49], 3),   # the protocol's runs 1, 50, 200
            "detect_ratio_last_over_run_50": round(detect_s[-1] / detect_s[49], 3)}
           if n_runs >= 100 else {}),
        "detect_s_by_run": [round(s, 3) for s in detect_s],
        "detect_s_median": round(float(np.median(detect_s)), 3),
        "ingest_s_median": round(float(np.median(ingest_s)), 3),
        "peak_rss_in_this_process_mb": round(peak, 1),  # runs 2.. (+ this script's data)
        "first_run_new_process": None if warm else {
            k: first[k] for k in ("detect_s", "peak_rss_mb", "process_s")},
        "points_per_s_detect": round(points / float(np.median(detect_s)), 1),
        "points_per_s_with_ingest": round(points / float(np.median(
            np.add(detect_s, ingest_s))), 1),
        "new_process": {k: len(v) if k in ("reasons", "watch") else v
                        for k, v in fresh.items()},
        "catch_up": {"rows_per_series": catch_up, "chunks": caught["chunks"],
                     "detect_s": round(catch_up_s, 3),
                     "points_per_s": round(points * catch_up / catch_up_s, 1)},
        "runs_flagging_retrain": retrains,
        "retrain_reasons_by_test": kinds,
        "series_flagged_for_drift": len(drifted),
        "of_them_injected_shifts": len(drifted & set(shifts)),
        "of_them_injected_spikes": len(drifted & set(spikes) - set(shifts)),
        "series_watched_for_live_accuracy": len(watched),
        "of_them_injected": len(watched & (set(shifts) | set(spikes))),
        "watch_share_median": round(float(np.median(watch_share)), 4),
        "watch_share_max": round(float(np.max(watch_share)), 4),
        "paths": paths,
        "injected_spikes": len(spikes), "injected_shifts": len(shifts),
        "spike_recall": recall, "event_precision": precision,
    }


def _profiler(wanted: bool):
    """A running cProfile.Profile when ``wanted`` (``--profile RUN``), else None."""
    if not wanted:
        return None
    import cProfile

    profiler = cProfile.Profile()
    profiler.enable()
    return profiler


def _report_profile(profiler, run: int, n_lines: int = 30) -> None:
    """The ``n_lines`` functions with the most cumulative time of the profiled run (stderr)."""
    if profiler is None:
        return
    import pstats

    profiler.disable()
    if os.environ.get("RECURRA_PROFILE_OUT"):  # for pstats / snakeviz
        profiler.dump_stats(os.environ["RECURRA_PROFILE_OUT"])
    print(f"profile of detect run {run + 1}:", file=sys.stderr)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(n_lines)
    pstats.Stats(profiler, stream=sys.stderr).sort_stats("tottime").print_stats(n_lines)


def _event_scores(events, spikes: dict, shifts: dict) -> tuple[float, float]:
    """Recall of the injected spikes (an event of the series within 2 h of the spike) and
    the precision of all events (an event near a spike, or at/after a shift's onset)."""
    if events.is_empty():
        return 0.0, float("nan")
    hour = np.timedelta64(2, "h")
    found, good = set(), 0
    for row in events.iter_rows(named=True):
        start = np.datetime64(row["start"].replace(tzinfo=None), "us")
        end = np.datetime64(row["end"].replace(tzinfo=None), "us")
        series = row["series_id"]
        near = series in spikes and start - hour <= spikes[series] <= end + hour
        if near:
            found.add(series)
        good += bool(near or (series in shifts and end >= shifts[series] - hour))
    return round(len(found) / max(len(spikes), 1), 3), round(good / events.height, 3)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--series", type=int, default=10_000)
    parser.add_argument("--runs", type=int, default=200)
    parser.add_argument("--train-rows", type=int, default=336)
    parser.add_argument("--calibration-series", type=int, default=1_000)
    parser.add_argument("--skip-s2", action="store_true", help="M1 only")
    parser.add_argument("--skip-m1", action="store_true", help="S2 only")
    parser.add_argument("--profile", type=int, default=None, metavar="RUN",
                        help="cProfile detect run RUN (1-based) and print the top functions")
    parser.add_argument("--warm", action="store_true",
                        help="keep the saved models in memory between runs (one long-lived "
                             "process); by default each run loads them, as a served run does")
    parser.add_argument("--catch-up", type=int, default=24, metavar="ROWS",
                        help="after the runs, one run over a backlog of ROWS rows per series")
    parser.add_argument("--detect-once", nargs=2, metavar=("FOLDER", "RUN_ID"),
                        help=argparse.SUPPRESS)  # the child of detect_in_new_process
    parser.add_argument("--quick", action="store_true", help="200 series, 10 runs")
    parser.add_argument("--write", action="store_true",
                        help="write benchmarks/results/pipeline_scale.json")
    args = parser.parse_args(argv)
    if args.detect_once:
        _detect_once(*args.detect_once)
        return
    if args.quick:
        args.series, args.runs, args.calibration_series = 200, 10, 300
    import torch

    torch.set_num_threads(1)
    os.environ.setdefault("MLFLOW_DISABLE_TELEMETRY", "true")
    started = time.perf_counter()
    result = {} if args.skip_m1 else {"m1": calibration(args.calibration_series),
                                      "m1_demo": demo_flags()}
    print(f"M1 in {time.perf_counter() - started:.1f}s", file=sys.stderr, flush=True)
    if not args.skip_s2:
        with tempfile.TemporaryDirectory(prefix="recurra-scale-") as folder:
            result["s2"] = scale_run(args.series, args.runs, args.train_rows, Path(folder),
                                     None if args.profile is None else args.profile - 1,
                                     warm=args.warm, catch_up=args.catch_up)
    result["load_average_1min"] = os.getloadavg()[0]
    result["quick"] = args.quick
    if args.write:
        write_result("pipeline_scale", result)
    else:
        import json

        print(json.dumps(result, default=str))


if __name__ == "__main__":
    main()
