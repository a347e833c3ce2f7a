"""T3 of ``benchmarks/throughput.py``: streaming latency with ``--n-series`` fitted series,
one new point each per call, through the forecaster's ``update`` / ``predict``, its
:class:`recurra.forecasting.fleet.ForecasterFleet`, and the detectors per series
(the private per-series path) and as a :class:`recurra.anomaly.fleet.DetectorFleet`, the
batched path their ``update`` runs."""

from __future__ import annotations

import copy
import datetime as dt
import sys
import time

import numpy as np
import polars as pl

from recurra.data.arrays import rows_to_arrays
from recurra.data.schema import validate_frame
from recurra.forecasting.baselines import NaiveConfig, NaiveForecaster
from recurra.forecasting.config import EncoderConfig, TBPTTConfig
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig

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
        "series_id": np.repeat([f"s{i:04d}" for i in range(n_series)], n_channels * n_steps),
        "channel": np.tile(np.repeat([f"c{j}" for j in range(n_channels)], n_steps), n_series),
        "timestamp": np.tile(stamps, n_series * n_channels),
        "value": values.reshape(-1),
    }).with_columns(pl.col("timestamp").dt.replace_time_zone("UTC"))


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
