"""Per-series training isolation: a series whose values would overflow the training loss
(|value| near 1e300 squares to inf) is left out of its group's training, by name, with its
value range, so the healthy series of the group still train."""

from __future__ import annotations

import polars as pl

from recurra.data.schema import SERIES_ID, VALUE

MAX_ABS_VALUE = 1e100  # squared errors of larger values overflow float64 and poison the loss


def exclude_unstable_series(frame: pl.DataFrame, max_abs_value: float = MAX_ABS_VALUE
                            ) -> tuple[pl.DataFrame, list[str]]:
    """``frame`` without the series whose observed |value| exceeds ``max_abs_value`` or is
    infinite, and one message per excluded series naming it and its value range.

    Example: a group of ``a`` (values ~1) and ``b`` (values ~1e300) -> frame of ``a`` and
    ``["series 'b' left out of training: values span [-1e+300, 1e+300] (|value| > 1e+100)"]``.
    """
    if frame.is_empty():
        return frame, []
    ranges = (frame.group_by(SERIES_ID, maintain_order=True)
              .agg(pl.col(VALUE).min().alias("low"), pl.col(VALUE).max().alias("high"),
                   pl.col(VALUE).abs().max().alias("top")))
    bad = ranges.filter(pl.col("top").is_infinite() | (pl.col("top") > max_abs_value))
    if bad.is_empty():
        return frame, []
    messages = [f"series {row[SERIES_ID]!r} left out of training: values span "
                f"[{row['low']:.4g}, {row['high']:.4g}] (|value| > {max_abs_value:.0e})"
                for row in bad.iter_rows(named=True)]
    return frame.filter(~pl.col(SERIES_ID).is_in(bad[SERIES_ID].to_list())), messages
