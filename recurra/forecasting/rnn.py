"""The stateful LSTM / GRU / GRU-D forecaster (a global model over every series of a frame).

>>> fc = RNNForecaster(ForecasterConfig(encoder=EncoderConfig(cell="lstm", hidden_size=16),
...                                     horizon=24)).fit(train)
>>> forecast = fc.predict()                 # continues after the training data
>>> fc.update(new_rows)                     # advances the state, returns the forecast

Inputs: every channel of the frame is a feature (scaled per series and channel on the
training rows); LSTM/GRU read forward-filled values plus the observed-mask, GRU-D reads
values, masks and deltas natively; calendar features (hour of day, day of week, day of
year) are known-future covariates.  Losses use observed targets only.

Two training modes:

* stateless (``stateful=False``): random look-back/horizon windows, each encoded from the
  initial state; the stored per-series state is the last ``lookback`` rows (a buffer), and
  a forecast encodes that buffer exactly as in training.
* stateful (``stateful=True``): each series is cut into consecutive chunks of
  ``tbptt.length``; batch k holds chunk k of a group of series and the hidden state flows
  (detached: truncated BPTT) from chunk k to k+1, reset at series boundaries; every step is
  supervised with its next ``horizon`` targets.  The stored state is the encoder state after
  the whole history, and :meth:`RNNForecaster.update` advances it with new rows only.

Size: ~570 lines, because :class:`RNNForecaster` is the one public estimator of these
models (fit, calibrate, fine-tune, predict, update, save/load) and reads as one contract;
its batch sources and step functions are in :mod:`recurra.forecasting.rnn_training`, windows
and chunks in :mod:`recurra.forecasting.windows`, stream states in
:mod:`recurra.forecasting.stream`, the networks in :mod:`recurra.nn`.
"""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl
import torch

from recurra.data.arrays import frame_to_arrays, rows_to_arrays
from recurra.data.schema import (
    CHANNEL,
    ISSUED_AT,
    SERIES_ID,
    STEP,
    TIMESTAMP,
    Y_HAT,
    ContractFrame,
    RecurraError,
    SchemaError,
    check_fitted,
    contract,
    quantile_column,
    validate_frame,
)
from recurra.forecasting import stream
from recurra.forecasting import transforms as tfm
from recurra.forecasting import windows as win
from recurra.forecasting.config import (
    ForecasterConfig,  # re-exported: the config lives in config.py
)
from recurra.forecasting.fleet import advance as fleet_advance
from recurra.forecasting.fleet import fleet_refusal
from recurra.forecasting.intervals import IntervalCalibrator, IntervalConfig, from_saved
from recurra.forecasting.rnn_training import (
    _calibration_bands,
    _scaled_means,
    _TeacherSchedule,
    _to_frame,
    _window_sources,
)
from recurra.forecasting.windows import (
    check_length,
    fit_scaler,
    prepare_series,
    window_starts,
)
from recurra.nn.device import choose_device, seed_everything
from recurra.nn.modules import (
    DistributionHead,
    EncoderSpec,
    ForecastNet,
    WindowSpec,
)
from recurra.nn.persistence import load_estimator, save_estimator
from recurra.nn.state import module_device, tensors_to
from recurra.nn.train import Callback, fit_module
from recurra.nn.value_range import scaled_range_problem, split_trainable

__all__ = ["ForecasterConfig", "RNNForecaster"]


