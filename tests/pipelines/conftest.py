"""Prefect in ephemeral mode for the whole test session: a temporary PREFECT_HOME and
database, no server, no analytics. Use the ``prefect_harness`` fixture in flow tests."""

from __future__ import annotations

import os

import pytest

# set before any test module imports prefect: quiet logs (the harness logs its shutdown after
# pytest has closed the captured streams) and no analytics
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"

HARNESS_STARTUP_S = 120  # the ephemeral server takes 30-45 s to start on the busy shared CPU


@pytest.fixture(scope="session")
def prefect_harness(tmp_path_factory):
    home = tmp_path_factory.mktemp("prefect-home")
    os.environ["PREFECT_HOME"] = str(home)
    from prefect.settings import PREFECT_HOME, PREFECT_LOCAL_STORAGE_PATH, temporary_settings
    from prefect.testing.utilities import prefect_test_harness

    with temporary_settings(updates={PREFECT_HOME: str(home),
                                     PREFECT_LOCAL_STORAGE_PATH: str(home / "storage")}):
        with prefect_test_harness(server_startup_timeout=HARNESS_STARTUP_S):
            yield home
