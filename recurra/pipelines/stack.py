"""``recurra stack``: the "past one machine" topology as separate processes on this host.

Every service gets its own port on 127.0.0.1, its own data folder, log and pid file under
``$RECURRA_HOME/stack/``; the ports, the Postgres password and the URLs are kept in
``stack/state.json`` so a restarted service comes back on the same address.

================== ==========================================================================
service            what it is
================== ==========================================================================
``postgres``       PostgreSQL (Debian ``postgresql``): databases ``mlflow`` and ``prefect``
``s3``             an S3-compatible endpoint (``moto_server``, in memory), bucket ``recurra``:
                   the store (``s3://recurra/store``) and the MLflow artifacts
``mlflow``         ``mlflow server`` on Postgres, artifacts in ``s3://recurra/mlartifacts``
``prefect``        ``prefect server start`` on the ``prefect`` database
``dask-scheduler`` ``dask scheduler``
``dask-worker-1``  ``dask worker`` (no nanny: a killed worker stays dead until ``up``)
``dask-worker-2``  idem
``prefect-worker`` ``prefect worker start`` on the process work pool ``recurra``
================== ==========================================================================

``up`` starts what is not running (in that order), creates the bucket, the database and the
work pool, writes ``stack/recurra.toml`` (the pipeline config with ``runner.kind = "dask"``
on the scheduler) and registers the ``[schedules]`` as deployments on the pool
(:mod:`recurra.pipelines.deployed`).  :func:`environment` is what a client (or
``recurra stack env``)
needs to talk to the stack.

Size: ~490 lines: one short ``start_*`` function per service of the table above plus the
shared spawn / wait / stop plumbing; splitting per service would scatter the start order
and the state file they all share.

Example
-------
>>> state = up()                   # doctest: +SKIP
>>> status()["mlflow"]["running"]  # doctest: +SKIP
True
>>> down()                         # doctest: +SKIP
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from recurra.data.schema import RecurraError
from recurra.pipelines.serve import QUIET_ENV, free_port

SERVICES = ("postgres", "s3", "mlflow", "prefect", "dask-scheduler", "dask-worker-1",
            "dask-worker-2", "prefect-worker")
BUCKET = "recurra"
ARTIFACTS = f"s3://{BUCKET}/mlartifacts"
POOL = "recurra"
DATABASE = "mlflow"
PREFECT_DATABASE = "prefect"
DB_USER = "recurra"
S3_KEY, S3_SECRET = "recurra", "recurra-secret"  # the local endpoint's only credentials
START_TIMEOUT_S = 180.0
REPO_ROOT = Path(__file__).resolve().parents[2]


# Layout and state ---------------------------------------------------------------------------
def stack_root(home: str | Path | None = None) -> Path:
    """``<RECURRA_HOME>/stack`` (created)."""
    from recurra.data.paths import recurra_home

    root = Path(home).expanduser().resolve() / "stack" if home else recurra_home() / "stack"
    for folder in ("logs", "pids"):
        (root / folder).mkdir(parents=True, exist_ok=True)
    return root


def load_state(root: Path) -> dict[str, Any]:
    """Ports and password of the stack; allocated (and saved) on first use."""
    path = root / "state.json"
    state = json.loads(path.read_text()) if path.exists() else {}
    ports = state.setdefault("ports", {})
    for name in ("postgres", "s3", "mlflow", "prefect", "dask-scheduler"):
        ports.setdefault(name, free_port())
    state.setdefault("password", secrets.token_hex(12))
    state["root"] = str(root)
    path.write_text(json.dumps(state, indent=2))
    return state


def urls(state: dict[str, Any]) -> dict[str, str]:
    ports = state["ports"]
    return {
        "postgres": f"postgresql://{DB_USER}:{state['password']}@127.0.0.1:{ports['postgres']}"
                    f"/{DATABASE}",
        "s3": f"http://127.0.0.1:{ports['s3']}",
        "mlflow": f"http://127.0.0.1:{ports['mlflow']}",
        "prefect": f"http://127.0.0.1:{ports['prefect']}/api",
        "dask": f"tcp://127.0.0.1:{ports['dask-scheduler']}",
    }


def environment(state: dict[str, Any]) -> dict[str, str]:
    """The variables a client of the stack sets (also given to every service)."""
    root = Path(state["root"])
    where = urls(state)
    return {
        **QUIET_ENV,
        "RECURRA_HOME": str(root.parent),
        "RECURRA_STORE": os.environ.get("RECURRA_STACK_STORE", f"s3://{BUCKET}/store"),
        "MLFLOW_TRACKING_URI": where["mlflow"],
        "PREFECT_API_URL": where["prefect"],
        "PREFECT_HOME": str(root / "prefect"),
        "MLFLOW_S3_ENDPOINT_URL": where["s3"],
        "AWS_ENDPOINT_URL": where["s3"],
        "AWS_ACCESS_KEY_ID": S3_KEY,
        "AWS_SECRET_ACCESS_KEY": S3_SECRET,
        "AWS_DEFAULT_REGION": "us-east-1",
        "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO_ROOT),
                                                    os.environ.get("PYTHONPATH", "")])),
    }


# Processes ----------------------------------------------------------------------------------
def pid_of(root: Path, name: str) -> int | None:
    """The live pid of service ``name``, else None."""
    if name == "postgres":
        path = root / "postgres" / "data" / "postmaster.pid"
    else:
        path = root / "pids" / f"{name}.pid"
    try:
        pid = int(path.read_text().split()[0])
        os.kill(pid, 0)
    except (OSError, ValueError, IndexError):
        return None
    try:  # a zombie (killed, not yet reaped) is not running
        if Path(f"/proc/{pid}/stat").read_text().split(") ")[-1].startswith("Z"):
            return None
    except OSError:
        pass
    return pid


def _spawn(root: Path, name: str, command: list[str], env: dict[str, str]) -> int:
    log = open(root / "logs" / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
    process = subprocess.Popen(command, env={**os.environ, **env}, cwd=REPO_ROOT, stdout=log,
                               stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                               start_new_session=True)
    log.close()
    (root / "pids" / f"{name}.pid").write_text(str(process.pid))
    return process.pid


def _wait(name: str, ready: Any, root: Path, timeout: float = START_TIMEOUT_S) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if name != "postgres" and pid_of(root, name) is None:
            raise RecurraError(f"stack service {name!r} exited during start; see "
                               f"{root / 'logs' / (name + '.log')}")
        try:
            if ready():
                return
        except Exception:  # noqa: BLE001 - not up yet
            pass
        time.sleep(0.5)
    raise RecurraError(f"stack service {name!r} not ready within {timeout:.0f} s; see "
                       f"{root / 'logs' / (name + '.log')}")


def _port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def _http_ok(url: str) -> bool:
    with urllib.request.urlopen(url, timeout=2) as response:
        return response.status == 200


def _python(*arguments: str) -> list[str]:
    return [sys.executable, *arguments]


# Services -----------------------------------------------------------------------------------
def postgres_bin(program: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``pg_ctl``)."""
    found = shutil.which(program)
    if found:
        return found
    candidates = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{program}"))
    if not candidates:
        raise RecurraError(f"PostgreSQL program {program!r} not found on PATH or under "
                           "/usr/lib/postgresql; install the Debian package `postgresql` "
                           "(make stack does: .ci/ensure_stack.sh)")
    return str(candidates[-1])


