"""Live monitoring: score resolved forecasts, test input drift, decide when to retrain.

Pure functions over frames; ``recurra.pipelines.tasks.detect_group`` calls them on every detect run.

Live error
    When actuals arrive, the champion forecasts they resolve (same series, channel and
    timestamp) are scored: MAE, and the coverage of the ``[q_low, q_high]`` band when the
    forecasts carry quantiles.  One row per series per run goes to the store's
    ``live_metrics`` table (and to MLflow).

Drift test (``recurra.anomaly.drift``, per series and channel)
    The most recent ``drift_window`` observed values against the champion's training window,
    compared on what the model sees: standardised values, or log returns / differences for
    level series (the group's ``monitor.drift_on``; ``"auto"`` picks differences when a
    Dickey-Fuller test finds a unit root).  ``drift_test = "mean_variance"`` (default) tests a
    shift of the mean or the variance with the autocorrelation-corrected sample size;
    ``"ks"`` and ``"psi"`` are the classic alternatives.  A channel drifts when the
    Benjamini-Hochberg procedure across every series and channel of the group rejects it at
    ``drift_fdr`` and its effect is at least ``drift_min_effect`` training standard
    deviations (``drift_correction = "none"``: p below ``drift_pvalue``; PSI: above 0.25).

Retrain trigger
    ``accuracy_test = "cusum"`` (default): a one-sided CUSUM of live / validation MAE per
    series and resolved point, allowance ``error_margin - 1``, alarms above ``cusum_threshold``
    (a large degradation alarms on the first run, a small one after a few).  ``"runs"``:
    live MAE above ``error_margin`` x validation MAE for ``consecutive_runs`` runs in a row.
    Or any channel drifts.  Every reason names the series, the test, the statistic and the
    threshold.  The trigger only retrains; the promotion gate still decides whether the new
    model becomes champion.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from recurra.anomaly import drift as drift_stats
from recurra.anomaly import drift_batch
from recurra.data.regular import key_order
from recurra.data.schema import CHANNEL, OBSERVED, SERIES_ID, TIMESTAMP, VALUE, Y_HAT
from recurra.pipelines.config import MonitoringConfig

PSI_THRESHOLD = drift_stats.PSI_THRESHOLD
LIVE_METRICS_KEY = ("series_id", "run_id")
LIVE_SCHEMA: dict[str, pl.DataType] = {
    "run_id": pl.Utf8, "group": pl.Utf8, SERIES_ID: pl.Utf8,
    "evaluated_at": pl.Datetime("us", "UTC"), "n_points": pl.Int64, "mae": pl.Float64,
    "coverage": pl.Float64, "validation_mae": pl.Float64, "above_margin": pl.Boolean,
    "cusum": pl.Float64,
}


@dataclass(frozen=True)
class DriftResult:
    """Outcome of the drift test for one series (all its channels)."""

    series_id: str
    statistic: float
    pvalue: float
    drifted: bool
    test: str
    channel: str = ""
    effect: float = float("nan")
    threshold: float = float("nan")
    on: str = "scaled"


@dataclass(frozen=True)
class RetrainDecision:
    """Whether a group should be retrained, and why (empty ``reasons`` = no); ``watch``: each
    series whose live accuracy test fired (series, test, statistic, threshold), a retrain
    reason only when enough of the group's series fired (``accuracy_min_share``)."""

    group: str
    reasons: tuple[str, ...]
    watch: tuple[str, ...] = ()

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
               series_id: str = "", on: str = "auto") -> DriftResult:
    """The configured drift test of ``recent`` against ``reference`` values (1-D), alone
    (Benjamini-Hochberg over one test is a cut at ``drift_fdr``).

    Too few values in either sample (< ``min_drift_rows``) means "no evidence of drift".

    Examples
    --------
    >>> rng = np.random.default_rng(0)
    >>> config = MonitoringConfig()
    >>> drift_test(rng.normal(0, 1, 500), rng.normal(3, 1, 100), config).drifted
    True
    """
    reference, recent = (np.asarray(reference, np.float64).reshape(-1),
                         np.asarray(recent, np.float64).reshape(-1))
    return _results([(series_id, VALUE)], [on], drift_stats.segments([reference]),
                    drift_stats.segments([recent]), config)[0]


