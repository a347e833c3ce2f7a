"""T1 of ``benchmarks/throughput.py``: training windows per second of ``RNNForecaster``
inside ``fit`` and of NeuralForecast's ``LSTM`` on the same ETTh1 rows (the method is in
``throughput.py``'s docstring), plus the ETT reader and the one-series-per-window frames
that the int8 part and ``gpu_check.py`` share."""

from __future__ import annotations

import contextlib
import sys
import time
from pathlib import Path

import numpy as np
import polars as pl
import torch

from recurra.forecasting.config import EncoderConfig
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig

LOOKBACK = HORIZON = 96
HIDDEN, LAYERS, BATCH = 128, 2, 256
T1_ROWS = 11520                      # ETTh1 train + validation rows (BENCHMARKS.md P1)
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
