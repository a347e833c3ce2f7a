"""Issue 19 item 10: one series near 1e300 is left out by name; the others still train, and a
loss that still becomes inf names the series of the offending batch and their value range."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import polars as pl
import pytest
import torch

from recurra.data.schema import RecurraError
from recurra.forecasting import RNNForecaster
from recurra.nn.train import TrainConfig, fit_module
from recurra.nn.value_range import scaled_range_problem
from tests.conftest import flat_config, make_frame

torch.set_num_threads(1)
TINY = dict(hidden_size=4, horizon=4, lookback=8, train=TrainConfig(max_epochs=1, device="cpu"))


def _hostile(factor: float = 1e300, n_steps: int = 60) -> pl.DataFrame:
    frame = make_frame(n_series=3, n_steps=n_steps, gap_share=0.0, seed=1)
    return frame.with_columns(
        pl.when(pl.col("series_id") == "s1").then((pl.col("value").abs() + 1.0) * factor)
        .otherwise(pl.col("value")).alias("value"))


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_a_1e300_series_is_left_out_by_name_and_the_others_train():
    forecaster = RNNForecaster(flat_config(**TINY)).fit(_hostile())
    assert list(forecaster.excluded_) == ["s1"]
    reason = forecaster.excluded_["s1"]
    assert "series 's1'" in reason and "e+300" in reason and "float32" in reason
    forecast = forecaster.predict()
    assert sorted(forecast["series_id"].unique()) == ["s0", "s2"]
    assert forecast["y_hat"].is_finite().all()


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_every_series_too_large_is_an_error_naming_them():
    frame = make_frame(n_series=2, n_steps=60, gap_share=0.0, seed=1)
    huge = frame.with_columns(((pl.col("value").abs() + 1.0) * 1e300).alias("value"))
    with pytest.raises(RecurraError, match=r"every series.*'s0'.*'s1'"):
        RNNForecaster(flat_config(**TINY)).fit(huge)


def test_healthy_and_merely_large_series_are_kept():
    forecaster = RNNForecaster(flat_config(**TINY)).fit(_hostile(1e30))
    assert forecaster.excluded_ == {}
    import numpy as np
    assert scaled_range_problem("a", np.array([[1.0], [2.0]]), np.zeros(1), np.ones(1)) is None


@dataclass
class _Batch:
    x: torch.Tensor
    y: torch.Tensor
    series_ids: tuple[str, ...]

    def to(self, device):
        return _Batch(self.x.to(device), self.y.to(device), self.series_ids)


def test_an_inf_loss_names_the_series_of_the_batch_and_their_values():
    good = _Batch(torch.ones(2, 3), torch.ones(2, 1), ("a", "b"))
    bad = _Batch(torch.tensor([[1.0, 2.0, 3.0], [1.0, 2.0, float("inf")]]), torch.ones(2, 1),
                 ("c", "big"))

    def step(module, batch):
        return torch.nn.functional.mse_loss(module(batch.x), batch.y)

    with pytest.raises(RecurraError, match=r"batch 2 \(series \['c', 'big'\]; values span "
                                           r"\[1, 3\], 1 not finite\)"):
        fit_module(torch.nn.Linear(3, 1), step, lambda: [good, bad], None,
                   TrainConfig(max_epochs=1, device="cpu"))


def test_a_custom_description_names_tuple_batches():
    batches = [(torch.full((2, 3), float("nan")), torch.ones(2, 1))]

    def step(module, batch):
        return torch.nn.functional.mse_loss(module(batch[0]), batch[1])

    with pytest.raises(RecurraError, match="series 'x7' here"):
        fit_module(torch.nn.Linear(3, 1), step, lambda: batches, None,
                   TrainConfig(max_epochs=1, device="cpu"),
                   describe_batch=lambda batch: "series 'x7' here")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("kind", ["ReconstructionDetector", "ForecastErrorDetector"])
def test_detectors_leave_the_1e300_series_out_and_log_their_epochs(kind):
    from recurra import anomaly
    from recurra.anomaly import DETECTOR_TRAIN, NetworkConfig

    cls = getattr(anomaly, kind)
    config = cls.config_class(window=8, network=NetworkConfig(hidden_size=4, latent_size=2),
                              train=dataclasses.replace(DETECTOR_TRAIN, max_epochs=2))
    detector = cls(config).fit(_hostile(n_steps=80))
    assert list(detector.excluded_) == ["s1"] and "e+300" in detector.excluded_["s1"]
    assert detector.fit_ids_ == ["s0", "s2"]
    assert [r["epoch"] for r in detector.history_] == [1, 2]
    assert all(r["train_loss"] > 0 for r in detector.history_)
    scores = detector.score(make_frame(n_series=3, n_steps=80, gap_share=0.0, seed=1)
                            .filter(pl.col("series_id") != "s1"))
    assert sorted(scores["series_id"].unique()) == ["s0", "s2"]


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
def test_excluded_survives_save_load_and_fine_tune_leaves_the_series_out(tmp_path):
    forecaster = RNNForecaster(flat_config(**TINY)).fit(_hostile())
    loaded = RNNForecaster.load(forecaster.save(tmp_path / "f"))
    assert list(loaded.excluded_) == ["s1"]
    tuned = forecaster.fine_tune(_hostile(), epochs=1)
    assert list(tuned.excluded_) == ["s1"] and sorted(tuned.state_) == ["s0", "s2"]


def test_window_and_chunk_batches_know_their_series():
    import numpy as np

    from recurra.data.arrays import frame_to_arrays
    from recurra.forecasting.windows import chunk_batches, prepare_series, window_batch
    from recurra.nn.train import batch_description

    arrays = frame_to_arrays(make_frame(n_series=2, n_steps=30, gap_share=0.0, seed=2))
    prepared = [prepare_series(a, np.zeros(1), np.ones(1), False) for a in arrays]
    batch = window_batch(prepared, np.array([[1, 0], [0, 3]]), 8, 4, [0], False)
    assert batch.to("cpu").series_ids == ("s1", "s0")
    assert batch_description(batch).startswith("series ['s1', 's0']; values span [")
    chunks = chunk_batches(prepared, [0, 1], 10, 4, [0], False)
    assert all(c.to("cpu").series_ids == ("s0", "s1") for c in chunks)
