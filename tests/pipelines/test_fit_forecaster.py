"""recurra.pipelines.tasks.fit_forecaster: held-out rows reach forecasters whose intervals
need them."""

from __future__ import annotations

import polars as pl
import pytest

from recurra.data.schema import RecurraError
from recurra.forecasting.baselines import SeasonalNaiveForecaster
from recurra.forecasting.config import EncoderConfig
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig
from recurra.pipelines.tasks import fit_forecaster, split_by_time
from tests.conftest import make_frame


def _adaptive() -> RNNForecaster:
    return RNNForecaster(ForecasterConfig(lookback=16, horizon=4, calendar=False,
                                          train=TrainConfig(max_epochs=1, batch_size=16, seed=0),
                                          encoder=EncoderConfig(cell="gru", hidden_size=8),
                                          interval="adaptive"))


def test_adaptive_forecaster_is_calibrated_on_the_rest_and_adapts_as_rows_resolve():
    train, rest = split_by_time(make_frame(n_series=2, n_steps=160, gap_share=0.0), 0.3)
    model = fit_forecaster(_adaptive(), train, rest)
    aci = model.interval_                   # one ACI state per (series, step, channel)
    assert aci.alpha_.shape == (2, 4, 1) and (aci.n_updates_ == 0).all()
    model.update(rest)                      # the train task advances the state through rest
    forecast = model.predict()
    assert (forecast["q90"] > forecast["y_hat"]).all()
    resolved = forecast.select("series_id", "channel", "timestamp",
                               value=pl.col("y_hat") + 100.0)   # every target a miss
    model.update(resolved)
    assert (aci.n_updates_ == 1).all() and (aci.alpha_ < 0.2).all()


def test_plain_forecasters_ignore_the_rest_and_empty_rest_is_a_clear_error():
    train, rest = split_by_time(make_frame(n_series=1, n_steps=80), 0.25)
    naive = fit_forecaster(SeasonalNaiveForecaster(), train, rest)
    assert naive.predict().height > 0
    with pytest.raises(RecurraError, match="needs validation rows"):
        fit_forecaster(_adaptive(), train, rest.clear())
