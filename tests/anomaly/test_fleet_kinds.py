"""Fleets of every detector kind the config can name equal the per-series update path:
isolation forest, forecast error, DSPOT, the likelihood threshold, the spatial rule and the
ensemble (the zscore / reconstruction kinds are in test_fleet.py)."""

from __future__ import annotations

import copy

import numpy as np
import pytest

from recurra.anomaly.baselines import IsolationForestDetector, RollingZScoreDetector
from recurra.anomaly.config import ThresholdConfig
from recurra.anomaly.detectors import ForecastErrorDetector, GRUDAutoencoder
from recurra.anomaly.ensemble import EnsembleConfig, EnsembleDetector
from recurra.anomaly.fleet import EnsembleFleet, fleet_arrays, make_fleet
from tests.anomaly.configs import config_for
from tests.anomaly.test_fleet import _fitted, _steps, frame  # noqa: F401 - the fixture

SPOT = ThresholdConfig(kind="spot", level=0.9, risk=0.01)
DSPOT = ThresholdConfig(kind="dspot", level=0.9, risk=0.01, depth=5)
LIKELIHOOD = ThresholdConfig(kind="likelihood", likelihood_window=5, likelihood_period=10,
                             likelihood_relearn=12, likelihood_level=0.4, spatial_tolerance=0.2)
QUANTILE = ThresholdConfig(kind="quantile", level=0.95)


def _run(detector, data, n_fleet: int = 30):
    """Stream the first ``n_fleet`` steps through the fleet and the rest, after
    ``write_back``, through ``detector.update``; compare with a copy updated throughout."""
    reference = copy.deepcopy(detector)
    fleet = make_fleet(detector)
    got, want, got_flags, want_flags = [], [], [], []
    for step, rows in enumerate(_steps(data)):
        if step < n_fleet:
            scores, flags = fleet.update(*fleet_arrays(rows, fleet.series_ids_,
                                                       fleet.channels_))
        else:
            if step == n_fleet:
                fleet.write_back()
            own = detector.update(rows).sort("series_id")
            scores, flags = own["score"].fill_null(np.nan).to_numpy(), own["is_anomaly"]
        got.append(scores)
        got_flags.append(np.asarray(flags))
        expected = reference.update(rows).sort("series_id")
        want.append(expected["score"].fill_null(np.nan).to_numpy())
        want_flags.append(expected["is_anomaly"].to_numpy())
    got, want = np.array(got), np.array(want)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-5,
                               atol=1e-6)
    np.testing.assert_array_equal(np.array(got_flags), np.array(want_flags))
    return fleet, reference


@pytest.mark.parametrize("cls,extra", [
    (IsolationForestDetector, SPOT), (IsolationForestDetector, QUANTILE),
    (ForecastErrorDetector, SPOT), (ForecastErrorDetector, QUANTILE),
    (RollingZScoreDetector, DSPOT), (ForecastErrorDetector, DSPOT),
    (RollingZScoreDetector, LIKELIHOOD), (IsolationForestDetector, LIKELIHOOD)],
    ids=lambda v: v.__name__ if isinstance(v, type) else v.kind)
def test_fleet_of_every_kind_equals_update(cls, extra, frame):  # noqa: F811
    detector = _fitted(cls, config_for(cls, extra), frame)
    fleet, reference = _run(detector, frame)
    for series_id in fleet.series_ids_:
        assert detector.state_[series_id].n_rows == reference.state_[series_id].n_rows


def test_ensemble_fleet_equals_ensemble_update(frame):  # noqa: F811
    config = EnsembleConfig(members=("grud_ae", "isolation_forest"), configs=(
        config_for(GRUDAutoencoder, LIKELIHOOD), config_for(IsolationForestDetector, LIKELIHOOD)))
    ensemble = _fitted(EnsembleDetector, config, frame)
    fleet, _ = _run(ensemble, frame)
    assert isinstance(fleet, EnsembleFleet)
    assert isinstance(fleet.members_[0].detector, GRUDAutoencoder)
