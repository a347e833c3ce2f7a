"""``update`` of every detector kind the config can name equals the per-series path:
isolation forest, forecast error, DSPOT, the likelihood threshold, the spatial rule and the
ensemble (the zscore / reconstruction kinds are in test_fleet.py)."""

from __future__ import annotations

import copy

import polars as pl
import pytest

from recurra.anomaly.baselines import IsolationForestDetector, RollingZScoreDetector
from recurra.anomaly.config import ThresholdConfig
from recurra.anomaly.detectors import ForecastErrorDetector, GRUDAutoencoder
from recurra.anomaly.ensemble import EnsembleConfig, EnsembleDetector
from tests.anomaly.configs import config_for
from tests.anomaly.test_fleet import (  # noqa: F401 - the fixture
    NEURAL,
    _fitted,
    _steps,
    assert_same_scores,
    frame,
    per_series,
)

SPOT = ThresholdConfig(kind="spot", level=0.9, risk=0.01)
DSPOT = ThresholdConfig(kind="dspot", level=0.9, risk=0.01, depth=5)
LIKELIHOOD = ThresholdConfig(kind="likelihood", likelihood_window=5, likelihood_period=10,
                             likelihood_relearn=12, likelihood_level=0.4, spatial_tolerance=0.2)
QUANTILE = ThresholdConfig(kind="quantile", level=0.95)


def _run(detector, data, exact: bool):
    """Stream every step through ``update`` and, on a copy, the per-series path."""
    reference = copy.deepcopy(detector)
    got = pl.concat([detector.update(rows) for rows in _steps(data)])
    want = pl.concat([per_series(reference, rows) for rows in _steps(data)])
    assert_same_scores(got, want, exact=exact)
    return reference


@pytest.mark.parametrize("cls,extra", [
    (IsolationForestDetector, SPOT), (IsolationForestDetector, QUANTILE),
    (ForecastErrorDetector, SPOT), (ForecastErrorDetector, QUANTILE),
    (RollingZScoreDetector, DSPOT), (ForecastErrorDetector, DSPOT),
    (RollingZScoreDetector, LIKELIHOOD), (IsolationForestDetector, LIKELIHOOD)],
    ids=lambda v: v.__name__ if isinstance(v, type) else v.kind)
def test_update_of_every_kind_equals_the_per_series_path(cls, extra, frame):  # noqa: F811
    detector = _fitted(cls, config_for(cls, extra), frame)
    reference = _run(detector, frame, exact=cls not in NEURAL)
    assert detector.last_update_path_ == "fleet: 5 series x 1 steps"
    for series_id in reference.state_:
        assert detector.state_[series_id].n_rows == reference.state_[series_id].n_rows


def test_ensemble_update_equals_the_per_series_path(frame):  # noqa: F811
    config = EnsembleConfig(members=("grud_ae", "isolation_forest"), configs=(
        config_for(GRUDAutoencoder, LIKELIHOOD), config_for(IsolationForestDetector, LIKELIHOOD)))
    ensemble = _fitted(EnsembleDetector, config, frame)
    _run(ensemble, frame, exact=False)
    assert ensemble.last_update_path_ == "fleet: 5 series x 1 steps"
    ensemble.members_[0].reset(["s0"])
    ensemble.update(_steps(frame)[0].with_columns(pl.col("timestamp") + pl.duration(days=9)))
    assert ensemble.last_update_path_ == (
        "grud_ae: fleet: 4 series x 1 steps; update: 1 series (1 no full stream state yet)"
        " | isolation_forest: fleet: 5 series x 1 steps")