def _results(keys: list[tuple[str, str]], on: list[str],
             reference: Any, recent: tuple[np.ndarray, np.ndarray],
             config: MonitoringConfig, stats: dict[str, np.ndarray] | None = None
             ) -> list[DriftResult]:
    """The drift results of (series_id, channel) ``keys`` whose reference and recent values
    are :func:`recurra.anomaly.drift.segments` (``reference`` may be a function returning
    them; ``stats``: the cached reference statistics, as
    :func:`recurra.anomaly.drift.drift_segments` takes them)."""
    if config.drift_test == "none":
        return [DriftResult(sid, 0.0, 1.0, False, "none", channel) for sid, channel in keys]
    found = drift_stats.drift_segments(
        keys, on, reference, recent, test=config.drift_test, fdr=config.drift_fdr,
        min_effect=config.drift_min_effect, min_rows=config.min_drift_rows,
        correction=config.drift_correction, pvalue=config.drift_pvalue, reference_stats=stats)
    return [DriftResult(d.series_id, d.statistic, 1.0 if np.isnan(d.pvalue) and d.test != "psi"
                        else d.pvalue, d.drifted, d.test, d.channel, d.effect, d.threshold, d.on)
            for d in found]


def population_stability_index(reference: np.ndarray, recent: np.ndarray,
                               n_bins: int = 10) -> float:
    """PSI over quantile bins of ``reference``
    (:func:`recurra.anomaly.drift.population_stability_index`).

    >>> round(population_stability_index(np.arange(100.0), np.arange(100.0)), 6)
    0.0
    """
    return drift_stats.population_stability_index(reference, recent, n_bins)


REFERENCE = "_reference"  # the observed reference values of a channel, in time order


def drift_inputs(reference: pl.DataFrame, on: str | dict = "auto",
                 window: int | None = None) -> pl.DataFrame:
    """One row per series and channel: its observed reference values in time order
    (``_reference``, a list) and what it is tested on (``drift_on``:
    ``recurra.anomaly.drift.resolve_inputs``; the unit-root test runs once per champion
    when this frame is cached).  :func:`drift_by_series` takes this frame as it is, so a
    detect run neither sorts nor groups the reference again, and its mean-variance test
    statistics (``recurra.anomaly.drift_batch.reference_stats`` for recent windows of up to
    ``window`` values, default unbounded; ``_stat_*`` columns) so it derives none of the
    reference's inputs either."""
    grouped = _observed_values(reference).rename({VALUE: REFERENCE})
    wanted = [on.get(sid, "auto") if isinstance(on, dict) else on
              for sid in grouped[SERIES_ID].to_list()]
    values = _segments(grouped[REFERENCE])
    chosen = drift_stats.resolve_inputs(*values, wanted)
    inputs = drift_batch.segment_inputs(*values, chosen)
    stats = drift_batch.reference_stats(*inputs, np.diff(inputs[1]) if window is None
                                        else window)
    return grouped.with_columns(pl.Series("drift_on", chosen, dtype=pl.Utf8), *(
        pl.Series(STATS_PREFIX + name, _lists(*column) if isinstance(column, tuple) else
                  column) for name, column in stats.items()))


def _lists(values: np.ndarray, offsets: np.ndarray) -> pl.Series:
    """Segments (``recurra.anomaly.drift.segments``) as a list column."""
    return pl.Series([part.tolist() for part in np.split(values, offsets[1:-1])],
                     dtype=pl.List(pl.Float64))


STATS_PREFIX = "_stat_"   # drift_inputs' columns of recurra.anomaly.drift_batch.reference_stats


def _observed_values(frame: pl.DataFrame, window: int | None = None) -> pl.DataFrame:
    """series_id | channel | value (the list of observed values in time order, at most the
    last ``window``); the sort is skipped when ``frame`` is in key order already."""
    key = [SERIES_ID, CHANNEL]
    observed = frame.filter(pl.col(OBSERVED))
    if key_order(observed, (*key, TIMESTAMP)) != (True, False):
        observed = observed.sort([*key, TIMESTAMP])
    values = pl.col(VALUE) if window is None else pl.col(VALUE).tail(window)
    return observed.group_by(key, maintain_order=True).agg(values)


