"""The train step of the flows: fit one forecaster and one detector per group, validate
them on held-out time, record the training, and register both through the gate.

Plain functions (no Prefect); ``recurra.pipelines.flows`` wraps :func:`train_group`.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
from typing import Any

import numpy as np
import polars as pl

from recurra.data.schema import (
    CHANNEL,
    SERIES_ID,
    TIMESTAMP,
    ContractFrame,
    RecurraError,
    contract,
    to_polars,
)
from recurra.pipelines import gate_data, monitoring, runs
from recurra.pipelines.config import GroupConfig, PipelineConfig
from recurra.pipelines.incremental import interval_method
from recurra.pipelines.runs import _mean, group_series
from recurra.pipelines.series_guard import exclude_unstable_series


def split_by_time(frame: Any, share: float) -> tuple[ContractFrame, ContractFrame]:
    """Per series, the first ``1 - share`` of its timestamps for training, the rest after,
    both as :class:`~recurra.data.schema.ContractFrame` (``frame`` is checked once, here or
    where it was made a ``ContractFrame``; the fits downstream do not check it again).

    >>> from tests.conftest import make_frame
    >>> train, rest = split_by_time(make_frame(n_series=1, n_steps=10), 0.2)
    >>> train.height, rest.height
    (8, 2)
    """
    rank = pl.col(TIMESTAMP).rank("dense").over(SERIES_ID)
    count = pl.col(TIMESTAMP).n_unique().over(SERIES_ID)
    cut = (count * (1.0 - share)).floor()
    checked = contract(frame, name="frame")
    return checked.rows(rank <= cut), checked.rows(rank > cut)


def validate_forecaster(forecaster: Any, history: pl.DataFrame, rest: pl.DataFrame,
                        horizon: int, max_folds: int, context: int = 1024) -> dict[str, float]:
    """Rolling-origin validation on the rows after training; MAE per series.

    Fold ``k`` of a series is its ``k``-th block of ``horizon`` timestamps after training
    (at most ``max_folds``); its origin is the block's first timestamp.  The forecaster
    predicts from the last ``context`` rows before each series' origin (``predict(frame=...)``
    leaves its own state alone) and is scored on the block.  The same folds score a new
    model and the champion, so the gate compares like with like.
    """
    errors: dict[str, list[np.ndarray]] = {}
    ranked = rest.with_columns(
        (pl.col(TIMESTAMP).rank("dense").over(SERIES_ID) - 1).floordiv(horizon).alias("_fold"))
    # checked once; each fold's history is a row filter of it, so predict does not check it
    frame = contract(pl.concat([to_polars(history), to_polars(rest)], how="vertical_relaxed"),
                     name="history")
    for fold in range(max_folds):
        chunk = ranked.filter(pl.col("_fold") == fold).drop("_fold")
        if chunk.is_empty():
            break
        origins = chunk.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).min())
        forecast = forecaster.predict(frame=frame.rows(_last_before(origins, context)),
                                      horizon=horizon)
        resolved = monitoring.live_errors(forecast.drop("issued_at", strict=False), chunk)
        for row in resolved.iter_rows(named=True):
            errors.setdefault(row[SERIES_ID], []).append(np.repeat(row["mae"], row["n_points"]))
    return {sid: float(np.concatenate(parts).mean()) for sid, parts in errors.items()}


def _last_before(origins: pl.DataFrame, context: int) -> pl.Expr:
    """Row predicate: the last ``context`` rows of each (series, channel) before its series'
    origin (``origins``: series_id, timestamp); series without an origin keep no row."""
    origin = pl.col(SERIES_ID).replace_strict(
        origins[SERIES_ID], origins[TIMESTAMP], default=None,
        return_dtype=origins.schema[TIMESTAMP])
    before = pl.col(TIMESTAMP) < origin
    from_end = before.cast(pl.Int64).reverse().cum_sum().reverse().over(SERIES_ID, CHANNEL)
    return before.fill_null(False) & (from_end <= context)


def fit_forecaster(forecaster: Any, train: pl.DataFrame, rest: pl.DataFrame) -> Any:
    """Fit ``forecaster`` on ``train``; ``rest`` is also its validation frame when it uses one:
    a forecaster trained by the shared loop (``validation_monitors = True``, e.g.
    ``RNNForecaster``) early-stops on it and reports its per-epoch ``val_loss`` (tracked as a
    metric history); one whose intervals are calibrated on held-out data
    (``interval="conformal"`` or ``"adaptive"``) calibrates on it. The gate still scores it on
    ``rest``."""
    if interval_method(getattr(forecaster, "config", None)) == "model":
        if getattr(forecaster, "validation_monitors", False) and not rest.is_empty():
            return forecaster.fit(train, validation=rest)
        return forecaster.fit(train)
    if rest.is_empty():
        raise RecurraError(f"{type(forecaster).__name__} with interval="
                           f"{forecaster.config.interval.method!r} needs validation rows; "
                           "training.validation_share leaves none")
    return forecaster.fit(train, validation=rest)


def _left_out(estimator: Any, role: str) -> list[str]:
    """Messages for the series the estimator itself left out of its fit (``excluded_``)."""
    return [f"{role}: {reason} (left out of training)"
            for reason in (getattr(estimator, "excluded_", None) or {}).values()]


def train_group(group: GroupConfig, config: PipelineConfig, store: Any,
                until: dt.datetime | None = None, reason: str = "",
                holdout_rows: int = 0) -> dict[str, Any]:
    """Fit, validate, log, register and gate the forecaster and detector of one group.

    Both are fitted on the first ``1 - validation_share`` of each series, scored on the rest
    (the champion too, on the same rows), then advanced through the rest with ``update`` so
    the registered state ends at ``trained_until``.  The forecaster is gated on validation
    MAE (lower is better), the detector on the composite F1 of seeded anomalies injected into a
    copy of the rest (``recurra.pipelines.gate_data``; higher is better).  Returns a dict: group,
    series,
    trained_until, validation_mae (per series, the gate's folds), reference_mae (per series,
    the one-step MAE the live accuracy test compares with: :func:`replay_one_step`), and per
    role the registered name, version,
    whether the gate promoted it and why.  ``holdout_rows`` leaves the last rows of each
    series out (the demo scores them as new arrivals).
    """
    ids = group_series(config, store).get(group.name, [])
    # one snapshot: the series table version is logged with the model (time travel)
    version = store.version() if hasattr(store, "version") else None
    frame = store.read(series_ids=ids, end=until, **({"version": version} if version is not None
                                                      else {})) if ids else pl.DataFrame()
    if holdout_rows and frame.height:
        frame = frame.filter(pl.col(TIMESTAMP).rank("dense", descending=True).over(SERIES_ID)
                             > holdout_rows)
    frame, excluded = exclude_unstable_series(frame)
    if excluded and frame.is_empty():
        raise RecurraError(f"group {group.name!r}: every series left out: "
                           + "; ".join(excluded))
    if frame.height < config.training.min_rows:
        raise RecurraError(f"group {group.name!r}: {frame.height} rows in the store, "
                           f"training.min_rows is {config.training.min_rows}")
    frame = contract(frame, name=f"group {group.name!r}")  # the one check of this run
    train, rest = split_by_time(frame, config.training.validation_share)
    ends = frame.group_by(SERIES_ID).agg(pl.col(TIMESTAMP).max())
    present = set(frame[SERIES_ID].unique().to_list())  # once: not per series (O(n^2))
    trained_ids = [i for i in ids if i in present]
    result: dict[str, Any] = {"group": group.name, "series": trained_ids, "reason": reason,
                              "trained_until": frame[TIMESTAMP].max().isoformat(),
                              "series_until": {r[SERIES_ID]: r[TIMESTAMP].isoformat()
                                               for r in ends.iter_rows(named=True)},
                              "models": {}, "validation_mae": {}, "excluded": excluded}
    backend = runs.registry_backend()
    context = {"group": group.name, "reason": reason, "train_rows": train.height,
               "validation_rows": rest.height, "series_version": version}
    if group.forecaster:
        result["models"]["forecaster"], result["validation_mae"], result["reference_mae"] = \
            _train_forecaster(group, config, backend, train, rest, context,
                              result["excluded"])
    if group.detector:
        result["models"]["detector"] = _train_detector(group, config, backend, train, rest,
                                                       context, result["excluded"])
    _record_training(store, group, result)
    return result


def _train_forecaster(group: GroupConfig, config: PipelineConfig, backend: Any,
                      train: pl.DataFrame, rest: pl.DataFrame, context: dict[str, Any],
                      excluded: list[str]) -> tuple[dict[str, Any], dict[str, float]]:
    """Fit the group's forecaster, validate it and the champion on the same rolling folds
    (MAE per series), advance it through the validation rows and register it; the series it
    left out of its fit are appended to ``excluded`` and not validated."""
    model = config.models[group.forecaster]
    forecaster = fit_forecaster(model.build(), train, rest)
    excluded.extend(_left_out(forecaster, "forecaster"))
    left_out = list(getattr(forecaster, "excluded_", None) or {})
    if left_out:
        train, rest = (f.rows(~pl.col(SERIES_ID).is_in(left_out)) for f in (train, rest))
    horizon = int(getattr(forecaster.config, "horizon", 24))
    folds = config.training.backtest_folds
    validation = validate_forecaster(forecaster, train, rest, horizon, folds)
    champion = backend.champion(group.model_name("forecaster"))
    champion_value = (_mean(validate_forecaster(champion[0], train, rest, horizon,
                                                folds).values()) if champion else None)
    reference = replay_one_step(forecaster, rest, config.monitoring.reference_steps)
    info = backend.register(
        group.model_name("forecaster"), forecaster, metric="val_mae",
        value=_mean(validation.values()), champion_value=champion_value,
        params={**context, "model": model.name, "config": full_config(forecaster, model)},
        frame=train)
    return info, validation, reference


def replay_one_step(forecaster: Any, rest: Any, steps: int) -> dict[str, float]:
    """Advance ``forecaster`` through ``rest`` (so its state ends where the rows do) and
    return, per series, the MAE of its one-step forecasts over the last ``steps`` rows.

    Those rows are replayed one timestamp at a time, as scheduled runs will feed them: the
    forecast that ``update`` returns is scored on the next row (every channel, observed
    values only), the same quantity the live accuracy test measures
    (:func:`recurra.pipelines.monitoring.live_errors` keeps the latest issue of each target).
    It is the live test's reference; a few validation folds of ``horizon`` rows from one or
    two origins are too few points to compare one series with (``{}`` when ``steps`` is 0).
    """
    if not rest.height:
        return {}
    frame = rest.frame if hasattr(rest, "frame") else rest
    from_end = frame.select(pl.col(TIMESTAMP).rank("dense", descending=True)
                            .over(SERIES_ID)).to_series().to_numpy()
    head = from_end > steps
    forecast = forecaster.update(rest.rows(pl.Series(head))) if head.any() else None
    totals: dict[str, list[float]] = {}
    for back in range(min(steps, int(from_end.max())), 0, -1):
        rows = rest.rows(pl.Series(from_end == back))
        if forecast is not None:
            resolved = monitoring.live_errors(forecast.drop("issued_at", strict=False), rows)
            for sid, n, mae in resolved.select(SERIES_ID, "n_points", "mae").iter_rows():
                total = totals.setdefault(sid, [0.0, 0])
                total[0], total[1] = total[0] + n * mae, total[1] + n
        forecast = forecaster.update(rows)
    return {sid: total / n for sid, (total, n) in totals.items() if n}


def _train_detector(group: GroupConfig, config: PipelineConfig, backend: Any,
                    train: pl.DataFrame, rest: pl.DataFrame, context: dict[str, Any],
                    excluded: list[str]) -> dict[str, Any]:
    """Fit the group's detector, gate it against the champion on the same validation copy
    with injected anomalies (``recurra.pipelines.gate_data``; composite F1, higher is better),
    advance
    it through the real validation rows and register it; the series it left out of its fit
    are appended to ``excluded`` and dropped from its validation rows."""
    model = config.models[group.detector]
    detector = model.build().fit(train)
    excluded.extend(_left_out(detector, "detector"))
    left_out = list(getattr(detector, "excluded_", None) or {})
    if left_out:
        rest = rest.rows(~pl.col(SERIES_ID).is_in(left_out))
    injected, labels = gate_data.inject_anomalies(rest)
    champion = backend.champion(group.model_name("detector"))
    champion_value = (gate_data.gate_score(champion[0], injected, labels, train).composite_f1
                      if champion and rest.height else None)
    score = gate_data.gate_score(detector, injected, labels, train)
    if rest.height:
        detector.update(rest)
    return backend.register(
        group.model_name("detector"), detector, metric=gate_data.GATE_METRIC,
        value=score.composite_f1, champion_value=champion_value, higher_is_better=True,
        extra_metrics=score.metrics(),
        params={**context, "model": model.name, "config": full_config(detector, model),
                "gate_injected_anomalies": labels.height}, frame=train)


def full_config(estimator: Any, model: Any) -> dict[str, Any]:
    """Every field of the estimator's config (defaults included, not only the TOML keys),
    for tracking; ``model.params`` when the estimator has no dataclass config."""
    config = getattr(estimator, "config", None)
    if config is not None and dataclasses.is_dataclass(config):
        return dataclasses.asdict(config)
    return dict(model.params)


def _record_training(store: Any, group: GroupConfig, result: dict[str, Any]) -> None:
    rows = [{"model_name": info["name"], "version": str(info["version"]), "group": group.name,
             "role": role, "trained_until": dt.datetime.fromisoformat(result["trained_until"]),
             "validation_mae": json.dumps(result.get("validation_mae", {})),
             "reference_mae": json.dumps(result.get("reference_mae", {})),
             "series_until": json.dumps(result["series_until"]),
             "promoted": bool(info.get("promoted")), "reason": result.get("reason", ""),
             "trained_at": dt.datetime.now(dt.UTC)}
            for role, info in result["models"].items()]
    if rows:
        store.write_table("trainings", pl.DataFrame(rows), key=("model_name", "version"))
