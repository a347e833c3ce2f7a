"""Forecast accuracy metrics: pure array functions with masks, and a per-series evaluator.

Every function takes arrays of any (broadcastable) shape and an optional boolean ``mask``
(True = the target was observed and counts); NaN targets are always left out, so the
mask of a contract frame (``observed``) and NaN-filled arrays both work.  With nothing to
average the result is NaN.

>>> mae(np.array([1.0, 2.0, np.nan]), np.array([2.0, 2.0, 0.0]))
0.5
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from recurra.data.schema import (
    CHANNEL,
    OBSERVED,
    SERIES_ID,
    TIMESTAMP,
    VALUE,
    Y_HAT,
    SchemaError,
    quantile_column,
    validate_frame,
)

METRIC_COLUMNS = ("n", "mae", "mse", "rmse", "smape", "mase", "coverage", "crps")


def _mask(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None) -> np.ndarray:
    y_true, y_pred = np.broadcast_arrays(np.asarray(y_true, float), np.asarray(y_pred, float))
    keep = np.isfinite(y_true) & np.isfinite(y_pred)
    if mask is not None:
        keep &= np.broadcast_to(np.asarray(mask, bool), keep.shape)
    return keep


def _mean(values: np.ndarray, keep: np.ndarray) -> float:
    count = int(keep.sum())
    return float(np.where(keep, values, 0.0).sum() / count) if count else float("nan")


def mae(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean absolute error over the kept entries."""
    keep = _mask(y_true, y_pred, mask)
    return _mean(np.abs(np.subtract(y_true, y_pred)), keep)


