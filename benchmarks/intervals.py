"""Band widths and coverage of the demo's forecast intervals: the quantile head, split
conformal pooled across series (before per-series pools) and split conformal per series
(:mod:`recurra.forecasting.intervals`).

For each group of the demo config (``recurra/pipelines/recurra.toml``, the bundled sample
data) this does what ``recurra demo`` does to the group's forecaster: the last
``--holdout`` rows of each series are kept out (the demo scores them as new arrivals), the
rest is split by ``training.validation_share``, the forecaster is fitted on the first part
with the rest as validation (early stopping; the split-conformal calibration set). Then on
every stride-1 window of the held-out rows (with one lookback of context before them) it
measures, per series, the median band width ``q90 - q10`` in original units and the
share of observed targets inside ``[q10, q90]`` (nominal 80 %), for

* ``head``: the model's own quantiles (``interval="model"``, what the demo serves);
* ``pooled``: conformal offsets per (step, channel) pooled over every series (the old
  ``conformal.conformal_offsets`` of ``interval="conformal"``);
* ``per_series``: the calibrator's pools per (series, step, channel), with its fallback;
* ``adaptive_pooled`` / ``adaptive_per_series``: ACI (y_hat = the head's median +- widths
  seeded on the validation windows), streamed over the held-out windows in time order with
  delayed feedback, one state for all series (before) or one per series (now).

Stateful forecasters (the prices group) cannot calibrate on windows (``interval`` must be
``"model"``), so only their head is measured, on the forecast of ``predict()``.

    python benchmarks/intervals.py              # prints the table and one JSON line
    python benchmarks/intervals.py --write      # also benchmarks/results/intervals.json
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import add_write_flag, keep_out_of_results, setup_paths, write_result  # noqa: E402

setup_paths()

import numpy as np  # noqa: E402
import polars as pl  # noqa: E402
import torch  # noqa: E402

from recurra.data.ingest import ingest_sample  # noqa: E402
from recurra.data.schema import SERIES_ID, TIMESTAMP  # noqa: E402
from recurra.data.store import Store  # noqa: E402
from recurra.forecasting.intervals import IntervalCalibrator, IntervalConfig  # noqa: E402
from recurra.forecasting.rnn_training import _calibration_bands  # noqa: E402
from recurra.pipelines.config import load_config  # noqa: E402
from recurra.pipelines.demo import DEFAULT_HOLDOUT  # noqa: E402
from recurra.pipelines.tasks import group_series, split_by_time  # noqa: E402


def windows(model, frame: pl.DataFrame) -> dict:
    """Head quantiles, targets, masks (scaled units) and series of every window of
    ``frame``, plus each window's target scale (W, O) to go back to original units."""
    prepared = model._prepared(model._arrays(frame, "frame"))
    targets = [model.channels_.index(c) for c in model.targets_]
    bands, y, seen, index = _calibration_bands(model.module_, prepared, model.config, targets)
    ids = np.array([p.series_id for p in prepared], dtype=object)[index]
    scale = np.stack([model.scaler_[s][1][targets] for s in ids])
    return {"bands": bands, "y": y, "seen": seen, "ids": ids, "scale": scale}


def figures(bands: np.ndarray, part: dict, channels: list[str]) -> dict[str, dict[str, float]]:
    """Per series (and channel, when there are several): median width q_hi - q_lo in
    original units and coverage of [q_lo, q_hi] over the observed targets."""
    width = (bands[..., -1] - bands[..., 0]) * part["scale"][:, None, :]
    inside = (part["y"] >= bands[..., 0]) & (part["y"] <= bands[..., -1])
    result = {}
    for series_id in sorted(set(part["ids"])):
        rows = part["ids"] == series_id
        for c, channel in enumerate(channels):
            seen = part["seen"][rows][..., c]
            key = series_id if len(channels) == 1 else f"{series_id} [{channel}]"
            result[key] = {"median_width": float(np.median(width[rows][..., c][seen])),
                           "coverage": float(inside[rows][..., c][seen].mean())}
    return result


