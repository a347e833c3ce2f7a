"""``recurra init``'s logic: inspect a data set through the loaders, write a starter config.

:func:`inspect_data` loads a file or folder with the loader ``ingest`` will use and
describes it (series, channels, sampling frequency, share of gaps); :func:`render_config`
turns that description into a commented ``recurra.toml`` that :func:`recurra.pipelines.config.
parse_config` accepts: one source per file, one group over every series, a forecaster
(GRU-D when gaps are common, else an LSTM), a detector, and a look-back and horizon that
fit the frequency.

Example
-------
>>> profile = inspect_data("data/my_sensors.csv")          # doctest: +SKIP
>>> text = render_config(profile)                          # doctest: +SKIP
"""

from __future__ import annotations

import csv
import gzip
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import polars as pl

from recurra.data.regular import BUSINESS_DAY, IRREGULAR, UNKNOWN, infer_frequency, parse_every
from recurra.data.schema import RecurraError

GAPPY_SHARE = 0.05           # above this share of missing values the data counts as gappy
DATA_SUFFIXES = (".csv", ".csv.gz", ".parquet", ".txt", ".txt.gz")
MAX_FILES = 200
DAY_S = 86_400


@dataclass(frozen=True)
class DataProfile:
    """What :func:`inspect_data` found; ``sources`` are (kind, path, options) per source."""

    path: str
    kind: str
    sources: tuple[tuple[str, str, dict[str, Any]], ...]
    n_series: int
    channels: tuple[str, ...]
    frequency: str
    step_seconds: float | None
    n_rows: int
    min_length: int
    gap_share: float
    n_rejected: int = 0
    series_ids: tuple[str, ...] = field(default_factory=tuple)

    @property
    def gappy(self) -> bool:
        return self.gap_share > GAPPY_SHARE


def _data_files(folder: Path) -> list[Path]:
    files = sorted(p for p in folder.rglob("*") if p.is_file()
                   and p.name.lower().endswith(DATA_SUFFIXES))
    if not files:
        raise RecurraError(f"folder {str(folder)!r} holds no data files "
                           f"({', '.join(DATA_SUFFIXES)})")
    if len(files) > MAX_FILES:
        raise RecurraError(f"folder {str(folder)!r} holds {len(files)} data files (at most "
                           f"{MAX_FILES} for one config); point `recurra init` at a subfolder")
    return files


def _header(path: Path) -> list[str]:
    if path.suffix == ".parquet":
        return list(pl.read_parquet_schema(path))
    opener = gzip.open if path.name.endswith(".gz") else open
    with opener(path, "rt", newline="") as handle:  # type: ignore[operator]
        first = handle.readline()
    delimiter = max((",", ";", "\t", "|"), key=first.count)
    return next(csv.reader([first], delimiter=delimiter), [])


def sensor_options(path: Path) -> dict[str, Any]:
    """Loader options for a sensor file: ``layout = "long"`` when the header has
    ``series_id`` and ``value`` columns, else the default wide layout."""
    columns = {c.strip().lower() for c in _header(path)}
    return {"layout": "long"} if {"series_id", "value"} <= columns else {}


def inspect_data(path: str | Path, kind: str | None = None) -> DataProfile:
    """Load ``path`` (a file or folder) with the loader of ``kind`` (default: guessed as
    ``ingest`` guesses it) and describe it.

    A folder is read as one source for the folder loaders (``nab``, ``air``, ``physionet``)
    and as one source per file for the file loaders (``sensor``, ``prices``, ...).
    """
    from recurra.data.ingest import LOADERS, SourceSpec, guess_kind

    root = Path(path).expanduser()
    if not root.exists():
        raise RecurraError(f"PATH ({str(root)!r}) does not exist")
    kind = kind or guess_kind(root)
    if kind not in LOADERS:
        raise RecurraError(f"--kind ({kind!r}) must be one of {sorted(LOADERS)}")
    folder_kinds = ("nab", "air", "physionet")
    files = [root] if root.is_file() or kind in folder_kinds else _data_files(root)
    sources = []
    frames, rejected = [], 0
    for file in files:
        options = sensor_options(file) if kind == "sensor" and file.is_file() else {}
        if kind == "matrix":
            from recurra.data.loaders import file_stem

            options = {"series_id": file_stem(file)}
        result = SourceSpec(kind, file, options).load()
        sources.append((kind, str(file), options))
        frames.append(result.frame)
        rejected += result.rejected.height
    frame = pl.concat(frames, how="vertical_relaxed") if len(frames) > 1 else frames[0]
    if frame.is_empty():
        raise RecurraError(f"PATH ({str(root)!r}) holds no rows the {kind!r} loader accepts "
                           f"({rejected} rejected)")
    return _profile(str(root), kind, tuple(sources), frame, rejected)


