"""The shared battery over every forecaster (ARCHITECTURE.md, "Estimators").

To enrol a forecaster, append ``(id, factory)`` to :data:`FORECASTERS`, where
``factory()`` returns an unfitted estimator with a tiny, seeded, CPU config whose horizon is
:data:`HORIZON`. Each case checks: it follows the ``Forecaster`` protocol; fit returns self;
predict/update before fit raise ``NotFittedError`` naming the class; same seed gives the same
forecast; the output passes the forecast schema; save/load round-trips; bad input raises
``SchemaError`` with a message naming the column; update returns the forecast ``predict``
gives right after and moves the forecast origin forward.
"""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
import torch
from polars.testing import assert_frame_equal

from recurra.data.schema import (
    FORECAST_SCHEMA,
    ISSUED_AT,
    STEP,
    TIMESTAMP,
    Y_HAT,
    NotFittedError,
    RecurraError,
    SchemaError,
    contract,
    quantile_column,
)
from recurra.forecasting.config import EncoderConfig
from recurra.forecasting.protocol import Forecaster
from recurra.forecasting.rnn import ForecasterConfig, RNNForecaster
from recurra.nn.train import TrainConfig
from tests.conftest import flat_config, make_frame

torch.set_num_threads(1)  # tiny models: one thread is far faster on a busy CPU
HORIZON = 6
_TRAIN = TrainConfig(max_epochs=2, batch_size=16, device="cpu", seed=0)
_RNN = ForecasterConfig(lookback=16, horizon=HORIZON, train=_TRAIN,
                        encoder=EncoderConfig(hidden_size=8))


def _rnn(**kwargs):
    """The base config with a few fields changed (flat keys: ``cell="gru"``)."""
    return lambda: RNNForecaster(flat_config(hidden_size=8, lookback=16, horizon=HORIZON,
                                             train=_TRAIN, **kwargs))


FORECASTERS: list[tuple[str, object]] = [
    ("rnn-lstm-windows", _rnn()),
    ("rnn-gru-stateful-seq2seq", _rnn(cell="gru", stateful=True, decoder="seq2seq",
                                      output="student_t")),
    ("rnn-grud-stateful-gaussian", _rnn(cell="grud", stateful=True, output="gaussian")),
]

try:  # the baselines enrol themselves here when present
    from recurra.forecasting.baselines import (
        LinearLagConfig,
        LinearLagForecaster,
        NaiveConfig,
        NaiveForecaster,
        SeasonalNaiveConfig,
        SeasonalNaiveForecaster,
    )

    FORECASTERS += [
        ("naive", lambda: NaiveForecaster(NaiveConfig(horizon=HORIZON))),
        ("seasonal-naive", lambda: SeasonalNaiveForecaster(SeasonalNaiveConfig(
            season=24, horizon=HORIZON))),
        ("linear-lag", lambda: LinearLagForecaster(LinearLagConfig(n_lags=24,
                                                                   horizon=HORIZON))),
    ]
except ImportError:  # pragma: no cover - baselines not written yet
    pass

from recurra.forecasting.baselines import GarchConfig, GarchForecaster  # noqa: E402

FORECASTERS += [
    ("garch", lambda: GarchForecaster(GarchConfig(horizon=HORIZON))),
    ("gjr-garch-t", lambda: GarchForecaster(GarchConfig(kind="gjr", distribution="t",
                                                        horizon=HORIZON))),
]

IDS = [name for name, _ in FORECASTERS]
FACTORIES = [factory for _, factory in FORECASTERS]


@pytest.fixture(scope="module")
def frames() -> tuple[pl.DataFrame, pl.DataFrame]:
    frame = make_frame(n_series=2, n_steps=110, gap_share=0.1, seed=5)
    cut = sorted(frame[TIMESTAMP].unique().to_list())[100]
    return frame.filter(pl.col(TIMESTAMP) < cut), frame.filter(pl.col(TIMESTAMP) >= cut)


@pytest.fixture(scope="module", params=FACTORIES, ids=IDS)
def fitted(request, frames):
    estimator = request.param()
    returned = estimator.fit(frames[0])
    return request.param, estimator, returned


def test_fit_returns_self(fitted):
    _, estimator, returned = fitted
    assert returned is estimator


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_follows_the_forecaster_protocol(factory):
    assert isinstance(factory(), Forecaster)
    assert not isinstance(object(), Forecaster)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_not_fitted_error_names_the_class(factory, frames):
    estimator = factory()
    name = type(estimator).__name__
    with pytest.raises(NotFittedError, match=name):
        estimator.predict()
    with pytest.raises(NotFittedError, match=name):
        estimator.update(frames[1])