def adaptive_bands(calibrator: IntervalCalibrator, part: dict, pool_of) -> np.ndarray:
    """y_hat (the head's median) +- ACI widths streamed over the windows of ``part`` in time
    order, each series' step-h feedback of origin t arriving before origin t + h + 1 (no
    look-ahead); ``pool_of(series_id)`` names the ACI state a series feeds and reads."""
    point = part["bands"][..., part["bands"].shape[-1] // 2]                    # (W, N, O)
    scores = np.where(part["seen"], np.abs(part["y"] - point), np.nan)
    widths = np.zeros_like(point)
    steps = np.arange(point.shape[1])
    order = {s: np.flatnonzero(part["ids"] == s) for s in sorted(set(part["ids"]))}
    for t in range(max(len(rows) for rows in order.values())):
        for series_id, rows in order.items():
            if t >= len(rows):
                continue
            origin, pool = t - steps - 1, pool_of(series_id)
            if (origin >= 0).any():
                arrived = np.full(point.shape[1:], np.nan)
                issued = np.zeros(point.shape[1:])
                ok = origin >= 0
                arrived[ok] = scores[rows[origin[ok]], steps[ok]]
                issued[ok] = widths[rows[origin[ok]], steps[ok]]
                calibrator.update(pool, arrived, issued)
            widths[rows[t]] = calibrator.widths([pool], point.shape[1])[0]
    signs = np.sign(np.array([-1.0, 0.0, 1.0]))
    return point[..., None] + signs * widths[..., None]


def measure_group(name: str, model, frame: pl.DataFrame, holdout: int, share: float) -> dict:
    rank = pl.col(TIMESTAMP).rank("dense", descending=True).over(SERIES_ID)
    history = frame.filter(rank > holdout)
    context = model.config.lookback
    held_out = frame.filter(rank <= holdout + context)
    train, rest = split_by_time(history, share)
    start = time.perf_counter()
    if model.config.stateful:
        model.fit(train, validation=rest)
        forecast = model.predict()
        width = forecast.group_by(SERIES_ID).agg((pl.col("q90") - pl.col("q10")).median())
        return {"forecaster": type(model).__name__, "stateful": True,
                "head": {r[SERIES_ID]: {"median_width": r["q90"]}
                         for r in width.iter_rows(named=True)},
                "note": "stateful: interval must be 'model' (no window calibration); head "
                        "width of the forecast after the training data",
                "fit_s": round(time.perf_counter() - start, 1)}
    model.fit(train, validation=rest)
    fit_s = time.perf_counter() - start
    cal, test = windows(model, rest), windows(model, held_out)
    residuals = np.where(cal["seen"][..., None], cal["y"][..., None] - cal["bands"], np.nan)
    config = IntervalConfig("conformal", tuple(model.config.quantiles),
                            model.config.interval.min_residuals)
    per_series = IntervalCalibrator(config).fit(residuals, cal["ids"], model.targets_)
    pooled = IntervalCalibrator(config).fit(residuals, np.full(len(cal["ids"]), "all"))
    ids, channels = list(test["ids"]), model.targets_
    point = cal["bands"][..., cal["bands"].shape[-1] // 2]
    scores = np.where(cal["seen"], np.abs(cal["y"] - point), np.nan)
    adaptive = IntervalConfig("adaptive", (0.1, 0.5, 0.9), config.min_residuals,
                              model.config.interval.adaptive_gamma)
    aci_series = IntervalCalibrator(adaptive).fit(scores, cal["ids"], channels)
    aci_pooled = IntervalCalibrator(adaptive).fit(scores, np.full(len(cal["ids"]), "all"))
    return {"forecaster": type(model).__name__, "stateful": False,
            "n_calibration_windows": int(len(cal["ids"])), "n_test_windows": int(len(ids)),
            "head": figures(test["bands"], test, channels),
            "pooled": figures(pooled.apply(["all"] * len(ids), test["bands"]), test, channels),
            "per_series": figures(per_series.apply(ids, test["bands"]), test, channels),
            "adaptive_pooled": figures(adaptive_bands(aci_pooled, test, lambda s: "all"),
                                       test, channels),
            "adaptive_per_series": figures(adaptive_bands(aci_series, test, lambda s: s),
                                           test, channels),
            "fallback": per_series.fallback_, "fit_s": round(fit_s, 1)}


def table(results: dict) -> str:
    """Markdown: median width (coverage) per series for each kind of band."""
    lines = ["| group | series | head | conformal pooled | conformal per series | "
             "ACI pooled | ACI per series |", "|---|---|---|---|---|---|---|"]
    for group, data in results.items():
        for series_id in data["head"]:
            row = [group, series_id]
            for kind in KINDS:
                cell = data.get(kind, {}).get(series_id)
                row.append("n/a" if cell is None else f"{cell['median_width']:.4g}" + (
                    f" ({cell['coverage']:.2f})" if "coverage" in cell else ""))
            lines.append("| " + " | ".join(row) + " |")
    return "\n".join(lines)


KINDS = ("head", "pooled", "per_series", "adaptive_pooled", "adaptive_per_series")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--holdout", type=int, default=DEFAULT_HOLDOUT)
    parser.add_argument("--groups", nargs="*", default=None, help="default: every group")
    add_write_flag(parser)
    args = parser.parse_args()
    keep_out_of_results(args.write)
    torch.set_num_threads(2)
    config = load_config()
    store = Store(Path(tempfile.mkdtemp(prefix="recurra-intervals-")))
    ingest_sample(store)
    members = group_series(config, store)
    results = {}
    for group in config.groups.values():
        if args.groups and group.name not in args.groups:
            continue
        frame = store.read(series_ids=members[group.name])
        model = config.models[group.forecaster].build()
        results[group.name] = measure_group(group.name, model, frame, args.holdout,
                                            config.training.validation_share)
        print(f"{group.name}: done in {results[group.name]['fit_s']} s (fit)", file=sys.stderr)
    print(table(results), file=sys.stderr)
    write_result("intervals", {"holdout_rows": args.holdout, "groups": results})


if __name__ == "__main__":
    main()
