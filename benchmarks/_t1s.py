"""T1s: time-to-accuracy on P1 ETTh1 (L96/H96) for ours stateless, ours stateful and NF LSTM.

Used by ``benchmarks/throughput.py --t1s``.  The data are z-scored with the training mean/std
(P1); every trainer minimises the MSE of a point forecast and is stopped after its own
budget of training seconds.  At most every ``eval_every_s`` training seconds the validation
MSE of the P1 validation windows (2,785, stride 1, z-units) is computed; evaluation time is
not counted.  ``seconds_to_level`` is the training time at the first evaluation whose
validation MSE is <= ``level`` = 1.02 x the best validation MSE NeuralForecast's LSTM reached
in the same run.  Test MSE (P1 test windows) is computed once, with the weights of the best
validation evaluation.  ``supervised_positions_per_s``: (series, time step) positions that
received a loss on their next 96 x 7 targets, per training second (a stateless window is one
position; NeuralForecast's single-channel windows count 1/7 each).

Both of ours use ``forecast_from_last=True`` (unless ``--t1s-no-from-last``): the direct
decoder forecasts the change from each step's last value, a causal per-step level.
Ours stateful: ``stateful=True``: the training series cut into ``--t1s-segments`` (8) segments
side by side in one batch, each replaying ``stateful_burn_in`` (96) steps of its
predecessor's end (excluded from the loss), TBPTT chunks of ``--t1s-tbptt`` (32) steps, every
step supervised.  It is evaluated on the same P1 windows as the others: each window's 96
steps encoded from a fresh state, the forecast decoded from the last step.
"""

from __future__ import annotations

import contextlib
import copy
import sys
import time

import numpy as np
import torch

from recurra.data.arrays import frame_to_arrays
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.forecasting.rnn_training import _window_params
from recurra.forecasting.windows import prepare_series, window_batch
from recurra.nn.train import TrainConfig

LOOKBACK = HORIZON = 96
TRAIN, VAL, TEST = (0, 8640), (8544, 11520), (11424, 14400)
# The trainers' settings (``throughput.py --t1s-*`` and ``gpu_check.py`` start from these).
DEFAULTS = {"t1s_windows": 1024, "t1s_segments": 8, "t1s_tbptt": 32, "t1s_stateful_lr": 3e-3,
            "t1s_from_last": True}


class _Budget(Exception):
    """Raised from a callback to end training once its budget of seconds is spent."""


def zscored(values: np.ndarray) -> np.ndarray:
    """ETTh1 values z-scored per channel with the training rows' mean/std (P1)."""
    train = values[TRAIN[0]:TRAIN[1]]
    return (values - train.mean(axis=0)) / train.std(axis=0)


class _Evaluator:
    """P1 validation / test MSE of an RNNForecaster's module on the z-scored series."""

    def __init__(self, frame, n_channels: int) -> None:
        (arrays,) = frame_to_arrays(frame)
        self.prepared = [prepare_series(arrays, np.zeros(n_channels), np.ones(n_channels),
                                        calendar=False)]
        self.targets = list(range(n_channels))

    def mse(self, module, config: ForecasterConfig, part: tuple[int, int]) -> float:
        starts = np.arange(part[0], part[1] - LOOKBACK - HORIZON + 1)
        total, count = 0.0, 0
        was_training = module.training
        module.eval()
        with torch.no_grad():
            for begin in range(0, starts.size, 1024):
                rows = starts[begin:begin + 1024]
                batch = window_batch(self.prepared, np.stack([np.zeros_like(rows), rows], 1),
                                     LOOKBACK, HORIZON, self.targets, False)
                batch = batch.to(next(module.parameters()).device)
                point = module.head.point(_window_params(module, batch, config, self.targets))
                total += float(((point - batch.y) ** 2).sum())
                count += batch.y.numel()
        module.train(was_training)
        return total / count


def _config(stateful: bool, args) -> ForecasterConfig:
    train = TrainConfig(max_epochs=10**6, batch_size=args.t1s_segments if stateful else 256,
                        learning_rate=args.t1s_stateful_lr if stateful else 1e-3,
                        early_stopping_patience=None, seed=0,
                        device=getattr(args, "t1s_device", "cpu"),
                        amp=getattr(args, "t1s_amp", "none"))
    extra = (dict(stateful=True, tbptt_length=args.t1s_tbptt,
                  stateful_segments=args.t1s_segments, stateful_burn_in=LOOKBACK)
             if stateful else dict(max_windows_per_epoch=args.t1s_windows))
    return ForecasterConfig.from_flat(cell="lstm", hidden_size=128, num_layers=2, lookback=LOOKBACK,
                            horizon=HORIZON, decoder="direct", output="point", loss="mse",
                            calendar=False, scaler="none", train=train,
                            forecast_from_last=getattr(args, "t1s_from_last", True), **extra)


