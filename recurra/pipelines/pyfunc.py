"""Any fitted Recurra estimator as an MLflow pyfunc model (model-agnostic).

The model's only artifact is the folder written by :func:`recurra.nn.persistence.save_estimator`;
:class:`RecurraModel` rebuilds the estimator with :func:`recurra.nn.persistence.load_estimator` on
ONE device, module and state tensors together (no ``torch.export``): CPU unless asked,
with ``mlflow.pyfunc.load_model(uri, model_config={"device": "cuda"})`` (or ``"auto"``:
CUDA when available) or the ``RECURRA_SERVE_DEVICE`` environment variable (the
model_config wins); see :func:`serving_device`. Then

- ``task == "forecast"``: ``predict(ctx, frame, params={"horizon": h})`` returns
  ``estimator.predict(frame=frame, horizon=h or None)`` (the forecast frame);
- ``task == "detect"``: returns ``estimator.score(frame)`` (scores frame), or
  ``estimator.predict(frame)`` (events frame) with ``params={"output": "events"}``.

Input and output are pandas frames. MLflow's schema check knows only timezone-naive
datetimes, so the model's input ``timestamp`` is naive UTC: :func:`to_model_input` turns a
contract frame into that form (the wrapper reads naive timestamps as UTC). Outputs keep
Recurra's UTC-aware timestamps.

This module imports mlflow at import time (it subclasses ``PythonModel``); the rest of
Recurra imports it lazily, inside functions.

Examples
--------
>>> with mlflow.start_run():                                      # doctest: +SKIP
...     info = log_estimator(forecaster, name="model", input_example=train.tail(200))
>>> model = mlflow.pyfunc.load_model(info.model_uri)              # doctest: +SKIP
>>> forecast = model.predict(to_model_input(history), params={"horizon": 24})
"""

from __future__ import annotations

import contextlib
import copy
import logging
import tempfile
import warnings
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path
from typing import Any

import pandas as pd
import polars as pl

from recurra.data.schema import TIMESTAMP, RecurraError, to_polars, validate_frame
from recurra.nn.persistence import load_estimator, save_estimator
from recurra.pipelines.mlflow_setup import quiet_environment

quiet_environment()  # telemetry off before mlflow is first imported
import mlflow  # noqa: E402
import mlflow.pyfunc  # noqa: E402

TASKS = ("forecast", "detect")
DETECT_OUTPUTS = ("scores", "events")
ESTIMATOR_ARTIFACT = "estimator"
# Requirements written into every model (never inferred by MLflow: that costs ~6 s).
REQUIREMENTS = ("torch", "numpy", "polars", "pandas", "pyarrow", "scikit-learn", "mlflow")


def infer_task(estimator: Any) -> str:
    """``"detect"`` for an estimator with ``score`` (the detector contract), else ``"forecast"``."""
    return "detect" if callable(getattr(estimator, "score", None)) else "forecast"


def check_task(task: str) -> str:
    if task not in TASKS:
        raise RecurraError(f"`task` ({task!r}) must be one of {list(TASKS)}")
    return task


def to_model_input(frame: Any) -> Any:
    """A contract frame (polars or pandas) as the pyfunc's input: pandas, naive UTC times.

    >>> to_model_input(frame).dtypes["timestamp"]                    # doctest: +SKIP
    dtype('<M8[us]')
    """
    canonical = validate_frame(frame, name="model input")
    naive = canonical.with_columns(pl.col(TIMESTAMP).dt.replace_time_zone(None))
    return naive.to_pandas()


def default_params(task: str) -> dict[str, Any]:
    """The inference params a model of ``task`` declares (and their defaults)."""
    if check_task(task) == "forecast":
        return {"horizon": 0}  # 0: the horizon the forecaster was fitted with
    return {"output": "scores"}


class RecurraModel(mlflow.pyfunc.PythonModel):
    """The pyfunc wrapper: loads the estimator folder, routes ``predict`` by ``task``.

    Parameters
    ----------
    task : ``"forecast"`` or ``"detect"``.
    """

    def __init__(self, task: str) -> None:
        self.task = check_task(task)
        self.estimator_: Any = None

    def load_context(self, context: Any) -> None:
        device = serving_device(getattr(context, "model_config", None))
        self.estimator_ = load_estimator(context.artifacts[ESTIMATOR_ARTIFACT],
                                         map_location=device)

    def predict(self, context: Any, model_input: pd.DataFrame,
                params: dict[str, Any] | None = None) -> pd.DataFrame:
        """Forecast / score ``model_input`` (pandas contract frame); returns a pandas frame."""
        if self.estimator_ is None:
            raise RecurraError("RecurraModel.predict before load_context: load the model with "
                               "mlflow.pyfunc.load_model(uri)")
        return predict_frame(self.estimator_, self.task, model_input, params)

    def __getstate__(self) -> dict[str, Any]:  # never pickle a loaded estimator
        return {"task": self.task, "estimator_": None}


SERVE_DEVICE_ENV = "RECURRA_SERVE_DEVICE"


