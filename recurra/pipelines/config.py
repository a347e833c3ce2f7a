"""The pipeline configuration: one TOML file, validated with errors naming the key.

The file (default: ``recurra/pipelines/recurra.toml``, for the bundled sample data) declares the
data sources, the series groups (which series share models), the model configs, the
schedules of ``recurra serve``, the task runner (threads or a Dask cluster) and the
monitoring rules::

    [[sources]]                       # what `ingest` reads; kind "sample" = bundled data,
    name = "sample"       # else a loader of recurra.data.ingest.LOADERS + path + options
    kind = "sample"

    [groups.sensors]                  # one forecaster + one detector per group
    series = ["sensor_*"]             # glob patterns on series_id
    forecaster = "rnn_tiny"           # names of [models.*] tables
    detector = "ae_tiny"

    [models.rnn_tiny]
    class = "recurra.forecasting.RNNForecaster"   # dotted path of the estimator
    params = { encoder = { hidden_size = 8 }, horizon = 12, train = { max_epochs = 2 } }

    [models.ens]                          # an ensemble: members by name, one config each
    class = "recurra.anomaly.EnsembleDetector"    # (an array of tables becomes a tuple of configs)
    params = { members = ["grud_ae", "isolation_forest"], configs = [
        { threshold = { kind = "likelihood" }, train = { max_epochs = 2 } },
        { threshold = { kind = "likelihood" } } ] }

    [schedules]                       # cron strings (UTC) for `recurra serve`
    ingest = "0 * * * *"

    [runner]                          # "threads" (default) or "dask"
    kind = "threads"
    max_workers = 2

    [monitoring]
    error_margin = 1.5                # live MAE > margin * validation MAE ...
    consecutive_runs = 3              # ... for this many consecutive detect runs
    drift_test = "mean_variance"      # recent vs training window, on what the model sees,
    drift_fdr = 0.05                  # Benjamini-Hochberg across series and channels

Size: ~500 lines, because the whole TOML schema is here: each key's dataclass field, its
default, its documentation (read by ``recurra.pipelines.docgen`` for
``docs/configuration.md``) and its check sit together, so a rule cannot drift from its
documentation.

Example
-------
>>> config = load_config()                      # the default file
>>> sorted(config.groups)[:1]                   # doctest: +SKIP
['sensors']
"""

from __future__ import annotations

import dataclasses
import fnmatch
import importlib
import importlib.util
import re
import tomllib
import typing
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from recurra._legacy import is_legacy, modern_path
from recurra.data.config_tree import ConfigKeyError, build_config
from recurra.data.schema import RecurraError

DEFAULT_CONFIG = Path(__file__).resolve().parent / "recurra.toml"
SOURCE_KINDS = ("sample", "sensor", "nab", "prices", "matrix", "air", "ett", "physionet")
RUNNER_KINDS = ("threads", "dask", "sequential")
MODEL_ROLES = ("forecaster", "detector")
ROLE_TASKS = {"forecaster": "forecast", "detector": "detect"}
_GROUP_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
SCHEDULE_NAMES = ("ingest", "detect", "train", "backtest", "report", "daily", "maintain")


class ConfigError(RecurraError, ValueError):
    """The configuration file is wrong; the message names the key, the value and the rule."""


@dataclass(frozen=True)
class SourceConfig:
    """One input source: the bundled sample, or a file/folder for a loader of
    ``recurra.data.ingest.LOADERS`` (``kind``) with its keyword ``options``.

    name : a label for the source in reports (default ``source<index>``).
    kind : ``"sample"`` (the bundled data) or a loader: ``"sensor"``, ``"nab"``,
        ``"prices"``, ``"matrix"``, ``"air"``, ``"ett"``, ``"physionet"``.
    path : the file or folder to read (required unless ``kind = "sample"``).
    options : keyword options of the loader, e.g. ``{ series_id = "plant_a" }``.
    """

    name: str
    kind: str = "sample"
    path: str = ""
    options: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _check_choice(f"sources.{self.name}.kind", self.kind, SOURCE_KINDS)
        if self.kind != "sample" and not self.path:
            raise ConfigError(f"`sources.{self.name}.path` is empty: a source of kind "
                              f"{self.kind!r} needs a path")