def ours(stateful: bool, train_frame, evaluator: _Evaluator, budget_s: float, eval_every_s: float,
         args) -> dict:
    """Train until ``budget_s`` training seconds; validation curve and best-val test MSE."""
    config = _config(stateful, args)
    forecaster = RNNForecaster(config)
    curve: list[dict] = []
    best: dict = {"val_mse": np.inf}
    clock = {"train": 0.0, "since_eval": 0.0, "mark": None, "positions": 0}

    def callback(event: str, payload: dict) -> None:
        now = time.perf_counter()
        if event == "epoch_start":
            clock["mark"] = now
            return
        if event != "epoch_end":
            return
        spent = now - clock["mark"]
        clock["train"] += spent
        clock["since_eval"] += spent
        if clock["since_eval"] >= eval_every_s or clock["train"] >= budget_s:
            clock["since_eval"] = 0.0
            module = forecaster.module_
            value = evaluator.mse(module, config, VAL)
            curve.append({"train_s": clock["train"], "epoch": payload["epoch"],
                          "val_mse": value})
            print(f"T1s ours {'stateful' if stateful else 'stateless'}: "
                  f"{clock['train']:.1f}s val {value:.4f}", file=sys.stderr, flush=True)
            if value < best["val_mse"]:
                best.update(val_mse=value, state=copy.deepcopy(module.state_dict()),
                            train_s=clock["train"], epoch=payload["epoch"])
        if clock["train"] >= budget_s:
            raise _Budget

    counted = _count_positions(clock)
    with counted, contextlib.suppress(_Budget):
        forecaster.fit(train_frame, callback=callback)
    module = forecaster.module_
    module.load_state_dict(best["state"])
    return {"curve": curve, "best_val_mse": best["val_mse"], "best_train_s": best["train_s"],
            "best_epoch": best["epoch"], "train_s": clock["train"],
            "test_mse_at_best_val": evaluator.mse(module.cpu(), config, TEST),
            "supervised_positions": clock["positions"],
            "supervised_positions_per_s": clock["positions"] / clock["train"],
            "config": {"stateful": stateful, "hidden_size": 128,
                       "forecast_from_last": config.decoder.forecast_from_last, "num_layers": 2,
                       "batch_size": config.train.batch_size,
                       "learning_rate": config.train.learning_rate,
                       **({"tbptt_length": config.tbptt.length,
                           "stateful_segments": config.tbptt.segments,
                           "stateful_burn_in": config.tbptt.burn_in} if stateful else
                          {"max_windows_per_epoch": config.max_windows_per_epoch})}}


@contextlib.contextmanager
def _count_positions(clock: dict):
    """Count supervised positions of every training step (wraps ``rnn.fit_module``)."""
    import recurra.forecasting.rnn as rnn

    original = rnn.fit_module

    def fit_module(module, step_fn, *args, **kwargs):
        def step(model, batch, *rest):
            if model.training:
                mask = batch.y_observed
                clock["positions"] += int(mask.reshape(*mask.shape[:-2], -1).any(-1).sum())
            return step_fn(model, batch, *rest)
        return original(module, step, *args, **kwargs)

    rnn.fit_module = fit_module
    try:
        yield
    finally:
        rnn.fit_module = original


