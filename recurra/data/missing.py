"""Missing values: empirical means, baseline fillers, and hiding values to score imputation.

Two levels, the same rules:

- arrays (:class:`recurra.data.arrays.SeriesArrays`, T x F): :func:`channel_means`,
  :func:`channel_stds`, :func:`last_observed`, :func:`fill_arrays`;
- contract frames: :func:`fill_frame` (forward fill, linear interpolation on the real
  timestamps, mean), :func:`hide_values` and :func:`imputation_error`.

A filled frame is still a contract frame: filled cells get a value and therefore
``observed=True``, and an extra boolean column ``imputed`` (:data:`IMPUTED`) keeps the
original mask (``imputed == True`` where the value was filled in, not measured).

Example
-------
>>> from recurra.data.arrays import frame_to_arrays
>>> hidden, mask = hide_values(frame, 0.2, seed=0)                    # doctest: +SKIP
>>> filled = fill_frame(hidden, "linear")                             # doctest: +SKIP
>>> imputation_error(frame, filled, mask)                             # doctest: +SKIP
{'mae': 0.12, 'rmse': 0.17, 'n_hidden': 80}
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import polars as pl

from recurra.data.arrays import SeriesArrays, forward_fill
from recurra.data.schema import (
    CHANNEL,
    KEY,
    OBSERVED,
    SERIES_ID,
    TIMESTAMP,
    VALUE,
    SchemaError,
    validate_frame,
)

IMPUTED = "imputed"
FILL_METHODS = ("forward", "linear", "mean")
HIDE_MODES = ("random", "block")


# Arrays ------------------------------------------------------------------------------------

def channel_means(arrays_list: Sequence[SeriesArrays]) -> np.ndarray:
    """Mean of the observed values per channel over all series (training data only).

    Parameters
    ----------
    arrays_list : series with the same channels (F).

    Returns
    -------
    (F,) float64; 0.0 for a channel never observed (so it can seed GRU-D's ``x_mean``).
    """
    total, count = _sums(arrays_list, power=1)
    return np.divide(total, count, out=np.zeros_like(total), where=count > 0)


def channel_stds(arrays_list: Sequence[SeriesArrays], *, floor: float = 1e-8) -> np.ndarray:
    """(F,) standard deviation of the observed values per channel (1.0 when undefined).

    Values below ``floor`` (constant channels) become 1.0 so z-scoring never divides by 0.
    """
    means = channel_means(arrays_list)
    total, count = _sums(arrays_list, power=2, centre=means)
    variance = np.divide(total, count, out=np.zeros_like(total), where=count > 0)
    std = np.sqrt(variance)
    return np.where((count > 0) & (std > floor), std, 1.0)


def _sums(arrays_list: Sequence[SeriesArrays], power: int,
          centre: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    if not arrays_list:
        raise SchemaError("`arrays_list` is empty; need at least one series to compute "
                          "channel statistics")
    channels = arrays_list[0].channels
    total = np.zeros(len(channels))
    count = np.zeros(len(channels))
    for arrays in arrays_list:
        if arrays.channels != channels:
            raise SchemaError(f"series {arrays.series_id!r} has channels {arrays.channels}; "
                              f"every series must have {channels} (pass `channels=` to "
                              "frame_to_arrays)")
        values = arrays.values if centre is None else arrays.values - centre[None, :]
        observed = arrays.observed
        total += np.where(observed, values ** power, 0.0).sum(axis=0)
        count += observed.sum(axis=0)
    return total, count


def last_observed(arrays: SeriesArrays) -> np.ndarray:
    """(F,) the last observed value of each channel, NaN where the channel was never seen."""
    index = np.where(arrays.observed, np.arange(arrays.n_steps)[:, None], -1).max(axis=0,
                                                                                 initial=-1)
    values = arrays.values[np.maximum(index, 0), np.arange(arrays.n_channels)]
    return np.where(index >= 0, values, np.nan)


def fill_arrays(arrays: SeriesArrays, method: str = "forward",
                means: np.ndarray | None = None) -> np.ndarray:
    """(T, F) values with the gaps filled; observed cells are returned unchanged.

    Parameters
    ----------
    arrays : one series.
    method : ``"forward"`` (last observation carried forward), ``"linear"`` (interpolation
        on the real timestamps, constant beyond the first/last observation) or ``"mean"``.
    means : (F,) fill for cells no method can reach (before the first observation, channels
        never observed) and for ``"mean"``; default: this series' own channel means.
    """
    _check_method(method)
    fill = channel_means([arrays]) if means is None else np.asarray(means, dtype=np.float64)
    if fill.shape != (arrays.n_channels,):
        raise SchemaError(f"`means` has shape {fill.shape}; expected ({arrays.n_channels},), "
                          "one per channel")
    if method == "forward":
        return forward_fill(arrays.values, arrays.observed, fill)
    if method == "mean":
        return np.where(arrays.observed, arrays.values, fill[None, :])
    elapsed = arrays.elapsed() if arrays.n_steps else np.zeros(0)
    result = np.where(arrays.observed, arrays.values, fill[None, :])
    for j in range(arrays.n_channels):
        seen = arrays.observed[:, j]
        if seen.any():
            result[:, j] = np.interp(elapsed, elapsed[seen], arrays.values[seen, j])
    return result


def _check_method(method: str) -> None:
    if method not in FILL_METHODS:
        raise SchemaError(f"`method` ({method!r}) must be one of {list(FILL_METHODS)}")


# Frames ------------------------------------------------------------------------------------

def fill_frame(frame: pl.DataFrame, method: str = "forward",
               means: dict[str, float] | None = None) -> pl.DataFrame:
    """Fill the gaps of a contract frame per (series_id, channel).

    Parameters
    ----------
    frame : a contract frame (validated here).
    method : ``"forward"``, ``"linear"`` (on the real timestamps) or ``"mean"``; see
        :func:`fill_arrays`.
    means : channel -> value for cells no method reaches; default: the frame's observed
        mean per (series_id, channel), then per channel, then 0.

    Returns
    -------
    The frame with every value set, ``observed=True`` and an ``imputed`` column that is
    True exactly where the input was missing.
    """
    _check_method(method)
    frame = validate_frame(frame)
    group = [SERIES_ID, CHANNEL]
    value = pl.col(VALUE)
    if method == "forward":
        filled = value.forward_fill().over(group)
    elif method == "linear":
        filled = value.interpolate_by(TIMESTAMP).over(group).forward_fill().over(group)
        filled = filled.backward_fill().over(group)
    else:
        filled = pl.lit(None, pl.Float64)
    fallback = value.mean().over(group)
    if means is not None:
        channel_fill = pl.col(CHANNEL).replace_strict(
            {str(k): float(v) for k, v in means.items()}, default=None, return_dtype=pl.Float64)
        fallback = channel_fill.fill_null(fallback)
    fallback = fallback.fill_null(value.mean().over(CHANNEL)).fill_null(0.0)
    result = frame.with_columns(
        (~pl.col(OBSERVED)).alias(IMPUTED),
        pl.coalesce(value, filled, fallback).alias(VALUE),
    )
    return validate_frame(result.with_columns(pl.lit(True).alias(OBSERVED)))


def hide_values(frame: pl.DataFrame, share: float, *, mode: str = "random",
                block_length: int = 24, seed: int = 0) -> tuple[pl.DataFrame, pl.Series]:
    """Hide a share of the observed values (set them missing) to score an imputer.

    Parameters
    ----------
    frame : a contract frame (validated here; rows come back in its canonical order).
    share : fraction in [0, 1) of the observed values to hide.
    mode : ``"random"`` (MCAR: each observed value independently) or ``"block"`` (runs of
        ``block_length`` consecutive rows of one (series_id, channel), until about ``share``
        of the observed values are hidden).
    block_length : rows per block in ``"block"`` mode.
    seed : random seed.

    Returns
    -------
    hidden_frame : the frame with the chosen values set to null, ``observed=False``.
    hidden_mask : boolean Series, one per row of ``hidden_frame``, True where a value was
        hidden (the cells :func:`imputation_error` scores).
    """
    if not 0.0 <= share < 1.0:
        raise SchemaError(f"`share` ({share}) must be in [0, 1)")
    if mode not in HIDE_MODES:
        raise SchemaError(f"`mode` ({mode!r}) must be one of {list(HIDE_MODES)}")
    if block_length < 1:
        raise SchemaError(f"`block_length` ({block_length}) must be >= 1")
    frame = validate_frame(frame)
    rng = np.random.default_rng(seed)
    observed = frame[OBSERVED].to_numpy()
    if mode == "random":
        hidden = observed & (rng.random(frame.height) < share)
    else:
        hidden = _hide_blocks(frame, observed, share, block_length, rng)
    mask = pl.Series("hidden", hidden)
    result = frame.with_columns(
        pl.when(mask).then(None).otherwise(pl.col(VALUE)).alias(VALUE),
        (pl.col(OBSERVED) & ~mask).alias(OBSERVED),
    )
    return result, mask


def _hide_blocks(frame: pl.DataFrame, observed: np.ndarray, share: float, block_length: int,
                 rng: np.random.Generator) -> np.ndarray:
    hidden = np.zeros(frame.height, dtype=bool)
    target = share * observed.sum()
    groups = frame.select(pl.struct(SERIES_ID, CHANNEL).rle_id()).to_series().to_numpy()
    starts = np.flatnonzero(np.r_[True, groups[1:] != groups[:-1]])
    ends = np.r_[starts[1:], frame.height]
    candidates = [s for start, end in zip(starts, ends, strict=True)
                  for s in range(start, max(start, end - block_length) + 1)]
    order = rng.permutation(len(candidates))
    for index in order:
        if (hidden & observed).sum() >= target:
            break
        start = candidates[index]
        group_end = ends[np.searchsorted(starts, start, side="right") - 1]
        hidden[start:min(start + block_length, group_end)] = True
    return hidden & observed


def imputation_error(original: pl.DataFrame, imputed: pl.DataFrame,
                     hidden_mask: pl.Series | np.ndarray) -> dict[str, float]:
    """MAE and RMSE of ``imputed`` against ``original`` on the hidden cells only.

    Parameters
    ----------
    original : the frame before :func:`hide_values`.
    imputed : the filled frame (any row order; matched on the key).
    hidden_mask : the mask :func:`hide_values` returned (rows of ``validate_frame(original)``).

    Returns
    -------
    ``{"mae", "rmse", "n_hidden"}``; an imputation left null on a hidden cell is an error.
    """
    original = validate_frame(original, name="original")
    mask = np.asarray(hidden_mask, dtype=bool)
    if mask.shape != (original.height,):
        raise SchemaError(f"`hidden_mask` has {mask.size} value(s); expected one per row of "
                          f"`original` ({original.height})")
    truth = original.filter(pl.Series(mask)).select([*KEY, VALUE])
    guess = validate_frame(imputed, name="imputed").select([*KEY, pl.col(VALUE).alias("guess")])
    joined = truth.join(guess, on=list(KEY), how="left")
    n_missing = joined["guess"].null_count()
    if n_missing:
        raise SchemaError(f"`imputed` leaves {n_missing} hidden cell(s) null or absent; "
                          "every hidden cell needs a value")
    error = (joined["guess"] - joined[VALUE]).to_numpy()
    if error.size == 0:
        return {"mae": float("nan"), "rmse": float("nan"), "n_hidden": 0}
    return {"mae": float(np.abs(error).mean()), "rmse": float(np.sqrt((error ** 2).mean())),
            "n_hidden": int(error.size)}
