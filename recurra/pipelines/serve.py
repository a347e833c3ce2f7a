"""``recurra serve``: the scheduled deployments of the config, on a Prefect server.

Cron schedules need a real Prefect API (the ephemeral mode of ``recurra demo`` has no
scheduler).  ``PREFECT_API_URL`` names one (``http://host:4200/api``); when it is unset,
:func:`ensure_server` starts ``prefect server start --host 127.0.0.1 --port 4200`` with its
home under ``$RECURRA_HOME/prefect`` and stops it on exit.  Then every entry of
``[schedules]`` (``ingest``, ``detect``, ``train``, ``backtest``, ``report``, ``daily``,
``maintain``) becomes a deployment ``<flow>/recurra-<name>`` with that cron (UTC), served
by this process with ``prefect.serve``: Prefect's runner starts each flow run as a new
Python process, on the config's task runner (so a detect run loads the saved model states
from ``$RECURRA_HOME/state`` every time; what a run imports is part of its cost).

Example
-------
>>> serve_forever("recurra/pipelines/recurra.toml", only=["detect", "train"])   # doctest: +SKIP
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from recurra.data.schema import RecurraError

DEFAULT_PORT = 4200
HEALTH_TIMEOUT_S = 90.0
QUIET_ENV = {"PREFECT_SERVER_ANALYTICS_ENABLED": "false", "DO_NOT_TRACK": "true",
             "MLFLOW_DISABLE_TELEMETRY": "true"}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_healthy(api_url: str, timeout: float = HEALTH_TIMEOUT_S,
                 process: subprocess.Popen | None = None) -> None:
    """Poll ``<api_url>/health`` until it answers 200; raise if it never does."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RecurraError(f"prefect server exited with code {process.returncode} before "
                               f"{api_url}/health answered")
        try:
            with urllib.request.urlopen(f"{api_url}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.5)
    raise RecurraError(f"Prefect API {api_url} did not answer /health within {timeout:.0f} s")


def start_server(port: int, prefect_home: str | Path,
                 log_file: str | Path | None = None) -> tuple[subprocess.Popen, str]:
    """Start ``prefect server start`` on 127.0.0.1:``port``; returns (process, API URL)."""
    home = Path(prefect_home)
    home.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, **QUIET_ENV, "PREFECT_HOME": str(home)}
    env.pop("PREFECT_API_URL", None)
    log = open(log_file or home / "server.log", "ab")  # noqa: SIM115 - owned by the process
    command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1",
               "--port", str(port)]
    process = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT,
                               start_new_session=True)
    log.close()
    api_url = f"http://127.0.0.1:{port}/api"
    try:
        wait_healthy(api_url, process=process)
    except RecurraError:
        stop_server(process)
        raise
    return process, api_url


def stop_server(process: subprocess.Popen, timeout: float = 15.0) -> None:
    """Terminate the server process (and its children: it runs in its own session)."""
    if process.poll() is not None:
        return
    import signal

    try:
        os.killpg(process.pid, signal.SIGTERM)
        process.wait(timeout=timeout)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        process.wait(timeout=timeout)


def ensure_server(port: int = DEFAULT_PORT) -> tuple[str, subprocess.Popen | None]:
    """``PREFECT_API_URL`` if set (checked), else a local server started here."""
    url = os.environ.get("PREFECT_API_URL", "").rstrip("/")
    if url:
        wait_healthy(url, timeout=15.0)
        return url, None
    from recurra.data.paths import recurra_home

    process, url = start_server(port, os.environ.get("PREFECT_HOME",
                                                      str(recurra_home() / "prefect")))
    return url, process


def build_deployments(config_path: str | None, only: list[str] | None = None) -> list[Any]:
    """One deployment per ``[schedules]`` entry (``<flow>/recurra-<name>``, cron in UTC)."""
    from recurra.pipelines.config import SCHEDULE_NAMES, load_config
    from recurra.pipelines.flows import FLOWS, make_task_runner

    config = load_config(config_path)
    unknown = sorted(set(only or []) - set(SCHEDULE_NAMES))
    if unknown:
        raise RecurraError(f"--only {unknown}: valid schedules are {list(SCHEDULE_NAMES)}")
    names = [n for n in config.schedules if not only or n in only]
    if not names:
        raise RecurraError(f"no schedule to serve: [schedules] of {config.path!r} declares "
                           f"{sorted(config.schedules)}, --only asked for {only}")
    runner = make_task_runner(config)
    deployments = []
    for name in names:
        parameters = {} if name == "report" else {"config_path": config.path or None}
        selected = FLOWS[name].with_options(task_runner=runner)
        deployments.append(selected.to_deployment(
            name=f"recurra-{name}", cron=config.schedules[name], parameters=parameters,
            tags=["recurra"], description=f"recurra {name} on cron {config.schedules[name]}"))
    return deployments


def serve_forever(config_path: str | None, only: list[str] | None = None,
                  port: int = DEFAULT_PORT) -> None:
    """Reach or start the Prefect server, then serve the deployments until interrupted."""
    for name, value in QUIET_ENV.items():
        os.environ.setdefault(name, value)
    url, process = ensure_server(port)
    print(f"Prefect API: {url}" + (" (started here; UI at "
                                   f"{url.removesuffix('/api')})" if process else ""))
    try:
        from prefect import serve
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: url}):
            serve(*build_deployments(config_path, only))
    finally:
        if process is not None:
            stop_server(process)


# `python -m recurra.pipelines.serve [config] [only..]`
if __name__ == "__main__":  # pragma: no cover
    arguments = sys.argv[1:]
    serve_forever(arguments[0] if arguments and arguments[0] != "-" else None,
                  only=arguments[1:] or None,
                  port=int(os.environ.get("RECURRA_PREFECT_PORT", DEFAULT_PORT)))
