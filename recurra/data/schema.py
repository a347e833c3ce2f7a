"""The data contract: one long frame everywhere, and the single gate that checks it.

A *contract frame* is a polars ``DataFrame`` with these columns:

========== ================ ==========================================================
column     dtype            meaning
========== ================ ==========================================================
series_id  Utf8             the entity: a sensor, a station, a ticker, an ICU stay
channel    Utf8             the variable measured on that entity (``"value"`` when the
                            series is univariate); a multivariate series is one
                            ``series_id`` with several channels
timestamp  Datetime(us,UTC) when the value was observed (irregular series keep their
                            real timestamps; regular ones have one row per period)
value      Float64          the measurement, null when missing
observed   Boolean          the explicit mask: ``observed == value.is_not_null()``
========== ================ ==========================================================

Rows are unique by ``(series_id, channel, timestamp)`` and sorted by that key.  Gaps are
rows with ``observed=False``; they are never silently dropped or filled.

Why a ``channel`` column rather than one ``series_id`` per variable or wide columns: each
variable keeps its own observed-mask (GRU-D needs per-variable masks and deltas), the frame
stays long (Nixtla's shape), and a global model over many entities (stations, tickers) can
still treat the channels of one entity as one multivariate sample.

Static features travel in a separate frame keyed by ``series_id``; known-future covariates
(calendar features) are derived from timestamps; past covariates are other channels.

Size: ~410 lines, because the contract has one owner: its columns and the output schemas,
the one gate (:func:`validate_frame`) with each rule's check and message, and
:class:`ContractFrame`, the checked frame the core passes on, which must apply exactly those
checks, read together.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

SERIES_ID = "series_id"
CHANNEL = "channel"
TIMESTAMP = "timestamp"
VALUE = "value"
OBSERVED = "observed"
KEY = (SERIES_ID, CHANNEL, TIMESTAMP)
COLUMNS = (SERIES_ID, CHANNEL, TIMESTAMP, VALUE, OBSERVED)
DEFAULT_CHANNEL = "value"
TIME_UNIT = "us"
TIME_ZONE = "UTC"
TIMESTAMP_DTYPE = pl.Datetime(TIME_UNIT, TIME_ZONE)

SCHEMA: dict[str, pl.DataType] = {
    SERIES_ID: pl.Utf8,
    CHANNEL: pl.Utf8,
    TIMESTAMP: TIMESTAMP_DTYPE,
    VALUE: pl.Float64,
    OBSERVED: pl.Boolean,
}

# Output frames ---------------------------------------------------------------------------
# forecasts: series_id | channel | issued_at | timestamp | step | y_hat | q<level>...
ISSUED_AT = "issued_at"
STEP = "step"
Y_HAT = "y_hat"
# anomaly scores: series_id | timestamp | score | is_anomaly (+ contribution_<channel>)
SCORE = "score"
IS_ANOMALY = "is_anomaly"
CONTRIBUTION_PREFIX = "contribution_"
# events: series_id | start | end | peak_score | severity | channels | kind
START = "start"
END = "end"
PEAK_SCORE = "peak_score"
SEVERITY = "severity"
CHANNELS = "channels"
KIND = "kind"
EVENT_KINDS = ("anomaly", "data_quality")

FORECAST_SCHEMA: dict[str, pl.DataType] = {
    SERIES_ID: pl.Utf8,
    CHANNEL: pl.Utf8,
    ISSUED_AT: TIMESTAMP_DTYPE,
    TIMESTAMP: TIMESTAMP_DTYPE,
    STEP: pl.Int32,
    Y_HAT: pl.Float64,
}
SCORE_SCHEMA: dict[str, pl.DataType] = {
    SERIES_ID: pl.Utf8,
    TIMESTAMP: TIMESTAMP_DTYPE,
    SCORE: pl.Float64,
    IS_ANOMALY: pl.Boolean,
}
EVENT_SCHEMA: dict[str, pl.DataType] = {
    SERIES_ID: pl.Utf8,
    START: TIMESTAMP_DTYPE,
    END: TIMESTAMP_DTYPE,
    PEAK_SCORE: pl.Float64,
    SEVERITY: pl.Float64,
    CHANNELS: pl.List(pl.Utf8),
    KIND: pl.Utf8,
}


def quantile_column(level: float) -> str:
    """Column name of a forecast quantile: ``quantile_column(0.1) == "q10"``.

    >>> quantile_column(0.025)
    'q2.5'
    """
    if not 0.0 < level < 1.0:
        raise ValueError(f"quantile level ({level}) must be strictly between 0 and 1")
    return f"q{round(level * 100, 6):g}"


class RecurraError(Exception):
    """Base of every error Recurra raises on purpose for a user's mistake."""


