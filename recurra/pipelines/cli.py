"""The ``recurra`` command. Each area registers its own sub-commands in its own module, so
the CLI grows without one file owning everything:

- ``recurra.pipelines.cli_data``: ingest, store (summary, quarantine)
- ``recurra.pipelines.cli_store``: store compact, vacuum, migrate
- ``recurra.pipelines.cli_models``: train, models (list/promote/rollback), mlflow-ui
- ``recurra.pipelines.cli_flows``: demo, detect, backtest, serve
- ``recurra.dashboards.cli``: dashboard, report
- ``recurra.pipelines.cli_init``: init, doctor
"""

from __future__ import annotations

import importlib
import os

import typer

for _name, _value in (("PREFECT_SERVER_ANALYTICS_ENABLED", "false"),
                      ("MLFLOW_DISABLE_TELEMETRY", "true"), ("DO_NOT_TRACK", "true")):
    os.environ.setdefault(_name, _value)

app = typer.Typer(
    name="recurra",
    help="Recurra: forecasting and anomaly detection for financial and sensor series.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

COMMAND_MODULES = ("recurra.pipelines.cli_data", "recurra.pipelines.cli_store",
                   "recurra.pipelines.cli_models", "recurra.pipelines.cli_flows",
                   "recurra.dashboards.cli", "recurra.pipelines.cli_stack",
                   "recurra.pipelines.cli_init")

for _module in COMMAND_MODULES:
    try:
        importlib.import_module(_module).register(app)
    except ModuleNotFoundError as error:  # an area not built yet
        if error.name != _module:
            raise


def main() -> None:  # pragma: no cover - console entry point
    app()


if __name__ == "__main__":  # pragma: no cover
    main()