def drift_by_series(reference: pl.DataFrame | pl.LazyFrame, recent: pl.DataFrame,
                    config: MonitoringConfig, on: str | dict = "auto"
                    ) -> list[DriftResult]:
    """The drift test per series and channel, corrected across all of them; a series drifts
    if any channel does (its result is the drifted channel with the smallest p-value, else
    the channel with the largest statistic).

    ``reference`` is the training window, ``recent`` the latest rows (both contract frames);
    only the last ``drift_window`` observed values of ``recent`` per channel are used.
    ``on``: what is compared (``recurra.anomaly.drift.DRIFT_INPUTS``), for all or per series_id.
    ``reference`` may also be :func:`drift_inputs`' frame, eager or lazy (a scan of the
    cached file): with its statistics the reference values are read only if a pair needs
    them (a drift window longer than the one cached).
    """
    key = [SERIES_ID, CHANNEL]
    if REFERENCE not in reference.collect_schema().names():  # a contract frame
        reference = drift_inputs(reference.lazy().collect(), on, config.drift_window)
    reference = reference.lazy()
    recent_values = _observed_values(recent, config.drift_window)
    stat_columns = [STATS_PREFIX + name for name in (*drift_batch.REFERENCE_STATS, "acf",
                                                      "square_acf")]
    cached = set(stat_columns) <= set(reference.collect_schema().names())
    joined = recent_values.join(reference.select(
        [*key, "drift_on", *(stat_columns if cached else [REFERENCE])]).collect(), on=key,
        how="left")
    keys = list(zip(joined[SERIES_ID].cast(pl.Utf8).to_list(),
                    joined[CHANNEL].cast(pl.Utf8).to_list(), strict=True))
    choices = joined["drift_on"].fill_null("auto").to_list()  # no reference: "auto"
    stats = None
    if cached and "auto" not in choices:   # every pair has its cached reference
        stats = {name: joined[STATS_PREFIX + name].to_numpy()
                 for name in drift_batch.REFERENCE_STATS}
        stats.update({name: _segments(joined[STATS_PREFIX + name])
                      for name in ("acf", "square_acf")})

    def reference_values() -> tuple[np.ndarray, np.ndarray]:   # in joined's order
        if REFERENCE in joined.columns:
            return _segments(joined[REFERENCE])
        return _segments(joined.select(key).join(
            reference.select([*key, REFERENCE]).collect(), on=key, how="left",
            maintain_order="left")[REFERENCE])

    by_series: dict[str, list[DriftResult]] = {}
    for result in _results(keys, choices, reference_values, _segments(joined[VALUE]),
                           config, stats):
        by_series.setdefault(result.series_id, []).append(result)
    results = []
    for candidates in by_series.values():
        drifted = [r for r in candidates if r.drifted]
        results.append(min(drifted, key=lambda r: r.pvalue) if drifted
                       else max(candidates, key=lambda r: r.statistic))
    return results


def _segments(lists: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """A list column as :func:`recurra.anomaly.drift.segments` (a null list is empty; a
    null inside a list is NaN, as ``np.asarray(..., float)`` makes it)."""
    lengths = lists.list.len().fill_null(0).to_numpy().astype(np.int64)
    values = lists.filter(pl.Series(lengths > 0)).explode().cast(pl.Float64).to_numpy()
    return (np.asarray(values, np.float64),
            np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64))


def live_rows(errors: pl.DataFrame, validation_mae: dict[str, float], run_id: str,
              group: str, margin: float, now: dt.datetime | None = None,
              previous_cusum: dict[str, float] | None = None) -> pl.DataFrame:
    """Rows of the ``live_metrics`` table for one detect run (schema :data:`LIVE_SCHEMA`).

    ``cusum`` continues each series' ``previous_cusum`` (the latest stored row; 0 when none)
    with :func:`recurra.anomaly.drift.cusum_step` on ``mae / validation_mae`` over the run's
    ``n_points``, allowance ``margin - 1`` (only points worse than the margin accumulate).
    """
    now = now or dt.datetime.now(dt.UTC)
    previous_cusum = previous_cusum or {}
    allowance = margin - 1.0
    rows = []
    for row in errors.iter_rows(named=True):
        reference = validation_mae.get(row[SERIES_ID], float("nan"))
        above = bool(np.isfinite(reference) and row["mae"] > margin * reference)
        ratio = row["mae"] / reference if np.isfinite(reference) and reference > 0 \
            else float("nan")
        previous = previous_cusum.get(row[SERIES_ID])
        previous = 0.0 if previous is None or not np.isfinite(previous) else previous
        rows.append({"run_id": run_id, "group": group, SERIES_ID: row[SERIES_ID],
                     "evaluated_at": now, "n_points": row["n_points"], "mae": row["mae"],
                     "coverage": row["coverage"], "validation_mae": reference,
                     "above_margin": above,
                     "cusum": drift_stats.cusum_step(previous, ratio, allowance,
                                                     int(row["n_points"]))})
    return pl.DataFrame(rows, schema=LIVE_SCHEMA)


