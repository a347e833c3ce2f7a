"""GARCH(1,1) / GJR-GARCH(1,1,1) baseline on returns, fitted with the ``arch`` package.

>>> fc = GarchForecaster(GarchConfig(kind="gjr", distribution="t", horizon=1)).fit(returns)
>>> var = fc.predict()["q1"]                   # one-day 99 % Value-at-Risk (a return)
>>> fc.update(new_returns)                     # streamed: the next forecast frame
>>> fc.predict_variance()                      # its conditional variance

Each (series, channel) pair is a return series ``r_t = mu + e_t``, ``e_t = sigma_t z_t``,
``sigma2_{t+1} = omega + (alpha + gamma 1[e_t < 0]) e_t^2 + beta sigma2_t`` (``gamma = 0``
for GARCH), ``z`` standard normal or standardised Student-t. ``arch`` estimates the
parameters on the observed training values (scaled to unit variance for a well-conditioned
fit); the variance recursion is run here, from the training residual variance, so that
``update`` row by row equals one pass over the whole history. A gap advances the variance
by its expectation (``omega + (alpha + gamma / 2 + beta) sigma2``); multi-step forecasts do
the same. Forecast quantiles are ``mu + sigma_k * z_q``.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from recurra.data.arrays import frame_to_arrays
from recurra.data.schema import (
    CHANNEL,
    FORECAST_SCHEMA,
    ISSUED_AT,
    OBSERVED,
    SERIES_ID,
    STEP,
    TIMESTAMP,
    VALUE,
    Y_HAT,
    SchemaError,
    check_fitted,
    contract,
    quantile_column,
    validate_frame,
)
from recurra.nn.persistence import load_estimator, save_estimator

__all__ = ["GarchConfig", "GarchForecaster"]

KINDS = ("garch", "gjr")
DISTRIBUTIONS = ("normal", "t")
MIN_ROWS = 30


@dataclass(frozen=True)
class GarchConfig:
    """kind : ``"garch"`` (GARCH(1,1)) or ``"gjr"`` (GJR-GARCH(1,1,1), leverage term).
    distribution : ``"normal"`` or ``"t"`` (standardised Student-t innovations).
    horizon : steps ahead. quantiles : levels of the interval columns (``q1``, ``q5``...)."""

    kind: str = "garch"
    distribution: str = "normal"
    horizon: int = 1
    quantiles: tuple[float, ...] = (0.01, 0.05, 0.1, 0.9)

    def __post_init__(self) -> None:
        for name, choices in (("kind", KINDS), ("distribution", DISTRIBUTIONS)):
            if getattr(self, name) not in choices:
                raise SchemaError(f"`{name}` ({getattr(self, name)!r}) must be one of "
                                  f"{list(choices)}")
        if isinstance(self.horizon, bool) or not isinstance(self.horizon, int) \
                or self.horizon < 1:
            raise SchemaError(f"`horizon` ({self.horizon!r}) must be an integer >= 1")
        levels = tuple(sorted(float(q) for q in self.quantiles))
        if not levels or any(not 0.0 < q < 1.0 for q in levels):
            raise SchemaError(f"`quantiles` ({self.quantiles}) must lie strictly between 0 "
                              "and 1")
        object.__setattr__(self, "quantiles", levels)


class GarchForecaster:
    """GARCH / GJR-GARCH per (series, channel) (see the module docstring).

    Fitted attributes: ``params_`` ({(series_id, channel): dict of mu, omega, alpha, gamma,
    beta, nu, scale}), ``state_`` ({(series_id, channel): dict of sigma2 (the next step's
    variance, scaled units), last_timestamp, spacing_us}).
    """

    def __init__(self, config: GarchConfig | None = None) -> None:
        self.config = config if config is not None else GarchConfig()
        self.state_: dict | None = None

    def fit(self, frame: Any, validation: Any = None) -> GarchForecaster:
        """Estimate each pair on its observed values (``validation`` is not used)."""
        del validation
        frame = contract(frame, name="train")  # checked once; frame_to_arrays skips it
        if frame.height == 0:
            raise SchemaError("train: the frame has no rows")
        self.params_, self.state_ = {}, {}
        for arrays in frame_to_arrays(frame):
            for j, channel in enumerate(arrays.channels):
                values = arrays.values[arrays.observed[:, j], j]
                key = (arrays.series_id, channel)
                if values.size < MIN_ROWS:
                    raise SchemaError(f"train: series {key[0]!r} channel {channel!r} has "
                                      f"{values.size} observed values; GarchForecaster needs "
                                      f">= {MIN_ROWS}")
                self.params_[key] = self._estimate(values)
        self.state_ = self._states(frame)
        return self

    def _estimate(self, values: np.ndarray) -> dict[str, float]:
        from arch import arch_model

        spread = float(np.std(values))
        scale = 1.0 / spread if spread > 0 else 1.0
        model = arch_model(values * scale, mean="Constant", vol="GARCH", p=1,
                           o=1 if self.config.kind == "gjr" else 0, q=1,
                           dist="normal" if self.config.distribution == "normal" else "t",
                           rescale=False)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # arch's convergence/scaling warnings
            fitted = model.fit(disp="off", show_warning=False)
        p = fitted.params
        residuals = values * scale - float(p["mu"])
        return {"mu": float(p["mu"]), "omega": float(p["omega"]), "alpha": float(p["alpha[1]"]),
                "gamma": float(p.get("gamma[1]", 0.0)), "beta": float(p["beta[1]"]),
                "nu": float(p.get("nu", np.inf)), "scale": scale,
                "init_variance": float(np.mean(residuals ** 2))}

    def _states(self, frame: pl.DataFrame) -> dict:
        """Run the variance recursion over every pair of ``frame`` from its initial variance."""
        states = {}
        for key, part in frame.partition_by([SERIES_ID, CHANNEL], as_dict=True).items():
            key = (str(key[0]), str(key[1]))
            if key not in self.params_:
                raise SchemaError(f"frame: series {key[0]!r} channel {key[1]!r} is unknown "
                                  "to this forecaster (fit it on that series)")
            stamps = part[TIMESTAMP].dt.replace_time_zone(None).to_numpy().astype(
                "datetime64[us]").astype(np.int64)
            spacing = np.diff(stamps)
            state = {"sigma2": self.params_[key]["init_variance"], "last_timestamp": None,
                     "spacing_us": int(np.median(spacing)) if spacing.size else 86_400_000_000}
            states[key] = self._advance(key, state, part)
        return states

    def _advance(self, key: tuple[str, str], state: dict, rows: pl.DataFrame) -> dict:
        p = self.params_[key]
        sigma2 = state["sigma2"]
        last = state["last_timestamp"]
        stamps = rows[TIMESTAMP].dt.replace_time_zone(None).to_numpy().astype(
            "datetime64[us]").astype(np.int64)
        values = rows[VALUE].fill_null(np.nan).to_numpy()
        seen = rows[OBSERVED].to_numpy()
        persistence = p["alpha"] + p["gamma"] / 2 + p["beta"]
        for stamp, value, observed in zip(stamps, values, seen, strict=True):
            if last is not None and stamp <= last:
                continue  # rows at or before the state's last timestamp are ignored
            if observed:
                error = value * p["scale"] - p["mu"]
                sigma2 = p["omega"] + (p["alpha"] + p["gamma"] * (error < 0)) * error ** 2 \
                    + p["beta"] * sigma2
            else:
                sigma2 = p["omega"] + persistence * sigma2
            last = int(stamp)
        return {**state, "sigma2": float(sigma2), "last_timestamp": last}

    def update(self, new_rows: Any, horizon: int | None = None) -> pl.DataFrame:
        """Advance each pair's variance with rows after its last timestamp and return the
        forecast from there: ``predict(horizon=horizon)`` right after (y_hat = mu, the
        quantiles from the conditional variance; ``predict_variance()`` gives the variance
        path itself)."""
        check_fitted(self, "state_")
        self._check_horizon(horizon)
        frame = validate_frame(new_rows, name="new rows")
        for key, part in frame.partition_by([SERIES_ID, CHANNEL], as_dict=True).items():
            key = (str(key[0]), str(key[1]))
            if key not in self.state_:
                raise SchemaError(f"new rows: series {key[0]!r} channel {key[1]!r} is unknown "
                                  "to this forecaster")
            self.state_[key] = self._advance(key, self.state_[key], part.sort(TIMESTAMP))
        return self.predict(horizon=horizon)

    def predict_variance(self, frame: Any = None, horizon: int | None = None) -> pl.DataFrame:
        """series_id, channel, issued_at, timestamp, step, mean, variance (original units)."""
        return self._paths(frame, horizon).drop("_nu")

    def predict(self, frame: Any = None, horizon: int | None = None) -> pl.DataFrame:
        """Forecast frame: y_hat = mu, quantile columns mu + sigma_k z_q."""
        paths = self._paths(frame, horizon)
        levels = self.config.quantiles
        z = {q: self._z(paths["_nu"].to_numpy(), q) for q in levels}
        out = paths.with_columns(pl.col("mean").alias(Y_HAT), *[
            (pl.col("mean") + pl.col("variance").sqrt() * z[q]).alias(quantile_column(q))
            for q in levels])
        schema = {**FORECAST_SCHEMA, **{quantile_column(q): pl.Float64 for q in levels}}
        return out.select(list(schema)).cast(schema)

    @staticmethod
    def _z(nu: np.ndarray, level: float) -> np.ndarray:
        from scipy import stats

        normal = stats.norm.ppf(level)
        with np.errstate(all="ignore"):
            student = stats.t.ppf(level, nu) * np.sqrt((nu - 2) / nu)
        return np.where(np.isfinite(nu), student, normal)

    def _paths(self, frame: Any, horizon: int | None) -> pl.DataFrame:
        check_fitted(self, "state_")
        horizon = self._check_horizon(horizon)
        states = self.state_ if frame is None else self._states(
            validate_frame(frame, name="frame"))
        rows = []
        steps = np.arange(1, horizon + 1)
        for key in sorted(states):
            p, state = self.params_[key], states[key]
            persistence = p["alpha"] + p["gamma"] / 2 + p["beta"]
            variance = np.empty(horizon)
            variance[0] = state["sigma2"]
            for k in range(1, horizon):
                variance[k] = p["omega"] + persistence * variance[k - 1]
            issued = state["last_timestamp"]
            rows.append(pl.DataFrame({
                SERIES_ID: [key[0]] * horizon, CHANNEL: [key[1]] * horizon,
                ISSUED_AT: np.full(horizon, issued), STEP: steps.astype(np.int32),
                TIMESTAMP: issued + steps * state["spacing_us"],
                "mean": np.full(horizon, p["mu"] / p["scale"]),
                "variance": variance / p["scale"] ** 2, "_nu": np.full(horizon, p["nu"])}))
        out = pl.concat(rows)
        return out.with_columns(pl.col(ISSUED_AT, TIMESTAMP).cast(pl.Datetime("us"))
                                .dt.replace_time_zone("UTC"))

    def _check_horizon(self, horizon: int | None) -> int:
        horizon = self.config.horizon if horizon is None else horizon
        if isinstance(horizon, bool) or not isinstance(horizon, int) or not (
                1 <= horizon <= self.config.horizon):
            raise SchemaError(f"`horizon` ({horizon!r}) must be an integer in [1, "
                              f"{self.config.horizon}] (config.horizon)")
        return horizon

    def save(self, path: str | Path) -> Path:
        """Write this fitted forecaster to the folder ``path``."""
        check_fitted(self, "state_")
        return save_estimator(self, path)

    @classmethod
    def load(cls, path: str | Path) -> GarchForecaster:
        """Load a forecaster written by :meth:`save`."""
        return load_estimator(path, expected=cls)

    def _get_state(self) -> dict[str, Any]:
        check_fitted(self, "state_")
        return {"params": self.params_, "state": self.state_}

    def _set_state(self, state: dict[str, Any]) -> None:
        self.params_, self.state_ = state["params"], state["state"]
