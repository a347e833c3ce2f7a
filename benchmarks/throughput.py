"""T: throughput and latency (``../shared/BENCHMARKS.md``).

    python benchmarks/throughput.py                      # full budget
    python benchmarks/throughput.py --quick              # < 1 min smoke run
    python benchmarks/throughput.py --physionet-records ../shared/data/physionet2012/set-a.csv.gz \
        --physionet-outcomes ../shared/data/physionet2012/Outcomes-a.txt   # adds T2

T1 training windows per second of the LSTM and GRU :class:`forecasting.rnn.RNNForecaster`
(hidden 128, 2 layers, look-back 96, horizon 96, batch 256, 7 channels, direct decoder),
measured inside ``fit`` (batch building included) over ``--steps`` optimiser steps.
T2 GRU-D seconds per epoch on P4 data at hidden 64 (``benchmarks/grud_physionet.py``).
T3 streaming: ``--n-series`` series with fitted state each receive one new point, all in
one batched call; microseconds per point for the forecaster's ``update`` (stateful LSTM:
the state advances by one step), its ``predict`` after it, a baseline's ``update``, and a
detector's streaming ``update`` (anomaly scores).  T4 ingest rows/s is
``benchmarks/ingest.py`` (another script).
"""

from __future__ import annotations

import argparse
import datetime as dt
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import setup_paths, write_result  # noqa: E402

setup_paths()

import polars as pl  # noqa: E402
import torch  # noqa: E402

from forecasting.baselines import NaiveConfig, NaiveForecaster  # noqa: E402
from forecasting.rnn import ForecasterConfig, RNNForecaster  # noqa: E402
from forecasting.train import TrainConfig  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)


def synthetic_frame(n_series: int, n_steps: int, n_channels: int, seed: int = 0,
                    offset: int = 0) -> pl.DataFrame:
    """Daily sine + noise on an hourly grid, rows ``offset .. offset + n_steps``."""
    rng = np.random.default_rng(seed)
    steps = np.arange(offset, offset + n_steps)
    phases = rng.uniform(0, 2 * np.pi, (n_series, n_channels, 1))
    values = np.sin(steps[None, None, :] * 2 * np.pi / 24 + phases)
    values = values + 0.1 * rng.standard_normal(values.shape)
    stamps = np.datetime64(START.replace(tzinfo=None), "us") + steps * np.timedelta64(3600, "s")
    return pl.DataFrame({
        "series_id": np.repeat([f"s{i}" for i in range(n_series)], n_channels * n_steps),
        "channel": np.tile(np.repeat([f"c{j}" for j in range(n_channels)], n_steps), n_series),
        "timestamp": np.tile(stamps, n_series * n_channels),
        "value": values.reshape(-1),
    }).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))


def training_throughput(cell: str, n_steps: int, batch_size: int = 256) -> dict:
    """T1: windows per second inside ``RNNForecaster.fit`` (one epoch of ``n_steps``)."""
    frame = synthetic_frame(n_series=4, n_steps=2000, n_channels=7)
    train = TrainConfig(max_epochs=1, batch_size=batch_size, early_stopping_patience=None,
                        device="auto", seed=0)
    config = ForecasterConfig(cell=cell, hidden_size=128, num_layers=2, lookback=96,
                              horizon=96, decoder="direct", output="quantile",
                              max_windows_per_epoch=n_steps * batch_size, calendar=False,
                              train=train)
    forecaster = RNNForecaster(config).fit(frame)
    seconds = forecaster.history_[0]["seconds"]
    return {"windows_per_s": n_steps * batch_size / seconds, "seconds": seconds,
            "steps": n_steps, "batch_size": batch_size, "hidden_size": 128, "num_layers": 2,
            "lookback": 96, "horizon": 96, "n_channels": 7}


def _timed(function, repeats: int) -> float:
    """Median wall seconds of ``function(k)`` over ``repeats`` calls."""
    times = []
    for k in range(repeats):
        started = time.perf_counter()
        function(k)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def streaming_latency(n_series: int, history: int, repeats: int) -> dict:
    """T3: one new point for each of ``n_series`` series, batched; microseconds per point."""
    frame = synthetic_frame(n_series, history, n_channels=1, seed=1)
    points = [synthetic_frame(n_series, 1, 1, seed=1, offset=history + k)
              for k in range(repeats)]
    train = TrainConfig(max_epochs=1, batch_size=256, early_stopping_patience=None,
                        device="cpu", seed=0)
    config = ForecasterConfig(cell="lstm", hidden_size=32, lookback=24, horizon=24,
                              stateful=True, tbptt_length=24, calendar=False, train=train)
    started = time.perf_counter()
    forecaster = RNNForecaster(config).fit(frame)
    fit_s = time.perf_counter() - started
    result = {"n_series": n_series, "history_rows": history, "repeats": repeats,
              "forecaster": "RNNForecaster(lstm, hidden 32, stateful)", "fit_s": fit_s}
    update_s = _timed(lambda k: forecaster.update(points[k]), repeats)
    predict_s = _timed(lambda k: forecaster.predict(), repeats)
    result["forecast_update_us_per_point"] = update_s / n_series * 1e6
    result["forecast_predict_us_per_series"] = predict_s / n_series * 1e6
    naive = NaiveForecaster(NaiveConfig(horizon=24)).fit(frame)
    result["naive_update_us_per_point"] = _timed(
        lambda k: naive.update(points[k]), repeats) / n_series * 1e6
    result.update(_anomaly_latency(frame, points, repeats, n_series))
    return result