@dataclass(frozen=True)
class ModelConfig:
    """An estimator by dotted class path plus the keyword values of its config dataclass.

    class_path : dotted path of the estimator class, e.g. ``"recurra.forecasting.RNNForecaster"``.
    params : the fields of the estimator's config dataclass (see "Model parameters").
    config_class : dotted path of the config dataclass when the class does not declare it.
    """

    name: str
    class_path: str
    params: dict[str, Any] = field(default_factory=dict)
    config_class: str = ""

    def __post_init__(self) -> None:
        if "." not in self.class_path:
            raise ConfigError(f"`models.{self.name}.class` ({self.class_path!r}) must be a "
                              "dotted path such as 'recurra.forecasting.RNNForecaster'")

    def build(self) -> Any:
        """A fresh, unfitted estimator ``Cls(ConfigCls(**params))``."""
        cls = import_dotted(self.class_path, f"models.{self.name}.class")
        config_cls = (import_dotted(self.config_class, f"models.{self.name}.config_class")
                      if self.config_class else _config_class_of(cls, self.name))
        if config_cls is None:
            return cls(**self.params)
        try:
            return cls(make_dataclass_config(config_cls, self.params, f"models.{self.name}.params"))
        except (RecurraError, ValueError, TypeError) as error:
            if isinstance(error, ConfigError):
                raise
            raise ConfigError(f"`models.{self.name}.params`: {error}") from error


def make_dataclass_config(config_cls: type, params: dict[str, Any], key: str) -> Any:
    """``config_cls`` from ``params`` (:func:`recurra.data.config_tree.build_config`): nested
    tables become the config's parts, lists tuples, old flat keys move into their part with a
    ``FutureWarning`` naming both; an unknown key lists the valid ones."""
    try:
        return build_config(config_cls, params, where=key)
    except ConfigKeyError as error:
        raise ConfigError(str(error)) from None


@dataclass(frozen=True)
class GroupConfig:
    """Series that share one forecaster and one detector.

    series : glob patterns on ``series_id``; a series belongs to the first group (in file
        order) that matches it.
    forecaster : name of the ``[models.*]`` table of the group's forecaster ("" = none).
    detector : name of the ``[models.*]`` table of the group's detector ("" = none).
    """

    name: str
    series: tuple[str, ...] = ("*",)
    forecaster: str = ""
    detector: str = ""
    drift_on: str = "auto"   # [groups.<name>.monitor] drift_on: recurra.anomaly.drift.DRIFT_INPUTS

    def __post_init__(self) -> None:
        _check_choice(f"groups.{self.name}.monitor.drift_on", self.drift_on,
                      ("auto", "scaled", "returns", "difference"))

    def matches(self, series_id: str) -> bool:
        return any(fnmatch.fnmatchcase(series_id, pattern) for pattern in self.series)

    def model_name(self, role: str) -> str:
        """Registered model name of a role, ``recurra.pipelines.registry.model_name``'s convention:
        ``recurra-<group>-forecast`` / ``recurra-<group>-detect``."""
        return f"recurra-{self.name}-{ROLE_TASKS[role]}"


@dataclass(frozen=True)
class RunnerConfig:
    """Task runner: threads by default, a Dask cluster (``address``) to scale out.

    kind : ``"threads"``, ``"dask"`` or ``"sequential"``.
    max_workers : concurrent training tasks (threads runner).
    address : a Dask scheduler (``"tcp://host:8786"``) when ``kind = "dask"``.
    n_dask_workers : workers of the local Dask cluster started when no address is given.
    dask_processes : the local cluster's workers are separate processes (true: training runs
        in parallel past the GIL) or threads inside the flow's own process (false, the
        default: no pickling, but no multi-process training).
    """

    kind: str = "threads"
    max_workers: int = 2
    address: str = ""
    n_dask_workers: int = 2
    dask_processes: bool = False

    def __post_init__(self) -> None:
        _check_choice("runner.kind", self.kind, RUNNER_KINDS)
        _check_positive("runner.max_workers", self.max_workers)
        _check_positive("runner.n_dask_workers", self.n_dask_workers)