def mse(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Mean squared error over the kept entries."""
    keep = _mask(y_true, y_pred, mask)
    return _mean(np.subtract(y_true, y_pred) ** 2, keep)


def rmse(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Root mean squared error."""
    return float(np.sqrt(mse(y_true, y_pred, mask)))


def smape(y_true: np.ndarray, y_pred: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Symmetric MAPE in percent (0..200), M4 style: ``200 |y - y_hat| / (|y| + |y_hat|)``.

    Entries where both are 0 count as 0 error.
    """
    keep = _mask(y_true, y_pred, mask)
    y_true, y_pred = np.asarray(y_true, float), np.asarray(y_pred, float)
    denominator = np.abs(y_true) + np.abs(y_pred)
    with np.errstate(all="ignore"):
        ratio = np.where(denominator > 0, 200.0 * np.abs(y_true - y_pred) / denominator, 0.0)
    return _mean(ratio, keep)


def seasonal_scale(history: np.ndarray, season: int = 1, mask: np.ndarray | None = None,
                   axis: int = 0) -> float:
    """Mean absolute ``season``-step difference of an in-sample history (the MASE scale).

    Pairs count only when both ends are observed (and finite).
    """
    if not isinstance(season, int) or season < 1:
        raise SchemaError(f"`season` ({season!r}) must be an integer >= 1")
    history = np.moveaxis(np.asarray(history, float), axis, 0)
    observed = np.isfinite(history)
    if mask is not None:
        observed &= np.moveaxis(np.asarray(mask, bool), axis, 0)
    if history.shape[0] <= season:
        return float("nan")
    diff = np.abs(history[season:] - history[:-season])
    return _mean(np.nan_to_num(diff), observed[season:] & observed[:-season])


def mase(y_true: np.ndarray, y_pred: np.ndarray, history: np.ndarray, season: int = 1,
         mask: np.ndarray | None = None, history_mask: np.ndarray | None = None) -> float:
    """Mean absolute scaled error: MAE / the in-sample seasonal-naive MAE of ``history``.

    Parameters
    ----------
    y_true, y_pred : (...) the forecast targets and predictions.
    history : (T, ...) the training part of the series, time on axis 0.
    season : 1 scales by the naive (random walk) error, 24 by hourly seasonal naive.
    """
    scale = seasonal_scale(history, season, history_mask)
    if not scale > 0:
        return float("nan")
    return mae(y_true, y_pred, mask) / scale


def pinball(y_true: np.ndarray, y_quantile: np.ndarray, level: float,
            mask: np.ndarray | None = None) -> float:
    """Pinball (quantile) loss of a forecast quantile at ``level``:
    mean of ``max(level * (y - q), (level - 1) * (y - q))``."""
    if not 0.0 < level < 1.0:
        raise SchemaError(f"`level` ({level}) must be strictly between 0 and 1")
    keep = _mask(y_true, y_quantile, mask)
    diff = np.subtract(y_true, y_quantile)
    return _mean(np.maximum(level * diff, (level - 1.0) * diff), keep)


def crps_from_quantiles(y_true: np.ndarray, quantiles: np.ndarray, levels: Sequence[float],
                        mask: np.ndarray | None = None) -> float:
    """CRPS approximated from Q forecast quantiles: ``(2 / Q) * sum_q pinball_q``.

    Parameters
    ----------
    y_true : (...) targets.
    quantiles : (..., Q) forecast quantiles, last axis in the order of ``levels``.
    levels : the Q quantile levels (e.g. 0.1 ... 0.9).
    """
    quantiles = np.asarray(quantiles, float)
    if quantiles.shape[-1] != len(levels):
        raise SchemaError(f"`quantiles` last axis ({quantiles.shape[-1]}) must match "
                          f"`levels` ({len(levels)})")
    losses = [pinball(y_true, quantiles[..., k], level, mask) for k, level in enumerate(levels)]
    return 2.0 * float(np.mean(losses))


def coverage(y_true: np.ndarray, lower: np.ndarray, upper: np.ndarray,
             mask: np.ndarray | None = None) -> float:
    """Share of kept targets inside ``[lower, upper]``."""
    keep = _mask(y_true, lower, mask) & _mask(y_true, upper, None)
    y_true = np.asarray(y_true, float)
    inside = (y_true >= np.asarray(lower)) & (y_true <= np.asarray(upper))
    return _mean(inside.astype(float), keep)


def skill(score: float, reference_score: float) -> float:
    """Skill score ``1 - score / reference`` (e.g. MAE vs seasonal naive): > 0 is better."""
    if not reference_score > 0:
        return float("nan")
    return 1.0 - score / reference_score


def evaluate(forecasts: pl.DataFrame, actuals: pl.DataFrame, *, history: pl.DataFrame | None
             = None, season: int = 1, by: Sequence[str] = (SERIES_ID, CHANNEL)
             ) -> pl.DataFrame:
    """Metrics per series (and channel) of a forecast frame against a contract frame.

    Parameters
    ----------
    forecasts : a forecast frame (``y_hat`` and optional ``q<level>`` columns).
    actuals : a contract frame holding the forecast timestamps; unobserved targets and
        timestamps absent from it are left out.
    history : optional contract frame with the in-sample part, for ``mase`` (its
        ``season``-step naive error is the scale); without it ``mase`` is null.
    by : the grouping columns (``("series_id",)`` pools the channels).

    Returns
    -------
    One row per group: ``n`` (targets scored), mae, mse, rmse, smape, mase, and when the
    forecasts carry quantiles: ``coverage`` of the outermost pair and ``crps``.
    """
    actuals = validate_frame(actuals, name="actuals")
    missing = [c for c in (SERIES_ID, CHANNEL, TIMESTAMP, Y_HAT) if c not in forecasts.columns]
    if missing:
        raise SchemaError(f"forecasts: missing column(s) {missing}; expected a forecast frame")
    unknown = [c for c in by if c not in (SERIES_ID, CHANNEL)]
    if unknown or not by:
        raise SchemaError(f"`by` ({list(by)}) must be a non-empty subset of "
                          f"{[SERIES_ID, CHANNEL]}")
    levels = _quantile_levels(forecasts.columns)
    joined = forecasts.join(actuals.select([SERIES_ID, CHANNEL, TIMESTAMP, VALUE, OBSERVED]),
                            on=[SERIES_ID, CHANNEL, TIMESTAMP], how="inner")
    scales = _scales(history, season, list(by)) if history is not None else {}
    rows = []
    for key, part in joined.group_by(list(by), maintain_order=True):
        rows.append(_group_metrics(dict(zip(by, key, strict=True)), part, levels,
                                   scales.get(tuple(key), float("nan"))))
    if not rows:
        schema = {c: pl.Utf8 for c in by} | {c: pl.Float64 for c in METRIC_COLUMNS}
        return pl.DataFrame(schema=schema | {"n": pl.Int64})
    return pl.DataFrame(rows).sort(list(by))


def _quantile_levels(columns: Sequence[str]) -> list[float]:
    levels = []
    for column in columns:
        if column.startswith("q"):
            try:
                level = float(column[1:]) / 100.0
            except ValueError:
                continue
            if 0.0 < level < 1.0 and quantile_column(level) == column:
                levels.append(level)
    return sorted(levels)


def _scales(history: pl.DataFrame, season: int, by: list[str]) -> dict[tuple, float]:
    history = validate_frame(history, name="history")
    result = {}
    for key, part in history.group_by(by, maintain_order=True):
        pieces = [p[VALUE].fill_null(np.nan).to_numpy()
                  for _, p in part.group_by(CHANNEL, maintain_order=True)]
        diffs = [np.abs(v[season:] - v[:-season]) for v in pieces if v.size > season]
        values = np.concatenate(diffs) if diffs else np.zeros(0)
        finite = values[np.isfinite(values)]
        result[tuple(key)] = float(finite.mean()) if finite.size else float("nan")
    return result


def _group_metrics(key: dict, part: pl.DataFrame, levels: list[float], scale: float) -> dict:
    y_true = part[VALUE].fill_null(np.nan).to_numpy()
    y_pred = part[Y_HAT].fill_null(np.nan).to_numpy()
    observed = part[OBSERVED].to_numpy()
    row = dict(key)
    row["n"] = int((_mask(y_true, y_pred, observed)).sum())
    row["mae"] = mae(y_true, y_pred, observed)
    row["mse"] = mse(y_true, y_pred, observed)
    row["rmse"] = float(np.sqrt(row["mse"]))
    row["smape"] = smape(y_true, y_pred, observed)
    row["mase"] = row["mae"] / scale if scale > 0 else float("nan")
    row["coverage"] = row["crps"] = float("nan")
    if levels:
        quantiles = np.stack([part[quantile_column(q)].fill_null(np.nan).to_numpy()
                              for q in levels], axis=-1)
        if len(levels) >= 2:
            row["coverage"] = coverage(y_true, quantiles[:, 0], quantiles[:, -1], observed)
        row["crps"] = crps_from_quantiles(y_true, quantiles, levels, observed)
    return row
