"""Per-series value-range check before training: a series whose scaled values do not fit
float32 (the training dtype) would make the loss of every batch it is in inf or NaN, so it is
left out of the fit, by name and with its value range, and the other series still train.

>>> import numpy as np
>>> values = np.array([[1.0e300], [2.0e300]])
>>> scaled_range_problem("b", values, np.zeros(1), np.ones(1))
"series 'b': values span [1e+300, 2e+300]; scaled they span [1e+300, 2e+300], which overflows float32 (|x| > 3.403e+38)"
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np

from data.schema import RecurraError

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
    observed = values[~np.isnan(values)]
    if observed.size == 0:
        return None
    with np.errstate(all="ignore"):
        scaled = (values - center) / scale
    scaled = scaled[~np.isnan(values)]
    finite = np.isfinite(scaled)
    if finite.all() and np.abs(scaled).max() <= FLOAT32_MAX and np.isfinite(center).all() \
            and np.isfinite(scale).all():
        return None
    shown = scaled[finite]
    span = (f"[{shown.min():.4g}, {shown.max():.4g}]" if shown.size else "nothing finite")
    n_bad = int((~finite).sum())
    return (f"series {series_id!r}: values span [{observed.min():.4g}, {observed.max():.4g}]; "
            f"scaled they span {span}" + (f" ({n_bad} not finite)" if n_bad else "")
            + f", which overflows float32 (|x| > {FLOAT32_MAX:.4g})")


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
