"""Recurra: time-series forecasting and anomaly detection with stateful RNNs.

Subpackages (ARCHITECTURE.md has the map):

* :mod:`recurra.data`: the data contract, loaders, quarantine and the Delta store;
* :mod:`recurra.forecasting`: forecasters (stateful LSTM/GRU, GRU-D, baselines), the
  training loop, intervals;
* :mod:`recurra.anomaly`: detectors (reconstruction, forecast error, isolation forest,
  ensembles), thresholds, events;
* :mod:`recurra.pipelines`: Prefect flows, MLflow tracking and registry, the ``recurra`` CLI;
* :mod:`recurra.dashboards`: the Dash app and the HTML report (read only).

The core (data, forecasting, anomaly) never imports prefect or mlflow.
"""

__version__ = "0.1.0"
