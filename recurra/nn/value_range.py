"""Per-series value-range check before training: a series whose scaled values do not fit
float32 (the training dtype) would make the loss of every batch it is in inf or NaN, so it is
left out of the fit, by name and with its value range, and the other series still train.

>>> import numpy as np
>>> values = np.array([[1.0e300], [2.0e300]])
>>> print(scaled_range_problem("b", values, np.zeros(1), np.ones(1)))  # doctest: +ELLIPSIS
series 'b': values span [1e+300, 2e+300]; scaled they span [1e+300, 2e+300], which overflows...
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from recurra.data.schema import RecurraError

FLOAT32_MAX = float(np.finfo(np.float32).max)


def scaled_range_problem(series_id: str, values: np.ndarray, center: np.ndarray,
                         scale: np.ndarray) -> str | None:
    """Why the series cannot be trained on (None when it can).

    Parameters
    ----------
    series_id : the series' name (for the message).
    values : (T, F) raw values, NaN where unobserved.
    center, scale : (F,) the series' scaler; scaled = (values - center) / scale.
    """
    with np.errstate(all="ignore"):
        scaled = (values - center) / scale
    if not (np.isfinite(center).all() and np.isfinite(scale).all()):
        scaled = np.where(np.isnan(values), np.nan, np.inf)
    return range_problem(series_id, values, scaled)


def range_problem(series_id: str, values: np.ndarray, scaled: np.ndarray) -> str | None:
    """Why the series cannot be trained on (None when it can), from its (T, F) raw
    ``values`` and the ``scaled`` values the model would see (NaN where unobserved in
    both)."""
    seen = ~np.isnan(values)
    observed = values[seen]
    if observed.size == 0:
        return None
    with np.errstate(all="ignore"):
        spread = np.nanstd(values[:, seen.any(axis=0)], axis=0)
    scaled = np.asarray(scaled, dtype=np.float64)[seen]
    finite = np.isfinite(scaled)
    overflow = not finite.all() or np.abs(scaled).max() > FLOAT32_MAX
    if not overflow and np.isfinite(spread).all():
        return None
    shown = scaled[finite]
    span = (f"[{shown.min():.4g}, {shown.max():.4g}]" if shown.size else "nothing finite")
    n_bad = int((~finite).sum())
    why = (f"scaled they span {span}" + (f" ({n_bad} not finite)" if n_bad else "")
           + f", which overflows float32 (|x| > {FLOAT32_MAX:.4g})" if overflow
           else "their standard deviation overflows float64, so no scale fits them")
    return f"series {series_id!r}: values span [{observed.min():.4g}, {observed.max():.4g}]; {why}"


def split_trainable(items: Iterable[Any], problem: Any) -> tuple[list[Any], dict[str, str]]:
    """``items`` (objects with a ``series_id``) split by ``problem(item) -> str | None`` into
    the trainable ones and ``{series_id: reason}``; raise when nothing is left."""
    kept, excluded = [], {}
    for item in items:
        reason = problem(item)
        if reason is None:
            kept.append(item)
        else:
            excluded[item.series_id] = reason
    if excluded and not kept:
        raise RecurraError("every series was left out of training: "
                           + "; ".join(excluded.values()))
    return kept, excluded