class RNNForecaster:
    """Global LSTM / GRU / GRU-D forecaster with streaming state (see the module docstring).

    Fitted attributes: ``module_`` (:class:`ForecastNet`), ``channels_`` (input channels),
    ``targets_`` (forecast channels), ``scaler_`` ({series_id: (center (F,), scale (F,))}),
    ``state_`` ({series_id: per-series stream state}), ``history_`` (epoch records),
    ``excluded_`` ({series_id: reason} of the series left out of ``fit`` because their scaled
    values overflow float32, see :mod:`recurra.nn.value_range`; they get no state and no
    forecast).

    ``validation_monitors``: a ``validation`` frame passed to :meth:`fit` drives early
    stopping and its loss is reported per epoch (``history_[i]["val_loss"]``).

    Device: training runs on ``config.train.device``; :meth:`fit` leaves ``module_`` and the
    tensors of ``state_`` on CPU, and :meth:`to` moves both together (``device_``); predict,
    update and calibrate then run on that device (results come back as CPU frames).
    ``recurra.nn.persistence.load_estimator(path, map_location=d)`` loads onto ``d``.
    """

    validation_monitors = True

    def __init__(self, config: ForecasterConfig | None = None) -> None:
        self.config = config if config is not None else ForecasterConfig()
        self.module_: ForecastNet | None = None

    @property
    def device_(self) -> torch.device:
        """The device of ``module_`` (and of every tensor in ``state_``)."""
        check_fitted(self)
        return module_device(self.module_)

    def to(self, device: str | torch.device) -> RNNForecaster:
        """Move ``module_`` and every tensor of ``state_`` to ``device`` (in place); returns
        self. ``"auto"`` picks CUDA when available.

        >>> fc.to("cuda").predict()                              # doctest: +SKIP
        """
        check_fitted(self)
        device = choose_device(device)
        moving = module_device(self.module_) != device
        self.module_.to(device)
        if moving:  # else state_ is there already: it shares module_'s device (device_)
            self.state_ = tensors_to(self.state_, device)
        return self

    # fitting ---------------------------------------------------------------------------
    def fit(self, frame: Any, validation: Any = None, callback: Callback | None = None,
            static: Any = None) -> RNNForecaster:
        """Train on every series of ``frame``.

        ``validation`` (a contract frame) drives early stopping; ``callback(event, payload)``
        receives the training loop's events; ``static`` is an optional frame with one row per
        series (``series_id`` + numeric columns), z-scored across series and fed to the
        decoder.
        """
        if self.config.interval.method in ("conformal", "adaptive") and validation is None:
            raise RecurraError(f"interval {self.config.interval.method!r} calibrates on validation "
                               "windows: pass fit(frame, validation=...) or set "
                               "interval='model'")
        # each frame is checked once here; what is derived from it stays a ContractFrame
        frame = contract(frame, name="train")
        validation = None if validation is None else contract(validation, name="validation")
        self.levels_: dict = {}
        raw_validation = validation
        if self.config.target_transform != "none":
            self.levels_ = tfm.last_levels(frame)
            frame = self._to_returns(frame)
            validation = None if validation is None else self._to_returns(validation)
        self.interval_: IntervalCalibrator | None = None
        self.channels_ = sorted(frame[CHANNEL].unique().to_list())
        self.targets_ = self._targets(self.channels_)
        arrays = frame_to_arrays(frame, channels=self.channels_)
        self.scaler_ = {a.series_id: fit_scaler(a.values, self.config.scaler) for a in arrays}
        arrays, self.excluded_ = split_trainable(arrays, lambda a: scaled_range_problem(
            a.series_id, a.values, *self.scaler_[a.series_id]))
        if self.excluded_:  # left out by name; their validation rows too
            for series_id in self.excluded_:
                del self.scaler_[series_id]
            validation, raw_validation = (
                None if v is None else v.rows(~pl.col(SERIES_ID).is_in(list(self.excluded_)))
                for v in (validation, raw_validation))
        self._fit_static(static)
        seed_everything(self.config.train.seed)
        self.module_ = self._build()
        self._train(arrays, validation, callback)
        self.state_ = self._stream_states(arrays)
        if self.config.interval.method in ("conformal", "adaptive"):
            self.calibrate(raw_validation)
        return self

    def calibrate(self, validation: Any) -> RNNForecaster:
        """Calibrate ``interval_`` (:mod:`recurra.forecasting.intervals`) on every stride-1
        window of ``validation`` (a contract frame not used for training), one pool per
        (series, step, channel) with a pooled fallback for series with fewer than
        ``interval_min_residuals`` windows (``interval_.fallback_`` names them).

        ``interval="conformal"``: the quantile columns of :meth:`predict` are the model's
        quantiles (or y_hat for a point head) shifted by the series' split-conformal
        offsets. ``interval="adaptive"``: y_hat +- the series' ACI half-widths, seeded from
        |y - y_hat| and moved by :meth:`update`; remembered forecasts are forgotten.
        Called by :meth:`fit` when ``interval`` is not ``"model"``.
        """
        check_fitted(self)
        if self.config.stateful:
            raise RecurraError("calibrate needs stateless windows (stateful=False)")
        validation = contract(validation, name="validation")
        if self.config.target_transform != "none":
            validation = self._to_returns(validation)
        prepared = self._prepared(self._arrays(validation, "validation"))
        targets = [self.channels_.index(c) for c in self.targets_]
        adaptive_mode = self.config.interval.method == "adaptive"
        bands, y, seen, series = _calibration_bands(self.module_, prepared, self.config,
                                                    targets, point=adaptive_mode)
        residuals = np.where(seen[..., None], y[..., None] - bands, np.nan)
        if adaptive_mode:
            residuals = np.abs(residuals[..., 0])
        ids = np.array([p.series_id for p in prepared], dtype=object)[series]
        self.interval_ = IntervalCalibrator(self._interval_config()).fit(
            residuals, ids, list(self.targets_))
        return self

    def _interval_config(self) -> IntervalConfig:
        config = self.config
        return IntervalConfig(config.interval.method, tuple(config.quantiles),
                              config.interval.min_residuals, config.interval.adaptive_gamma)

    def fine_tune(self, frame: Any, epochs: int = 5, learning_rate: float | None = None,
                  callback: Callback | None = None, static: Any = None) -> RNNForecaster:
        """A new forecaster: this global model trained further on ``frame`` only.

        Known series keep their scalers, new ones get their own; ``learning_rate`` defaults
        to a tenth of the original one. The new forecaster holds stream states for the
        series of ``frame`` only (states of other series were computed with the old
        weights). This forecaster is left unchanged.
        """
        check_fitted(self)
        frame = contract(frame, name="fine-tune frame")
        levels = getattr(self, "levels_", {})
        if self.config.target_transform != "none":
            levels, frame = tfm.last_levels(frame, levels), self._to_returns(frame)
        train = dataclasses.replace(
            self.config.train, max_epochs=epochs,
            learning_rate=learning_rate or self.config.train.learning_rate / 10)
        window = dataclasses.replace(self.config.window, linear_skip_ridge=None)  # keep skip
        tuned = RNNForecaster(dataclasses.replace(self.config, train=train, window=window))
        tuned.channels_, tuned.targets_ = self.channels_, self.targets_
        tuned.interval_ = None  # new weights: calibrate(validation) again
        tuned.module_ = copy.deepcopy(self.module_).cpu()
        tuned.scaler_, tuned.levels_ = dict(self.scaler_), levels
        tuned.static_columns_, tuned.static_scaler_ = self.static_columns_, self.static_scaler_
        tuned.static_ = {**self.static_, **self._scaled_static(static)}
        arrays = tuned._arrays(frame, "fine-tune frame")
        for item in arrays:
            tuned.scaler_.setdefault(item.series_id, fit_scaler(item.values,
                                                                self.config.scaler))
        arrays, tuned.excluded_ = split_trainable(arrays, lambda a: scaled_range_problem(
            a.series_id, a.values, *tuned.scaler_[a.series_id]))
        tuned._train(arrays, None, callback)
        tuned.state_ = tuned._stream_states(arrays)
        return tuned

    def _to_returns(self, frame: Any, anchors: dict | None = None) -> ContractFrame:
        """``frame`` (validated) as returns of ``config.target_transform``: a contract frame
        (the returns of a :class:`ContractFrame` keep its rows, only their values are
        checked; those of a plain frame are checked whole)."""
        return contract(tfm.to_returns(frame, self.config.target_transform, anchors))

    def _targets(self, channels: list[str]) -> list[str]:
        if self.config.target_channels is None:
            return list(channels)
        unknown = [c for c in self.config.target_channels if c not in channels]
        if unknown:
            raise SchemaError(f"target_channels {unknown} are not channels of the training "
                              f"frame (it has {channels})")
        return list(self.config.target_channels)

    def _build(self) -> ForecastNet:
        config = self.config
        n_cov = win.N_CALENDAR if config.calendar else 0
        independent = config.window.channel_independent
        n_inputs = (1 if independent else len(self.channels_)) + n_cov
        n_outputs = 1 if independent else len(self.targets_)
        encoder = config.encoder
        spec = EncoderSpec(encoder.cell, n_inputs * config.window.patch_length,
                           encoder.hidden_size, encoder.num_layers, encoder.dropout,
                           encoder.recurrent_dropout, encoder.layer_norm, encoder.residual,
                           encoder.learn_initial_state)
        head = DistributionHead(config.output.kind, config.encoder.hidden_size, n_outputs,
                                config.quantiles, config.output.loss, config.output.huber_delta)
        window = WindowSpec(config.window.normalization, independent, config.window.patch_length,
                            config.window.linear_skip, config.lookback, len(self.channels_))
        net = ForecastNet(spec, n_outputs, n_cov, config.horizon, config.decoder.kind, head,
                          config.decoder.attention, len(self.static_columns_), window)
        net.from_last = config.decoder.forecast_from_last
        return net

    def _fit_static(self, static: Any) -> None:
        self.static_columns_: list[str] = []
        self.static_scaler_: tuple[np.ndarray, np.ndarray] | None = None
        self.static_: dict[str, np.ndarray] = {}
        if static is None:
            return
        ids, columns, values = win.read_static(static)
        center = values.mean(axis=0)
        spread = values.std(axis=0)
        self.static_columns_ = columns
        self.static_scaler_ = (center, np.where(spread > 1e-12, spread, 1.0))
        self.static_ = self._scaled_static(static)

    def _scaled_static(self, static: Any) -> dict[str, np.ndarray]:
        if static is None:
            return {}
        if not self.static_columns_:
            raise SchemaError("static: this forecaster was fitted without static features; "
                              "fit it with static=... to use them")
        ids, _, values = win.read_static(static, self.static_columns_)
        center, scale = self.static_scaler_
        scaled = ((values - center) / scale).astype(np.float32)
        return dict(zip(ids, scaled, strict=True))

    def _static_for(self, series_id: str, extra: dict[str, np.ndarray]) -> np.ndarray | None:
        if not self.static_columns_:
            return None
        vector = extra.get(series_id, self.static_.get(series_id))
        if vector is None:
            raise SchemaError(f"static: series {series_id!r} has no static features; pass "
                              f"static=... with columns {self.static_columns_}")
        return vector

    def _arrays(self, frame: pl.DataFrame, name: str) -> list:
        extra = sorted(set(frame[CHANNEL].unique().to_list()) - set(self.channels_))
        if extra:
            raise SchemaError(f"{name}: channels {extra} were not in the training frame "
                              f"(it had {self.channels_})")
        return frame_to_arrays(frame, channels=self.channels_)

    def _prepared(self, arrays: list, extra: dict[str, np.ndarray] | None = None) -> list:
        return [prepare_series(a, *self._scaler_for(a), self.config.calendar,
                               self._static_for(a.series_id, extra or {})) for a in arrays]

    def _scaler_for(self, arrays: Any) -> tuple[np.ndarray, np.ndarray]:
        scaler = self.scaler_.get(arrays.series_id)
        return scaler if scaler is not None else fit_scaler(arrays.values, self.config.scaler)

    def _train(self, arrays: list, validation: Any, callback: Callback | None) -> None:
        config = self.config
        prepared = self._prepared(arrays)
        val_prepared = None
        if validation is not None:
            val_prepared = self._prepared(self._arrays(contract(
                validation, name="validation"), "validation"))
        if config.encoder.cell == "grud":
            self.module_.encoder.grud.set_empirical_mean(_scaled_means(
                prepared, self.module_.encoder.spec.input_size))
        targets = [self.channels_.index(c) for c in self.targets_]
        schedule = _TeacherSchedule(config)
        hook = schedule.chain(callback)
        if config.stateful:
            train_src, val_src, step = win.stateful_sources(
                prepared, val_prepared, config, targets, schedule)
        else:
            check_length(prepared, config.lookback + config.horizon, "train")
            train_src, val_src, step = _window_sources(prepared, val_prepared, config,
                                                       targets, schedule)
        initial = None
        if config.window.linear_skip_ridge is not None:
            initial = self._init_skip(prepared, val_src, step)
        result = fit_module(self.module_, step, train_src, val_src, config.train, hook,
                            stateful=config.stateful)
        self.module_.cpu().eval()
        self.kept_initial_ = initial is not None and initial[0] <= result.best_val_loss
        if self.kept_initial_:  # the ridge-initialised model beat every trained epoch
            self.module_.load_state_dict(initial[1])
        self.history_ = result.history
        self.train_result_ = result

    def _init_skip(self, prepared: list, val_src: Any, step: Any
                   ) -> tuple[float, dict[str, torch.Tensor]] | None:
        """Closed-form ridge for the linear skip on the normalised training windows; returns
        (validation loss, weights) of this initial model when ``val_src`` is given."""
        config = self.config
        starts = window_starts(prepared, config.lookback, config.horizon, config.stride)
        inputs, outputs = win.skip_design(prepared, starts, config.lookback, config.horizon,
                                          config.window.normalization)
        weight, bias = win.ridge(inputs, outputs, config.window.linear_skip_ridge,
                                 config.window.linear_skip_intercept)
        with torch.no_grad():
            self.module_.skip.weight.copy_(torch.from_numpy(weight))
            self.module_.skip.bias.copy_(torch.from_numpy(bias))
        if val_src is None:
            return None
        self.module_.eval()
        with torch.no_grad():
            losses = [step(self.module_, batch) for batch in val_src()]
        losses = [float(v) for v in losses if v is not None]
        state = {k: v.detach().clone() for k, v in self.module_.state_dict().items()}
        return (float(np.mean(losses)) if losses else float("inf")), state

    # streaming -------------------------------------------------------------------------
    def _stream_states(self, arrays: list) -> dict[str, dict[str, Any]]:
        prepared = self._prepared(arrays)
        return stream.initial_states(self.module_, arrays, prepared, self.config)

    def update(self, new_rows: Any, horizon: int | None = None) -> pl.DataFrame:
        """Advance the stored state of each series with ``new_rows`` (after its last row)
        and return the forecast from there: what ``predict(horizon=horizon)`` gives right
        after (a streaming caller's next step; ``fit`` still returns self).

        One batched path for every series: a stateful forecaster with ``interval``
        ``"model"`` or ``"conformal"`` on levels, on CPU, whose series all bring the same
        number K of new rows (K at most the number of series) steps them through the
        stacked :class:`recurra.forecasting.fleet.ForecasterFleet`, one ``encode`` call per
        row; otherwise one network call over all series' rows
        (:func:`recurra.forecasting.stream.advance`).  ``last_update_path_`` says which.
        With ``interval="adaptive"`` rows whose timestamps match a remembered forecast of
        their series (the last ``horizon`` issued) first feed that series' ACI update (see
        :mod:`recurra.forecasting.intervals`); the returned forecast is remembered, as
        ``predict()``'s is.

        >>> forecast = fc.update(new_rows)              # doctest: +SKIP
        """
        check_fitted(self)
        horizon = self._check_horizon(horizon)
        frame = validate_frame(new_rows, name="new rows")
        if self.config.target_transform != "none":  # returns from the last observed levels
            levels = getattr(self, "levels_", {})
            frame, self.levels_ = self._to_returns(frame, levels), tfm.last_levels(frame, levels)
        extra = sorted(set(frame[CHANNEL].unique().to_list()) - set(self.channels_))
        if extra:
            raise SchemaError(f"new rows: channels {extra} were not in the training frame "
                              f"(it had {self.channels_})")
        arrays = rows_to_arrays(frame, self.channels_)
        unknown = [a.series_id for a in arrays if a.series_id not in self.state_]
        if unknown:
            raise SchemaError(f"new rows: series {unknown[:5]} are unknown to this forecaster; "
                              "use predict(frame=history) or fine_tune(frame) for new series")
        refusal = fleet_refusal(self, arrays)
        if refusal is None:
            self.last_update_path_ = fleet_advance(self, arrays)
        else:
            self._advance(arrays)
            self.last_update_path_ = f"update ({refusal})"
        return self.predict(horizon=horizon)

    def _advance(self, arrays: list) -> None:
        """The general path: every series' rows through one network call."""
        interval = getattr(self, "interval_", None)
        if interval is not None and interval.config.method == "adaptive":
            targets = [self.channels_.index(c) for c in self.targets_]
            for item in arrays:  # score remembered forecasts before advancing the state
                interval.observe(item.series_id, item.timestamps, item.values[:, targets])
        self.state_ = {**self.state_, **stream.advance(self.module_, arrays, self.state_,
                                                    self.scaler_, self.config)}

    def _check_horizon(self, horizon: int | None) -> int:
        """``horizon`` (default ``config.horizon``), checked, once a forecast can be made."""
        if self.config.interval.method != "model" and getattr(self, "interval_", None) is None:
            raise RecurraError(f"interval {self.config.interval.method!r}: this forecaster has no "
                               "calibration (e.g. after fine_tune); call calibrate(validation)"
                               " first")
        horizon = self.config.horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not (
                1 <= horizon <= self.config.horizon):
            raise RecurraError(f"horizon ({horizon!r}) must be an integer in [1, "
                               f"{self.config.horizon}] (the horizon the model was fitted for)")
        return horizon

    # prediction ------------------------------------------------------------------------
    def predict(self, frame: Any = None, horizon: int | None = None,
                static: Any = None) -> pl.DataFrame:
        """Forecast frame (FORECAST_SCHEMA + quantile columns) in original units.

        ``frame=None`` continues every series from the stored state; a ``frame`` is taken
        as the history to forecast from (the stored state is left unchanged). ``static``
        gives static features of series unknown at fit time.
        """
        check_fitted(self)
        horizon = self._check_horizon(horizon)
        states, levels = self.state_, getattr(self, "levels_", {})
        if frame is not None:
            frame = contract(frame, name="history")
            if self.config.target_transform != "none":
                levels, frame = tfm.last_levels(frame), self._to_returns(frame)
            arrays = self._arrays(frame, "history")
            scalers = {a.series_id: self._scaler_for(a) for a in arrays}
            states = stream.initial_states(self.module_, arrays, self._prepared(
                arrays, self._scaled_static(static)), self.config, scalers)
        forecast = self._forecast_frame(states, horizon, remember=frame is None)
        if self.config.target_transform == "none":
            return forecast
        return tfm.forecast_to_levels(forecast, levels, self.config.target_transform,
                                      [quantile_column(q) for q in self.config.quantiles])

    def _forecast_frame(self, states: dict[str, dict[str, Any]], horizon: int,
                        remember: bool = False) -> pl.DataFrame:
        """One vectorised pass: head outputs of all series -> original units -> long frame."""
        targets = [self.channels_.index(c) for c in self.targets_]
        results = stream.forecast_arrays(self.module_, states, self.scaler_, self.config,
                                      targets, horizon)
        levels = tuple(self.config.quantiles)
        ids = [r[0] for r in results]
        params = torch.from_numpy(np.stack([r[3] for r in results])).to(  # (S, N, O, P)
            module_device(self.module_))
        scalers = [stream._scaler(states[s], self.scaler_, s) for s in ids]
        center = np.stack([c[targets] for c, _ in scalers])[:, None, :]    # (S, 1, O)
        scale = np.stack([sc[targets] for _, sc in scalers])[:, None, :]
        point = self.module_.head.point(params).double().cpu().numpy() * scale + center
        bands = self.module_.head.quantiles(params, levels).double().cpu().numpy()
        if getattr(self, "interval_", None) is not None:
            bands = self._calibrated_bands(ids, results, bands, point, center, scale,
                                           remember)
        bands = bands * scale[..., None] + center[..., None]               # (S, N, O, Q)
        n_series, n_targets = len(ids), len(targets)
        per_series = horizon * n_targets

        def flat(values: np.ndarray) -> np.ndarray:  # (S, N, O) -> rows (series, channel, step)
            return np.ascontiguousarray(values.transpose(0, 2, 1)).reshape(-1)

        columns = {
            SERIES_ID: np.repeat(np.array(ids, dtype=object), per_series),
            CHANNEL: np.tile(np.repeat(np.array(self.targets_, dtype=object), horizon),
                             n_series),
            ISSUED_AT: np.repeat(np.array([r[1] for r in results], "datetime64[us]"),
                                 per_series),
            TIMESTAMP: flat(np.repeat(np.stack([r[2] for r in results]).astype(
                "datetime64[us]")[:, :, None], n_targets, axis=2)),
            STEP: np.tile(np.arange(1, horizon + 1, dtype=np.int32), n_series * n_targets),
            Y_HAT: flat(point),
            **{quantile_column(q): flat(bands[..., j]) for j, q in enumerate(levels)}}
        return _to_frame(columns, levels)

    def _calibrated_bands(self, ids: list[str], results: list, bands: np.ndarray,
                          point: np.ndarray, center: np.ndarray, scale: np.ndarray,
                          remember: bool) -> np.ndarray:
        """(S, N, O, Q) scaled bands from ``interval_``: conformal shifts the head's
        ``bands``; adaptive is y_hat +- each series' current ACI half-widths, and
        ``remember`` stores each series' forecast for :meth:`update`. ``point`` (S, N, O)
        in original units, ``center``/``scale`` (S, 1, O)."""
        scaled = (point - center) / scale
        calibrated = self.interval_.apply(ids, bands, scaled)
        if remember and self.interval_.config.method == "adaptive":
            widths = self.interval_.widths(ids, point.shape[1])              # (S, N, O)
            for i, series_id in enumerate(ids):
                self.interval_.issue(series_id, results[i][2], point[i], scale[i, 0],
                                     widths[i])
        return calibrated

    # persistence -----------------------------------------------------------------------
    def _get_state(self) -> dict[str, Any]:
        check_fitted(self)
        if getattr(self, "quantized_", False):
            raise RecurraError(f"a quantized {type(self).__name__} cannot be saved: save the "
                               "float model and quantize it again after loading")
        return {"module": self.module_.state_dict(), "channels": self.channels_,
                "targets": self.targets_, "scaler": self.scaler_, "state": self.state_,
                "history": getattr(self, "history_", []),
                "interval": (None if getattr(self, "interval_", None) is None
                             else self.interval_.get_state()),
                "static": (self.static_columns_, self.static_scaler_, self.static_),
                "levels": getattr(self, "levels_", {}),
                "excluded": getattr(self, "excluded_", {})}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.channels_, self.targets_ = list(state["channels"]), list(state["targets"])
        self.scaler_, self.state_ = state["scaler"], state["state"]
        self.history_ = state.get("history", [])
        self.interval_ = from_saved(self._interval_config(), state)
        self.levels_ = dict(state.get("levels", {}))
        self.excluded_ = dict(state.get("excluded", {}))
        columns, scaler, static = state.get("static", ([], None, {}))
        self.static_columns_, self.static_scaler_, self.static_ = list(columns), scaler, static
        self.module_ = self._build()
        self.module_.load_state_dict(state["module"])
        self.module_.eval()

    def save(self, path: str | Path) -> Path:
        """Write this fitted forecaster to the folder ``path``."""
        check_fitted(self)
        return save_estimator(self, path)

    @classmethod
    def load(cls, path: str | Path) -> RNNForecaster:
        """Load a forecaster written by :meth:`save`."""
        return load_estimator(path, expected=cls)
