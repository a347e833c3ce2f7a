"""Per-series stream state of the forecaster: built from a history, advanced with new rows,
and turned into forecasts (moved out of :mod:`recurra.forecasting.windows`).

A state is a dict per series: ``origin``, ``last_time``, ``time_scale``, ``filled_last``,
``last_observed``, ``center``/``scale`` (None = the forecaster's scaler), ``static`` and
either ``buffer`` (the last ``lookback`` prepared rows, stateless) or ``encoder`` and
``summary`` (the encoder state after the whole history, stateful).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from recurra.data.arrays import SeriesArrays
from recurra.data.schema import RecurraError
from recurra.forecasting.windows import (
    PreparedSeries,
    calendar_features,
    continue_rows,
    last_observed_elapsed,
)
from recurra.nn.state import cat_states, module_device, split_state

STREAM_CHUNK = 2048  # steps encoded at once when building states from long histories


def _stack(rows: list[PreparedSeries], raw: bool, device: torch.device | None = None
           ) -> tuple[torch.Tensor, ...]:
    def get(name: str) -> torch.Tensor:
        return torch.from_numpy(np.stack([getattr(r, name) for r in rows])).to(
            device or "cpu")
    return (get("values" if raw else "filled"), get("observed"), get("delta"),
            get("covariates"))


@torch.no_grad()
def _encode_long(module: Any, rows: list[PreparedSeries], state: Any, raw: bool
                 ) -> tuple[torch.Tensor, Any]:
    """Encode equal-length rows in time chunks; returns the last outputs (B, E), state."""
    x, observed, delta, covariates = _stack(rows, raw, module_device(module))
    last = None
    for begin in range(0, x.shape[1], STREAM_CHUNK):
        part = slice(begin, begin + STREAM_CHUNK)
        output, state = module.encode(x[:, part], observed[:, part], delta[:, part], state,
                                      covariates[:, part])
        last = output[:, -1]
    return last, state


def _by_length(items: list[Any], length: Any) -> dict[int, list[int]]:
    groups: dict[int, list[int]] = {}
    for index, item in enumerate(items):
        groups.setdefault(length(item), []).append(index)
    return groups


def _buffer(rows: PreparedSeries, lookback: int) -> dict[str, np.ndarray]:
    return {name: getattr(rows, name)[-lookback:] for name in
            ("values", "filled", "observed", "delta", "covariates")}


def initial_states(module: Any, arrays: list[SeriesArrays], prepared: list[PreparedSeries],
                   config: Any, scalers: dict[str, tuple] | None = None
                   ) -> dict[str, dict[str, Any]]:
    """Per-series stream state after the whole history (stateful) or its last look-back."""
    module.eval()
    states = {}
    for item, rows in zip(arrays, prepared, strict=True):
        center, scale = (scalers or {}).get(item.series_id, (None, None))
        states[item.series_id] = {
            "origin": item.timestamps[0], "last_time": item.timestamps[-1],
            "time_scale": item.time_scale, "filled_last": rows.filled[-1].astype(np.float64),
            "last_observed": last_observed_elapsed(item), "center": center, "scale": scale,
            "static": rows.static}
        if not config.stateful:
            states[item.series_id]["buffer"] = _buffer(rows, config.lookback)
    if config.stateful:
        raw = config.encoder.cell == "grud"
        for indices in _by_length(prepared, lambda r: r.n_steps).values():
            last, state = _encode_long(module, [prepared[i] for i in indices], None, raw)
            for index, encoder, summary in zip(indices, split_state(state), last.split(1),
                                               strict=True):
                entry = states[arrays[index].series_id]
                entry["encoder"], entry["summary"] = encoder, summary
    return states


def advance(module: Any, arrays: list[SeriesArrays], states: dict[str, dict[str, Any]],
            scalers: dict[str, tuple], config: Any) -> dict[str, dict[str, Any]]:
    """New stream states of the series in ``arrays`` after their new rows."""
    module.eval()
    updated, new_rows = {}, []
    for item in arrays:
        entry = states[item.series_id]
        if item.timestamps[0] <= entry["last_time"]:
            raise RecurraError(f"new rows: series {item.series_id!r} has a row at "
                               f"{item.timestamps[0]} not after its last seen timestamp "
                               f"{entry['last_time']}; pass only new rows")
        center, scale = _scaler(entry, scalers, item.series_id)
        rows, last_observed = continue_rows(item, center, scale, config.calendar,
                                            entry["origin"], entry["time_scale"],
                                            entry["filled_last"], entry["last_observed"])
        updated[item.series_id] = {**entry, "last_time": item.timestamps[-1],
                                   "filled_last": rows.filled[-1].astype(np.float64),
                                   "last_observed": last_observed}
        if not config.stateful:
            buffer = entry["buffer"]
            joined = PreparedSeries(item.series_id, item.timestamps, *(
                np.concatenate([buffer[name], getattr(rows, name)]) for name in
                ("values", "filled", "observed", "delta", "covariates")))
            updated[item.series_id]["buffer"] = _buffer(joined, config.lookback)
        new_rows.append(rows)
    if config.stateful:
        raw = config.encoder.cell == "grud"
        for indices in _by_length(new_rows, lambda r: r.n_steps).values():
            ids = [arrays[i].series_id for i in indices]
            state = cat_states([states[s]["encoder"] for s in ids])
            last, state = _encode_long(module, [new_rows[i] for i in indices], state, raw)
            for series_id, encoder, summary in zip(ids, split_state(state), last.split(1),
                                                   strict=True):
                updated[series_id]["encoder"], updated[series_id]["summary"] = encoder, summary
    return updated


def _scaler(entry: dict[str, Any], scalers: dict[str, tuple], series_id: str) -> tuple:
    if entry.get("center") is not None:
        return entry["center"], entry["scale"]
    return scalers[series_id]


@torch.no_grad()
def forecast_arrays(module: Any, states: dict[str, dict[str, Any]], scalers: dict[str, tuple],
                    config: Any, targets: list[int], horizon: int
                    ) -> list[tuple[str, Any, np.ndarray, np.ndarray]]:
    """Per series: (series_id, issued_at, timestamps (N,), params (N, O, P)) in scaled units."""
    module.eval()
    ids = list(states)
    raw = config.encoder.cell == "grud"
    futures = [_future_times(states[s], config.horizon) for s in ids]
    # (S, N, C): calendar_features is elementwise, so one call over the stacked (S, N)
    # timestamps gives each series' rows bit for bit
    covariates = calendar_features(np.stack(futures)) if config.calendar and ids \
        else np.zeros((len(ids), config.horizon, 0), np.float32)
    results: dict[str, np.ndarray] = {}
    device = module_device(module)
    length = ((lambda s: len(states[s]["buffer"]["values"])) if not config.stateful
              else (lambda s: 0))
    for indices in _by_length(ids, length).values():
        group = [ids[i] for i in indices]
        future = torch.from_numpy(covariates[indices]).to(device)
        last = torch.from_numpy(np.stack(
            [states[s]["filled_last"][targets] for s in group]).astype(np.float32)).to(device)
        memory = None
        if config.stateful:
            summary = torch.cat([states[s]["summary"] for s in group])
        else:
            rows = [PreparedSeries(s, None, *(states[s]["buffer"][n] for n in (
                "values", "filled", "observed", "delta", "covariates"))) for s in group]
            x, observed, delta, past = _stack(rows, raw, device)
        static = None
        if states[group[0]].get("static") is not None:
            static = torch.from_numpy(np.stack([states[s]["static"] for s in group])).to(device)
        if getattr(config, "windowed", False):
            params = module.forecast_window(x, observed, delta, past, future, last,
                                            static=static, targets=targets)
        else:
            if not config.stateful:
                memory, _ = module.encode(x, observed, delta, None, past)
                summary = module.encoder.last_hidden(memory)
            params = module.decode(summary, last, future, memory=memory, static=static)
        for row, series_id in enumerate(group):
            results[series_id] = params[row, :horizon].float().cpu().numpy()
    return [(s, states[s]["last_time"], futures[i][:horizon], results[s])
            for i, s in enumerate(ids)]


def _future_times(entry: dict[str, Any], horizon: int) -> np.ndarray:
    spacing = np.timedelta64(int(round(entry["time_scale"] * 1e6)), "us")
    return entry["last_time"] + spacing * np.arange(1, horizon + 1)