@dataclass(frozen=True)
class MonitoringConfig:
    """When live error or input drift triggers a retrain (the promotion gate still decides).

    error_margin : retrain when a series' live MAE exceeds this times its reference MAE ...
    consecutive_runs : ... for this many consecutive detect runs.
    reference_steps : the reference of the live accuracy test: when a forecaster is trained,
        the last this many validation rows per series are replayed one at a time and its
        one-step MAE over them is kept (0: the MAE of the gate's validation folds instead,
        a handful of points from one or two origins).
    accuracy_test : ``"cusum"``: a one-sided CUSUM per series of ``points x (live /
        reference MAE - error_margin)``, flagged above ``cusum_threshold``; ``"runs"``: live
        MAE above the margin for ``consecutive_runs`` runs in a row.
    cusum_threshold : the CUSUM statistic that flags a series.
    accuracy_min_share : the group is retrained on live accuracy when at least this share
        of its monitored series is flagged.  A series flagged alone is listed to watch: on
        stationary sensor series the test fires for about 5 % of the series at any one run
        (``benchmarks/pipeline_scale.py``), which says little about a global model.
    drift_test : ``"mean_variance"`` (a shift of mean or variance, with autocorrelation-robust
        variances), ``"ks"`` (two-sample Kolmogorov-Smirnov), ``"psi"`` (population stability
        index over 10 training-quantile bins, drift above 0.25) or ``"none"``.
    drift_correction : ``"bh"``: Benjamini-Hochberg across the group's series and channels
        at ``drift_fdr``; ``"none"``: each test at ``drift_pvalue``.
    drift_fdr : the false-discovery rate of the drift flags.
    drift_min_effect : the smallest shift flagged, in training standard deviations.
    drift_pvalue : drift when the test's p-value is below this (``drift_correction =
        "none"``).
    catch_up_steps : rows per series per chunk when a detect run has a backlog (missed
        runs are processed in time order, in chunks of this many rows).
    drift_window : the last this many observed values are compared with the training window.
    drift_reference_rows : the last this many rows of the training window per channel are
        the drift test's reference.
    min_drift_rows : fewest values on each side for a drift test to run.
    """

    error_margin: float = 1.5
    consecutive_runs: int = 3
    accuracy_test: str = "cusum"      # "cusum" on live/validation MAE, or "runs" (N in a row)
    cusum_threshold: float = 8.0
    reference_steps: int = 24         # one-step replay over the last validation rows
    accuracy_min_share: float = 0.2   # share of the group's series flagged to retrain
    drift_test: str = "mean_variance"  # recurra.anomaly.drift.DRIFT_TESTS, or "none"
    drift_correction: str = "bh"      # Benjamini-Hochberg across series/channels, or "none"
    drift_fdr: float = 0.05
    drift_min_effect: float = 0.5     # in training standard deviations
    drift_pvalue: float = 0.01        # per-test cut when drift_correction = "none"
    catch_up_steps: int = 168        # rows per series per chunk when detect has a backlog
    drift_window: int = 168
    drift_reference_rows: int = 4096  # the last rows of the training window per channel
    min_drift_rows: int = 30

    def __post_init__(self) -> None:
        if not self.error_margin >= 1.0:
            raise ConfigError(f"`monitoring.error_margin` ({self.error_margin}) must be >= 1.0 "
                              "(live error is compared with margin x validation error)")
        _check_positive("monitoring.consecutive_runs", self.consecutive_runs)
        _check_choice("monitoring.accuracy_test", self.accuracy_test, ("cusum", "runs"))
        if not 0.0 <= self.accuracy_min_share <= 1.0:
            raise ConfigError(f"`monitoring.accuracy_min_share` ({self.accuracy_min_share}) "
                              "must be in [0, 1]")
        if isinstance(self.reference_steps, bool) or not isinstance(self.reference_steps, int) \
                or self.reference_steps < 0:
            raise ConfigError(f"`monitoring.reference_steps` ({self.reference_steps!r}) must "
                              "be an integer >= 0")
        if not self.cusum_threshold > 0.0:
            raise ConfigError(f"`monitoring.cusum_threshold` ({self.cusum_threshold}) must "
                              "be > 0")
        _check_choice("monitoring.drift_test", self.drift_test,
                      ("mean_variance", "ks", "psi", "none"))
        _check_choice("monitoring.drift_correction", self.drift_correction, ("bh", "none"))
        if not self.drift_min_effect >= 0.0:
            raise ConfigError(f"`monitoring.drift_min_effect` ({self.drift_min_effect}) must "
                              "be >= 0")
        for name in ("drift_pvalue", "drift_fdr"):
            if not 0.0 < getattr(self, name) < 1.0:
                raise ConfigError(f"`monitoring.{name}` ({getattr(self, name)}) must be in "
                                  "(0, 1)")
        _check_positive("monitoring.drift_window", self.drift_window)
        _check_positive("monitoring.drift_reference_rows", self.drift_reference_rows)
        _check_positive("monitoring.catch_up_steps", self.catch_up_steps)
        _check_positive("monitoring.min_drift_rows", self.min_drift_rows)