def neuralforecast(values: np.ndarray, channels: list[str], budget_s: float,
                   val_check_steps: int) -> dict:
    """NeuralForecast LSTM (hidden 128, 2 layers, MSE) on rows [0, 11520) with its own
    validation on the last 2,880 rows (= the P1 validation windows); test MSE via
    ``predict`` with every test window as its own series, best-validation weights."""
    try:
        with contextlib.redirect_stdout(sys.stderr):
            import neuralforecast as nf_package
            import pandas as pd
            import pytorch_lightning as lightning
            from neuralforecast import NeuralForecast
            from neuralforecast.losses.pytorch import MSE
            from neuralforecast.models import LSTM
    except ImportError as error:
        return {"status": f"not installed ({error})"}
    stamps = pd.date_range("2016-07-01", periods=VAL[1], freq="h")
    data = pd.concat([pd.DataFrame({"unique_id": c, "ds": stamps, "y": values[:VAL[1], j]})
                      for j, c in enumerate(channels)], ignore_index=True)
    curve: list[dict] = []
    best: dict = {"val_mse": np.inf}
    clock = {"train": 0.0, "start": None, "val_start": None, "channel_windows": 0}

    class Timer(lightning.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if clock["start"] is None:
                clock["start"] = time.perf_counter()

        def on_validation_start(self, trainer, pl_module):
            if clock["start"] is not None:
                clock["val_start"] = time.perf_counter()

        def on_validation_end(self, trainer, pl_module):
            if clock["val_start"] is None:
                return
            now = time.perf_counter()
            clock["train"] += clock["val_start"] - clock["start"]
            clock["start"] = now  # training resumes after validation
            clock["val_start"] = None
            value = float(trainer.callback_metrics["ptl/val_loss"])
            curve.append({"train_s": clock["train"], "step": trainer.global_step,
                          "val_mse": value})
            print(f"T1s NF LSTM: {clock['train']:.1f}s val {value:.4f}", file=sys.stderr,
                  flush=True)
            if value < best["val_mse"]:
                best.update(val_mse=value, state=copy.deepcopy(pl_module.state_dict()),
                            train_s=clock["train"], step=trainer.global_step)
            if clock["train"] >= budget_s:
                trainer.should_stop = True

    model = LSTM(h=HORIZON, input_size=LOOKBACK, encoder_hidden_size=128, encoder_n_layers=2,
                 loss=MSE(), valid_loss=MSE(), max_steps=10**6, batch_size=len(channels),
                 windows_batch_size=256, scaler_type="standard", val_check_steps=val_check_steps,
                 random_seed=0, accelerator="cpu", devices=1, logger=False,
                 enable_progress_bar=False, enable_checkpointing=False,
                 enable_model_summary=False, callbacks=[Timer()])

    def count(module, args):
        if module.training:
            clock["channel_windows"] += int(args[0]["insample_y"].shape[0])

    model.register_forward_pre_hook(count)
    forecaster = NeuralForecast(models=[model], freq="h")
    with contextlib.redirect_stdout(sys.stderr):
        forecaster.fit(data, val_size=VAL[1] - TRAIN[1])
    trained = forecaster.models[0]
    trained.load_state_dict(best["state"])
    test_mse = _nf_test_mse(forecaster, values, channels, pd)
    return {"status": "ran", "version": nf_package.__version__, "curve": curve,
            "best_val_mse": best["val_mse"], "best_train_s": best["train_s"],
            "best_step": best["step"], "train_s": clock["train"],
            "test_mse_at_best_val": test_mse,
            "channel_windows": clock["channel_windows"],
            "supervised_positions_per_s": clock["channel_windows"] / len(channels)
            / clock["train"],
            "config": {"encoder_hidden_size": 128, "encoder_n_layers": 2, "loss": "MSE",
                       "windows_batch_size": 256, "scaler_type": "standard",
                       "val_check_steps": val_check_steps, "learning_rate": 1e-3}}


def _nf_test_mse(forecaster, values: np.ndarray, channels: list[str], pd) -> float:
    starts = np.arange(TEST[0], TEST[1] - LOOKBACK - HORIZON + 1)
    stamps = pd.date_range("2016-07-01", periods=LOOKBACK, freq="h")
    errors = []
    for begin in range(0, starts.size, 512):
        part = starts[begin:begin + 512]
        frames = [pd.DataFrame({"unique_id": f"w{s:05d}_{j}", "ds": stamps,
                                "y": values[s:s + LOOKBACK, j]})
                  for s in part for j in range(len(channels))]
        with contextlib.redirect_stdout(sys.stderr):
            forecast = forecaster.predict(df=pd.concat(frames, ignore_index=True))
        column = [c for c in forecast.columns if c not in ("unique_id", "ds")][0]
        forecast = forecast.sort_values(["unique_id", "ds"])
        predicted = forecast[column].to_numpy().reshape(part.size, len(channels), HORIZON)
        truth = np.stack([values[s + LOOKBACK:s + LOOKBACK + HORIZON].T for s in part])
        errors.append(((predicted - truth) ** 2).ravel())
    return float(np.concatenate(errors).mean())


def seconds_to_level(curve: list[dict], level: float) -> float | None:
    """Training seconds at the first evaluation with val_mse <= ``level`` (None: never)."""
    return next((point["train_s"] for point in curve if point["val_mse"] <= level), None)


def t1s(values: np.ndarray, channels: list[str], frame_of, args) -> dict:
    """The three trainers side by side (``frame_of(values)`` makes the contract frame)."""
    z = zscored(values)
    evaluator = _Evaluator(frame_of(z[:TEST[1]]), len(channels))
    frame = frame_of(z[TRAIN[0]:TRAIN[1]])
    result: dict = {"protocol": "P1 ETTh1 L96/H96, z-scored with train mean/std; MSE "
                                "training for all; 1 torch thread",
                    "method": __doc__.split("\n\n", 1)[1].replace("\n", " ")}
    result["neuralforecast_lstm"] = neuralforecast(z, channels, args.t1s_budget,
                                                   args.t1s_nf_val_steps)
    result["ours_stateless"] = ours(False, frame, evaluator, args.t1s_budget,
                                    args.t1s_eval_every, args)
    result["ours_stateful"] = ours(True, frame, evaluator, args.t1s_stateful_budget,
                                   args.t1s_eval_every, args)
    theirs = result["neuralforecast_lstm"].get("best_val_mse")
    if theirs is not None:
        level = 1.02 * theirs
        result["level_val_mse"] = level
        for name in ("neuralforecast_lstm", "ours_stateless", "ours_stateful"):
            result[name]["seconds_to_level"] = seconds_to_level(result[name]["curve"], level)
        base = result["neuralforecast_lstm"]["seconds_to_level"]
        for name in ("ours_stateless", "ours_stateful"):
            mine = result[name]["seconds_to_level"]
            result[name]["speedup_to_level_vs_neuralforecast"] = (
                base / mine if mine and base else None)
    stateless = result["ours_stateless"]["test_mse_at_best_val"]
    result["stateful_test_mse_vs_stateless"] = (
        result["ours_stateful"]["test_mse_at_best_val"] / stateless)
    result["goal"] = ("ours stateful reaches the level >= 3x sooner than NeuralForecast, "
                      "test MSE <= 1.02 x ours stateless")
    return result