class SchemaError(RecurraError, ValueError):
    """A frame does not follow the data contract; the message names the column and rule."""


class NotFittedError(RecurraError, RuntimeError):
    """An estimator was used before ``fit``."""


def check_fitted(estimator: Any, attribute: str = "module_") -> None:
    """Raise :class:`NotFittedError` naming the class when ``attribute`` is not set."""
    if getattr(estimator, attribute, None) is None:
        name = type(estimator).__name__
        raise NotFittedError(f"{name} is not fitted yet: call {name}.fit(frame) first")


def empty_frame() -> pl.DataFrame:
    """A contract frame with no rows."""
    return pl.DataFrame(schema=SCHEMA)


def empty_like(schema: dict[str, pl.DataType]) -> pl.DataFrame:
    """An empty frame of one of the output schemas (forecasts, scores, events)."""
    return pl.DataFrame(schema=schema)


def to_polars(df: Any) -> pl.DataFrame:
    """Accept a polars or pandas frame (pandas NaN becomes null); anything else is an error."""
    if isinstance(df, pl.DataFrame):
        return df
    if isinstance(df, ContractFrame):
        return df.frame
    if isinstance(df, pl.LazyFrame):
        return df.collect()
    try:
        import pandas as pd
    except ImportError:  # pragma: no cover - pandas is a dependency
        pd = None
    if pd is not None and isinstance(df, pd.DataFrame):
        frame = df.reset_index() if _has_named_index(df) else df
        return pl.from_pandas(frame, nan_to_null=True)
    raise SchemaError(f"expected a polars or pandas DataFrame, got {type(df).__name__}")


def _has_named_index(df: Any) -> bool:
    return any(name is not None for name in df.index.names)


_TOKEN = object()  # only contract() makes a ContractFrame


@dataclass(frozen=True, eq=False)
class ContractFrame:
    """A frame that passed :func:`validate_frame`: the typed object the core passes around.

    Data is checked once, where it enters the core (:func:`contract`); internal calls then
    hand the ``ContractFrame`` on, and every public ``fit`` / ``predict`` / ``score`` /
    ``update`` that receives one skips the checks (``validate_frame(cf)`` is
    ``cf.frame``).  Plain frames are still accepted everywhere and checked as before.

    Only :func:`contract`, :meth:`rows` (a row filter) and :meth:`with_values` (new values
    for the same rows, checked finite) make one, so holding a ``ContractFrame`` means
    its ``frame`` has the canonical columns and dtypes, sorted unique keys and
    ``observed == value.is_not_null()``.  It reads like the frame it holds (attributes and
    ``[]`` are forwarded: ``cf.height``, ``cf[SERIES_ID]``, ``cf.filter(...)``), and what
    polars returns is a plain frame, checked again if it reaches a public method; only
    :meth:`rows` and :meth:`with_values` keep the type.  Treat ``frame`` as read-only.

    >>> train = contract(raw, name="train")                              # doctest: +SKIP
    >>> recent = train.rows(pl.col("timestamp") >= cutoff)               # still checked
    >>> RNNForecaster(config).fit(train.frame)      # or fit(train): no second check
    """

    frame: pl.DataFrame
    _token: object = None

    def __post_init__(self) -> None:
        if self._token is not _TOKEN:
            raise TypeError("make a ContractFrame with contract(frame), which checks it")

    def rows(self, predicate: pl.Expr) -> ContractFrame:
        """The rows matching ``predicate``, still a contract frame (a row filter keeps the
        key order, the unique keys and the mask)."""
        return ContractFrame(self.frame.filter(predicate), _TOKEN)

    def with_values(self, values: pl.Series, *, name: str = "frame") -> ContractFrame:
        """The same rows with new ``values`` (one per row, in this frame's order; null =
        missing) and ``observed = values.is_not_null()``: keys, order and dtypes are kept, so
        only the rule new values can break is checked (no NaN / inf; :class:`SchemaError`
        as :func:`validate_frame` raises it).  Used by derivations that change values only
        (returns of a price series, seeded anomalies)."""
        if values.len() != self.frame.height:
            raise SchemaError(f"{name}: {values.len()} new values for {self.frame.height} rows")
        frame = self.frame.with_columns(values.cast(pl.Float64).alias(VALUE))
        _check_finite(frame, name)
        return ContractFrame(frame.with_columns(pl.col(VALUE).is_not_null().alias(OBSERVED)),
                             _TOKEN)

    def __getattr__(self, name: str) -> Any:  # only for names the dataclass does not have
        if name.startswith("__") or name in ("frame", "_token"):
            raise AttributeError(name)
        return getattr(self.frame, name)

    def __getitem__(self, item: Any) -> Any:
        return self.frame[item]

    def __len__(self) -> int:
        return self.frame.height

    def __repr__(self) -> str:
        return f"ContractFrame({self.frame.height} rows)"