def _as_db_user(command: list[str]) -> list[str]:
    """PostgreSQL refuses to run as root: run it as the system user ``postgres`` then."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam("postgres")
    except KeyError as error:
        raise RecurraError("running as root and no system user 'postgres' to run PostgreSQL "
                           "as (the Debian package creates it)") from error
    return ["runuser", "-u", "postgres", "--", *command]


def _chown_to_db_user(*paths: Path) -> None:
    if os.geteuid() != 0:
        return
    user = pwd.getpwnam("postgres")
    for path in paths:
        os.chown(path, user.pw_uid, user.pw_gid)


def start_postgres(root: Path, state: dict[str, Any]) -> None:
    folder = root / "postgres"
    data, sockets = folder / "data", folder / "sockets"
    for path in (folder, sockets):
        path.mkdir(parents=True, exist_ok=True)
    log = root / "logs" / "postgres.log"
    log.touch()
    _chown_to_db_user(folder, sockets, log)
    if os.geteuid() == 0 and subprocess.run(_as_db_user(["test", "-w", str(folder)]),
                                            capture_output=True).returncode != 0:
        raise RecurraError(f"PostgreSQL runs as the system user 'postgres', which cannot reach "
                           f"{folder}: make every parent folder of RECURRA_HOME traversable "
                           "(chmod o+x) or put RECURRA_HOME elsewhere")
    if not (data / "PG_VERSION").exists():
        password_file = folder / "password"
        password_file.write_text(state["password"] + "\n")
        _chown_to_db_user(password_file)
        subprocess.run(_as_db_user([postgres_bin("initdb"), "-D", str(data), "-U", DB_USER,
                                    f"--pwfile={password_file}", "--auth=scram-sha-256",
                                    "--encoding=UTF8", "--no-instructions"]),
                       check=True, capture_output=True, cwd="/")
        password_file.unlink()
    options = (f"-p {state['ports']['postgres']} -k {sockets} "
               "-c listen_addresses=127.0.0.1")
    subprocess.run(_as_db_user([postgres_bin("pg_ctl"), "-D", str(data), "-l", str(log),
                                "-o", options, "-w", "-t", "120", "start"]),
                   check=True, capture_output=True, cwd="/")
    _create_database(state)


def _create_database(state: dict[str, Any]) -> None:
    import psycopg2

    connection = psycopg2.connect(host="127.0.0.1", port=state["ports"]["postgres"],
                                  user=DB_USER, password=state["password"], dbname="postgres")
    connection.autocommit = True
    with connection.cursor() as cursor:
        for name in (DATABASE, PREFECT_DATABASE):
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cursor.fetchone() is None:
                cursor.execute(f"CREATE DATABASE {name}")
    connection.close()


def start_s3(root: Path, state: dict[str, Any]) -> None:
    port = state["ports"]["s3"]
    _spawn(root, "s3", _python("-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)),
           environment(state))
    _wait("s3", lambda: _port_open(port), root)
    client = s3_client(state)
    if BUCKET not in [b["Name"] for b in client.list_buckets().get("Buckets", [])]:
        client.create_bucket(Bucket=BUCKET)


def s3_client(state: dict[str, Any]) -> Any:
    import boto3

    return boto3.client("s3", endpoint_url=urls(state)["s3"], aws_access_key_id=S3_KEY,
                        aws_secret_access_key=S3_SECRET, region_name="us-east-1")


def start_mlflow(root: Path, state: dict[str, Any]) -> None:
    from recurra.pipelines.preflight import check_tracking

    where = urls(state)
    problem = check_tracking(where["postgres"])
    if problem:
        raise RecurraError("mlflow server --backend-store-uri: " + problem.replace(
            "`MLFLOW_TRACKING_URI` ", ""))
    command = _python("-m", "mlflow", "server", "--backend-store-uri", where["postgres"],
                      "--artifacts-destination", ARTIFACTS, "--serve-artifacts",
                      "--host", "127.0.0.1", "--port", str(state["ports"]["mlflow"]),
                      "--workers", "1")
    # no background job runner (a dozen huey processes) for a tracking + registry server
    _spawn(root, "mlflow", command, {**environment(state),
                                     "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"})
    _wait("mlflow", lambda: _http_ok(where["mlflow"] + "/health"), root)


def start_prefect(root: Path, state: dict[str, Any]) -> None:
    env = {**environment(state), "PREFECT_API_DATABASE_CONNECTION_URL":
           urls(state)["postgres"].replace("postgresql://", "postgresql+asyncpg://")
           .removesuffix(f"/{DATABASE}") + f"/{PREFECT_DATABASE}"}
    env.pop("PREFECT_API_URL")
    command = _python("-m", "prefect", "server", "start", "--host", "127.0.0.1",
                      "--port", str(state["ports"]["prefect"]))
    _spawn(root, "prefect", command, env)
    _wait("prefect", lambda: _http_ok(urls(state)["prefect"] + "/health"), root)


def start_dask_scheduler(root: Path, state: dict[str, Any]) -> None:
    port = state["ports"]["dask-scheduler"]
    command = _python("-m", "distributed.cli.dask_scheduler", "--host", "127.0.0.1",
                      "--port", str(port), "--no-dashboard", "--no-show")
    _spawn(root, "dask-scheduler", command, environment(state))
    _wait("dask-scheduler", lambda: _port_open(port), root)


def start_dask_worker(root: Path, state: dict[str, Any], name: str) -> None:
    folder = root / "dask" / name
    folder.mkdir(parents=True, exist_ok=True)
    # a worker killed a moment ago may still be listed: the scheduler refuses a second
    # worker of the same name, so wait until it has dropped the dead one
    stale = dask_addresses(state).get(name)
    deadline = time.monotonic() + START_TIMEOUT_S / 3
    while stale and name in dask_addresses(state) and time.monotonic() < deadline:
        time.sleep(0.5)
    command = _python("-m", "distributed.cli.dask_worker", urls(state)["dask"],
                      "--name", name, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                      "--host", "127.0.0.1", "--local-directory", str(folder))
    env = {**environment(state), "PREFECT_LOGGING_LEVEL": "INFO"}
    _spawn(root, name, command, env)
    _wait(name, lambda: dask_addresses(state).get(name) not in (None, stale), root)


def dask_addresses(state: dict[str, Any]) -> dict[str, str]:
    """Address of every worker the scheduler knows, by name."""
    from distributed import Client

    with Client(urls(state)["dask"], timeout=5) as client:
        return {w["name"]: address
                for address, w in client.scheduler_info(n_workers=-1)["workers"].items()}


def dask_workers(state: dict[str, Any]) -> list[str]:
    """Names of the workers the scheduler knows."""
    return sorted(dask_addresses(state))


def start_prefect_worker(root: Path, state: dict[str, Any]) -> None:
    from recurra.pipelines.deployed import ensure_pool, pool_workers

    ensure_pool(urls(state)["prefect"], POOL)
    command = _python("-m", "prefect", "worker", "start", "--pool", POOL, "--type", "process",
                      "--name", "recurra-worker-1")
    env = {**environment(state), "PREFECT_LOGGING_LEVEL": "INFO"}
    _spawn(root, "prefect-worker", command, env)
    _wait("prefect-worker", lambda: "recurra-worker-1" in pool_workers(urls(state)["prefect"],
                                                                        POOL), root)


STARTERS = {
    "postgres": start_postgres, "s3": start_s3, "mlflow": start_mlflow,
    "prefect": start_prefect, "dask-scheduler": start_dask_scheduler,
    "dask-worker-1": lambda root, state: start_dask_worker(root, state, "dask-worker-1"),
    "dask-worker-2": lambda root, state: start_dask_worker(root, state, "dask-worker-2"),
    "prefect-worker": start_prefect_worker,
}


# Commands -----------------------------------------------------------------------------------
def _check_names(names: list[str] | None) -> list[str]:
    unknown = sorted(set(names or []) - set(SERVICES))
    if unknown:
        raise RecurraError(f"stack services {unknown} unknown: valid ones are {list(SERVICES)}")
    return [name for name in SERVICES if not names or name in names]


def up(home: str | Path | None = None, config_path: str | None = None,
       only: list[str] | None = None, deploy: bool = True) -> dict[str, Any]:
    """Start every service that is not running (or only ``only``); returns the state.

    ``stack/recurra.toml`` is (re)written from ``config_path`` when given, else kept (the
    bundled config on the first ``up``).
    """
    root = stack_root(home)
    state = load_state(root)
    for name in _check_names(only):
        if pid_of(root, name) is None:
            STARTERS[name](root, state)
    if config_path or not (root / "recurra.toml").exists():
        write_config(root, state, config_path)
    if deploy and not only:
        from recurra.pipelines.deployed import deploy_to_pool

        state["deployments"] = deploy_to_pool(str(root / "recurra.toml"), urls(state)["prefect"],
                                              POOL)
    return state


def write_config(root: Path, state: dict[str, Any], config_path: str | None = None) -> Path:
    """``stack/recurra.toml``: the pipeline config with ``[runner]`` on the stack's Dask."""
    import tomllib

    from recurra.pipelines.config import DEFAULT_CONFIG, load_config

    source = Path(load_config(config_path).path or DEFAULT_CONFIG)
    text = source.read_text()
    raw = tomllib.loads(text)
    runner = f'[runner]\nkind = "dask"\naddress = "{urls(state)["dask"]}"\n'
    if "runner" in raw:
        lines, out, skipping = text.splitlines(keepends=True), [], False
        for line in lines:
            stripped = line.strip()
            if stripped.startswith("[") and not stripped.startswith("[["):
                skipping = stripped.split("#")[0].strip() == "[runner]"
                if skipping:
                    out.append(runner)
                    continue
            elif stripped.startswith("[["):
                skipping = False
            if not skipping:
                out.append(line)
        text = "".join(out)
    else:
        text += "\n" + runner
    target = root / "recurra.toml"
    target.write_text(f"# written by `recurra stack up` from {source}\n" + text)
    load_config(str(target))  # fail now, naming the file, if the result does not parse
    return target


