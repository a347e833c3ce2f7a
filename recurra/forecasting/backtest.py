"""Rolling-origin backtesting of any forecaster, with frames in and frames out.

::

    result = backtest(lambda: NaiveForecaster(NaiveConfig(horizon=24)), frame,
                      n_origins=5, horizon=24, stride=24, refit="never")
    result.metrics      # one row per (origin, series_id, channel): mae, mse, ...
    result.forecasts    # every forecast, with an ``origin`` column
    result.summary()    # the metrics averaged over origins per series and channel

Origins are timestamps of the frame's time grid (the sorted union of its timestamps): the
last one leaves ``horizon`` timestamps after it, the others are ``stride`` timestamps apart
before it.  A forecast issued at an origin sees only rows at or before it.  With
``refit="never"`` the estimator is fitted once on the rows up to the first origin and
advanced with ``update(new_rows)`` from origin to origin (the streaming path); with
``refit="every"`` a fresh estimator is fitted at every origin (an expanding window).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import polars as pl

from recurra.data.schema import TIMESTAMP, ContractFrame, RecurraError, SchemaError, contract
from recurra.forecasting.metrics import METRIC_COLUMNS, evaluate

REFIT_MODES = ("never", "every")
ORIGIN = "origin"


@dataclass(frozen=True)
class BacktestResult:
    """What :func:`backtest` returns.

    metrics : one row per (origin, series_id, channel): ``origin`` (0-based), ``origin_at``
        (its timestamp) and the columns of :func:`recurra.forecasting.metrics.evaluate`.
    forecasts : the concatenated forecast frames, with ``origin`` added.
    """

    metrics: pl.DataFrame
    forecasts: pl.DataFrame

    def summary(self, by: tuple[str, ...] = ("series_id", "channel")) -> pl.DataFrame:
        """Metrics averaged over origins (``n`` summed) per group."""
        present = [c for c in METRIC_COLUMNS if c in self.metrics.columns and c != "n"]
        return (self.metrics.group_by(list(by), maintain_order=True)
                .agg([pl.col("n").sum(), pl.len().alias("n_origins"),
                      *[pl.col(c).mean() for c in present]])
                .sort(list(by)))


def backtest(estimator_factory: Callable[[], Any], frame: Any, n_origins: int, horizon: int,
             stride: int = 1, refit: str = "never", season: int = 1) -> BacktestResult:
    """Rolling-origin evaluation of the forecasters made by ``estimator_factory``.

    Parameters
    ----------
    estimator_factory : returns a new unfitted forecaster (``fit``, ``predict(frame=None,
        horizon=None)``, ``update(new_rows, horizon=None)`` returning the next forecast),
        e.g. ``lambda: RNNForecaster(config)``.
    frame : a contract frame holding the whole period (training part + test origins).
    n_origins : number of forecast origins (>= 1).
    horizon : steps ahead per forecast (>= 1; the estimator must support it).
    stride : timestamps between consecutive origins (>= 1).
    refit : ``"never"`` (fit once, then ``update``) or ``"every"`` (fit at each origin).
    season : season of the MASE scale (computed on the rows before each origin).

    Returns
    -------
    :class:`BacktestResult` with ``metrics`` and ``forecasts`` frames.

    Raises
    ------
    SchemaError : bad parameters, or a frame too short for the origins asked for.
    """
    _check_parameters(estimator_factory, n_origins, horizon, stride, refit, season)
    frame = contract(frame, name="frame")  # checked once; its row filters stay checked
    grid = frame[TIMESTAMP].unique().sort()
    needed = (n_origins - 1) * stride + horizon + 1
    if grid.len() < needed:
        raise SchemaError(f"frame has {grid.len()} timestamps; n_origins ({n_origins}), stride "
                          f"({stride}) and horizon ({horizon}) need >= (n_origins - 1) * "
                          f"stride + horizon + 1 = {needed}")
    last = grid.len() - 1 - horizon
    origins = [grid[last - stride * (n_origins - 1 - k)] for k in range(n_origins)]
    metrics, forecasts, estimator = [], [], None
    for index, origin in enumerate(origins):
        seen = frame.rows(pl.col(TIMESTAMP) <= origin)
        if refit == "every" or estimator is None:
            estimator = _fit(estimator_factory, seen, index)
            forecast = estimator.predict(horizon=horizon)
        else:  # update returns the forecast from the end of the new rows
            previous = origins[index - 1]
            forecast = estimator.update(seen.rows(pl.col(TIMESTAMP) > previous),
                                        horizon=horizon)
        actuals = frame.rows(pl.col(TIMESTAMP) > origin)
        scored = evaluate(forecast, actuals, history=seen, season=season)
        stamp = pl.lit(origin).alias("origin_at")
        metrics.append(scored.with_columns(pl.lit(index, pl.Int32).alias(ORIGIN), stamp))
        forecasts.append(forecast.with_columns(pl.lit(index, pl.Int32).alias(ORIGIN)))
    metrics_frame = pl.concat(metrics, how="diagonal_relaxed")
    first = [ORIGIN, "origin_at"]
    metrics_frame = metrics_frame.select([*first, *[c for c in metrics_frame.columns
                                                    if c not in first]])
    return BacktestResult(metrics_frame, pl.concat(forecasts, how="diagonal_relaxed"))


def _fit(estimator_factory: Callable[[], Any], seen: ContractFrame, index: int) -> Any:
    estimator = estimator_factory()
    try:
        fitted = estimator.fit(seen)
    except RecurraError as error:
        raise SchemaError(f"backtest origin {index}: fitting on the {seen.height} rows up to "
                          f"the origin failed: {error}") from error
    return fitted if fitted is not None else estimator


def _check_parameters(estimator_factory: Any, n_origins: Any, horizon: Any, stride: Any,
                      refit: Any, season: Any) -> None:
    if not callable(estimator_factory):
        raise SchemaError(f"`estimator_factory` ({estimator_factory!r}) must be a callable "
                          "returning a new forecaster, e.g. lambda: NaiveForecaster()")
    for name, value in (("n_origins", n_origins), ("horizon", horizon), ("stride", stride),
                        ("season", season)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise SchemaError(f"`{name}` ({value!r}) must be an integer >= 1")
    if refit not in REFIT_MODES:
        raise SchemaError(f"`refit` ({refit!r}) must be one of {list(REFIT_MODES)}")
