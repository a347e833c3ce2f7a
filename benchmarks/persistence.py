"""Save / load time of fitted estimators with 1,000-series stream states: persistence
format 2 (tensors via torch.save + a pickled skeleton) against format 3 (JSON tree + packed
buffers read with ``weights_only=True``), in the same process.

Fits, on ``--series`` series x 2 channels (default 1,000) of seeded sine + noise with gaps,
a ``ForecastErrorDetector`` (SPOT threshold; per-series calibration, SPOT state, GRU state
tensors and window tails) and a stateful GRU ``RNNForecaster`` (per-series recurrent state
tensors and buffers), streams ``--steps`` more rows through each, then saves and loads each
one ``--repeats`` times (default 5) per format.  Figures are the medians in seconds, the
folder size, and the number of arrays and tensors in the state.

    python benchmarks/persistence.py [--series 1000] [--repeats 5] [--quick] [--write]

Results go to benchmarks/results/persistence.json only with ``--write``.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import setup_paths  # noqa: E402

setup_paths()

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from recurra.anomaly import (  # noqa: E402
    DETECTOR_TRAIN,
    ForecastErrorConfig,
    NetworkConfig,
    ThresholdConfig,
)
from recurra.anomaly.detectors import ForecastErrorDetector  # noqa: E402
from recurra.forecasting.config import EncoderConfig  # noqa: E402
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster  # noqa: E402
from recurra.nn import persistence  # noqa: E402
from recurra.nn._persistence_legacy import SKELETON_FILE, STATE_FILE, split_tensors  # noqa: E402
from recurra.nn.persistence import load_estimator, save_estimator  # noqa: E402
from recurra.nn.train import TrainConfig  # noqa: E402

START = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


def frame(n_series: int, n_steps: int, offset: int = 0, seed: int = 0) -> pl.DataFrame:
    """``n_series`` x 2 channels of hourly sine + noise, 5 % missing, from hour ``offset``."""
    rng = np.random.default_rng(seed)
    steps = np.arange(offset, offset + n_steps)
    stamps = [START + dt.timedelta(hours=int(h)) for h in steps]
    parts = []
    for s in range(n_series):
        for channel in ("c0", "c1"):
            values = np.sin(steps * 2 * np.pi / 24 + rng.uniform(0, 6)) \
                + 0.1 * rng.standard_normal(n_steps)
            values[rng.random(n_steps) < 0.05] = np.nan
            parts.append(pl.DataFrame({"series_id": f"s{s:04d}", "channel": channel,
                                       "timestamp": stamps, "value": values}))
    out = pl.concat(parts).with_columns(pl.col("value").fill_nan(None))
    return out.with_columns(pl.col("value").is_not_null().alias("observed"),
                            pl.col("timestamp").cast(pl.Datetime("us", "UTC")))


def save_format2(estimator, path: Path) -> None:
    """What ``save_estimator`` wrote before format 3 (meta.json + state.pt + state.pkl)."""
    path.mkdir(parents=True)
    meta = {"format_version": 2, "class": f"{type(estimator).__module__}."
            f"{type(estimator).__qualname__}", "config_class":
            f"{type(estimator.config).__module__}.{type(estimator.config).__qualname__}",
            "config": persistence.config_to_dict(estimator.config)}
    (path / "meta.json").write_text(json.dumps(meta, indent=2))
    tensors, skeleton = split_tensors(estimator._get_state())
    torch.save(tensors, path / STATE_FILE)
    (path / SKELETON_FILE).write_bytes(skeleton)


def count(state) -> tuple[int, int]:
    """(numpy arrays, tensors) inside ``state``."""
    arrays = tensors = 0
    stack = [state]
    while stack:
        value = stack.pop()
        if isinstance(value, np.ndarray):
            arrays += 1
        elif isinstance(value, torch.Tensor):
            tensors += 1
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, list | tuple):
            stack.extend(value)
        elif hasattr(value, "__dict__") and type(value).__module__.startswith("recurra"):
            stack.extend(vars(value).values())
    return arrays, tensors


def measure(estimator, root: Path, repeats: int) -> dict:
    arrays, tensors = count(estimator._get_state())
    out = {"arrays": arrays, "tensors": tensors}
    writers = {"format2": save_format2, "format3": save_estimator}
    for name, write in writers.items():
        saves, loads = [], []
        for i in range(repeats):
            folder = root / f"{name}-{i}"
            started = time.perf_counter()
            write(estimator, folder)
            saves.append(time.perf_counter() - started)
            started = time.perf_counter()
            load_estimator(folder)
            loads.append(time.perf_counter() - started)
        out[f"{name}_save_s"] = round(statistics.median(saves), 4)
        out[f"{name}_load_s"] = round(statistics.median(loads), 4)
        out[f"{name}_bytes"] = sum(p.stat().st_size for p in folder.iterdir())
        shutil.rmtree(root / f"{name}-0")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--quick", action="store_true", help="100 series, 3 repeats")
    _common.add_write_flag(parser)
    args = parser.parse_args()
    _common.keep_out_of_results(args.write)
    if args.quick:
        args.series, args.repeats = 100, 3
    torch.set_num_threads(1)
    train = frame(args.series, 72)
    new = frame(args.series, args.steps, offset=72, seed=1)
    detector = ForecastErrorDetector(ForecastErrorConfig(
        window=16, network=NetworkConfig(hidden_size=8),
        threshold=ThresholdConfig(kind="spot", level=0.9, risk=0.01),
        train=replace(DETECTOR_TRAIN, max_epochs=1, batch_size=256, device="cpu",
                      seed=0))).fit(train)
    detector.update(new)
    forecaster = RNNForecaster(ForecasterConfig(
        encoder=EncoderConfig(cell="gru", hidden_size=8), lookback=16, horizon=6,
        stateful=True,
        train=TrainConfig(max_epochs=1, batch_size=256, device="cpu", seed=0))).fit(train)
    forecaster.update(new)
    result = {"series": args.series, "channels": 2, "repeats": args.repeats,
              "torch_threads": torch.get_num_threads(), "load_average": _common.load_average()}
    root = Path(tempfile.mkdtemp(prefix="recurra-persist-"))
    try:
        for name, estimator in (("forecast_error_detector", detector),
                                ("rnn_forecaster", forecaster)):
            result[name] = measure(estimator, root / name, args.repeats)
            print(name, result[name], file=sys.stderr, flush=True)
    finally:
        shutil.rmtree(root)
    result["load_average_end"] = _common.load_average()
    _common.write_result("persistence", result, device="cpu")


if __name__ == "__main__":
    main()
