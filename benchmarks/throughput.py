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
from _throughput_t1 import (  # noqa: E402  (read_ett, windows_frame: also gpu_check.py's)
    BATCH,
    HIDDEN,
    HORIZON,
    LAYERS,
    LOOKBACK,
    QUANTILES,
    T1_ROWS,
    read_ett,
    t1,
    windows_frame,
)
from _throughput_t3 import streaming_latency  # noqa: E402

from recurra.forecasting.config import EncoderConfig  # noqa: E402
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster  # noqa: E402
from recurra.nn.train import TrainConfig  # noqa: E402

TRAIN, VAL, TEST = (0, 8640), (8544, 11520), (11424, 14400)


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


# int8 --------------------------------------------------------------------------------------
def quantization(csv: Path, quick: bool, repeats: int) -> dict:
    """Fit a hidden-128 LSTM and GRU (fixed small budget, early stopping on validation),
    then fp32 vs int8: test MSE (z-scored, P1 windows) and latencies."""
    from _latency import alternating_medians, module_latency

    from recurra.forecasting.quantize import (
        DEFAULT_LAYERS,
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
