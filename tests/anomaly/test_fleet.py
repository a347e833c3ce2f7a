"""DetectorFleet: batched one-row-per-series streaming gives the per-series update scores."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from recurra.anomaly.baselines import RollingZScoreDetector
from recurra.anomaly.config import DETECTOR_TRAIN, AutoencoderConfig, NetworkConfig, ThresholdConfig
from recurra.anomaly.detectors import GRUDAutoencoder, ReconstructionDetector
from recurra.anomaly.fleet import DetectorFleet, fleet_arrays
from recurra.data.schema import RecurraError, SchemaError
from tests.anomaly.configs import config_for
from tests.conftest import make_frame

N_FIT, N_STREAM = 90, 40
SPOT = ThresholdConfig(kind="spot", level=0.9, risk=0.01)
QUANTILE = ThresholdConfig(kind="quantile", level=0.95)



@pytest.fixture(scope="module")
def frame() -> pl.DataFrame:
    frame = make_frame(n_series=5, n_steps=N_FIT + N_STREAM, n_channels=2, gap_share=0.1,
                       seed=3)
    spike = (pl.col("series_id") == "s1") & (pl.col("timestamp") == pl.col("timestamp")
                                             .unique().sort().get(N_FIT + 10))
    return frame.with_columns(pl.when(spike & pl.col("observed")).then(pl.col("value") + 9)
                              .otherwise(pl.col("value")).alias("value"))


def _steps(frame: pl.DataFrame) -> list[pl.DataFrame]:
    stamps = frame["timestamp"].unique().sort().to_list()
    return [frame.filter(pl.col("timestamp") == t) for t in stamps[N_FIT:]]


def _fitted(cls, config, frame):
    stamps = frame["timestamp"].unique().sort()
    return cls(config).fit(frame.filter(pl.col("timestamp") < stamps[N_FIT]))


@pytest.mark.parametrize("cls,config", [
    (RollingZScoreDetector, SPOT), (RollingZScoreDetector, QUANTILE),
    (ReconstructionDetector, SPOT), (ReconstructionDetector, QUANTILE),
    (GRUDAutoencoder, QUANTILE)])
def test_fleet_scores_equal_per_series_update(cls, config, frame):
    detector = _fitted(cls, config_for(cls, config), frame)
    reference = copy.deepcopy(detector)
    fleet = DetectorFleet(detector)
    fleet_scores, reference_scores, fleet_flags, reference_flags = [], [], [], []
    for rows in _steps(frame):
        stamps, values = fleet_arrays(rows, fleet.series_ids_, fleet.channels_)
        scores, flags = fleet.update(stamps, values)
        fleet_scores.append(scores)
        fleet_flags.append(flags)
        expected = reference.update(rows).sort("series_id")
        reference_scores.append(expected["score"].fill_null(np.nan).to_numpy())
        reference_flags.append(expected["is_anomaly"].to_numpy())
    got, want = np.array(fleet_scores), np.array(reference_scores)
    assert np.array_equal(np.isnan(got), np.isnan(want))
    np.testing.assert_allclose(got[~np.isnan(got)], want[~np.isnan(want)], rtol=1e-6,
                               atol=1e-6)
    np.testing.assert_array_equal(np.array(fleet_flags), np.array(reference_flags))
    assert np.isnan(want).any()                      # gaps were streamed too
    assert np.array(reference_flags)[:, 1].any()     # the spike on s1 raised an alarm


def test_write_back_lets_update_continue(frame):
    detector = _fitted(RollingZScoreDetector, config_for(RollingZScoreDetector, SPOT), frame)
    reference = copy.deepcopy(detector)
    steps = _steps(frame)
    fleet = DetectorFleet(detector)
    for rows in steps[:20]:
        fleet.update(*fleet_arrays(rows, fleet.series_ids_, fleet.channels_))
        reference.update(rows)
    fleet.write_back()
    for rows in steps[20:]:
        got, want = detector.update(rows), reference.update(rows)
        np.testing.assert_allclose(got["score"].fill_null(np.nan).to_numpy(),
                                   want["score"].fill_null(np.nan).to_numpy(), rtol=1e-9)
    assert detector.state_["s0"].n_rows == reference.state_["s0"].n_rows


def test_fleet_rejects_bad_input(frame):
    detector = _fitted(RollingZScoreDetector, config_for(RollingZScoreDetector, QUANTILE),
                       frame)
    fleet = DetectorFleet(detector)
    rows = _steps(frame)[0]
    stamps, values = fleet_arrays(rows, fleet.series_ids_, fleet.channels_)
    with pytest.raises(SchemaError, match="shapes"):
        fleet.update(stamps, values[:, :1])
    fleet.update(stamps, values)
    with pytest.raises(SchemaError, match="back in time"):
        fleet.update(stamps, values)
    with pytest.raises(SchemaError, match="not seen in fit"):
        DetectorFleet(detector, series_ids=["s0", "nope"])
    overlap = ReconstructionDetector(AutoencoderConfig(
        window=8, network=NetworkConfig(hidden_size=4), aggregate="overlap",
        train=replace(DETECTOR_TRAIN, max_epochs=1), threshold=ThresholdConfig(kind="quantile")))
    with pytest.raises(RecurraError, match="DetectorFleet"):
        DetectorFleet(overlap.fit(frame.filter(pl.col("series_id") == "s0")))
