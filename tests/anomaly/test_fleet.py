"""``update`` is the batched fleet path: it gives the scores of the per-series path.

Exact (bit for bit) for the numpy error models; within float32 rounding for the neural ones,
whose batched module call rounds differently from one call per series (a fleet of one series
is bit-identical, so the batch is the only difference)."""

from __future__ import annotations

import copy
from dataclasses import replace

import numpy as np
import polars as pl
import pytest

from recurra.anomaly.baselines import RollingZScoreDetector
from recurra.anomaly.config import DETECTOR_TRAIN, AutoencoderConfig, NetworkConfig, ThresholdConfig
from recurra.anomaly.detectors import ForecastErrorDetector, GRUDAutoencoder, ReconstructionDetector
from recurra.anomaly.ensemble import _combine
from recurra.anomaly.fleet import DetectorFleet, fleet_arrays
from recurra.anomaly.returns import ReturnZScoreDetector
from recurra.data.schema import RecurraError, SchemaError
from tests.anomaly.configs import config_for
from tests.conftest import make_frame

N_FIT, N_STREAM = 90, 40
SPOT = ThresholdConfig(kind="spot", level=0.9, risk=0.01)
QUANTILE = ThresholdConfig(kind="quantile", level=0.95)
NEURAL = (ReconstructionDetector, GRUDAutoencoder, ForecastErrorDetector)


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


def per_series(detector, rows: pl.DataFrame) -> pl.DataFrame:
    """The scores of ``rows`` through the private per-series path (an ensemble: each
    member's, combined as ``EnsembleDetector.update`` combines them)."""
    if hasattr(detector, "members_"):
        return _combine([per_series(m, rows) for m in detector.members_])
    return detector._scores_frame([(a.series_id, detector._advance_series(a))
                                   for a in detector._new_arrays(rows)])