@dataclass(frozen=True)
class TrainingConfig:
    """Split and gate settings shared by every group.

    validation_share : the last share of each series held out for validation and the gate.
    min_rows : series with fewer rows are not trained.
    backtest_folds : rolling-origin folds of ``recurra backtest``.
    gate_metric : the forecasters' gate metric (lower is better).
    """

    validation_share: float = 0.2
    min_rows: int = 48
    backtest_folds: int = 2
    gate_metric: str = "mae"

    def __post_init__(self) -> None:
        if not 0.0 < self.validation_share < 0.9:
            raise ConfigError(f"`training.validation_share` ({self.validation_share}) must be "
                              "in (0, 0.9)")
        _check_positive("training.min_rows", self.min_rows)
        _check_positive("training.backtest_folds", self.backtest_folds)


@dataclass(frozen=True)
class PipelineConfig:
    """The whole file, validated.  Build it with :func:`load_config` or :func:`parse_config`."""

    sources: tuple[SourceConfig, ...]
    groups: dict[str, GroupConfig]
    models: dict[str, ModelConfig]
    schedules: dict[str, str] = field(default_factory=dict)
    runner: RunnerConfig = field(default_factory=RunnerConfig)
    monitoring: MonitoringConfig = field(default_factory=MonitoringConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    path: str = ""

    def __post_init__(self) -> None:
        if not self.groups:
            raise ConfigError("`groups` is empty: declare at least one [groups.<name>] table")
        for group in self.groups.values():
            for role in MODEL_ROLES:
                name = getattr(group, role)
                if name and name not in self.models:
                    raise ConfigError(f"`groups.{group.name}.{role}` ({name!r}) is not a "
                                      f"[models.*] table; defined: {sorted(self.models)}")

    def group_of(self, series_id: str) -> GroupConfig | None:
        """The first group (in file order) whose patterns match ``series_id``."""
        return next((g for g in self.groups.values() if g.matches(series_id)), None)


def load_config(path: str | Path | None = None) -> PipelineConfig:
    """Read and validate a TOML config (``None``: the bundled default for the sample data)."""
    file = Path(path) if path else DEFAULT_CONFIG
    if not file.is_file():
        raise ConfigError(f"config file {str(file)!r} does not exist")
    try:
        raw = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(f"config file {str(file)!r} is not valid TOML: {error}") from error
    return parse_config(raw, path=str(file))


def parse_config(raw: dict[str, Any], path: str = "") -> PipelineConfig:
    """Validate a parsed TOML document; every error names the offending key."""
    known = {"sources", "groups", "models", "schedules", "runner", "monitoring", "training"}
    _check_keys("(top level)", raw, known)
    sources = tuple(_parse_source(i, s) for i, s in enumerate(_list(raw, "sources")))
    models = {n: _parse_model(n, t) for n, t in _table(raw, "models").items()}
    groups = {n: _parse_group(n, t) for n, t in _table(raw, "groups").items()}
    schedules = _parse_schedules(_table(raw, "schedules"))
    for model in models.values():
        model.build()  # a typo in `params` (`hiden_size`) fails here, not at train time
    return PipelineConfig(
        sources=sources, groups=groups, models=models, schedules=schedules,
        runner=_build(RunnerConfig, "runner", _table(raw, "runner")),
        monitoring=_build(MonitoringConfig, "monitoring", _table(raw, "monitoring")),
        training=_build(TrainingConfig, "training", _table(raw, "training")),
        path=path,
    )


def import_dotted(dotted: str, key: str) -> Any:
    """Import ``package.module.Name``; a clear :class:`ConfigError` naming ``key`` if absent.
    A path from before the ``recurra`` package (``forecasting.RNNForecaster``) imports from
    ``recurra`` with a warning that names the key and its new value."""
    path = modern_path(dotted) if is_legacy(dotted) and importlib.util.find_spec(
        dotted.partition(".")[0]) is None else dotted
    if path != dotted:
        warnings.warn(f"`{key}` = {dotted!r}: the packages moved into recurra; write "
                      f"{path!r}", FutureWarning, stacklevel=2)
    module_name, _, attribute = path.rpartition(".")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as error:
        raise ConfigError(f"`{key}` ({dotted!r}) cannot be imported: {error}") from error


# Parsing helpers ---------------------------------------------------------------------------
def _parse_source(index: int, table: Any) -> SourceConfig:
    if not isinstance(table, dict):
        raise ConfigError(f"`sources[{index}]` must be a table, got {type(table).__name__}")
    _check_keys(f"sources[{index}]", table, {"name", "kind", "path", "options"})
    name = str(table.get("name", f"source{index}"))
    return SourceConfig(name=name, kind=str(table.get("kind", "sample")),
                        path=str(table.get("path", "")), options=dict(table.get("options", {})))


def _parse_model(name: str, table: Any) -> ModelConfig:
    _check_table(f"models.{name}", table)
    _check_keys(f"models.{name}", table, {"class", "params", "config_class"})
    if "class" not in table:
        raise ConfigError(f"`models.{name}.class` is missing: give the estimator's dotted path")
    return ModelConfig(name=name, class_path=str(table["class"]),
                       params=dict(_table(table, "params", f"models.{name}")),
                       config_class=str(table.get("config_class", "")))


def _parse_group(name: str, table: Any) -> GroupConfig:
    _check_table(f"groups.{name}", table)
    if not _GROUP_NAME.match(name):
        raise ConfigError(f"`groups.{name}`: the group name ({name!r}) must be letters, "
                          "digits, '_', '.' or '-' starting with a letter or digit (it names "
                          "the registered models and MLflow experiments)")
    _check_keys(f"groups.{name}", table, {"series", "forecaster", "detector", "monitor"})
    monitor = _table(table, "monitor", f"groups.{name}")
    _check_keys(f"groups.{name}.monitor", monitor, {"drift_on"})
    series = table.get("series", ["*"])
    if isinstance(series, str):
        series = [series]
    if not series or not all(isinstance(s, str) for s in series):
        raise ConfigError(f"`groups.{name}.series` ({series!r}) must be a non-empty list of "
                          "glob patterns on series_id")
    return GroupConfig(name=name, series=tuple(series),
                       forecaster=str(table.get("forecaster", "")),
                       detector=str(table.get("detector", "")),
                       drift_on=str(monitor.get("drift_on", "auto")))


CRON_FIELDS = (("minute", 0, 59), ("hour", 0, 23), ("day of month", 1, 31), ("month", 1, 12),
               ("day of week", 0, 7))


def _parse_schedules(table: dict[str, Any]) -> dict[str, str]:
    _check_keys("schedules", table, set(SCHEDULE_NAMES))
    for name, cron in table.items():
        if not isinstance(cron, str) or len(cron.split()) != 5:
            raise ConfigError(f"`schedules.{name}` ({cron!r}) must be a 5-field cron string "
                              "such as '0 * * * *'")
        for text, (field_name, low, high) in zip(cron.split(), CRON_FIELDS, strict=True):
            _check_cron_field(f"schedules.{name}", cron, text, field_name, low, high)
    return dict(table)


def _check_cron_field(key: str, cron: str, text: str, field_name: str, low: int,
                      high: int) -> None:
    """Numbers in ``*``, ``a``, ``a-b``, ``a,b``, ``*/n``, ``a-b/n`` must lie in [low, high]
    (names such as ``mon`` or ``jan`` pass through to the scheduler)."""
    for part in text.split(","):
        base, _, step = part.partition("/")
        numbers = [n for n in base.split("-") if n.isdigit()]
        if step and (not step.isdigit() or int(step) == 0):
            raise ConfigError(f"`{key}` ({cron!r}): {field_name} step {step!r} must be a "
                              "positive integer")
        for number in numbers:
            if not low <= int(number) <= high:
                raise ConfigError(f"`{key}` ({cron!r}): {field_name} {number} must be in "
                                  f"{low}-{high}")


def _build(cls: type, key: str, table: dict[str, Any]) -> Any:
    names = {f.name for f in dataclasses.fields(cls)}
    _check_keys(key, table, names)
    hints = typing.get_type_hints(cls)
    for name, value in table.items():
        expected = hints[name]
        ok = (isinstance(value, int | float) and not isinstance(value, bool)
              if expected is float else isinstance(value, expected))
        if not ok:
            raise ConfigError(f"`{key}.{name}` ({value!r}) must be of type {expected.__name__}")
    return cls(**table)


def _config_class_of(cls: type, name: str) -> type | None:
    """The estimator's ``config_class`` attribute, else the dataclass its
    ``__init__(self, config: X)`` is annotated with."""
    declared = getattr(cls, "config_class", None)
    if isinstance(declared, type) and dataclasses.is_dataclass(declared):
        return declared
    try:
        hints = typing.get_type_hints(cls.__init__)
    except Exception:  # noqa: BLE001 - unresolvable annotations: fall back to plain kwargs
        return None
    candidate = hints.get("config")
    options = typing.get_args(candidate) or (candidate,)
    return next((c for c in options if isinstance(c, type) and dataclasses.is_dataclass(c)),
                None)


def _list(raw: dict[str, Any], key: str) -> list[Any]:
    value = raw.get(key, [])
    if not isinstance(value, list):
        raise ConfigError(f"`{key}` must be an array of tables ([[{key}]]), "
                          f"got {type(value).__name__}")
    return value


def _table(raw: dict[str, Any], key: str, parent: str = "") -> dict[str, Any]:
    value = raw.get(key, {})
    _check_table(f"{parent}.{key}" if parent else key, value)
    return value


def _check_table(key: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigError(f"`{key}` must be a table, got {type(value).__name__} ({value!r})")


def _check_keys(where: str, table: dict[str, Any], valid: set[str]) -> None:
    unknown = sorted(set(table) - valid)
    if unknown:
        raise ConfigError(f"`{where}` has unknown key(s) {unknown}; valid keys: {sorted(valid)}")


def _check_choice(key: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ConfigError(f"`{key}` ({value!r}) must be one of {list(choices)}")


def _check_positive(key: str, value: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"`{key}` ({value!r}) must be a positive integer")