def test_output_passes_the_forecast_schema(fitted, frames):
    _, estimator, _ = fitted
    forecast = estimator.predict()
    for column, dtype in FORECAST_SCHEMA.items():
        assert forecast.schema[column] == dtype, column
    extra = [c for c in forecast.columns if c not in FORECAST_SCHEMA]
    assert extra and all(c.startswith("q") for c in extra)
    assert all(forecast.schema[c] == pl.Float64 for c in extra)
    assert forecast.height == 2 * HORIZON
    assert forecast.null_count().sum_horizontal().item() == 0
    assert sorted(set(forecast[STEP].to_list())) == list(range(1, HORIZON + 1))
    assert (forecast[TIMESTAMP] > forecast[ISSUED_AT]).all()
    assert forecast[ISSUED_AT].max() == frames[0][TIMESTAMP].max()
    assert forecast[Y_HAT].is_finite().all()


def test_same_seed_same_result(fitted, frames):
    factory, estimator, _ = fitted
    again, first = factory().fit(frames[0]).predict(), estimator.predict()
    floats = [c for c, dtype in first.schema.items() if dtype == pl.Float64]
    assert again.drop(floats).equals(first.drop(floats))
    # equal up to float rounding: TorchScript (GRU-D's time loop) may fuse kernels after
    # its first profiled runs, which moves results by ~1e-8
    np.testing.assert_allclose(again.select(floats).to_numpy(), first.select(floats).to_numpy(),
                               rtol=1e-6, atol=1e-6)


def test_save_load_round_trip(fitted, tmp_path, tree_layout):
    _, estimator, _ = fitted
    folder = estimator.save(tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "state.json",
                                                         "weights.pt"]  # format 3: no pickle
    torch.load(folder / "weights.pt", weights_only=True)
    loaded = type(estimator).load(tmp_path / "model")
    assert loaded.config == estimator.config
    assert loaded.predict().equals(estimator.predict())


def test_save_load_mid_stream_continues_the_stream(fitted, frames, tmp_path, tree_layout):
    _, estimator, _ = fitted
    first, second = _halves(frames[1])
    stream = type(estimator).load(estimator.save(tmp_path / "start"))
    stream.update(first)
    loaded = type(estimator).load(stream.save(tmp_path / "mid"))
    assert loaded.predict().equals(stream.predict())
    assert loaded.update(second).equals(stream.update(second))


def _halves(frame: pl.DataFrame) -> tuple[pl.DataFrame, pl.DataFrame]:
    stamps = sorted(frame[TIMESTAMP].unique().to_list())
    cut = stamps[len(stamps) // 2]
    return frame.filter(pl.col(TIMESTAMP) < cut), frame.filter(pl.col(TIMESTAMP) >= cut)


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_bad_input_message_names_the_column(factory, frames):
    with pytest.raises(SchemaError, match="missing required column"):
        factory().fit(frames[0].drop("value"))
    bad = frames[0].with_columns(pl.col("value").cast(pl.Utf8))
    with pytest.raises(SchemaError, match="column 'value' must be numeric"):
        factory().fit(bad)


def test_update_returns_what_predict_gives_right_after(fitted, frames, tmp_path):
    """``update(new_rows, horizon=h)`` is the frame ``predict(horizon=h)`` gives after the
    state advanced (what ``update(...)`` then ``predict(...)`` gave before); a bad horizon is
    refused before any state moves."""
    _, estimator, _ = fitted
    folder = estimator.save(tmp_path / "copy")
    streamed, advanced = type(estimator).load(folder), type(estimator).load(folder)
    short = streamed.update(frames[1], horizon=2)
    advanced.update(frames[1])
    assert_frame_equal(short, advanced.predict(horizon=2), check_exact=True)
    assert short["step"].max() == 2
    fresh = type(estimator).load(folder)
    before = fresh.predict()
    with pytest.raises(RecurraError, match="horizon"):
        fresh.update(frames[1], horizon=HORIZON + 1)
    assert_frame_equal(fresh.predict(), before, check_exact=True)


def test_update_moves_the_origin(fitted, frames, tmp_path):
    _, estimator, _ = fitted
    estimator.save(tmp_path / "copy")
    copy = type(estimator).load(tmp_path / "copy")
    forecast = copy.update(frames[1])      # the return convention: the forecast from there
    assert_frame_equal(forecast, copy.predict(), check_exact=True)
    assert forecast[ISSUED_AT].max() == frames[1][TIMESTAMP].max()
    assert forecast.height == 2 * HORIZON
    levels = [c for c in forecast.columns if c.startswith("q")]
    assert np.isfinite(forecast.select(levels).to_numpy()).all()
    assert quantile_column(0.1) in levels


@pytest.mark.parametrize("factory", FACTORIES, ids=IDS)
def test_a_contract_frame_is_checked_once_where_it_enters(factory, frames, contract_checks):
    train = contract(frames[0], name="train")
    contract_checks.clear()
    factory().fit(train).predict(frame=train)
    assert contract_checks == []  # fit and predict derive from it without checking again
    factory().fit(frames[0])
    assert contract_checks == ["train"]  # a plain frame: one full check, not one per step
