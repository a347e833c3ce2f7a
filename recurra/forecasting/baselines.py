"""Baseline forecasters: repeat-last, seasonal naive and a ridge regression on lags.

All three follow the estimator contract of ``ARCHITECTURE.md``::

    fc = SeasonalNaiveForecaster(SeasonalNaiveConfig(season=24, horizon=24)).fit(train)
    forecast = fc.predict()              # forecast frame with y_hat, q10, q90
    fc.update(new_rows)                  # continues after the new rows: the forecast

Every (series, channel) pair is forecast on its own (channel independence); the linear
model is *global*: one ridge regression shared by every series and channel, fitted on
windows normalised by their last value (or mean), as DLinear/RevIN do.  Prediction
intervals are split-conformal offsets of the h-step errors made on the training (or
``validation``) windows, per (series, channel, step), through
:mod:`recurra.forecasting.intervals`: a pair with fewer than ``MIN_ERRORS`` errors uses the
errors of its channel over every series (then of everything), each series' errors divided
by its mean absolute error before pooling and the offsets multiplied back by the pair's
own (``interval_.fallback_`` names those pairs).  Missing values are forward-filled in the
inputs (the training mean before the first observation); training errors and the ridge
targets use observed targets only.

Size: ~550 lines: the three baselines share one base class, its per-series row
machinery (the stored tails that ``update`` extends) and the calibration of their
intervals; each forecaster itself is a dozen lines at the end.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import polars as pl

from recurra.data.arrays import forward_fill, frame_to_arrays
from recurra.data.schema import (
    CHANNEL,
    FORECAST_SCHEMA,
    ISSUED_AT,
    OBSERVED,
    SERIES_ID,
    STEP,
    TIMESTAMP,
    TIMESTAMP_DTYPE,
    VALUE,
    Y_HAT,
    SchemaError,
    check_fitted,
    contract,
    quantile_column,
    validate_frame,
)
from recurra.forecasting.intervals import IntervalCalibrator, IntervalConfig
from recurra.nn.persistence import load_estimator, save_estimator

NORMALIZATIONS = ("none", "last", "mean")
MIN_ERRORS = 20  # fewer training errors than this for a (series, channel): pooled fallback


@dataclass(frozen=True)
class BaselineConfig:
    """Options shared by the baselines.

    horizon : steps ahead the model is fitted (and its intervals calibrated) for.
    quantiles : levels of the interval columns (``q10``, ``q90`` by default).
    max_origins : at most this many training windows per series (evenly spaced) for the
        error quantiles and the ridge fit; ``None`` keeps them all.
    """

    horizon: int = 24
    quantiles: tuple[float, ...] = (0.1, 0.9)
    max_origins: int | None = 2000

    def __post_init__(self) -> None:
        if not isinstance(self.horizon, int) or self.horizon < 1:
            raise SchemaError(f"`horizon` ({self.horizon!r}) must be an integer >= 1")
        for level in self.quantiles:
            if not 0.0 < float(level) < 1.0:
                raise SchemaError(f"`quantiles` ({self.quantiles}) must lie strictly "
                                  f"between 0 and 1; {level} does not")
        if self.max_origins is not None and self.max_origins < 1:
            raise SchemaError(f"`max_origins` ({self.max_origins}) must be >= 1 or None")
        object.__setattr__(self, "quantiles", tuple(sorted(float(q) for q in self.quantiles)))


@dataclass(frozen=True)
class NaiveConfig(BaselineConfig):
    """Repeat the last observed value."""


@dataclass(frozen=True)
class SeasonalNaiveConfig(BaselineConfig):
    """Repeat the last observed season: ``y_hat[t + h] = y[t + h - season * k]``.

    season : the period in steps (24 for hourly data with a daily cycle).
    """

    season: int = 24

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.season, int) or self.season < 1:
            raise SchemaError(f"`season` ({self.season!r}) must be an integer >= 1")


@dataclass(frozen=True)
class LinearLagConfig(BaselineConfig):
    """A ridge regression from ``n_lags`` past values to ``horizon`` future ones (direct).

    n_lags : look-back window length.
    alpha : ridge penalty (scikit-learn ``Ridge(alpha)``).
    normalize : ``"last"`` subtracts the window's last value from inputs and targets (the
        model learns a correction to repeat-last), ``"mean"`` the window mean, ``"none"``
        nothing.
    fit_intercept : learn a constant per step (a drift after ``"last"`` normalisation);
        ``False`` shrinks towards the normalisation level itself (repeat-last / the mean).
    """

    n_lags: int = 96
    alpha: float = 1.0
    normalize: str = "last"
    fit_intercept: bool = True
    max_origins: int | None = None

    def __post_init__(self) -> None:
        super().__post_init__()
        if not isinstance(self.n_lags, int) or self.n_lags < 1:
            raise SchemaError(f"`n_lags` ({self.n_lags!r}) must be an integer >= 1")
        if not self.alpha >= 0:
            raise SchemaError(f"`alpha` ({self.alpha}) must be >= 0")
        if self.normalize not in NORMALIZATIONS:
            raise SchemaError(f"`normalize` ({self.normalize!r}) must be one of "
                              f"{list(NORMALIZATIONS)}")


class _BaselineForecaster:
    """Shared fit/predict/update/save; subclasses define the point forecast of windows."""

    config_class: ClassVar[type] = BaselineConfig

    def __init__(self, config: BaselineConfig | None = None) -> None:
        self.config = config if config is not None else self.config_class()
        if not isinstance(self.config, self.config_class):
            raise SchemaError(f"`config` must be a {self.config_class.__name__}, got "
                              f"{type(self.config).__name__}")
        self.state_: dict[str, dict[str, Any]] | None = None
        self.interval_: IntervalCalibrator | None = None

    # -- to define in subclasses --------------------------------------------------------
    @property
    def context_length(self) -> int:
        """Rows of history one forecast needs."""
        raise NotImplementedError

    def _fit_windows(self, inputs: np.ndarray, targets: np.ndarray,
                     observed: np.ndarray) -> None:
        """Learn parameters from (N, L) filled inputs and (N, H) targets with their mask."""

    def predict_windows(self, inputs: np.ndarray, horizon: int | None = None) -> np.ndarray:
        """Point forecasts of windows.

        Parameters
        ----------
        inputs : (N, L) or (N, L, F) filled histories (no NaN), L >= ``context_length``;
            the last row is the forecast origin.
        horizon : steps ahead (default ``config.horizon``).

        Returns
        -------
        (N, H) or (N, H, F) point forecasts.
        """
        inputs = np.asarray(inputs, dtype=np.float64)
        if inputs.ndim == 3:
            n_windows, length, n_channels = inputs.shape
            flat = inputs.transpose(0, 2, 1).reshape(n_windows * n_channels, length)
            result = self.predict_windows(flat, horizon)
            return result.reshape(n_windows, n_channels, -1).transpose(0, 2, 1)
        horizon = self._check_horizon(horizon)
        if inputs.ndim != 2 or inputs.shape[1] < self.context_length:
            raise SchemaError(f"`inputs` of shape {inputs.shape} must be (N, L) or (N, L, F) "
                              f"with L >= {self.context_length}")
        return self._forecast(inputs[:, -self.context_length:], horizon)

    def _forecast(self, inputs: np.ndarray, horizon: int) -> np.ndarray:
        raise NotImplementedError

    # -- public API ---------------------------------------------------------------------
    def fit(self, frame: Any, validation: Any = None) -> _BaselineForecaster:
        """Fit on a contract frame; ``validation`` (optional) calibrates the intervals.

        Every series needs at least ``context_length + horizon`` rows.
        """
        frame = contract(frame, name="train")  # checked once; frame_to_arrays skips it
        if frame.height == 0:
            raise SchemaError("train: the frame has no rows")
        arrays = frame_to_arrays(frame)
        windows = [self._series_windows(a, name="train") for a in arrays]
        self._fit_windows(np.concatenate([w[1] for w in windows]),
                          np.concatenate([w[2] for w in windows]),
                          np.concatenate([w[3] for w in windows]))
        calibration, calibration_arrays = windows, arrays
        if validation is not None:
            calibration_arrays = frame_to_arrays(contract(validation, name="validation"))
            calibration = [self._series_windows(a, name="validation")
                           for a in calibration_arrays]
        self.interval_ = self._calibrate(calibration, calibration_arrays)
        self.state_ = {a.series_id: self._series_state(a) for a in arrays}
        return self

    def predict(self, frame: Any = None, horizon: int | None = None) -> pl.DataFrame:
        """Forecast frame (``FORECAST_SCHEMA`` + quantile columns).

        frame : history to forecast from (each series' last ``context_length`` rows are
            used); ``None`` continues after the training data / the last ``update``.
        horizon : steps ahead, at most ``config.horizon`` (default).
        """
        check_fitted(self, "state_")
        horizon = self._check_horizon(horizon)
        states = self.state_
        if frame is not None:
            arrays = frame_to_arrays(contract(frame, name="frame"))
            states = {a.series_id: self._series_state(a, name="frame") for a in arrays}
        parts = [self._series_forecast(sid, state, horizon) for sid, state in states.items()]
        if not parts:
            return pl.DataFrame(schema=self._output_schema())
        return pl.concat(parts).sort([SERIES_ID, CHANNEL, STEP])

    def update(self, new_rows: Any, horizon: int | None = None) -> pl.DataFrame:
        """Append rows after each series' last timestamp (earlier rows are ignored) and
        return the forecast from there: ``predict(horizon=horizon)`` right after."""
        check_fitted(self, "state_")
        horizon = self._check_horizon(horizon)
        frame = validate_frame(new_rows, name="new rows")
        for arrays in _rows_by_series(frame):
            state = self.state_.get(arrays.series_id)
            if state is None:
                self.state_[arrays.series_id] = self._series_state(arrays, name="new rows")
                continue
            self._append(state, arrays)
        return self.predict(horizon=horizon)

    def save(self, path: str | Path) -> Path:
        check_fitted(self, "state_")
        return save_estimator(self, path)

    @classmethod
    def load(cls, path: str | Path) -> _BaselineForecaster:
        return load_estimator(path, expected=cls)

    def _get_state(self) -> dict[str, Any]:
        return {"state": self.state_, "interval": self.interval_.get_state(),
                "params": self._get_params()}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.state_ = state["state"]
        if "interval" in state:
            self.interval_ = IntervalCalibrator.from_state(self._interval_config(),
                                                           state["interval"])
        else:  # saved before the calibrator: its quantile table, looked up as it was
            self.interval_ = _from_error_table(self._interval_config(),
                                               state["error_quantiles"])
        self._set_params(state["params"])

    def _interval_config(self) -> IntervalConfig:
        return IntervalConfig("conformal", self.config.quantiles, MIN_ERRORS)

    def _get_params(self) -> dict[str, Any]:
        return {}

    def _set_params(self, params: dict[str, Any]) -> None:
        del params

    # -- helpers ------------------------------------------------------------------------
    def _check_horizon(self, horizon: int | None) -> int:
        horizon = self.config.horizon if horizon is None else horizon
        if not isinstance(horizon, int | np.integer) or not 1 <= horizon <= self.config.horizon:
            raise SchemaError(f"`horizon` ({horizon!r}) must be an integer in [1, "
                              f"{self.config.horizon}] (config.horizon)")
        return int(horizon)

    def _series_windows(self, arrays, name: str) -> tuple:
        """(fill, inputs, targets, observed) for every origin of one series, channels stacked.

        inputs (N*F, L), targets and observed (N*F, H); N at most ``max_origins``.
        """
        length, horizon = self.context_length, self.config.horizon
        if arrays.n_steps < length + horizon:
            raise SchemaError(f"{name}: series {arrays.series_id!r} has {arrays.n_steps} rows;"
                              f" {type(self).__name__} needs >= context ({length}) + horizon "
                              f"({horizon}) = {length + horizon}")
        fill = _channel_means(arrays.values)
        filled = forward_fill(arrays.values, arrays.observed, fill)
        origins = np.arange(length, arrays.n_steps - horizon + 1)
        if self.config.max_origins is not None and origins.size > self.config.max_origins:
            pick = np.linspace(0, origins.size - 1, self.config.max_origins).round()
            origins = origins[pick.astype(int)]
        past = origins[:, None] + np.arange(-length, 0)[None, :]
        future = origins[:, None] + np.arange(horizon)[None, :]
        stack = lambda a: a.transpose(2, 0, 1).reshape(-1, a.shape[1])  # noqa: E731
        values = np.where(arrays.observed, arrays.values, 0.0)
        return (fill, stack(filled[past]), stack(values[future]),
                stack(arrays.observed[future]))

    def _calibrate(self, windows: list[tuple], arrays_list: list) -> IntervalCalibrator:
        """The calibrator of the errors ``target - forecast`` (origins, H) of every
        (series, channel), channels as the union over the series."""
        channels = sorted({c for arrays in arrays_list for c in arrays.channels})
        parts, series = [], []
        for arrays_windows, arrays in zip(windows, arrays_list, strict=True):
            _, inputs, targets, observed = arrays_windows
            errors = np.where(observed, targets - self._forecast(
                inputs[:, -self.context_length:], self.config.horizon), np.nan)
            n_origins = errors.shape[0] // arrays.n_channels
            block = np.full((n_origins, errors.shape[1], len(channels)), np.nan)
            index = [channels.index(c) for c in arrays.channels]
            block[:, :, index] = errors.reshape(arrays.n_channels, n_origins, -1).transpose(
                1, 2, 0)
            parts.append(block)
            series.append(np.full(n_origins, arrays.series_id, dtype=object))
        return IntervalCalibrator(self._interval_config()).fit(
            np.concatenate(parts), np.concatenate(series), channels)

    def _series_state(self, arrays, name: str = "train") -> dict[str, Any]:
        if arrays.n_steps < self.context_length:
            raise SchemaError(f"{name}: series {arrays.series_id!r} has {arrays.n_steps} rows;"
                              f" {type(self).__name__} needs >= {self.context_length}")
        fill = _channel_means(arrays.values)
        filled = forward_fill(arrays.values, arrays.observed, fill)
        spacing = np.diff(arrays.timestamps).astype("timedelta64[us]").astype(np.int64)
        return {"channels": tuple(arrays.channels),
                "tail": filled[-self.context_length:].copy(),
                "last_timestamp": arrays.timestamps[-1].astype("datetime64[us]").astype(np.int64),
                "spacing_us": int(np.median(spacing)) if spacing.size else 3_600_000_000}

    def _append(self, state: dict[str, Any], arrays) -> None:
        channels = state["channels"]
        index = [arrays.channels.index(c) if c in arrays.channels else -1 for c in channels]
        stamps = arrays.timestamps.astype("datetime64[us]").astype(np.int64)
        keep = stamps > state["last_timestamp"]
        if not keep.any():
            return
        values = np.full((int(keep.sum()), len(channels)), np.nan)
        observed = np.zeros(values.shape, dtype=bool)
        for j, k in enumerate(index):
            if k >= 0:
                values[:, j] = arrays.values[keep, k]
                observed[:, j] = arrays.observed[keep, k]
        filled = forward_fill(values, observed, state["tail"][-1])
        state["tail"] = np.vstack([state["tail"], filled])[-self.context_length:]
        state["last_timestamp"] = int(stamps[keep][-1])

    def _series_forecast(self, series_id: str, state: dict[str, Any],
                         horizon: int) -> pl.DataFrame:
        channels = state["channels"]
        point = self._forecast(state["tail"].T, horizon)  # (F, H)
        steps = np.arange(1, horizon + 1)
        issued = state["last_timestamp"]
        stamps = issued + steps * state["spacing_us"]
        columns: dict[str, Any] = {
            SERIES_ID: [series_id] * (len(channels) * horizon),
            CHANNEL: np.repeat(np.asarray(channels, dtype=object), horizon).tolist(),
            ISSUED_AT: np.full(len(channels) * horizon, issued),
            TIMESTAMP: np.tile(stamps, len(channels)),
            STEP: np.tile(steps, len(channels)).astype(np.int32),
            Y_HAT: point.reshape(-1),
        }
        offsets = self._offsets(series_id, channels, horizon)  # (F, H, Q)
        for k, level in enumerate(self.config.quantiles):
            columns[quantile_column(level)] = (point + offsets[:, :, k]).reshape(-1)
        frame = pl.DataFrame(columns)
        return frame.with_columns(pl.col(ISSUED_AT).cast(pl.Datetime("us")).dt.replace_time_zone(
            "UTC"), pl.col(TIMESTAMP).cast(pl.Datetime("us")).dt.replace_time_zone("UTC"))

    def _offsets(self, series_id: str, channels: tuple[str, ...], horizon: int
                 ) -> np.ndarray:
        """(F, H, Q) interval offsets of ``channels`` of ``series_id``; a channel unknown
        to the calibrator gets the median of the pooled offsets of the others."""
        interval = self.interval_
        table = interval.offsets([series_id], horizon)[0]                  # (H, O, Q)
        other = np.median(interval.default_offsets_[:horizon], axis=1)      # (H, Q)
        return np.stack([table[:, interval.channels_.index(c)] if c in interval.channels_
                         else other for c in channels])

    def _output_schema(self) -> dict[str, pl.DataType]:
        schema = dict(FORECAST_SCHEMA)
        schema.update({quantile_column(q): pl.Float64 for q in self.config.quantiles})
        schema[ISSUED_AT] = TIMESTAMP_DTYPE
        return schema


@dataclass(frozen=True)
class _Rows:
    """The new rows of one series as dense arrays (a light :class:`SeriesArrays`)."""

    series_id: str
    channels: tuple[str, ...]
    timestamps: np.ndarray  # (T,) datetime64[us]
    values: np.ndarray  # (T, F), NaN where not observed
    observed: np.ndarray  # (T, F)

    @property
    def n_steps(self) -> int:
        return int(self.values.shape[0])


def _rows_by_series(frame: pl.DataFrame) -> list[_Rows]:
    """Split a validated (sorted) frame per series with numpy only: the streaming path,
    where thousands of series each bring a row or two and a per-series pivot would
    dominate."""
    if frame.height == 0:
        return []
    series = frame[SERIES_ID].to_numpy()
    channel = frame[CHANNEL].to_numpy()
    stamps = frame[TIMESTAMP].dt.replace_time_zone(None).to_numpy().astype("datetime64[us]")
    values = frame[VALUE].fill_null(np.nan).to_numpy()
    observed = frame[OBSERVED].to_numpy()
    cuts = np.flatnonzero(series[1:] != series[:-1]) + 1
    result = []
    for start, stop in zip(np.r_[0, cuts], np.r_[cuts, series.size], strict=True):
        names, column = np.unique(channel[start:stop], return_inverse=True)
        times, row = np.unique(stamps[start:stop], return_inverse=True)
        dense = np.full((times.size, names.size), np.nan)
        mask = np.zeros(dense.shape, dtype=bool)
        dense[row, column] = values[start:stop]
        mask[row, column] = observed[start:stop]
        result.append(_Rows(str(series[start]), tuple(str(n) for n in names), times,
                            np.where(mask, dense, np.nan), mask))
    return result


def _channel_means(values: np.ndarray) -> np.ndarray:
    with np.errstate(all="ignore"):
        counts = np.isfinite(values).sum(axis=0)
        sums = np.nansum(values, axis=0)
    return np.where(counts > 0, sums / np.maximum(counts, 1), 0.0)


def _from_error_table(config: IntervalConfig, table: dict[str, Any]) -> IntervalCalibrator:
    """A calibrator that gives a model saved before :mod:`recurra.forecasting.intervals` its
    old offsets: ``table`` {"pair": {(series, channel): (H, Q)}, "channel": {channel: (H,
    Q)}, "all": (H, Q)}, NaN where a step had too few errors; a pair falls back to its
    channel, then to everything, as the old look-up did."""
    def pick(*found: np.ndarray | None) -> np.ndarray:
        for item in found:
            if item is not None and np.isfinite(item).all():
                return item
        return np.nan_to_num(table["all"])

    channels = sorted({c for _, c in table["pair"]} | set(table["channel"]))
    series = sorted({s for s, _ in table["pair"]})
    default = np.stack([pick(table["channel"].get(c)) for c in channels], axis=1)  # (H, O, Q)
    offsets = np.stack([np.stack([pick(table["pair"].get((s, c)), table["channel"].get(c))
                                  for c in channels], axis=1) for s in series])
    calibrator = IntervalCalibrator.pooled(config, offsets=default)
    calibrator.series_ids_, calibrator.channels_ = series, channels
    calibrator.offsets_ = offsets.reshape(len(series), *default.shape)
    calibrator.scale_ = np.ones((len(series), len(channels)))
    calibrator.source_ = np.zeros((len(series), len(channels)), np.int64)
    return calibrator


class NaiveForecaster(_BaselineForecaster):
    """Repeat the last observed value of each (series, channel).

    >>> fc = NaiveForecaster(NaiveConfig(horizon=4)).fit(frame)   # doctest: +SKIP
    """

    config_class = NaiveConfig

    @property
    def context_length(self) -> int:
        return 1

    def _forecast(self, inputs: np.ndarray, horizon: int) -> np.ndarray:
        return np.repeat(inputs[:, -1:], horizon, axis=1)


class SeasonalNaiveForecaster(_BaselineForecaster):
    """Repeat the last season: ``y_hat[t + h] = y[t + h - season * ceil(h / season)]``."""

    config_class = SeasonalNaiveConfig

    @property
    def context_length(self) -> int:
        return self.config.season

    def _forecast(self, inputs: np.ndarray, horizon: int) -> np.ndarray:
        season = self.config.season
        index = np.arange(horizon) % season
        return inputs[:, -season:][:, index]


class LinearLagForecaster(_BaselineForecaster):
    """One global ridge regression from the last ``n_lags`` values to the next ``horizon``.

    Direct multi-horizon: the (H, L) coefficient matrix maps a normalised window to all
    horizon steps at once (a closed-form DLinear without the trend split).  When some
    training targets are missing, each step is fitted on the windows where it is observed.
    Fitted attributes: ``coef_`` (H, L), ``intercept_`` (H,).
    """

    config_class = LinearLagConfig
    coef_: np.ndarray | None = None
    intercept_: np.ndarray | None = None

    @property
    def context_length(self) -> int:
        return self.config.n_lags

    def _normalise(self, inputs: np.ndarray) -> np.ndarray:
        if self.config.normalize == "last":
            return inputs[:, -1:]
        if self.config.normalize == "mean":
            return inputs.mean(axis=1, keepdims=True)
        return np.zeros((inputs.shape[0], 1))

    def _fit_windows(self, inputs: np.ndarray, targets: np.ndarray,
                     observed: np.ndarray) -> None:
        from sklearn.linear_model import Ridge

        level = self._normalise(inputs)
        features, targets = inputs - level, targets - level
        horizon = targets.shape[1]
        if observed.all():
            model = Ridge(alpha=self.config.alpha,
                          fit_intercept=self.config.fit_intercept).fit(features, targets)
            self.coef_ = model.coef_
            self.intercept_ = np.broadcast_to(np.asarray(model.intercept_, float), horizon).copy()
            return
        self.coef_ = np.zeros((horizon, features.shape[1]))
        self.intercept_ = np.zeros(horizon)
        for step in range(horizon):
            rows = observed[:, step]
            if rows.sum() < 2:
                raise SchemaError(f"train: step {step + 1} of the horizon has {int(rows.sum())}"
                                  " observed target(s); LinearLagForecaster needs >= 2")
            model = Ridge(alpha=self.config.alpha, fit_intercept=self.config.fit_intercept)
            model.fit(features[rows], targets[rows, step])
            self.coef_[step], self.intercept_[step] = model.coef_, model.intercept_

    def _forecast(self, inputs: np.ndarray, horizon: int) -> np.ndarray:
        check_fitted(self, "coef_")
        level = self._normalise(inputs)
        out = (inputs - level) @ self.coef_[:horizon].T + self.intercept_[:horizon]
        return out + level

    def _get_params(self) -> dict[str, Any]:
        return {"coef": self.coef_, "intercept": self.intercept_}

    def _set_params(self, params: dict[str, Any]) -> None:
        self.coef_, self.intercept_ = params["coef"], params["intercept"]


# GARCH(1,1) / GJR-GARCH on the `arch` package lives in its own module; exported here too.
from recurra.forecasting.garch import GarchConfig, GarchForecaster  # noqa: E402, F401