def _profile(path: str, kind: str, sources: tuple, frame: pl.DataFrame,
             rejected: int) -> DataProfile:
    frequencies = []
    expected = 0
    lengths = []
    for (_, _), part in frame.group_by(["series_id", "channel"], maintain_order=True):
        stamps = part["timestamp"].sort()
        frequency = infer_frequency(stamps)
        frequencies.append(frequency)
        lengths.append(part.height)
        step = _step_seconds(frequency)
        if step and frequency != BUSINESS_DAY and part.height > 1:
            span = (stamps[-1] - stamps[0]).total_seconds()
            expected += max(part.height, int(round(span / step)) + 1)
        else:
            expected += part.height
    frequency = max(set(frequencies), key=frequencies.count)
    observed = int(frame["observed"].sum())
    return DataProfile(
        path=path, kind=kind, sources=sources, n_series=frame["series_id"].n_unique(),
        channels=tuple(sorted(frame["channel"].unique().to_list())), frequency=frequency,
        step_seconds=_step_seconds(frequency), n_rows=frame.height, min_length=min(lengths),
        gap_share=1.0 - observed / max(expected, 1), n_rejected=rejected,
        series_ids=tuple(sorted(frame["series_id"].unique().to_list())[:5]))


def _step_seconds(frequency: str) -> float | None:
    if frequency == BUSINESS_DAY:
        return float(DAY_S)
    if frequency in (IRREGULAR, UNKNOWN):
        return None
    try:
        return parse_every(frequency) / 1e6
    except (RecurraError, ValueError):
        return None