def assert_same_scores(got: pl.DataFrame, want: pl.DataFrame, exact: bool) -> None:
    """Same rows, flags and NaN pattern; scores and contributions bit for bit (``exact``) or
    to float32 rounding (rtol 1e-5, atol 1e-6)."""
    assert got.columns == want.columns and got.schema == want.schema
    assert got.select("series_id", "timestamp").equals(want.select("series_id", "timestamp"))
    np.testing.assert_array_equal(got["is_anomaly"].to_numpy(), want["is_anomaly"].to_numpy())
    for column in [c for c in got.columns if c == "score" or c.startswith("contribution_")]:
        left = got[column].fill_null(np.nan).to_numpy()
        right = want[column].fill_null(np.nan).to_numpy()
        if exact:
            np.testing.assert_array_equal(left, right)
        else:
            np.testing.assert_allclose(left, right, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("cls,config", [
    (RollingZScoreDetector, SPOT), (RollingZScoreDetector, QUANTILE),
    (ReconstructionDetector, SPOT), (ReconstructionDetector, QUANTILE),
    (GRUDAutoencoder, QUANTILE)])
def test_update_equals_the_per_series_path(cls, config, frame):
    detector = _fitted(cls, config_for(cls, config), frame)
    reference = copy.deepcopy(detector)
    got = [detector.update(rows) for rows in _steps(frame)]
    assert detector.last_update_path_ == "fleet: 5 series x 1 steps"
    want = [per_series(reference, rows) for rows in _steps(frame)]
    got, want = pl.concat(got), pl.concat(want)
    assert_same_scores(got, want, exact=cls not in NEURAL)
    assert want["score"].null_count()                                   # gaps were streamed
    assert want.filter(pl.col("series_id") == "s1")["is_anomaly"].any()  # the spike on s1
    assert detector.state_["s0"].n_rows == reference.state_["s0"].n_rows


@pytest.mark.parametrize("cls", NEURAL, ids=lambda c: c.__name__)
def test_a_fleet_of_one_series_is_bit_identical(cls, frame):
    one = frame.filter(pl.col("series_id") == "s2")
    detector = _fitted(cls, config_for(cls, QUANTILE), one)
    reference = copy.deepcopy(detector)
    for rows in _steps(one)[:10]:
        assert_same_scores(detector.update(rows), per_series(reference, rows), exact=True)
    assert detector.last_update_path_ == "fleet: 1 series x 1 steps"


@pytest.mark.parametrize("cls", [RollingZScoreDetector, ForecastErrorDetector],
                         ids=lambda c: c.__name__)
def test_mixed_row_counts_equal_two_calls(cls, frame):
    """Three series with one new row and two with two, in one call, score as the first row
    of every series and then the second of two in separate calls."""
    detector = _fitted(cls, config_for(cls, SPOT), frame)
    twice = copy.deepcopy(detector)
    first, second = _steps(frame)[:2]
    second = second.filter(pl.col("series_id").is_in(["s1", "s3"]))
    got = detector.update(pl.concat([first, second]).sort(["series_id", "channel",
                                                            "timestamp"]))
    assert detector.last_update_path_ == "fleet: 3 series x 1 steps; fleet: 2 series x 2 steps"
    want = pl.concat([twice.update(first), twice.update(second)]).sort(
        ["series_id", "timestamp"])
    assert twice.last_update_path_ == "fleet: 2 series x 1 steps"
    assert_same_scores(got, want, exact=cls not in NEURAL)
    later = _steps(frame)[2]
    assert_same_scores(detector.update(later), twice.update(later), exact=cls not in NEURAL)


def test_a_detector_without_a_fleet_still_updates(frame):
    detector = _fitted(ReturnZScoreDetector, config_for(ReturnZScoreDetector, QUANTILE), frame)
    reference = copy.deepcopy(detector)
    for rows in _steps(frame)[:5]:
        assert_same_scores(detector.update(rows), per_series(reference, rows), exact=True)
    assert detector.last_update_path_ == "update: 5 series (5 no batched form)"


def test_series_without_a_full_state_or_with_many_rows_go_per_series(frame):
    detector = _fitted(RollingZScoreDetector, config_for(RollingZScoreDetector, SPOT), frame)
    reference = copy.deepcopy(detector)
    steps = _steps(frame)
    detector.reset(["s0"])
    reference.reset(["s0"])
    assert_same_scores(detector.update(steps[0]), per_series(reference, steps[0]), exact=True)
    assert detector.last_update_path_ == ("fleet: 4 series x 1 steps; "
                                          "update: 1 series (1 no full stream state yet)")
    rows = pl.concat(steps[1:20]).sort(["series_id", "channel", "timestamp"])
    assert_same_scores(detector.update(rows), per_series(reference, rows), exact=True)
    assert detector.last_update_path_ == ("update: 5 series (1 no full stream state yet, "
                                          "4 more rows than series)")
    empty = detector.update(rows.head(0))
    assert empty.is_empty() and detector.last_update_path_ == "update: no rows"


def test_update_checks_every_series_before_any_state_moves(frame):
    detector = _fitted(RollingZScoreDetector, config_for(RollingZScoreDetector, SPOT), frame)
    steps = _steps(frame)
    detector.update(steps[0].filter(pl.col("series_id") == "s4"))
    before = copy.deepcopy(detector.state_)
    with pytest.raises(SchemaError, match="never goes back in time"):
        detector.update(steps[0])                    # s4 has seen this row already
    assert all(detector.state_[s].n_rows == before[s].n_rows for s in before)


def test_fleet_write_back_lets_update_continue(frame):
    detector = _fitted(RollingZScoreDetector, config_for(RollingZScoreDetector, SPOT), frame)
    reference = copy.deepcopy(detector)
    steps = _steps(frame)
    fleet = DetectorFleet(detector)
    for rows in steps[:20]:
        fleet.update(*fleet_arrays(rows, fleet.series_ids_, fleet.channels_))
        per_series(reference, rows)
    fleet.write_back()
    for rows in steps[20:]:
        assert_same_scores(detector.update(rows), per_series(reference, rows), exact=True)
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
