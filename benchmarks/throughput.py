"""T: throughput and latency (``../shared/BENCHMARKS.md``), plus int8 serving.

    python benchmarks/throughput.py                  # full run (defaults read ../shared/data)
    python benchmarks/throughput.py --quick          # < 1 min smoke run
    python benchmarks/throughput.py --out /tmp/x.json --skip-t2   # exploratory run

T1 training windows per second of :class:`recurra.forecasting.rnn.RNNForecaster` (LSTM and GRU,
hidden 128, 2 layers, look-back 96, horizon 96, batch 256, direct decoder, quantile head,
no calendar features) on ETTh1 (rows [0, 11520): train + validation, 7 channels, one
series), inside ``fit`` itself: ``recurra.forecasting.rnn.fit_module`` is wrapped so that each
training call of the step function is time-stamped; windows/s = windows of the steps
``warmup .. n-2`` / (start of step ``n-1`` - start of step ``warmup``), i.e. full
iterations (forward, loss, backward, clipping, optimiser step) after ``--warmup`` steps.
NeuralForecast's ``LSTM`` (same hidden 128, 2 encoder layers, input_size 96, h 96, 256
windows per step, MQLoss on the same 3 quantiles, the 7 channels as 7 series: its standard
treatment of ETTh1) is timed the same way in the same run: a Lightning callback stamps
``on_train_batch_start`` and a forward pre-hook counts the windows each training forward
actually receives, so Lightning's start-up and the warm-up steps are excluded.  Note that
one Recurra window carries all 7 channels (it forecasts 96 x 7 values) while one
NeuralForecast window carries one; both ``windows_per_s`` and ``channel_windows_per_s``
(windows x channels per window) are reported.  ``step_profile`` (both): ``torch.profiler``
self times of one training step on a captured batch after the timed run, with the share
of ops named *rnn*/*lstm*/*gru* (the fused oneDNN LSTM kernel on CPU).
T2 GRU-D seconds per epoch at hidden 64 on P4 data: ``benchmarks/_t2_grud.run_t2`` (ours vs
PyPOTS side by side) when that module exists, else ``grud_physionet.grud_epoch_seconds``.
T3 streaming, ``--n-series`` series with fitted state, each receiving one new point per
call: the forecaster's general state advance (one network call for all series) and
``predict``, the same through :class:`recurra.forecasting.fleet.ForecasterFleet` (stacked
states, arrays in; largest forecast difference to the general path reported) and the public
``update`` (the fleet plus the forecast it returns); the anomaly detectors three ways: the
private per-series path (frame in, and ``_update_series``; timed on a subset, they loop in
Python) and :class:`recurra.anomaly.fleet.DetectorFleet` (all series, one vectorised call:
what ``update`` runs), with the largest score difference fleet vs per-series.
Q int8 dynamic quantization (:mod:`recurra.forecasting.quantize`) of a fitted hidden-128 LSTM and
GRU: MSE on the ETTh1 test windows (P1 protocol) of fp32 and int8, and latency of one
network forward at batch 1 and 256 and of ``predict`` for 1 and 256 windows.
T4 ingest rows/s is ``benchmarks/ingest.py``.  Every result records the machine it ran on
(``machine``).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import datetime as dt
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SHARED_DATA, setup_paths, write_result  # noqa: E402

setup_paths()

import polars as pl  # noqa: E402
import torch  # noqa: E402
from _t1s import DEFAULTS as T1S_DEFAULTS  # noqa: E402

from recurra.data.arrays import rows_to_arrays  # noqa: E402
from recurra.data.schema import validate_frame  # noqa: E402
from recurra.forecasting.baselines import NaiveConfig, NaiveForecaster  # noqa: E402
from recurra.forecasting.config import EncoderConfig, TBPTTConfig  # noqa: E402
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster  # noqa: E402
from recurra.nn.train import TrainConfig  # noqa: E402

START = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
LOOKBACK = HORIZON = 96
HIDDEN, LAYERS, BATCH = 128, 2, 256
T1_ROWS = 11520                      # ETTh1 train + validation rows (BENCHMARKS.md P1)
TRAIN, VAL, TEST = (0, 8640), (8544, 11520), (11424, 14400)
QUANTILES = (0.1, 0.5, 0.9)


# data --------------------------------------------------------------------------------------
def read_ett(csv: Path) -> tuple[np.ndarray, list[str]]:
    """(n, 7) raw values and the channel names of an ETT CSV."""
    frame = pl.read_csv(csv)
    channels = [c for c in frame.columns if c != "date"]
    return frame.select(channels).to_numpy().astype(np.float64), channels


def windows_frame(blocks: np.ndarray, channels: list[str], prefix: str = "w") -> pl.DataFrame:
    """A contract frame with each (T, F) block of ``blocks`` (W, T, F) as its own series."""
    n_blocks, length, n_channels = blocks.shape
    stamps = np.datetime64("2016-07-01T00:00", "us") + np.arange(length) * np.timedelta64(
        3600, "s")
    return pl.DataFrame({
        "series_id": np.repeat([f"{prefix}{i:06d}" for i in range(n_blocks)],
                               n_channels * length),
        "channel": np.tile(np.repeat(channels, length), n_blocks),
        "timestamp": np.tile(stamps, n_blocks * n_channels),
        "value": blocks.transpose(0, 2, 1).reshape(-1),
    }).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))


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
        "series_id": np.repeat([f"s{i:04d}" for i in range(n_series)], n_channels * n_steps),
        "channel": np.tile(np.repeat([f"c{j}" for j in range(n_channels)], n_steps), n_series),
        "timestamp": np.tile(stamps, n_series * n_channels),
        "value": values.reshape(-1),
    }).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))


def _rate(starts: list[float], windows: list[int], warmup: int) -> dict:
    """Windows/s over the full iterations ``warmup .. n-2`` (stamps are iteration starts)."""
    if len(starts) < warmup + 2:
        return {"windows_per_s": None, "note": f"only {len(starts)} steps ran"}
    seconds = starts[-1] - starts[warmup]
    counted = int(sum(windows[warmup:len(starts) - 1]))
    return {"windows_per_s": counted / seconds, "measured_s": seconds,
            "measured_steps": len(starts) - 1 - warmup, "measured_windows": counted,
            "warmup_steps": warmup, "steps_run": len(starts)}


# T1 ----------------------------------------------------------------------------------------
@contextlib.contextmanager
def _timed_steps(starts: list[float], windows: list[int], captured: dict):
    """Wrap ``recurra.forecasting.rnn.fit_module`` so that every training call of the step function
    records its start time and batch size (the loop itself is untouched); the step function
    and the first training batch are kept in ``captured``."""
    import recurra.forecasting.rnn as rnn

    original = rnn.fit_module

    def fit_module(module, step_fn, *args, **kwargs):
        def step(model, batch, *rest):
            if model.training:
                starts.append(time.perf_counter())
                windows.append(int(batch.x.shape[0]))
                captured.setdefault("step", step_fn)
                captured.setdefault("batch", batch)
            return step_fn(model, batch, *rest)
        return original(module, step, *args, **kwargs)

    rnn.fit_module = fit_module
    try:
        yield
    finally:
        rnn.fit_module = original


def training_throughput(cell: str, frame: pl.DataFrame, steps: int, warmup: int) -> dict:
    """T1 for ``RNNForecaster(cell)``: windows/s inside ``fit`` (see the module docstring)."""
    train = TrainConfig(max_epochs=1, batch_size=BATCH, early_stopping_patience=None,
                        device="auto", seed=0)
    config = ForecasterConfig(lookback=LOOKBACK, horizon=HORIZON, quantiles=QUANTILES,
                              calendar=False, max_windows_per_epoch=(steps + warmup + 1) * BATCH,
                              train=train,
                              encoder=EncoderConfig(cell=cell, hidden_size=HIDDEN,
                                                    num_layers=LAYERS),
                              decoder="direct", output="quantile")
    starts: list[float] = []
    windows: list[int] = []
    captured: dict = {}
    started = time.perf_counter()
    with _timed_steps(starts, windows, captured):
        forecaster = RNNForecaster(config).fit(frame)
    fit_s = time.perf_counter() - started
    n_channels = frame["channel"].n_unique()
    encoder = forecaster.module_.encoder
    result = {**_rate(starts, windows, warmup), "fit_wall_s": fit_s,
              "encoder_path": "custom cells (Python time loop)" if encoder.custom else
              f"fused nn.{type(encoder.layers[0]).__name__} per layer (no Python time loop)",
              "step_profile": _step_profile(forecaster.module_, lambda: captured["step"](
                  forecaster.module_, captured["batch"])),
              "epoch_s": forecaster.history_[0]["seconds"], "batch_size": BATCH,
              "hidden_size": HIDDEN, "num_layers": LAYERS, "lookback": LOOKBACK,
              "horizon": HORIZON, "channels_per_window": n_channels,
              "threads": torch.get_num_threads(),
              "n_parameters": sum(p.numel() for p in forecaster.module_.parameters())}
    if result["windows_per_s"] is not None:
        result["channel_windows_per_s"] = result["windows_per_s"] * n_channels
    return result


def _step_profile(module: torch.nn.Module, loss_of) -> dict:
    """Where one training step (``loss_of()``: forward + loss on a captured training batch,
    then backward) spends CPU time, after training: ``torch.profiler`` self times."""
    import warnings

    from torch.profiler import ProfilerActivity, profile

    module.train()
    try:
        with warnings.catch_warnings(), profile(activities=[ProfilerActivity.CPU]) as profiler:
            warnings.simplefilter("ignore")
            loss_of().backward()
    except Exception as error:  # noqa: BLE001 - a profile is optional, never fatal
        return {"error": repr(error)[:200]}
    finally:
        module.zero_grad(set_to_none=True)
        module.eval()
    events = list(profiler.key_averages())
    total = sum(e.self_cpu_time_total for e in events) or 1.0
    named = [e for e in events if any(k in e.key.lower() for k in ("rnn", "lstm", "gru"))]
    top = sorted(events, key=lambda e: -e.self_cpu_time_total)[:6]
    return {"total_ms": total / 1e3,
            "rnn_named_ops_share": sum(e.self_cpu_time_total for e in named) / total,
            "top_ops_self_ms": {e.key: e.self_cpu_time_total / 1e3 for e in top}}


def neuralforecast_throughput(values: np.ndarray, channels: list[str], steps: int,
                              warmup: int) -> dict:
    """NeuralForecast ``LSTM`` windows/s on the same rows (see the module docstring)."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import neuralforecast
            import pandas as pd
            import pytorch_lightning as lightning
            from neuralforecast import NeuralForecast
            from neuralforecast.losses.pytorch import MQLoss
            from neuralforecast.models import LSTM
    except ImportError as error:
        return {"status": f"not installed ({error}); pip install -c constraints.txt "
                          "'.[bench]'"}
    stamps = pd.date_range("2016-07-01", periods=values.shape[0], freq="h")
    data = pd.concat([pd.DataFrame({"unique_id": c, "ds": stamps, "y": values[:, j]})
                      for j, c in enumerate(channels)], ignore_index=True)
    starts: list[float] = []
    windows: list[int] = []
    captured: dict = {}

    class Stamp(lightning.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            starts.append(time.perf_counter())
            captured.setdefault("batch", batch)

    model = LSTM(h=HORIZON, input_size=LOOKBACK, encoder_hidden_size=HIDDEN,
                 encoder_n_layers=LAYERS, loss=MQLoss(quantiles=list(QUANTILES)),
                 max_steps=steps + warmup + 1, batch_size=len(channels),
                 windows_batch_size=BATCH, scaler_type="standard", val_check_steps=10**6,
                 random_seed=0, accelerator="cpu", devices=1, logger=False,
                 enable_progress_bar=False, enable_checkpointing=False,
                 enable_model_summary=False, callbacks=[Stamp()])

    def count(module, args):
        if module.training:
            windows.append(int(args[0]["insample_y"].shape[0]))

    model.register_forward_pre_hook(count)
    started = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        NeuralForecast(models=[model], freq="h").fit(data)
    fit_s = time.perf_counter() - started
    profile = _step_profile(model, lambda: model.training_step(captured["batch"], 0))
    return {"status": "ran", "version": neuralforecast.__version__,
            **_rate(starts, windows, warmup), "channels_per_window": 1,
            "fit_wall_s": fit_s, "step_profile": profile, "threads": torch.get_num_threads(),
            "n_parameters": sum(p.numel() for p in model.parameters()),
            "config": {"h": HORIZON, "input_size": LOOKBACK, "encoder_hidden_size": HIDDEN,
                       "encoder_n_layers": LAYERS, "decoder": "MLP (defaults)",
                       "windows_batch_size": BATCH, "batch_size": len(channels),
                       "loss": f"MQLoss{list(QUANTILES)}", "scaler_type": "standard"}}


def t1(csv: Path, steps: int, warmup: int, with_neuralforecast: bool, rows: int = T1_ROWS,
       cells: tuple[str, ...] = ("lstm", "gru")) -> dict:
    """T1 for the LSTM and GRU forecasters and NeuralForecast's LSTM on ETTh1 rows [0, rows)."""
    values, channels = read_ett(csv)
    block = values[:rows]
    frame = windows_frame(block[None], channels, prefix="ETTh1_")
    result = {"data": f"{csv.name} rows [0, {rows}), {len(channels)} channels",
              "method": "windows/s = windows of training steps warmup..n-2 / (start of step "
                        "n-1 - start of step warmup); steps stamped at the start of each "
                        "training step (ours: a wrapper around the step function inside "
                        "RNNForecaster.fit; NeuralForecast: Lightning on_train_batch_start, "
                        "windows counted by a forward pre-hook), so start-up, batch "
                        "pre-building and warm-up steps are excluded"}
    for cell in cells:
        result[cell] = training_throughput(cell, frame, steps, warmup)
        print(f"T1 {cell}: {result[cell]['windows_per_s']} windows/s", file=sys.stderr)
    result["neuralforecast_lstm"] = (neuralforecast_throughput(block, channels, steps, warmup)
                                     if with_neuralforecast else {"status": "not run"})
    theirs = result["neuralforecast_lstm"].get("windows_per_s")
    if theirs:
        ours = result["lstm"]
        result["lstm_vs_neuralforecast_windows"] = ours["windows_per_s"] / theirs
        result["lstm_vs_neuralforecast_channel_windows"] = ours["channel_windows_per_s"] / theirs
        result["target"] = ">= 3x NeuralForecast LSTM windows/s"
    return result


# T2 ----------------------------------------------------------------------------------------
def t2(records: Path, outcomes: Path, quick: bool, repeats: int) -> dict:
    """T2 via ``_t2_grud.run_t2`` (ours vs PyPOTS) when present, else ``grud_physionet``."""
    if not records.exists() or not outcomes.exists():
        return {"grud_epoch_s": None, "note": f"data missing: {records} / {outcomes}"}
    device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        from _t2_grud import run_t2
    except ImportError:
        run_t2 = None
    if run_t2 is not None:
        return {"source": "benchmarks/_t2_grud.run_t2",
                **run_t2(records, outcomes, quick, device=device, repeats=repeats)}
    try:
        from grud_physionet import grud_epoch_seconds
    except ImportError as error:
        return {"grud_epoch_s": None, "note": f"grud_physionet unavailable: {error}"}
    return {"source": "benchmarks/grud_physionet.grud_epoch_seconds", "hidden_size": 64,
            "grud_epoch_s": grud_epoch_seconds(records, outcomes, hidden=64, device=device)}


# T3 ----------------------------------------------------------------------------------------
def _timed(function, repeats: int) -> float:
    """Median wall seconds of ``function(k)`` over ``repeats`` calls."""
    times = []
    for k in range(repeats):
        started = time.perf_counter()
        function(k)
        times.append(time.perf_counter() - started)
    return float(np.median(times))


def streaming_latency(n_series: int, history: int, repeats: int, n_reference: int) -> dict:
    """T3: one new point for each of ``n_series`` series; microseconds per point."""
    frame = synthetic_frame(n_series, history, n_channels=1, seed=1)
    points = [synthetic_frame(n_series, 1, 1, seed=1, offset=history + k)
              for k in range(repeats)]
    train = TrainConfig(max_epochs=1, batch_size=256, early_stopping_patience=None,
                        device="cpu", seed=0)
    config = ForecasterConfig(lookback=24, horizon=24, stateful=True, calendar=False, train=train,
                              encoder=EncoderConfig(cell="lstm", hidden_size=32),
                              tbptt=TBPTTConfig(length=24))
    started = time.perf_counter()
    forecaster = RNNForecaster(config).fit(frame)
    result = {"n_series": n_series, "history_rows": history, "repeats": repeats,
              "forecaster": "RNNForecaster(lstm, hidden 32, stateful): update(frame) with "
                            "one row per series advances all states in one batched call",
              "fit_s": time.perf_counter() - started}
    fleet_copy, public = copy.deepcopy(forecaster), copy.deepcopy(forecaster)
    channels = forecaster.channels_
    update_s = _timed(lambda k: forecaster._advance(  # the general path (update picks the fleet)
        rows_to_arrays(validate_frame(points[k]), channels)), repeats)
    predict_s = _timed(lambda k: forecaster.predict(), repeats)
    result["forecast_update_us_per_point"] = update_s / n_series * 1e6
    result["forecast_predict_us_per_series"] = predict_s / n_series * 1e6
    result["update_with_forecast_us_per_series"] = _timed(  # public: fleet + the forecast
        lambda k: public.update(points[k]), repeats) / n_series * 1e6
    result.update(_forecaster_fleet(fleet_copy, forecaster, points, repeats))
    naive = NaiveForecaster(NaiveConfig(horizon=24)).fit(frame)
    result["naive_update_us_per_point"] = _timed(  # update returns the forecast
        lambda k: naive.update(points[k]), repeats) / n_series * 1e6
    result["anomaly"] = _anomaly_latency(frame, points, repeats, n_reference)
    return result


def _forecaster_fleet(fitted, updated, points: list[pl.DataFrame], repeats: int) -> dict:
    """:class:`recurra.forecasting.fleet.ForecasterFleet` from the ``fitted`` state on the same
    points; its forecasts are compared with those of ``updated`` (same points via
    ``update``)."""
    from recurra.anomaly.fleet import fleet_arrays
    from recurra.forecasting.fleet import ForecasterFleet

    fleet = ForecasterFleet(fitted)
    inputs = [fleet_arrays(p, fleet.series_ids_, tuple(fleet.channels_)) for p in points]
    n_series = len(fleet.series_ids_)
    update_s = _timed(lambda k: fleet.update(*inputs[k]), repeats)
    predict_s = _timed(lambda k: fleet.predict(), repeats)
    expected = updated.predict().sort(["series_id", "channel", "step"])["y_hat"].to_numpy()
    got = fleet.predict()["y_hat"].transpose(0, 2, 1).reshape(-1)
    return {"fleet_forecast_update_us_per_point": update_s / n_series * 1e6,
            "fleet_forecast_predict_us_per_series": predict_s / n_series * 1e6,
            "fleet_vs_update_max_abs_forecast_diff": float(np.max(np.abs(got - expected)))}


def _anomaly_latency(frame: pl.DataFrame, points: list[pl.DataFrame], repeats: int,
                     n_reference: int) -> dict:
    from dataclasses import replace

    from recurra.anomaly import DETECTOR_TRAIN, AutoencoderConfig, NetworkConfig, ZScoreConfig
    from recurra.anomaly.baselines import RollingZScoreDetector
    from recurra.anomaly.detectors import ReconstructionDetector

    detectors = {
        "rolling_zscore": RollingZScoreDetector(ZScoreConfig(window=24)),
        "lstm_autoencoder": ReconstructionDetector(AutoencoderConfig(
            window=24, network=NetworkConfig(hidden_size=16, latent_size=8),
            train=replace(DETECTOR_TRAIN, max_epochs=1, batch_size=512)))}
    result = {}
    for name, detector in detectors.items():
        started = time.perf_counter()
        detector.fit(frame)
        fit_s = time.perf_counter() - started
        result[name] = {"fit_s": fit_s, **_detector_latency(detector, points, repeats,
                                                            n_reference)}
        entry = result[name]
        print(f"T3 {name}: fleet {entry['fleet_update_us_per_point']:.2f} us/point, per-series "
              f"{entry['per_series_update_frame_us_per_point']:.1f}", file=sys.stderr)
    return result


def _detector_latency(detector, points: list[pl.DataFrame], repeats: int,
                      n_reference: int) -> dict:
    """The private per-series path (frame in, and ``_update_series``) on the first
    ``n_reference`` series vs :class:`DetectorFleet` on all (what ``update`` runs), from
    copies of the same fitted state."""
    from recurra.anomaly.fleet import DetectorFleet, fleet_arrays

    by_frame, by_arrays = copy.deepcopy(detector), copy.deepcopy(detector)
    fleet = DetectorFleet(detector)
    ids = fleet.series_ids_
    inputs = [fleet_arrays(p, ids, fleet.channels_) for p in points]
    subset = ids[:n_reference]
    subset_points = [p.filter(pl.col("series_id").is_in(subset)) for p in points]
    reference: list[np.ndarray] = []
    fleet_scores: list[np.ndarray] = []

    def per_frame(k: int) -> None:  # the private per-series path (update itself is batched)
        rows = by_frame._new_arrays(subset_points[k])
        scored = by_frame._scores_frame([(a.series_id, by_frame._advance_series(a))
                                         for a in rows])
        reference.append(scored.sort("series_id")["score"].fill_null(np.nan).to_numpy())

    def per_arrays(k: int) -> None:
        stamps, values = inputs[k]
        for i, series_id in enumerate(subset):
            by_arrays._update_series(series_id, stamps[i:i + 1], values[i:i + 1])

    def batched(k: int) -> None:
        fleet_scores.append(fleet.update(*inputs[k])[0])

    entry = {"per_series_update_frame_us_per_point":
             _timed(per_frame, repeats) / len(subset) * 1e6,
             "per_series_update_arrays_us_per_point":
             _timed(per_arrays, repeats) / len(subset) * 1e6,
             "fleet_update_us_per_point": _timed(batched, repeats) / len(ids) * 1e6,
             "frame_to_fleet_arrays_us_per_point": _timed(
                 lambda k: fleet_arrays(points[k], ids, fleet.channels_), repeats)
             / len(ids) * 1e6}
    got = np.array([s[:len(subset)] for s in fleet_scores])
    entry["fleet_vs_per_series_max_abs_score_diff"] = float(np.nanmax(np.abs(
        got - np.array(reference))))
    entry["n_series_fleet"], entry["n_series_per_series"] = len(ids), len(subset)
    entry["speedup_fleet_vs_update_frame"] = (entry["per_series_update_frame_us_per_point"]
                                              / entry["fleet_update_us_per_point"])
    return entry


# int8 --------------------------------------------------------------------------------------
def quantization(csv: Path, quick: bool, repeats: int) -> dict:
    """Fit a hidden-128 LSTM and GRU (fixed small budget, early stopping on validation),
    then fp32 vs int8: test MSE (z-scored, P1 windows) and latencies."""
    from _latency import module_latency

    from recurra.forecasting.quantize import (
        DEFAULT_LAYERS,
        alternating_medians,
        choose_engine,
        quantize_forecaster,
        quantize_module,
    )

    values, channels = read_ett(csv)
    mean, std = values[slice(*TRAIN)].mean(axis=0), values[slice(*TRAIN)].std(axis=0)
    values = (values - mean) / std
    view = np.lib.stride_tricks.sliding_window_view(values[slice(*TEST)],
                                                    LOOKBACK + HORIZON, axis=0)
    view = view.transpose(0, 2, 1)[::96 if quick else 1]
    x_test, y_test = view[:, :LOOKBACK], view[:, LOOKBACK:]
    test_frame = windows_frame(np.ascontiguousarray(x_test), channels)
    result = {"engine": choose_engine(), "default_layers": list(DEFAULT_LAYERS),
              "test_windows": int(x_test.shape[0]),
              "training": "1 epoch x 256 windows" if quick else
              "<= 4 epochs x 2048 windows, early stopping on the validation rows",
              "why": "dynamic int8 pays for Linear layers and the GRU; the fp32 CPU LSTM runs "
                     "oneDNN's fused kernel, faster than the dynamic-quantized LSTM, so the "
                     "default keeps the LSTM in fp32 ('int8_with_lstm' quantizes it too, the "
                     "old behaviour)"}
    for cell in ("lstm",) if quick else ("lstm", "gru"):
        train = TrainConfig(max_epochs=1 if quick else 4, batch_size=BATCH,
                            early_stopping_patience=2, device="cpu", seed=0)
        config = ForecasterConfig(lookback=LOOKBACK, horizon=HORIZON, quantiles=QUANTILES,
                                  calendar=False, scaler="none",
                                  max_windows_per_epoch=256 if quick else 2048, train=train,
                                  encoder=EncoderConfig(cell=cell, hidden_size=HIDDEN,
                                                        num_layers=LAYERS),
                                  decoder="direct", output="quantile")
        started = time.perf_counter()
        fp32 = RNNForecaster(config).fit(
            windows_frame(values[slice(*TRAIN)][None], channels, "ETTh1_"),
            validation=windows_frame(values[slice(*VAL)][None], channels, "ETTh1_"))
        entry = {"train_s": time.perf_counter() - started, "epochs": len(fp32.history_)}
        variants = {"fp32": fp32, "int8": quantize_forecaster(fp32)}
        if cell == "lstm":
            variants["int8_with_lstm"] = quantize_forecaster(fp32, ("linear", "gru", "lstm"))
        points = {}
        for name, model in variants.items():
            started = time.perf_counter()
            points[name] = _point_forecast(model, test_frame, channels, x_test.shape[0])
            entry[f"{name}_test_mse"] = float(np.mean((points[name] - y_test) ** 2))
            entry[f"{name}_predict_all_s"] = time.perf_counter() - started
        for name in variants:
            if name != "fp32":
                entry[f"{name}_mse_vs_fp32"] = float(np.mean((points[name] - points["fp32"])
                                                             ** 2))
        networks = {n: m.module_ for n, m in variants.items()}
        entry["forward_ms"] = module_latency(networks, len(channels), LOOKBACK, (1, 256),
                                             repeats)
        for size in (1, 256):
            frame = windows_frame(np.ascontiguousarray(x_test[:size]), channels)
            seconds = alternating_medians([lambda m=m, f=frame: m.predict(f)
                                           for m in variants.values()], max(3, repeats // 4))
            entry[f"predict_{size}_windows_ms"] = {n: 1e3 * s for n, s in
                                                   zip(variants, seconds, strict=True)}
        entry["quantized_layers"] = sorted({m._get_name() for m in quantize_module(
            fp32.module_).modules() if m._get_name().startswith("DynamicQuantized")})
        result[cell] = entry
        print(f"Q {cell}: {entry['forward_ms']}", file=sys.stderr)
    return result


def _point_forecast(model, frame: pl.DataFrame, channels: list[str], n_windows: int
                    ) -> np.ndarray:
    """(W, H, F) ``y_hat`` of ``predict(frame)`` with one series per window."""
    forecast = model.predict(frame)
    order = {c: j for j, c in enumerate(channels)}
    forecast = forecast.with_columns(pl.col("channel").replace_strict(order).alias("_c"))
    forecast = forecast.sort(["series_id", "step", "_c"])
    return forecast["y_hat"].to_numpy().reshape(n_windows, HORIZON, len(channels))


# main --------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny budget, < 1 min")
    parser.add_argument("--csv", type=Path, default=SHARED_DATA / "ett" / "ETTh1.csv")
    parser.add_argument("--steps", type=int, default=36, help="T1 measured steps per model")
    parser.add_argument("--warmup", type=int, default=4, help="T1 steps excluded first")
    parser.add_argument("--n-series", type=int, default=1000)
    parser.add_argument("--n-reference", type=int, default=100,
                        help="T3 series timed with the per-series (Python loop) update")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--physionet-records", type=Path,
                        default=SHARED_DATA / "physionet2012" / "set-a.csv.gz")
    parser.add_argument("--physionet-outcomes", type=Path,
                        default=SHARED_DATA / "physionet2012" / "Outcomes-a.txt")
    parser.add_argument("--t2-repeats", type=int, default=1)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 is fastest on the shared CPU)")
    parser.add_argument("--skip-t2", action="store_true")
    parser.add_argument("--skip-neuralforecast", action="store_true")
    parser.add_argument("--skip-quantization", action="store_true")
    parser.add_argument("--out", type=Path,
                        help="write the JSON here instead of benchmarks/results/")
    t1s = parser.add_argument_group("T1s time-to-accuracy (benchmarks/_t1s.py)")
    t1s.add_argument("--t1s", action="store_true",
                     help="run only T1s; with --write merge it into results/throughput.json")
    t1s.add_argument("--write", action="store_true", help="T1s: write the result")
    t1s.add_argument("--t1s-budget", type=float, default=240.0,
                     help="training seconds of ours stateless and of NeuralForecast")
    t1s.add_argument("--t1s-stateful-budget", type=float, default=120.0)
    t1s.add_argument("--t1s-eval-every", type=float, default=4.0,
                     help="training seconds between validation evaluations (ours)")
    t1s.add_argument("--t1s-nf-val-steps", type=int, default=10)
    t1s.add_argument("--t1s-windows", type=int, default=T1S_DEFAULTS["t1s_windows"],
                     help="stateless windows per epoch (one evaluation point at most)")
    t1s.add_argument("--t1s-segments", type=int, default=T1S_DEFAULTS["t1s_segments"],
                     help="stateful: segments of the training series side by side")
    t1s.add_argument("--t1s-tbptt", type=int, default=T1S_DEFAULTS["t1s_tbptt"])
    t1s.add_argument("--t1s-stateful-lr", type=float, default=T1S_DEFAULTS["t1s_stateful_lr"])
    t1s.add_argument("--t1s-no-from-last", dest="t1s_from_last", action="store_false",
                     help="ours: forecast_from_last=False (default True: a causal level per "
                          "step, for stateless and stateful alike)")
    return parser.parse_args(argv)


def run_t1s(args: argparse.Namespace) -> None:
    """T1s only; ``--write`` merges it into ``results/throughput.json`` (key ``t1s``, or
    ``t1s_no_from_last`` with ``--t1s-no-from-last``)."""
    import json

    import _common
    from _t1s import t1s

    values, channels = read_ett(args.csv)
    started = time.perf_counter()
    result = t1s(values, channels, lambda block: windows_frame(block[None], channels,
                                                                prefix="ETTh1_"), args)
    result["wall_s"] = time.perf_counter() - started
    result["machine"] = _common.machine_facts()
    result["timestamp"] = dt.datetime.now(dt.UTC).isoformat(timespec="seconds")
    summary = {name: {key: result[name].get(key) for key in (
        "best_val_mse", "seconds_to_level", "test_mse_at_best_val",
        "supervised_positions_per_s")} for name in (
        "neuralforecast_lstm", "ours_stateless", "ours_stateful")}
    print(json.dumps({"level_val_mse": result.get("level_val_mse"), **summary}), flush=True)
    if not args.write:
        return
    path = args.out or _common.RESULTS_DIR / "throughput.json"
    payload = json.loads(path.read_text()) if path.exists() else {"benchmark": "throughput"}
    payload["t1s" if args.t1s_from_last else "t1s_no_from_last"] = _common._clean(result)
    path.write_text(json.dumps(payload) + "\n")


def main(argv: list[str] | None = None) -> None:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.t1s:
        run_t1s(args)
        return
    steps, warmup = (3, 1) if args.quick else (args.steps, args.warmup)
    started = time.perf_counter()
    result: dict = {"quick": args.quick, "threads": args.threads}
    result["t1_training"] = t1(args.csv, steps, warmup, not args.skip_neuralforecast,
                               rows=2000 if args.quick else T1_ROWS,
                               cells=("lstm",) if args.quick else ("lstm", "gru"))
    result["t2_grud"] = ({"note": "skipped (--skip-t2)"} if args.skip_t2 else
                         t2(args.physionet_records, args.physionet_outcomes, args.quick,
                            args.t2_repeats))
    n_series = 100 if args.quick else args.n_series
    result["t3_streaming"] = streaming_latency(n_series, 96, 2 if args.quick else args.repeats,
                                               min(args.n_reference, n_series))
    result["t4_ingest"] = "see benchmarks/ingest.py (benchmarks/results/ingest.json)"
    result["int8"] = ({"note": "skipped"} if args.skip_quantization else
                      quantization(args.csv, args.quick, 3 if args.quick else 20))
    t1_result = result["t1_training"]
    result["train_s"] = sum(t1_result[c]["fit_wall_s"] for c in ("lstm", "gru")
                            if c in t1_result)
    result["predict_s"] = (result["t3_streaming"]["forecast_predict_us_per_series"]
                           * n_series / 1e6)
    result["steps"] = {"t1_measured": steps, "t1_warmup": warmup}
    result["wall_s"] = time.perf_counter() - started
    name = "throughput_quick" if args.quick else "throughput"
    if args.out is not None:
        import _common

        _common.RESULTS_DIR = args.out.resolve().parent
        name = args.out.stem
    write_result(name, result, extra_versions=("neuralforecast", "pytorch_lightning"))


if __name__ == "__main__":
    main()