def stop(root: Path, name: str, timeout: float = 20.0) -> None:
    """Stop one service (SIGTERM to its process group, SIGKILL after ``timeout``)."""
    if name == "postgres":
        data = root / "postgres" / "data"
        if pid_of(root, name) is not None:
            subprocess.run(_as_db_user([postgres_bin("pg_ctl"), "-D", str(data), "-m", "fast",
                                        "-w", "stop"]), capture_output=True, cwd="/")
        return
    pid = pid_of(root, name)
    if pid is None:
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and pid_of(root, name) is not None:
            time.sleep(0.2)
        if pid_of(root, name) is None:
            return


def down(home: str | Path | None = None, only: list[str] | None = None) -> None:
    """Stop the services (all, in reverse start order, or only ``only``); data stays."""
    root = stack_root(home)
    for name in reversed(_check_names(only)):
        stop(root, name)


def status(home: str | Path | None = None) -> dict[str, dict[str, Any]]:
    """Per service: running, pid, port (or URL) and log file."""
    root = stack_root(home)
    state = load_state(root)
    where = urls(state)
    addresses = {"postgres": where["postgres"].replace(state["password"], "***"),
                 "s3": where["s3"], "mlflow": where["mlflow"], "prefect": where["prefect"],
                 "dask-scheduler": where["dask"]}
    return {name: {"running": pid_of(root, name) is not None, "pid": pid_of(root, name),
                   "address": addresses.get(name, ""),
                   "log": str(root / "logs" / f"{name}.log")} for name in SERVICES}


def kill(home: str | Path | None, name: str) -> int:
    """``kill -9`` one service and its children (fault injection: the host of the service
    dies); returns the pid it killed. Every service but PostgreSQL runs in its own process
    group (``mlflow server`` is a launcher plus a uvicorn process)."""
    root = stack_root(home)
    _check_names([name])
    pid = pid_of(root, name)
    if pid is None:
        raise RecurraError(f"stack service {name!r} is not running")
    if name == "postgres":
        os.kill(pid, signal.SIGKILL)
    else:
        os.killpg(pid, signal.SIGKILL)
    return pid
