"""The ``[schedules]`` as deployments on a Prefect work pool, run by ``prefect worker``.

``recurra serve`` serves its deployments in its own process; in production a worker on
another host picks scheduled runs from a work pool instead.  Each deployment here
(``recurra-run/recurra-<name>``, one run at a time: a late run waits for the previous one,
so two trainings of a group never gate against each other) runs :func:`deployed_flow` with
``flow_name=<name>``: it reads the config at run time, checks the services it names
(:mod:`recurra.pipelines.preflight`) and runs the flow as a sub-flow on the config's task runner
(the Dask cluster of ``runner.address``), so a deployment run trains on the Dask workers
exactly as ``recurra train`` does.  The worker imports this module (entrypoint
``recurra.pipelines.deployed.deployed_flow``), so the project must be importable where it runs.

Example
-------
>>> deploy_to_pool("stack/recurra.toml", "http://127.0.0.1:4200/api", "recurra")  # doctest: +SKIP
['recurra-run/recurra-daily', ...]
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from recurra.data.schema import RecurraError

REPO_ROOT = Path(__file__).resolve().parents[2]
FLOW_NAME = "recurra-run"
RETRIES = 1
RETRY_DELAY_S = 10
SERVICE_WAIT_S = 60.0


@flow(name=FLOW_NAME, log_prints=True)
def deployed_flow(flow_name: str, config_path: str | None = None) -> dict:
    """Run the Recurra flow ``flow_name`` (``train``, ``detect``, ...) with its config.

    A ``partial`` outcome (some group failed, e.g. the tracking server went away for a
    moment) is run again, ``RETRIES`` times after ``RETRY_DELAY_S``: the groups that
    succeeded hit the training cache (same inputs) and are not registered twice, the failed
    ones run again. Before each attempt the services are checked for up to
    ``SERVICE_WAIT_S`` (a tracking server restarting for a few seconds does not fail a
    scheduled run); a setting that still names a missing service then
    (:class:`PreflightError`) fails the run: retrying would not help.
    """
    import time

    from recurra.pipelines.flows import run_flow
    from recurra.pipelines.preflight import wait_for_services

    for attempt in range(RETRIES + 1):
        wait_for_services(None if flow_name == "report" else config_path, SERVICE_WAIT_S)
        outcome = run_flow(flow_name) if flow_name == "report" else run_flow(flow_name,
                                                                             config_path)
        summary = outcome["summary"]
        if summary["status"] == "completed":
            return outcome
        if attempt < RETRIES:
            print(f"{flow_name} ended {summary['status']} ({summary['message']}); "
                  f"running it again in {RETRY_DELAY_S} s")
            time.sleep(RETRY_DELAY_S)
    raise RecurraError(f"{flow_name} ended {summary['status']} after {RETRIES + 1} attempts: "
                       f"{summary['message']}")


def _settings(api_url: str) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: api_url})


def ensure_pool(api_url: str, pool: str) -> None:
    """Create the process work pool ``pool`` unless it exists."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import WorkPoolCreate
    from prefect.exceptions import ObjectAlreadyExists

    with _settings(api_url), get_client(sync_client=True) as client:
        try:
            client.create_work_pool(WorkPoolCreate(name=pool, type="process"))
        except ObjectAlreadyExists:
            pass


def pool_workers(api_url: str, pool: str) -> list[str]:
    """Names of the workers that have polled ``pool``."""
    from prefect.client.orchestration import get_client

    with _settings(api_url), get_client(sync_client=True) as client:
        return [worker.name for worker in client.read_workers_for_work_pool(pool)]


def deploy_to_pool(config_path: str | None, api_url: str, pool: str,
                   only: list[str] | None = None) -> list[str]:
    """Register one deployment per ``[schedules]`` entry on ``pool``; returns their names."""
    from prefect.deployments.runner import EntrypointType
    from prefect.runner.storage import LocalStorage

    from recurra.pipelines.config import SCHEDULE_NAMES, load_config

    config = load_config(config_path)
    unknown = sorted(set(only or []) - set(SCHEDULE_NAMES))
    if unknown:
        raise RecurraError(f"--only {unknown}: valid schedules are {list(SCHEDULE_NAMES)}")
    names = [n for n in config.schedules if not only or n in only]
    ensure_pool(api_url, pool)
    deployed = []
    with _settings(api_url):
        for name in names:
            deployment = deployed_flow.to_deployment(
                name=f"recurra-{name}", cron=config.schedules[name],
                parameters={"flow_name": name, "config_path": config.path or None},
                tags=["recurra"], description=f"recurra {name} on cron "
                f"{config.schedules[name]}, run by a worker of pool {pool!r}",
                job_variables={"working_dir": str(REPO_ROOT)}, concurrency_limit=1,
                entrypoint_type=EntrypointType.MODULE_PATH)
            # a pull step "set working directory": run in place, never copy the code
            deployment.storage = LocalStorage(str(REPO_ROOT))
            deployment.apply(work_pool_name=pool)
            deployed.append(f"{FLOW_NAME}/recurra-{name}")
    return deployed


def trigger(api_url: str, deployment: str, parameters: dict[str, Any] | None = None,
            timeout: float = 600.0) -> Any:
    """Create a run of ``deployment`` (``flow/name``) through the API; wait for a final state.

    Returns the flow run (its ``state.type`` and ``state.message`` say how it ended).
    """
    import time

    from prefect.client.orchestration import get_client

    with _settings(api_url), get_client(sync_client=True) as client:
        target = client.read_deployment_by_name(deployment)
        run = client.create_flow_run_from_deployment(target.id, parameters=parameters or {})
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            run = client.read_flow_run(run.id)
            if run.state is not None and run.state.is_final():
                return run
            time.sleep(1.0)
    raise RecurraError(f"deployment run {run.id} of {deployment!r} not finished within "
                       f"{timeout:.0f} s (is a worker polling its pool?)")