def contract(df: Any, *, name: str = "frame") -> ContractFrame:
    """``df`` checked by :func:`validate_frame`, as a :class:`ContractFrame` (returned as is
    when it already is one)."""
    if isinstance(df, ContractFrame):
        return df
    return ContractFrame(_validated(df, name), _TOKEN)


def validate_frame(df: Any, *, name: str = "frame") -> pl.DataFrame:
    """Check a frame against the contract and return it in canonical form.

    The single gate: every public ``fit``/``predict``/``score`` calls it first.  A
    :class:`ContractFrame` (from :func:`contract`) passed it already and is returned
    without checks.  It fills
    what can be filled without guessing (``channel`` defaults to ``"value"``, ``observed``
    to ``value.is_not_null()``, naive timestamps are taken as UTC, aware ones converted to
    UTC, rows sorted by key) and raises :class:`SchemaError` for everything else.

    Parameters
    ----------
    df : polars or pandas DataFrame with at least ``series_id``, ``timestamp``, ``value``.
    name : what to call the frame in error messages ("train", "new rows", ...).

    Returns
    -------
    polars.DataFrame with exactly :data:`COLUMNS` in that order (plus any extra columns the
    caller passed, after them), sorted by ``(series_id, channel, timestamp)``.

    Examples
    --------
    >>> import datetime as dt
    >>> frame = validate_frame(pl.DataFrame({"series_id": ["a", "a"],
    ...     "timestamp": [dt.datetime(2024, 1, 1, 1), dt.datetime(2024, 1, 1)],
    ...     "value": [2.0, None]}))
    >>> frame["observed"].to_list()
    [True, False]
    """
    if isinstance(df, ContractFrame):  # checked where it entered the core
        return df.frame
    return _validated(df, name)


def _validated(df: Any, name: str) -> pl.DataFrame:
    """The checks of :func:`validate_frame` (a frame that is not a :class:`ContractFrame`)."""
    frame = to_polars(df)
    missing = [c for c in (SERIES_ID, TIMESTAMP, VALUE) if c not in frame.columns]
    if missing:
        raise SchemaError(
            f"{name}: missing required column(s) {missing}; a contract frame needs "
            f"{list(COLUMNS)} (channel and observed may be left out)"
        )
    if CHANNEL not in frame.columns:
        frame = frame.with_columns(pl.lit(DEFAULT_CHANNEL, pl.Utf8).alias(CHANNEL))
    frame = _cast_identifiers(frame, name)
    if frame.get_column(TIMESTAMP).dtype != TIMESTAMP_DTYPE:  # canonical already: no-op
        frame = frame.with_columns(_timestamp_expr(frame, name))
    if frame.get_column(VALUE).dtype != pl.Float64:
        frame = frame.with_columns(_value_expr(frame, name))
    _check_finite(frame, name)
    if OBSERVED not in frame.columns:
        frame = frame.with_columns(pl.col(VALUE).is_not_null().alias(OBSERVED))
    frame = _check_observed(frame, name)
    extra = [c for c in frame.columns if c not in COLUMNS]
    if frame.columns != [*COLUMNS, *extra]:
        frame = frame.select([*COLUMNS, *extra])
    _check_no_null_keys(frame, name)
    if frame.height <= SMALL_FRAME:  # streaming-sized: plain Python beats query planning
        return _sort_small(frame, name)
    frame = frame.sort(list(KEY), maintain_order=True)
    _check_unique(frame, name)
    return frame


SMALL_FRAME = 256  # rows up to which validate_frame sorts and checks keys in plain Python