def retrain_decision(group: str, history: pl.DataFrame, drift: list[DriftResult],
                     config: MonitoringConfig) -> RetrainDecision:
    """Decide from the ``live_metrics`` history of a group and this run's drift results.

    Parameters
    ----------
    history : live_metrics rows of the group: for ``accuracy_test = "cusum"`` the latest
        row per series is enough; for ``"runs"`` the last ``consecutive_runs`` rows, or one
        row per series with ``above_runs`` (how many runs in a row it has been above).
    drift : this run's per-series drift results.

    Examples
    --------
    >>> history = pl.DataFrame({"series_id": ["a"] * 3, "group": ["g"] * 3,
    ...     "evaluated_at": [1, 2, 3], "above_margin": [True, True, True]})
    >>> config = MonitoringConfig(consecutive_runs=3, accuracy_test="runs")
    >>> retrain_decision("g", history, [], config).retrain
    True
    """
    reasons: list[str] = []
    watch: list[str] = []
    if not history.is_empty():
        part = history.filter(pl.col("group") == group) if "group" in history.columns else history
        ordered = part.sort("evaluated_at").group_by(SERIES_ID, maintain_order=True)
        if config.accuracy_test == "cusum" and "cusum" in part.columns:
            latest = ordered.agg(pl.col("cusum").drop_nulls().last()).filter(
                pl.col("cusum") > config.cusum_threshold)
            test = "CUSUM"
            watch += [f"series {sid!r}: live accuracy (CUSUM test of live / reference MAE "
                      f"per point, allowance {config.error_margin - 1:g}): statistic "
                      f"{value:.3g} > threshold {config.cusum_threshold:g}"
                      for sid, value in latest.select(SERIES_ID, "cusum").iter_rows()]
        elif "above_runs" in part.columns:  # the carried count (one row per series)
            runs = config.consecutive_runs
            tails = part.filter(pl.col("above_runs") >= runs)
            test = f"{runs} runs in a row above {config.error_margin:g} x reference MAE"
            watch += [f"series {sid!r}: live MAE above {config.error_margin} x reference "
                      f"MAE for {runs} consecutive runs" for sid in tails[SERIES_ID]]
        else:
            runs = config.consecutive_runs
            tails = ordered.agg(pl.col("above_margin").tail(runs).alias("_tail")).filter(
                (pl.col("_tail").list.len() == runs) & pl.col("_tail").list.all())
            test = f"{runs} runs in a row above {config.error_margin:g} x reference MAE"
            watch += [f"series {sid!r}: live MAE above {config.error_margin} x reference "
                      f"MAE for {runs} consecutive runs" for sid in tails[SERIES_ID]]
        monitored = part[SERIES_ID].n_unique()
        if watch and len(watch) >= config.accuracy_min_share * monitored:
            names = ", ".join(w.split(":", 1)[0].removeprefix("series ") for w in watch[:5])
            reasons.append(
                f"live accuracy ({test}): {len(watch)} of {monitored} series "
                f"({len(watch) / monitored:.1%}) fired, at least "
                f"{config.accuracy_min_share:.1%} needed: {names}"
                + (f" and {len(watch) - 5} more" if len(watch) > 5 else ""))
    for result in drift:
        if result.drifted:
            reasons.append(drift_reason(result, config))
    return RetrainDecision(group, tuple(reasons), tuple(watch))


def drift_reason(result: DriftResult, config: MonitoringConfig) -> str:
    """``series 'a' channel 'value': input drift (mean_variance test on scaled inputs, ...)``."""
    where = f"series {result.series_id!r}" + (f" channel {result.channel!r}"
                                               if result.channel else "")
    if result.test == "psi":
        detail = f"PSI={result.statistic:.3f} > {PSI_THRESHOLD}"
    elif config.drift_correction == "bh":
        detail = (f"statistic {result.statistic:.3g}, p={result.pvalue:.3g} <= "
                  f"Benjamini-Hochberg threshold {result.threshold:.3g} at FDR "
                  f"{config.drift_fdr:g}, effect {result.effect:.2f} >= "
                  f"{config.drift_min_effect:g}")
    else:
        detail = (f"statistic {result.statistic:.3g}, p={result.pvalue:.3g} < "
                  f"{config.drift_pvalue:g}, effect {result.effect:.2f} >= "
                  f"{config.drift_min_effect:g}")
    return f"{where}: input drift ({result.test} test on {result.on} inputs, {detail})"