def horizon_and_lookback(profile: DataProfile) -> tuple[int, int]:
    """Steps ahead and back for the frequency: sub-hourly one hour ahead and eight back,
    hourly one day ahead and one week back, daily one week ahead (five business days) and
    about three months back, coarser four steps ahead and a year back; then shrunk so that
    a look-back window and its horizon fit the shortest series' training part."""
    step = profile.step_seconds
    if step is None:                       # irregular: in rows
        horizon, lookback = 12, 48
    elif step < 3600:
        horizon = max(1, math.ceil(3600 / step))
        lookback = min(288, 8 * horizon)
    elif step < DAY_S:
        horizon, lookback = max(1, round(DAY_S / step)), max(24, round(7 * DAY_S / step))
    elif step < 7 * DAY_S:
        business = profile.frequency == BUSINESS_DAY
        horizon, lookback = (5, 60) if business else (7, 90)
    else:
        horizon, lookback = 4, 52
    room = int(profile.min_length * 0.8) // 3     # a few windows in the training part
    while horizon + lookback > max(room, 4) and lookback > 4:
        lookback = max(4, lookback // 2)
        horizon = max(1, min(horizon, lookback // 2))
    return horizon, lookback


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return repr(value)


def render_config(profile: DataProfile) -> str:
    """A commented ``recurra.toml`` for ``profile`` (checked by :func:`check_config`)."""
    horizon, lookback = horizon_and_lookback(profile)
    cell = "grud" if profile.gappy else "lstm"
    detector = ("recurra.anomaly.GRUDAutoencoder" if profile.gappy
                else "recurra.anomaly.ReconstructionDetector")
    window = max(4, min(lookback, 48))
    min_rows = max(8, min(48, profile.min_length // 2))
    why = (f"{profile.gap_share:.1%} of the values are missing (> {GAPPY_SHARE:.0%}): GRU-D "
           "reads the gaps (mask + time since last observation)" if profile.gappy else
           f"{profile.gap_share:.1%} of the values are missing: a plain LSTM reads "
           "forward-filled values plus the mask")
    lines = [
        "# Recurra pipeline config written by `recurra init` for",
        f"#   {profile.path}",
        f"# found: {profile.n_series} series, channels {', '.join(profile.channels[:12])}"
        + (" ..." if len(profile.channels) > 12 else ""),
        f"#        frequency {profile.frequency}, {profile.n_rows} rows, shortest series "
        f"{profile.min_length} rows, {profile.gap_share:.1%} missing",
        "# Every key is described in docs/configuration.md.", "",
    ]
    for index, (kind, path, options) in enumerate(profile.sources):
        lines += ["[[sources]]", f"name = {_toml_value(f'source{index}')}",
                  f"kind = {_toml_value(kind)}          # the loader (see docs/ingestion-store.md)",
                  f"path = {_toml_value(path)}"]
        if options:
            lines.append(f"options = {_toml_value(options)}")
        lines.append("")
    lines += [
        "# One forecaster + one detector per group, registered in MLflow as",
        "# recurra-main-forecast and recurra-main-detect.",
        "[groups.main]",
        'series = ["*"]           # glob patterns on series_id; add groups for other kinds',
        'forecaster = "forecaster"',
        'detector = "detector"', "",
        f"# {why}.",
        f"# horizon {horizon} / lookback {lookback} steps suit the {profile.frequency} "
        "frequency; raise",
        "# encoder.hidden_size and train.max_epochs (a detector's network.hidden_size and",
        "# train.max_epochs) once the pipeline works end to end.",
        "[models.forecaster]",
        'class = "recurra.forecasting.RNNForecaster"',
        f'params = {{ encoder = {{ cell = "{cell}", hidden_size = 32 }}, lookback = {lookback}, '
        f"horizon = {horizon}, max_windows_per_epoch = 512, "
        "train = { max_epochs = 5, batch_size = 64 } }", "",
        "# Reconstruction error over sliding windows; SPOT sets the threshold from the",
        "# training errors." + (" Gaps never alarm." if profile.gappy else ""),
        "[models.detector]",
        f'class = "{detector}"',
        f'params = {{ window = {window}, network = {{ hidden_size = 16 }}, '
        'train = { max_epochs = 3 }, threshold = { kind = "spot", risk = 1e-4 } }', "",
        "[training]",
        "validation_share = 0.2   # the last 20 % of each series validates and gates",
        f"min_rows = {min_rows}             # shorter series are skipped", "",
        "[schedules]              # cron (UTC) for `recurra serve`",
        'ingest = "0 * * * *"',
        'detect = "10 * * * *"',
        'train = "30 2 * * *"',
        'report = "0 6 * * *"', "",
    ]
    return "\n".join(lines)


def check_config(text: str) -> None:
    """Parse ``text`` with the pipeline's own loader and build every model (raises
    :class:`recurra.pipelines.config.ConfigError` naming the key when something is wrong)."""
    import tomllib

    from recurra.pipelines.config import parse_config

    config = parse_config(tomllib.loads(text))
    for model in config.models.values():
        model.build()


def next_commands(profile: DataProfile, config_path: str) -> list[str]:
    """The commands that take the data from files to a report."""
    commands = []
    for kind, path, options in profile.sources[:5]:
        extra = "".join(f" -o {k}={v}" for k, v in options.items())
        commands.append(f"recurra ingest {path} --kind {kind}{extra}")
    if len(profile.sources) > 5:
        commands.append(f"# ... and {len(profile.sources) - 5} more files, as in {config_path}")
    return commands + [f"recurra train --config {config_path}",
                       f"recurra detect --config {config_path}",
                       "recurra report", "recurra dashboard"]
