"""Batched streaming for a stateful forecaster: one new row for every series per call.

The general path of ``RNNForecaster.update`` (:func:`recurra.forecasting.stream.advance`)
runs the network once for all series, but around that call it prepares each series in
Python and splits the batched recurrent state back into one tensor per series; for 1,000
series and one row each that Python work is about 95 % of the time.
:class:`ForecasterFleet` keeps the states of all series stacked (encoder state (L, S, H),
summaries (S, E), scalers (S, F) ...) and advances them with array operations and one
``module.encode`` call per row; :meth:`ForecasterFleet.predict` decodes every series at
once.  ``RNNForecaster.update`` goes through :func:`advance` here whenever
:func:`fleet_refusal` allows; the states equal the general path's within float32 rounding
(forecasts tested to 1e-5: the encoder runs one row at a time instead of over the chunk).

Internal (``benchmarks/throughput.py`` times it directly)::

    fleet = ForecasterFleet(forecaster)              # a fitted, stateful RNNForecaster
    fleet.update(timestamps, values)                 # (S,) datetime64, (S, F) channels_
    forecast = fleet.predict()                       # {"y_hat": (S, N, O), "q10": ...}
    fleet.write_back()                               # forecaster.update goes on from here
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recurra.data.arrays import fleet_row
from recurra.data.schema import RecurraError, SchemaError, check_fitted, quantile_column
from recurra.forecasting import stream
from recurra.forecasting.windows import calendar_features
from recurra.nn.state import cat_states, module_device, split_state

__all__: list[str] = []  # internal: RNNForecaster.update is the public way in


def fleet_refusal(forecaster: Any, arrays: list) -> str | None:
    """Why ``forecaster.update`` of the new rows ``arrays`` (one item per series) cannot
    go through the fleet (None when it can)."""
    config = forecaster.config
    interval = getattr(config.interval, "method", config.interval)
    if not (config.stateful and interval in ("model", "conformal")
            and getattr(config, "target_transform", "none") == "none"):
        return "not a stateful RNN with model/conformal intervals on levels"
    counts = {len(item.timestamps) for item in arrays}
    if len(counts) != 1:
        return "series with different numbers of new rows"
    if counts.pop() > len(arrays):
        return "more rows than series"
    if module_device(forecaster.module_).type != "cpu":
        return f"module on {module_device(forecaster.module_)}"
    return None


def advance(forecaster: Any, arrays: list) -> str:
    """Step every series of ``arrays`` (S items, K rows each) through a fleet, K calls;
    states written back.  Returns the path: ``"fleet: S series x K steps"``."""
    ids = [item.series_id for item in arrays]
    fleet = ForecasterFleet(forecaster, ids)
    stamps = np.stack([item.timestamps for item in arrays])                 # (S, K)
    values = np.stack([np.where(item.observed, item.values, np.nan)         # (S, K, F)
                       for item in arrays])            # in channels_ order (rows_to_arrays)
    for step in range(stamps.shape[1]):
        fleet.update(stamps[:, step], values[:, step])
    fleet.write_back()
    return f"fleet: {len(ids)} series x {stamps.shape[1]} steps"


class ForecasterFleet:
    """Stacked stream states of a fitted stateful :class:`recurra.forecasting.rnn.RNNForecaster`.

    Parameters
    ----------
    forecaster : fitted with ``stateful=True`` (any cell); not modified until
        :meth:`write_back`.
    series_ids : the series of the fleet, in the row order of :meth:`update`'s arrays
        (default: every series with a stream state, sorted).
    """

    def __init__(self, forecaster: Any, series_ids: list[str] | None = None) -> None:
        check_fitted(forecaster)
        if not forecaster.config.stateful:
            raise RecurraError("ForecasterFleet needs a forecaster fitted with stateful=True "
                               f"(got stateful={forecaster.config.stateful})")
        if getattr(forecaster.config, "target_transform", "none") != "none":
            raise RecurraError("ForecasterFleet steps scaled levels: a forecaster with "
                               f"target_transform {forecaster.config.target_transform!r} "
                               "streams through RNNForecaster.update instead")
        self.forecaster = forecaster
        self.series_ids_ = sorted(forecaster.state_) if series_ids is None \
            else list(series_ids)
        unknown = [s for s in self.series_ids_ if s not in forecaster.state_]
        if unknown:
            raise SchemaError(f"series_ids {unknown[:5]} are unknown to this forecaster")
        self.channels_ = list(forecaster.channels_)
        self.targets_ = [self.channels_.index(c) for c in forecaster.targets_]
        entries = [forecaster.state_[s] for s in self.series_ids_]
        scalers = [stream._scaler(e, forecaster.scaler_, s)
                   for e, s in zip(entries, self.series_ids_, strict=True)]
        self.center_ = np.stack([np.asarray(c, np.float64) for c, _ in scalers])  # (S, F)
        self.scale_ = np.stack([np.asarray(s, np.float64) for _, s in scalers])
        self.origin_ = np.array([e["origin"] for e in entries], "datetime64[us]")   # (S,)
        self.last_time_ = np.array([e["last_time"] for e in entries], "datetime64[us]")
        self.time_scale_ = np.array([e["time_scale"] for e in entries], np.float64)
        self.filled_last_ = np.stack([e["filled_last"] for e in entries]).astype(np.float64)
        self.last_observed_ = np.stack([e["last_observed"] for e in entries]).astype(
            np.float64)
        self.encoder_ = cat_states([e["encoder"] for e in entries])
        self.summary_ = torch.cat([e["summary"] for e in entries])                  # (S, E)
        statics = [e.get("static") for e in entries]
        self.static_ = None if statics[0] is None else torch.from_numpy(np.stack(statics))

    def update(self, timestamps: np.ndarray, values: np.ndarray) -> ForecasterFleet:
        """Advance every series by one row (the same states as ``forecaster.update``).

        Parameters
        ----------
        timestamps : (S,) ``datetime64`` (UTC), each after its series' last row.
        values : (S, F) in the order of ``channels_`` (NaN = not observed).
        """
        stamps, values = fleet_row(timestamps, values, self.series_ids_, self.channels_,
                                   self.last_time_)
        observed = np.isfinite(values)
        elapsed = ((stamps - self.origin_) / np.timedelta64(1, "s")).astype(
            np.float64) / self.time_scale_
        delta = elapsed[:, None] - self.last_observed_
        self.last_observed_ = np.maximum(self.last_observed_,
                                         np.where(observed, elapsed[:, None], -np.inf))
        zeroed = np.where(observed, (values - self.center_) / self.scale_, 0.0)
        filled = np.where(observed, zeroed, self.filled_last_).astype(np.float32)
        self.filled_last_ = filled.astype(np.float64)
        self.last_time_ = stamps
        config = self.forecaster.config
        covariates = calendar_features(stamps) if config.calendar \
            else np.zeros((len(stamps), 0), np.float32)
        inputs = zeroed.astype(np.float32) if config.encoder.cell == "grud" else filled
        with torch.no_grad():
            output, self.encoder_ = self.forecaster.module_.encode(
                torch.from_numpy(inputs[:, None]), torch.from_numpy(observed[:, None]),
                torch.from_numpy(delta.astype(np.float32)[:, None]), self.encoder_,
                torch.from_numpy(covariates[:, None]))
        self.summary_ = output[:, -1]
        return self

    def predict(self, horizon: int | None = None) -> dict[str, np.ndarray]:
        """Forecasts of every series from its current state, in original units.

        Returns
        -------
        ``{"timestamp": (S, N) datetime64, "y_hat": (S, N, O), quantile_column(q): (S, N, O)
        ...}`` with O = the forecaster's ``targets_`` (the numbers of ``predict()``).
        """
        forecaster, config = self.forecaster, self.forecaster.config
        horizon = config.horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not (
                1 <= horizon <= config.horizon):
            raise RecurraError(f"horizon ({horizon!r}) must be an integer in [1, "
                               f"{config.horizon}]")
        spacing = np.round(self.time_scale_ * 1e6).astype(np.int64).astype("timedelta64[us]")
        future = self.last_time_[:, None] + spacing[:, None] * np.arange(1, config.horizon + 1)
        covariates = (calendar_features(future.reshape(-1)).reshape(*future.shape, -1)
                      if config.calendar else np.zeros((*future.shape, 0), np.float32))
        last = torch.from_numpy(self.filled_last_[:, self.targets_].astype(np.float32))
        module = forecaster.module_.eval()
        with torch.no_grad():
            params = module.decode(self.summary_, last, torch.from_numpy(covariates),
                                   memory=None, static=self.static_)
        params = params[:, :horizon].float()
        center = self.center_[:, None, self.targets_]
        scale = self.scale_[:, None, self.targets_]
        result = {"timestamp": future[:, :horizon],
                  "y_hat": module.head.point(params).double().numpy() * scale + center}
        levels = tuple(config.quantiles)
        bands = module.head.quantiles(params, levels).double().numpy()
        interval = getattr(forecaster, "interval_", None)
        if interval is not None and interval.config.method == "conformal":
            bands = interval.apply(self.series_ids_, bands)  # per-series offsets
        bands = bands * scale[..., None] + center[..., None]
        result.update({quantile_column(q): bands[..., j] for j, q in enumerate(levels)})
        return result

    def write_back(self) -> Any:
        """Store the fleet's states in ``forecaster.state_``; returns the forecaster."""
        states = dict(self.forecaster.state_)
        # one copy and one split per array: the rows below are views of them
        filled, observed = self.filled_last_.copy(), self.last_observed_.copy()
        encoders, summaries = split_state(self.encoder_), self.summary_.split(1)
        for index, series_id in enumerate(self.series_ids_):
            states[series_id] = {
                **states[series_id], "last_time": self.last_time_[index],
                "filled_last": filled[index], "last_observed": observed[index],
                "encoder": encoders[index], "summary": summaries[index]}
        self.forecaster.state_ = states
        return self.forecaster
