"""P3: forecasting PM2.5 with missing inputs, Beijing multi-site air quality.

Protocol (BENCHMARKS.md, P3): hourly; inputs PM2.5, PM10, SO2, NO2, CO, O3, TEMP, PRES, DEWP,
RAIN, WSPM with their natural gaps kept missing; ``--extra-missing p`` additionally hides a
fraction p of the observed input values (seeded MCAR; targets are never hidden). Predict the
next 24 h of PM2.5 from the last 72 h. Split per station by time 70/10/20 (validation and
test windows take their 72 h look-back from the rows before them). MAE in ug/m3 on observed
targets only, over every test window (stride 1).

Models (one global model over all stations, inputs z-scored with the training rows):
``grud`` (GRU-D encoder, carried state seeded with the last value seen before the window, +
a linear head to the 24 steps), ``lstm_ffill`` (LSTM on forward-filled inputs + mask
channels, same head), ``seasonal_naive_24`` (PM2.5 of the same hour the day before, forward
filled), ``last_observation`` (the last PM2.5 seen, repeated).

Usage::

    python benchmarks/missing_air.py --csv ../shared/data/air/PRSA_Data_*.csv [--quick]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import polars as pl
import torch
from torch import nn

sys.path[:0] = [str(Path(__file__).resolve().parents[1]), str(Path(__file__).resolve().parent)]

import _common  # noqa: E402
from _common import SHARED_DATA, write_result  # noqa: E402

from recurra.data.arrays import compute_delta, forward_fill  # noqa: E402
from recurra.nn.grud import GRUD, GRUDState  # noqa: E402
from recurra.nn.train import TrainConfig, fit_module  # noqa: E402

CHANNELS = ("PM2.5", "PM10", "SO2", "NO2", "CO", "O3", "TEMP", "PRES", "DEWP", "RAIN", "WSPM")
TARGET = 0  # PM2.5
LOOKBACK, HORIZON, SEASON = 72, 24, 24
MODELS = ("grud", "lstm_ffill", "seasonal_naive_24", "last_observation")


@dataclass
class Series:
    """All stations end to end (N rows); windows never cross a station border."""

    values: np.ndarray      # (N, F) raw inputs after extra hiding, NaN missing
    observed: np.ndarray    # (N, F) input mask
    delta: np.ndarray       # (N, F) hours since last observed input
    target: np.ndarray      # (N,) raw PM2.5 before any extra hiding, NaN missing
    splits: dict[str, np.ndarray]  # window start indices per split


def read_station(path: str | Path, n_rows: int | None = None) -> np.ndarray:
    """(T, 11) float64 inputs of one station file, NaN where the file says NA."""
    frame = pl.read_csv(path, null_values=["NA"], n_rows=n_rows,
                        schema_overrides={c: pl.Float64 for c in CHANNELS})
    frame = frame.sort(["year", "month", "day", "hour"])
    return frame.select(CHANNELS).to_numpy().astype(np.float64)


def build_series(stations: list[np.ndarray], extra_missing: float, seed: int) -> Series:
    """Hide extra inputs (MCAR), compute deltas per station, list the window starts."""
    rng = np.random.default_rng(seed)
    values, observed, delta, target = [], [], [], []
    splits: dict[str, list] = {"train": [], "val": [], "test": []}
    offset = 0
    for raw in stations:
        seen = ~np.isnan(raw)
        hidden = seen & (rng.random(raw.shape) < extra_missing)
        seen = seen & ~hidden
        values.append(np.where(seen, raw, np.nan))
        observed.append(seen)
        delta.append(compute_delta(np.arange(len(raw), dtype=np.float64), seen))
        target.append(raw[:, TARGET])
        n = len(raw)
        train_end, val_end = int(0.7 * n), int(0.8 * n)
        borders = {"train": (0, train_end), "val": (train_end, val_end), "test": (val_end, n)}
        for name, (start, stop) in borders.items():
            first = max(start - LOOKBACK, 0) if name != "train" else 0
            # window start s: look-back [s, s+72), horizon [s+72, s+96) inside [.., stop)
            starts = np.arange(first, stop - LOOKBACK - HORIZON + 1)
            starts = starts[starts + LOOKBACK >= start]
            splits[name].append(starts + offset)
        offset += n
    return Series(np.concatenate(values), np.concatenate(observed), np.concatenate(delta),
                  np.concatenate(target), {k: np.concatenate(v) for k, v in splits.items()})


def tensors_for(series: Series) -> dict[str, torch.Tensor]:
    """Scaled inputs (train rows' statistics), forward fill, and targets as tensors."""
    train_rows = np.unique(series.splits["train"][:, None] + np.arange(LOOKBACK + HORIZON))
    mean = np.nanmean(series.values[train_rows], axis=0)
    std = np.nanstd(series.values[train_rows], axis=0)
    std = np.where(std > 1e-6, std, 1.0)
    scaled = (series.values - mean) / std
    ffill = forward_fill(scaled, series.observed)  # crosses station borders: seeds only
    target = (series.target - mean[TARGET]) / std[TARGET]
    return {"x": torch.from_numpy(np.nan_to_num(scaled).astype(np.float32)),
            "observed": torch.from_numpy(series.observed),
            "delta": torch.from_numpy(series.delta.astype(np.float32)),
            "ffill": torch.from_numpy(ffill.astype(np.float32)),
            "seen": torch.from_numpy(np.maximum.accumulate(series.observed, axis=0)),
            "y": torch.from_numpy(np.nan_to_num(target).astype(np.float32)),
            "y_observed": torch.from_numpy(~np.isnan(target)),
            "scale": torch.tensor([mean[TARGET], std[TARGET]])}


def gather(tensors: dict[str, torch.Tensor], starts: np.ndarray) -> dict[str, torch.Tensor]:
    """One batch of windows: inputs (B, 72, F), targets (B, 24), carried seeds (B, F)."""
    starts_t = torch.from_numpy(starts)
    past = starts_t[:, None] + torch.arange(LOOKBACK)
    future = starts_t[:, None] + LOOKBACK + torch.arange(HORIZON)
    before = (starts_t - 1).clamp(min=0)
    has_before = (starts_t > 0)[:, None]
    return {"x": tensors["x"][past], "observed": tensors["observed"][past],
            "delta": tensors["delta"][past], "ffill": tensors["ffill"][past],
            "x_last": tensors["ffill"][before],
            "seen": tensors["seen"][before] & has_before,
            "y": tensors["y"][future], "y_observed": tensors["y_observed"][future]}


class Forecaster(nn.Module):
    """GRU-D or LSTM encoder + a linear head from the last hidden state to 24 steps."""

    def __init__(self, kind: str, n_channels: int, hidden: int) -> None:
        super().__init__()
        self.kind = kind
        if kind == "grud":
            self.encoder = GRUD(n_channels, hidden)
        else:
            self.encoder = nn.LSTM(2 * n_channels, hidden, batch_first=True)
        self.head = nn.Linear(hidden, HORIZON)

    def forward(self, batch: dict[str, torch.Tensor]) -> torch.Tensor:
        if self.kind == "grud":
            size = batch["x"].shape[0]
            hidden = torch.zeros(1, size, self.encoder.hidden_size, device=batch["x"].device)
            state = GRUDState(hidden, batch["x_last"], batch["seen"])
            output, _ = self.encoder(batch["x"], batch["observed"], batch["delta"], state)
        else:
            inputs = torch.cat([batch["ffill"], batch["observed"].float()], dim=-1)
            output, _ = self.encoder(inputs)
        return self.head(output[:, -1])


def masked_l1(prediction: torch.Tensor, batch: dict[str, torch.Tensor]) -> torch.Tensor | None:
    mask = batch["y_observed"]
    if not mask.any():
        return None
    return (prediction - batch["y"]).abs()[mask].mean()


def train_model(kind: str, tensors: dict, series: Series, *, hidden: int, epochs: int,
                stride: int, batch_size: int, seed: int, device: str,
                patience: int = 4) -> tuple[nn.Module, dict]:
    """Fit with recurra.nn.train.fit_module; each epoch takes every ``stride``-th training
    window from a random offset (all windows are seen over the epochs)."""
    torch.manual_seed(seed)
    model = Forecaster(kind, tensors["x"].shape[1], hidden)
    rng = np.random.default_rng(seed)
    train_starts = series.splits["train"]

    def train_batches():
        chosen = rng.permutation(train_starts[rng.integers(stride)::stride])
        return [gather(tensors, chosen[i:i + batch_size])
                for i in range(0, len(chosen), batch_size)]

    val_starts = series.splits["val"][::HORIZON]
    val = [gather(tensors, val_starts[i:i + 1024]) for i in range(0, len(val_starts), 1024)]
    config = TrainConfig(max_epochs=epochs, batch_size=batch_size, learning_rate=2e-3,
                         early_stopping_patience=patience, seed=seed, device=device,
                         clip_norm=1.0)
    started = time.perf_counter()
    result = fit_module(model, lambda module, batch: masked_l1(module(batch), batch),
                        train_batches, lambda: val, config)
    return model, {"train_s": time.perf_counter() - started, "epochs_run": result.epochs_run,
                   "best_epoch": result.best_epoch,
                   "seconds_per_epoch": float(np.mean([h["seconds"] for h in result.history]))}


def test_mae(predict, tensors: dict, starts: np.ndarray) -> float:
    """MAE in ug/m3 over observed targets of every test window (predict: batch -> scaled)."""
    mean, std = tensors["scale"].tolist()
    total, count = 0.0, 0
    for i in range(0, len(starts), 2048):
        batch = gather(tensors, starts[i:i + 2048])
        with torch.no_grad():
            prediction = predict(batch)
        error = ((prediction - batch["y"]) * std).abs()[batch["y_observed"]]
        total, count = total + float(error.sum()), count + int(error.numel())
    return total / max(count, 1)


def seasonal_naive(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """PM2.5 of the same hour the day before (forward-filled input), scaled units."""
    return batch["ffill"][:, LOOKBACK - SEASON:, TARGET]


def last_observation(batch: dict[str, torch.Tensor]) -> torch.Tensor:
    return batch["ffill"][:, -1:, TARGET].expand(-1, HORIZON)


def run_level(stations: list[np.ndarray], extra_missing: float, args) -> dict:
    """Every model at one extra-missing level."""
    series = build_series(stations, extra_missing, args.seed)
    tensors = tensors_for(series)
    test_starts = series.splits["test"]
    level: dict = {"mae": {}, "timing": {}}
    for name, predict in (("seasonal_naive_24", seasonal_naive),
                          ("last_observation", last_observation)):
        level["mae"][name] = test_mae(predict, tensors, test_starts)
    for kind in ("grud", "lstm_ffill"):
        model, info = train_model(kind, tensors, series, hidden=args.hidden, epochs=args.epochs,
                                  stride=args.stride, batch_size=args.batch_size,
                                  seed=args.seed, device="cpu", patience=args.patience)
        model.eval()
        started = time.perf_counter()
        level["mae"][kind] = test_mae(model, tensors, test_starts)
        info["predict_s"] = time.perf_counter() - started
        level["timing"][kind] = info
        print(f"p={extra_missing} {kind} mae={level['mae'][kind]:.3f} {info}", file=sys.stderr,
              flush=True)
    level["input_missing_share"] = float(1 - series.observed.mean())
    level["n_test_windows"] = int(len(test_starts))
    return level


def main(argv: list[str] | None = None) -> dict:
    folder = SHARED_DATA / "air"
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--csv", nargs="+", default=sorted(str(p) for p in
                                                           folder.glob("PRSA_Data_*.csv")))
    parser.add_argument("--extra-missing", type=float, nargs="+", default=[0.0, 0.3, 0.6])
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--hidden", type=int, default=64)
    parser.add_argument("--stride", type=int, default=12,
                        help="train on every stride-th window per epoch (random offset)")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1: measured 20x faster than 2 on the shared, "
                        "oversubscribed 2-core CPU; small recurrent matmuls gain nothing)")
    parser.add_argument("--patience", type=int, default=4, help="early-stopping patience")
    parser.add_argument("--out", default=None, help="write the JSON here instead of "
                        "benchmarks/results (exploratory runs)")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 station, 2000 rows")
    _common.add_write_flag(parser)
    args = parser.parse_args(argv)
    _common.keep_out_of_results(args.write)
    for p in args.extra_missing:
        if not 0.0 <= p < 1.0:
            parser.error(f"--extra-missing ({p}) must be in [0, 1)")
    torch.set_num_threads(args.threads)
    n_rows = 2000 if args.quick else None
    paths = args.csv[:1] if args.quick else args.csv
    if args.quick:
        args.epochs, args.hidden, args.stride = 1, 8, 96
    stations = [read_station(path, n_rows) for path in paths]
    levels = {}
    for p in args.extra_missing:
        levels[str(p)] = run_level(stations, p, args)
        if not args.quick and not args.out:  # progress for long runs; the final file replaces it
            partial = _common.RESULTS_DIR / "missing_air_partial.json"
            partial.write_text(json.dumps({k: v["mae"] for k, v in levels.items()}) + "\n")
    result: dict = {"mae": {p: level["mae"] for p, level in levels.items()}}
    for p, level in levels.items():
        lstm, grud = level["mae"]["lstm_ffill"], level["mae"]["grud"]
        result.setdefault("grud_gain_vs_lstm_ffill", {})[p] = (lstm - grud) / lstm
    result.update({
        "train_s": float(sum(t["train_s"] for lv in levels.values()
                             for t in lv["timing"].values())),
        "predict_s": float(sum(t["predict_s"] for lv in levels.values()
                               for t in lv["timing"].values())),
        "timing": {p: level["timing"] for p, level in levels.items()},
        "input_missing_share": {p: level["input_missing_share"] for p, level in levels.items()},
        "n_test_windows": next(iter(levels.values()))["n_test_windows"],
        "stations": [Path(p).name.split("_")[2] for p in paths],
        "epochs": args.epochs, "early_stopping_patience": args.patience, "hidden": args.hidden,
        "stride": args.stride, "batch_size": args.batch_size, "seed": args.seed,
        "lookback": LOOKBACK, "horizon": HORIZON, "quick": args.quick,
        "target": "GRU-D MAE >= 5 % below LSTM+ffill at p=0.6",
    })
    if args.out:
        Path(args.out).write_text(json.dumps(result) + "\n")
        print(json.dumps(result), flush=True)
        return result
    write_result("missing_air_quick" if args.quick else "missing_air", result, device="cpu")
    return result


if __name__ == "__main__":
    main()