def _first_series(frame: pl.DataFrame, n_series: int) -> pl.DataFrame:
    keep = [f"s{i}" for i in range(n_series)]
    return frame.filter(pl.col("series_id").is_in(keep))


def _anomaly_latency(frame: pl.DataFrame, points: list[pl.DataFrame], repeats: int,
                     n_series: int) -> dict:
    try:
        from anomaly.base import DetectorConfig
        from anomaly.baselines import RollingZScoreDetector
        from anomaly.detectors import ReconstructionDetector
    except ImportError as error:  # the anomaly package is another engineer's
        return {"anomaly_score": f"missing: {error}"}
    result = {}
    n_small = min(n_series, 100)  # the autoencoder's update is slow: time it on 100 series
    for name, detector, count in (
            ("rolling_zscore", RollingZScoreDetector(DetectorConfig(window=24)), n_series),
            ("lstm_autoencoder", ReconstructionDetector(DetectorConfig(
                window=24, hidden_size=16, latent_size=8, max_epochs=1, batch_size=512)),
             n_small)):
        started = time.perf_counter()
        detector.fit(_first_series(frame, count))
        result[f"anomaly_{name}_fit_s"] = time.perf_counter() - started
        seconds = _timed(lambda k, d=detector, c=count: d.update(_first_series(points[k], c)),
                         repeats)
        result[f"anomaly_{name}_update_us_per_point"] = seconds / count * 1e6
        result[f"anomaly_{name}_n_series"] = count
    return result


def grud_epoch(records: Path | None, outcomes: Path | None) -> dict:
    """T2 via ``grud_physionet.grud_epoch_seconds`` when its data paths are given."""
    if records is None or outcomes is None:
        return {"grud_epoch_s": None, "note": "pass --physionet-records/--physionet-outcomes"}
    try:
        from grud_physionet import grud_epoch_seconds
    except ImportError as error:
        return {"grud_epoch_s": None, "note": f"grud_physionet unavailable: {error}"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    return {"grud_epoch_s": grud_epoch_seconds(records, outcomes, hidden=64, device=device),
            "hidden_size": 64}


def neuralforecast_status() -> str:
    """Whether NeuralForecast installs next to the pinned torch (checked with pip --dry-run)."""
    try:
        import neuralforecast  # noqa: F401
        return "installed"
    except ImportError:
        pass
    root = Path(__file__).resolve().parents[1]
    command = [sys.executable, "-m", "pip", "install", "--dry-run", "-q", "-c",
               str(root / "constraints.txt"), "neuralforecast"]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.TimeoutExpired) as error:
        return f"not checked: {error}"
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return f"not installable with constraints.txt: {last[:300]}"
    return "installable (not run here)"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget, < 1 min")
    parser.add_argument("--steps", type=int, default=20, help="T1 optimiser steps per cell")
    parser.add_argument("--n-series", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--physionet-records", type=Path)
    parser.add_argument("--physionet-outcomes", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--skip-neuralforecast-check", action="store_true")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    steps = 2 if args.quick else args.steps
    started = time.perf_counter()
    result: dict = {"quick": args.quick}
    result["t1_training"] = {cell: training_throughput(cell, steps) for cell in ("lstm", "gru")}
    result["t2_grud"] = grud_epoch(args.physionet_records, args.physionet_outcomes)
    result["t3_streaming"] = streaming_latency(100 if args.quick else args.n_series, 96,
                                               2 if args.quick else args.repeats)
    result["t4_ingest"] = "see benchmarks/ingest.py (benchmarks/results/ingest.json)"
    result["neuralforecast"] = ("not checked (--skip-neuralforecast-check)"
                                if args.skip_neuralforecast_check or args.quick
                                else neuralforecast_status())
    result["train_s"] = sum(v["seconds"] for v in result["t1_training"].values())
    result["predict_s"] = (result["t3_streaming"]["forecast_predict_us_per_series"]
                           * result["t3_streaming"]["n_series"] / 1e6)
    result["steps"] = steps
    result["wall_s"] = time.perf_counter() - started
    result["threads"] = torch.get_num_threads()
    result["note"] = "measured on a contended 2-core CPU shared with other jobs"
    write_result("throughput_quick" if args.quick else "throughput", result)


if __name__ == "__main__":
    main()
