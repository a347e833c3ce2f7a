"""One progress bar per long step of a flow (training the models, detecting over series).

A flow opens a step with :func:`step`; the work inside it (tasks on the threads runner of
the same process) calls :func:`advance` with the step's name. Bars are drawn with rich on
the terminal's stderr and vanish when the step ends, so the output that stays is the
summary. Off when stderr is not a terminal (logs, tests, CI) or ``RECURRA_PROGRESS=0``;
tasks running in another process (a Dask worker) simply do not advance it.

Example
-------
>>> with step("train", "training models", total=2):     # doctest: +SKIP
...     advance("train", label="recurra-nab-forecast")
"""

from __future__ import annotations

import os
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

_ACTIVE: dict[str, tuple[Any, Any, str]] = {}
_LOCK = threading.Lock()


def enabled() -> bool:
    """Bars are drawn only for a person watching a terminal."""
    if os.environ.get("RECURRA_PROGRESS", "1") in ("0", "false", "no"):
        return False
    return bool(getattr(sys.stderr, "isatty", lambda: False)())


@contextmanager
def step(name: str, description: str, total: int) -> Iterator[None]:
    """Show a bar of ``total`` units named ``name`` while the block runs."""
    if total <= 0 or not enabled() or name in _ACTIVE:
        yield
        return
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                   TimeElapsedColumn(), console=Console(stderr=True), transient=True)
    with bar:
        task = bar.add_task(description, total=total)
        with _LOCK:
            _ACTIVE[name] = (bar, task, description)
        try:
            yield
        finally:
            with _LOCK:
                _ACTIVE.pop(name, None)


def advance(name: str, units: int = 1, label: str = "") -> None:
    """Move the bar of step ``name`` on by ``units`` (a no-op when no such bar is shown)."""
    with _LOCK:
        active = _ACTIVE.get(name)
        if active is None:
            return
        bar, task, description = active
        bar.update(task, advance=units,
                   description=f"{description} ({label})" if label else description)