def _sort_small(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    """``frame.sort(KEY, maintain_order=True)`` + :func:`_check_unique` for a few rows.

    Same order (a stable sort; UTF-8 byte order equals code-point order) and the same error.
    """
    keys = list(zip(frame.get_column(SERIES_ID).to_list(), frame.get_column(CHANNEL).to_list(),
                    frame.get_column(TIMESTAMP).to_numpy().view(np.int64).tolist(),
                    strict=True))
    order = sorted(range(len(keys)), key=keys.__getitem__)
    if order != list(range(len(keys))):
        frame = frame[order]
    if any(keys[a] == keys[b] for a, b in zip(order, order[1:], strict=False)):
        _check_unique(frame, name)  # raises, with the message of the general path
    return frame


def _cast_identifiers(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    exprs = []
    for column in (SERIES_ID, CHANNEL):
        dtype = frame.get_column(column).dtype
        if dtype == pl.Utf8:
            continue
        if dtype in (pl.Categorical, pl.Enum) or dtype.is_integer():
            exprs.append(pl.col(column).cast(pl.Utf8))
        else:
            raise SchemaError(f"{name}: column '{column}' must be text, got {dtype}")
    return frame.with_columns(exprs) if exprs else frame


def _timestamp_expr(frame: pl.DataFrame, name: str) -> pl.Expr:
    dtype = frame.schema[TIMESTAMP]
    if isinstance(dtype, pl.Datetime):
        column = pl.col(TIMESTAMP)
        if dtype.time_zone is None:
            column = column.dt.replace_time_zone(TIME_ZONE)
        elif dtype.time_zone != TIME_ZONE:
            column = column.dt.convert_time_zone(TIME_ZONE)
        return column.dt.cast_time_unit(TIME_UNIT).alias(TIMESTAMP)
    if dtype == pl.Date:
        return pl.col(TIMESTAMP).cast(pl.Datetime(TIME_UNIT)).dt.replace_time_zone(TIME_ZONE)
    raise SchemaError(
        f"{name}: column '{TIMESTAMP}' must be a Datetime or Date, got {dtype}; parse text "
        "timestamps with a loader from recurra.data.loaders (it quarantines unparseable rows)"
    )


def _value_expr(frame: pl.DataFrame, name: str) -> pl.Expr:
    dtype = frame.schema[VALUE]
    if dtype.is_numeric() or dtype == pl.Null:
        return pl.col(VALUE).cast(pl.Float64)
    raise SchemaError(f"{name}: column '{VALUE}' must be numeric, got {dtype}")


def _check_finite(frame: pl.DataFrame, name: str) -> None:
    column = frame.get_column(VALUE)
    if column.null_count() == 0 and np.isfinite(column.to_numpy()).all():
        return  # the common case, without building a query
    bad = frame.filter(pl.col(VALUE).is_nan() | pl.col(VALUE).is_infinite())
    if bad.height:
        first = bad.row(0, named=True)
        raise SchemaError(
            f"{name}: column '{VALUE}' has {bad.height} NaN/inf value(s) (first: series "
            f"{first[SERIES_ID]!r} at {first[TIMESTAMP]}); missing values must be null with "
            f"observed=False"
        )


def _check_observed(frame: pl.DataFrame, name: str) -> pl.DataFrame:
    if frame.get_column(OBSERVED).dtype != pl.Boolean:
        raise SchemaError(f"{name}: column '{OBSERVED}' must be Boolean, got "
                          f"{frame.schema[OBSERVED]}")
    observed, value = frame.get_column(OBSERVED), frame.get_column(VALUE)
    if observed.null_count() == 0 and value.null_count() == 0 and observed.all():
        return frame  # the common case, without building a query
    mismatch = frame.filter(pl.col(OBSERVED).is_null()
                            | (pl.col(OBSERVED) != pl.col(VALUE).is_not_null()))
    if mismatch.height:
        first = mismatch.row(0, named=True)
        raise SchemaError(
            f"{name}: column '{OBSERVED}' must equal value.is_not_null(); {mismatch.height} "
            f"row(s) disagree (first: series {first[SERIES_ID]!r} at {first[TIMESTAMP]})"
        )
    return frame


def _check_no_null_keys(frame: pl.DataFrame, name: str) -> None:
    for column in KEY:
        n_null = frame[column].null_count()
        if n_null:
            raise SchemaError(f"{name}: column '{column}' has {n_null} null(s); keys must be set")


def _check_unique(frame: pl.DataFrame, name: str) -> None:
    duplicated = frame.select(list(KEY)).is_duplicated()
    if duplicated.any():
        first = frame.filter(duplicated).row(0, named=True)
        raise SchemaError(
            f"{name}: {int(duplicated.sum())} rows share a (series_id, channel, timestamp) "
            f"key (first: {first[SERIES_ID]!r}/{first[CHANNEL]!r} at {first[TIMESTAMP]}); "
            "resolve duplicates at ingestion (recurra.data.regular.resolve_duplicates)"
        )


@dataclass(frozen=True)
class SeriesKey:
    """One (series_id, channel) pair."""

    series_id: str
    channel: str = DEFAULT_CHANNEL
