"""GARCH / GJR-GARCH baseline: streaming == one pass, agreement with arch's own forecast."""

from __future__ import annotations

import datetime as dt

import numpy as np
import polars as pl
import pytest

from recurra.data.schema import SchemaError, validate_frame
from recurra.forecasting.baselines import GarchConfig, GarchForecaster


def simulated_returns(n_steps: int = 600, seed: int = 0) -> pl.DataFrame:
    """A GJR-GARCH path (omega 0.05, alpha 0.05, gamma 0.15, beta 0.8), daily, with gaps."""
    rng = np.random.default_rng(seed)
    values, sigma2 = np.empty(n_steps), 1.0
    for t in range(n_steps):
        values[t] = np.sqrt(sigma2) * rng.standard_normal()
        sigma2 = 0.05 + (0.05 + 0.15 * (values[t] < 0)) * values[t] ** 2 + 0.8 * sigma2
    observed = rng.random(n_steps) > 0.03
    start = dt.datetime(2020, 1, 1, tzinfo=dt.UTC)
    return validate_frame(pl.DataFrame({
        "series_id": "spx", "channel": "value",
        "timestamp": [start + dt.timedelta(days=i) for i in range(n_steps)],
        "value": np.where(observed, values / 100, np.nan), "observed": observed}
    ).with_columns(pl.col("value").fill_nan(None)))


@pytest.mark.parametrize("kind", ["garch", "gjr"])
def test_update_row_by_row_equals_one_pass(kind):
    frame = simulated_returns()
    times = frame["timestamp"].to_list()
    streamed = GarchForecaster(GarchConfig(kind=kind, horizon=3)).fit(
        frame.filter(pl.col("timestamp") < times[500]))
    one_pass = streamed.predict(frame=frame)
    for t in times[500:]:
        streamed.update(frame.filter(pl.col("timestamp") == t))
    assert streamed.predict().equals(one_pass)
    variance = streamed.predict_variance()["variance"].to_numpy()
    assert np.all(variance > 0) and variance.shape == (3,)


def test_gjr_finds_the_leverage_and_agrees_with_arch():
    from arch import arch_model

    frame = simulated_returns(n_steps=1500)
    fitted = GarchForecaster(GarchConfig(kind="gjr")).fit(frame)
    params = fitted.params_[("spx", "value")]
    assert params["gamma"] > params["alpha"]          # the simulated leverage effect
    values = frame.filter(pl.col("observed"))["value"].to_numpy()
    scale = params["scale"]
    reference = arch_model(values * scale, vol="GARCH", p=1, o=1, q=1, rescale=False).fit(
        disp="off").forecast(horizon=1).variance.to_numpy()[-1, 0] / scale ** 2
    ours = fitted.predict_variance()["variance"][0]
    assert ours == pytest.approx(reference, rel=0.1)   # differs only by the start-up variance


def test_student_t_quantiles_are_wider_in_the_tail_and_errors_are_clear():
    frame = simulated_returns()
    normal = GarchForecaster(GarchConfig(distribution="normal")).fit(frame).predict()
    student = GarchForecaster(GarchConfig(distribution="t")).fit(frame).predict()
    assert (student["q1"] - student["y_hat"]).item() / (
        normal["q1"] - normal["y_hat"]).item() > 1.0
    with pytest.raises(SchemaError, match="`kind`.*'gjr'"):
        GarchConfig(kind="egarch")
    with pytest.raises(SchemaError, match="needs >= 30"):
        GarchForecaster().fit(frame.head(10))
