"""Live monitoring: score resolved forecasts, test input drift, decide when to retrain.

Pure functions over frames; ``pipelines.tasks.detect_group`` calls them on every detect run.

Live error
    When actuals arrive, the champion forecasts they resolve (same series, channel and
    timestamp) are scored: MAE, and the coverage of the ``[q_low, q_high]`` band when the
    forecasts carry quantiles.  One row per series per run goes to the store's
    ``live_metrics`` table (and to MLflow).

Drift test (documented, per series and channel)
    Two-sample Kolmogorov-Smirnov test of the most recent ``drift_window`` observed values
    against the training window of the champion (``scipy.stats.ks_2samp``); drift when the
    p-value is below ``drift_pvalue`` and both samples have at least ``min_drift_rows``
    values.  ``drift_test = "psi"`` uses the population stability index over 10 quantile
    bins of the training values instead (drift when PSI > 0.25, the usual "major shift").

Retrain trigger
    A group is retrained when, for ``consecutive_runs`` detect runs in a row, the live MAE
    of a series is above ``error_margin`` x its validation MAE, or when any series drifts.
    The trigger only retrains; the promotion gate still decides whether the new model
    becomes champion.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import polars as pl

from data.schema import CHANNEL, OBSERVED, SERIES_ID, TIMESTAMP, VALUE, Y_HAT
from pipelines.config import MonitoringConfig

PSI_THRESHOLD = 0.25
LIVE_METRICS_KEY = ("series_id", "run_id")
LIVE_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8, "group": pl.Utf8, SERIES_ID: pl.Utf8,
    "evaluated_at": pl.Datetime("us", "UTC"), "n_points": pl.Int64, "mae": pl.Float64,
    "coverage": pl.Float64, "validation_mae": pl.Float64, "above_margin": pl.Boolean,
}


@dataclass(frozen=True)
class DriftResult:
    """Outcome of the drift test for one series (all its channels)."""

    series_id: str
    statistic: float
    pvalue: float
    drifted: bool
    test: str


@dataclass(frozen=True)
class RetrainDecision:
    """Whether a group should be retrained, and why (empty ``reasons`` = no)."""

    group: str
    reasons: tuple[str, ...]

    @property
    def retrain(self) -> bool:
        return bool(self.reasons)


def live_errors(forecasts: pl.DataFrame, actuals: pl.DataFrame,
                quantiles: tuple[str, str] = ("q10", "q90")) -> pl.DataFrame:
    """Score forecasts against the actuals that resolve them, one row per series.

    Parameters
    ----------
    forecasts : forecast frame (series_id, channel, timestamp, y_hat [, q10, q90]); when a
        timestamp was forecast by several issues, the latest issue counts.
    actuals : contract frame of newly arrived rows; unobserved rows are ignored.
    quantiles : the band whose coverage is reported (NaN when absent).

    Returns
    -------
    polars.DataFrame with series_id, n_points, mae, coverage (no row for a series with no
    resolved forecast).

    Examples
    --------
    >>> import datetime as dt
    >>> t = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    >>> f = pl.DataFrame({"series_id": ["a"], "channel": ["value"], "issued_at": [t],
    ...                   "timestamp": [t], "y_hat": [1.0]})
    >>> a = pl.DataFrame({"series_id": ["a"], "channel": ["value"], "timestamp": [t],
    ...                   "value": [3.0], "observed": [True]})
    >>> live_errors(f, a)["mae"].to_list()
    [2.0]
    """
    empty = pl.DataFrame(schema={SERIES_ID: pl.Utf8, "n_points": pl.Int64,
                                 "mae": pl.Float64, "coverage": pl.Float64})
    if forecasts.is_empty() or actuals.is_empty():
        return empty
    key = [SERIES_ID, CHANNEL, TIMESTAMP]
    latest = forecasts
    if "issued_at" in forecasts.columns:
        latest = forecasts.sort("issued_at").unique(subset=key, keep="last")
    observed = actuals.filter(pl.col(OBSERVED)).select([*key, VALUE])
    joined = latest.join(observed, on=key, how="inner")
    if joined.is_empty():
        return empty
    low, high = quantiles
    has_band = low in joined.columns and high in joined.columns
    inside = ((pl.col(VALUE) >= pl.col(low)) & (pl.col(VALUE) <= pl.col(high))).cast(
        pl.Float64) if has_band else pl.lit(float("nan"))
    return (joined.with_columns((pl.col(VALUE) - pl.col(Y_HAT)).abs().alias("_error"),
                                inside.alias("_inside"))
            .group_by(SERIES_ID).agg(pl.len().cast(pl.Int64).alias("n_points"),
                                     pl.col("_error").mean().alias("mae"),
                                     pl.col("_inside").mean().alias("coverage"))
            .sort(SERIES_ID))


def drift_test(reference: np.ndarray, recent: np.ndarray, config: MonitoringConfig,
               series_id: str = "") -> DriftResult:
    """KS two-sample (or PSI) test of ``recent`` against ``reference`` values (1-D, NaN-free).

    Too few values in either sample (< ``min_drift_rows``) means "no evidence of drift".

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> config = MonitoringConfig()
    >>> drift_test(rng.normal(0, 1, 500), rng.normal(3, 1, 100), config).drifted
    True
    """
    reference = np.asarray(reference, dtype=np.float64)
    recent = np.asarray(recent, dtype=np.float64)
    if (config.drift_test == "none" or reference.size < config.min_drift_rows
            or recent.size < config.min_drift_rows):
        return DriftResult(series_id, 0.0, 1.0, False, config.drift_test)
    if config.drift_test == "psi":
        value = population_stability_index(reference, recent)
        return DriftResult(series_id, value, float("nan"), value > PSI_THRESHOLD, "psi")
    from scipy.stats import ks_2samp

    result = ks_2samp(reference, recent)
    pvalue = float(result.pvalue)
    return DriftResult(series_id, float(result.statistic), pvalue,
                       pvalue < config.drift_pvalue, "ks")


def population_stability_index(reference: np.ndarray, recent: np.ndarray,
                               n_bins: int = 10) -> float:
    """PSI over quantile bins of ``reference``: sum((p_r - p_ref) * ln(p_r / p_ref)).

    >>> round(population_stability_index(np.arange(100.0), np.arange(100.0)), 6)
    0.0
    """
    edges = np.unique(np.quantile(reference, np.linspace(0, 1, n_bins + 1)))
    edges[0], edges[-1] = -np.inf, np.inf
    expected = np.histogram(reference, edges)[0] / reference.size
    actual = np.histogram(recent, edges)[0] / recent.size
    expected = np.clip(expected, 1e-6, None)
    actual = np.clip(actual, 1e-6, None)
    return float(np.sum((actual - expected) * np.log(actual / expected)))


def drift_by_series(reference: pl.DataFrame, recent: pl.DataFrame,
                    config: MonitoringConfig) -> list[DriftResult]:
    """Run :func:`drift_test` per series and channel; a series drifts if any channel does.

    ``reference`` is the training window, ``recent`` the latest rows (both contract frames);
    only the last ``drift_window`` observed values of ``recent`` per channel are used.
    """
    results = []
    for (series_id,), part in recent.filter(pl.col(OBSERVED)).group_by(
            [SERIES_ID], maintain_order=True):
        candidates = []
        for (channel,), channel_part in part.group_by([CHANNEL], maintain_order=True):
            ref = reference.filter((pl.col(SERIES_ID) == series_id)
                                   & (pl.col(CHANNEL) == channel) & pl.col(OBSERVED))
            values = channel_part.sort(TIMESTAMP)[VALUE].tail(config.drift_window).to_numpy()
            candidates.append(drift_test(ref[VALUE].to_numpy(), values, config,
                                         str(series_id)))
        drifted = [r for r in candidates if r.drifted]
        worst = (min(drifted, key=lambda r: r.pvalue) if drifted
                 else max(candidates, key=lambda r: r.statistic))
        results.append(worst)
    return results


def live_rows(errors: pl.DataFrame, validation_mae: dict[str, float], run_id: str,
              group: str, margin: float, now: dt.datetime | None = None) -> pl.DataFrame:
    """Rows of the ``live_metrics`` table for one detect run (schema :data:`LIVE_SCHEMA`)."""
    now = now or dt.datetime.now(dt.UTC)
    rows = []
    for row in errors.iter_rows(named=True):
        reference = validation_mae.get(row[SERIES_ID], float("nan"))
        above = bool(np.isfinite(reference) and row["mae"] > margin * reference)
        rows.append({"run_id": run_id, "group": group, SERIES_ID: row[SERIES_ID],
                     "evaluated_at": now, "n_points": row["n_points"], "mae": row["mae"],
                     "coverage": row["coverage"], "validation_mae": reference,
                     "above_margin": above})
    return pl.DataFrame(rows, schema=LIVE_SCHEMA)


def retrain_decision(group: str, history: pl.DataFrame, drift: list[DriftResult],
                     config: MonitoringConfig) -> RetrainDecision:
    """Decide from the ``live_metrics`` history of a group and this run's drift results.

    Parameters
    ----------
    history : live_metrics rows of the group (all runs so far, this one included).
    drift : this run's per-series drift results.

    Examples
    --------
    >>> history = pl.DataFrame({"series_id": ["a"] * 3, "group": ["g"] * 3,
    ...     "evaluated_at": [1, 2, 3], "above_margin": [True, True, True]})
    >>> retrain_decision("g", history, [], MonitoringConfig(consecutive_runs=3)).retrain
    True
    """
    reasons = []
    if not history.is_empty():
        part = history.filter(pl.col("group") == group) if "group" in history.columns else history
        for (series_id,), rows in part.sort("evaluated_at").group_by(
                [SERIES_ID], maintain_order=True):
            tail = rows["above_margin"].tail(config.consecutive_runs).to_list()
            if len(tail) == config.consecutive_runs and all(tail):
                reasons.append(f"series {series_id!r}: live MAE above {config.error_margin} x "
                               f"validation MAE for {config.consecutive_runs} consecutive runs")
    for result in drift:
        if result.drifted:
            detail = (f"p={result.pvalue:.3g} < {config.drift_pvalue}" if result.test == "ks"
                      else f"PSI={result.statistic:.3f} > {PSI_THRESHOLD}")
            reasons.append(f"series {result.series_id!r}: input drift ({result.test} test, "
                           f"{detail})")
    return RetrainDecision(group, tuple(reasons))
