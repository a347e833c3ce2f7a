"""Check the services a flow needs before it starts, with errors that name the setting.

A flow on a misconfigured deployment should fail in its first second with "``runner.address``
(tcp://10.0.0.5:8786) refuses connections", not after a minute of retries deep inside
MLflow or Dask.  :func:`preflight` (called by :func:`recurra.pipelines.flows.run_flow`) checks:

- the tracking store ``MLFLOW_TRACKING_URI``: a server answers ``/health``; a database URI
  (``postgresql://user:password@host/db``) accepts the login;
- the Dask scheduler ``runner.address`` when ``runner.kind = "dask"``: it accepts a TCP
  connection;
- an object-store ``RECURRA_STORE`` (``s3://bucket/prefix``): the bucket exists at the
  endpoint (``AWS_ENDPOINT_URL``).

On a problem it writes a ``failed`` row with the message to the store's ``runs`` table (unless
the store itself is the problem) and raises :class:`PreflightError` (a ``RecurraError``).

Example
-------
>>> preflight("train", "stack/recurra.toml")   # doctest: +SKIP
"""

from __future__ import annotations

import os
import re
import socket
import time
import urllib.error
import urllib.request
from urllib.parse import urlparse

from recurra.data.schema import RecurraError

TIMEOUT_S = 5.0


class PreflightError(RecurraError):
    """A setting names a service that is not there: fix the setting, retrying will not help."""


def masked(uri: str) -> str:
    """``uri`` with its password replaced by ``***``."""
    return re.sub(r"(//[^:/@]+:)[^@]*@", r"\1***@", uri)


def check_tracking(uri: str) -> str | None:
    """A problem with the tracking store ``uri``, else None."""
    scheme = uri.split(":", 1)[0].lower()
    if scheme in ("http", "https"):
        try:
            with urllib.request.urlopen(uri.rstrip("/") + "/health", timeout=TIMEOUT_S):
                return None
        except urllib.error.HTTPError as error:
            return (f"`MLFLOW_TRACKING_URI` ({masked(uri)}) answers /health with HTTP "
                    f"{error.code}: is it an MLflow tracking server?")
        except (OSError, ValueError) as error:
            reason = getattr(error, "reason", error)
            return (f"`MLFLOW_TRACKING_URI` ({masked(uri)}) is unreachable ({reason}): start "
                    "the tracking server (`recurra stack up`) or point the setting at one")
    if scheme.startswith(("postgresql", "mysql", "mssql")):
        return _check_database(uri)
    return None


def _check_database(uri: str) -> str | None:
    try:
        import sqlalchemy
    except ImportError:  # pragma: no cover - mlflow depends on it
        return None
    try:
        engine = sqlalchemy.create_engine(uri, connect_args=_connect_args(uri))
    except Exception as error:  # noqa: BLE001 - a missing driver or a malformed URI
        return f"`MLFLOW_TRACKING_URI` ({masked(uri)}) cannot be used: {error}"
    try:
        with engine.connect():
            return None
    except Exception as error:  # noqa: BLE001 - the driver's own error classes
        detail = str(getattr(error, "orig", error)).strip().splitlines()
        return (f"`MLFLOW_TRACKING_URI` ({masked(uri)}): the database refused the "
                f"connection: {detail[0] if detail else type(error).__name__}")
    finally:
        engine.dispose()


def _connect_args(uri: str) -> dict:
    return {"connect_timeout": int(TIMEOUT_S)} if uri.startswith("postgresql") else {}


def check_dask(address: str, where: str) -> str | None:
    """A problem with the Dask scheduler ``address`` (``tcp://host:port``), else None."""
    parsed = urlparse(address if "://" in address else f"tcp://{address}")
    try:
        port = parsed.port or 8786
    except ValueError:
        port = None
    if not parsed.hostname or port is None:
        return (f"`runner.address` ({address!r}) in {where} is not a scheduler address "
                "like tcp://host:8786")
    try:
        with socket.create_connection((parsed.hostname, port), timeout=TIMEOUT_S):
            return None
    except OSError as error:
        return (f"`runner.address` ({address}) in {where} refuses connections ({error}): "
                "start the scheduler (`dask scheduler`, or `recurra stack up`) or fix "
                "[runner] address")


def check_bucket(store: str) -> str | None:
    """A problem with an ``s3://bucket/prefix`` store, else None (local paths: None)."""
    if not store.startswith("s3://"):
        return None
    bucket = urlparse(store).netloc
    endpoint = os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL")
    import boto3
    import botocore.exceptions

    client = boto3.client("s3", endpoint_url=endpoint or None)
    try:
        client.head_bucket(Bucket=bucket)
        return None
    except botocore.exceptions.ClientError as error:
        code = error.response.get("Error", {}).get("Code", "")
        what = "does not exist" if code in ("404", "NoSuchBucket") else f"is refused ({code})"
        return (f"`RECURRA_STORE` ({store}): bucket {bucket!r} {what} at endpoint "
                f"{endpoint or 'AWS'}; create it or fix the setting")
    except (botocore.exceptions.BotoCoreError, OSError) as error:
        return f"`RECURRA_STORE` ({store}): endpoint {endpoint or 'AWS'} unreachable ({error})"


def problems(config_path: str | None, store_root: str | None = None) -> list[str]:
    """Every problem found (empty when the services answer)."""
    from recurra.pipelines.config import load_config
    from recurra.pipelines.mlflow_setup import tracking_uri

    found = [check_tracking(tracking_uri())]
    config = load_config(config_path)
    if config.runner.kind == "dask" and config.runner.address:
        found.append(check_dask(config.runner.address, repr(config.path or "the config")))
    store = store_root or os.environ.get("RECURRA_STORE", "")
    found.append(check_bucket(str(store)))
    return [problem for problem in found if problem]


def wait_for_services(config_path: str | None, timeout_s: float,
                      store_root: str | None = None, every_s: float = 1.0) -> list[str]:
    """Re-check the services until none has a problem or ``timeout_s`` passed; the
    problems still found (empty: all answer). For scheduled runs, where a service being
    restarted is a moment's outage rather than a wrong setting."""
    deadline = time.monotonic() + timeout_s
    found = problems(config_path, store_root)
    while found and time.monotonic() < deadline:
        time.sleep(every_s)
        found = problems(config_path, store_root)
    return found


def preflight(flow: str, config_path: str | None, store_root: str | None = None) -> None:
    """Raise naming every misconfigured service; record the failed run in ``runs`` first."""
    found = problems(config_path, store_root)
    if not found:
        return
    message = "; ".join(found)
    if not any(problem.startswith("`RECURRA_STORE`") for problem in found):
        from recurra.pipelines import tasks

        summary = tasks.RunSummary(flow).finish([f"preflight: {message}"])
        summary.status = "failed"
        tasks.record_run(tasks.open_store(store_root), summary)
    raise PreflightError(f"{flow}: {message}")