def serving_device(model_config: dict[str, Any] | None = None) -> Any:
    """The one device a served model loads onto: ``model_config["device"]``, else the
    ``RECURRA_SERVE_DEVICE`` environment variable, else ``"cpu"``; ``"auto"`` is CUDA when
    available. An unknown value names the valid ones (``"cpu"``, ``"cuda[:n]"``, ``"auto"``).

    >>> str(serving_device({"device": "cpu"}))
    'cpu'
    """
    import os

    from recurra.nn.device import choose_device

    requested = (model_config or {}).get("device") or os.environ.get(SERVE_DEVICE_ENV) or "cpu"
    return choose_device(str(requested))


def predict_frame(estimator: Any, task: str, model_input: Any,
                  params: dict[str, Any] | None = None) -> Any:
    """What the pyfunc returns for ``model_input``, computed in-process (pandas out)."""
    params = {**default_params(task), **(params or {})}
    frame = to_polars(model_input)
    if task == "forecast":
        horizon = int(params["horizon"]) if params.get("horizon") is not None else 0
        if horizon < 0:
            raise RecurraError(f"`horizon` ({horizon}) must be >= 0 (0: the fitted horizon)")
        result = estimator.predict(frame=frame, horizon=horizon or None)
    else:
        output = params.get("output", "scores")
        if output not in DETECT_OUTPUTS:
            raise RecurraError(f"`output` ({output!r}) must be one of {list(DETECT_OUTPUTS)}")
        result = estimator.score(frame) if output == "scores" else estimator.predict(frame)
    return to_polars(result).to_pandas()


def requirements() -> list[str]:
    """Explicit pip requirements (installed versions; local tags like ``+cpu`` dropped)."""
    pins = []
    for name in REQUIREMENTS:
        try:
            version = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
        pins.append(f"{name}=={version.split('+', 1)[0]}")
    return pins


def infer_model_signature(estimator: Any, task: str, input_example: Any) -> Any:
    """Signature from an example contract frame and the estimator's output on it."""
    from mlflow.models import infer_signature

    example = to_model_input(input_example)
    output = predict_frame(copy.deepcopy(estimator), task, example)  # leave its state alone
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return infer_signature(example, output, params=default_params(task))


def log_estimator(estimator: Any, *, name: str = "model", task: str | None = None,
                  input_example: Any = None, signature: Any = None) -> Any:
    """Log a fitted estimator as a pyfunc model in the active run.

    Call it inside a run (``MLflowTracker.log_model`` does); without one, MLflow files the
    model under its active experiment ("Default" unless set).

    Parameters
    ----------
    estimator : a fitted estimator following :mod:`recurra.nn.persistence`.
    name : the model's name inside the run.
    task : ``"forecast"`` or ``"detect"``; inferred from the estimator when None.
    input_example : a contract frame the estimator can predict on (a few hundred rows);
        used to infer the signature when ``signature`` is None. Without either, the model
        declares its params only and MLflow checks no input columns.
    signature : an ``mlflow.models.ModelSignature`` to use as is.

    Returns
    -------
    ``mlflow.models.model.ModelInfo`` (``model_uri``, ``model_id``, ``run_id``).
    """
    task = check_task(task or infer_task(estimator))
    if signature is None:
        if input_example is not None:
            signature = infer_model_signature(estimator, task, input_example)
        else:
            signature = _params_only_signature(task)
    cls = type(estimator)
    metadata_ = {"recurra_task": task, "recurra_class": f"{cls.__module__}.{cls.__qualname__}"}
    with tempfile.TemporaryDirectory(prefix="recurra-model-") as staging:
        folder = save_estimator(estimator, Path(staging) / ESTIMATOR_ARTIFACT)
        with warnings.catch_warnings(), _quiet_logger("mlflow.pyfunc"):
            warnings.simplefilter("ignore")
            return mlflow.pyfunc.log_model(
                name=name, python_model=RecurraModel(task),
                artifacts={ESTIMATOR_ARTIFACT: str(folder)}, signature=signature,
                pip_requirements=requirements(), metadata=metadata_)


@contextlib.contextmanager
def _quiet_logger(name: str) -> Iterator[None]:
    """Hide MLflow's note that a Python object is pickled (it is, by design: our class)."""
    logger = logging.getLogger(name)
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _params_only_signature(task: str) -> Any:
    from mlflow.models import ModelSignature
    from mlflow.types.utils import _infer_param_schema

    return ModelSignature(inputs=None, outputs=None,
                          params=_infer_param_schema(default_params(task)))


def load_model(model_uri: str) -> Any:
    """``mlflow.pyfunc.load_model`` on Recurra's store (``models:/name@champion`` etc.);
    models logged before the ``recurra`` package (``pipelines.pyfunc.RecurraModel``) load
    too (:func:`recurra._legacy.legacy_module_names`)."""
    from recurra._legacy import legacy_module_names
    from recurra.pipelines.mlflow_setup import configure

    configure()
    with legacy_module_names():
        return mlflow.pyfunc.load_model(model_uri)


def unwrap_estimator(model: Any) -> Any:
    """The Recurra estimator inside a loaded pyfunc model (to use its full API)."""
    wrapped = model.unwrap_python_model()
    if not isinstance(wrapped, RecurraModel):
        raise RecurraError(f"not a Recurra model: its python_model is {type(wrapped).__name__}")
    return wrapped.estimator_
