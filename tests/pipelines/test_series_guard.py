"""A series near 1e300 is left out of its group's training, by name; the others train."""

from __future__ import annotations

import polars as pl

from recurra.pipelines.series_guard import exclude_unstable_series
from tests.conftest import make_frame


def test_a_huge_series_is_left_out_by_name_and_the_others_kept():
    frame = make_frame(n_series=3, n_steps=20, gap_share=0.0, seed=1)
    hostile = frame.with_columns(
        pl.when(pl.col("series_id") == "s1").then(pl.col("value") * 1e300)
        .otherwise(pl.col("value")).alias("value"))
    kept, messages = exclude_unstable_series(hostile)
    assert sorted(kept["series_id"].unique()) == ["s0", "s2"]
    assert len(messages) == 1 and "series 's1' left out of training" in messages[0]
    assert "e+30" in messages[0]  # the value range is shown
    same, none = exclude_unstable_series(frame)
    assert none == [] and same.height == frame.height


def test_tracked_config_has_every_field_not_only_the_toml_keys():
    from recurra.pipelines.config import ModelConfig
    from recurra.pipelines.train_tasks import full_config

    model = ModelConfig(name="f", class_path="recurra.forecasting.RNNForecaster",
                        params={"encoder": {"hidden_size": 8}, "horizon": 6})
    logged = full_config(model.build(), model)
    assert logged["encoder"]["hidden_size"] == 8
    assert {"quantiles", "decoder"} <= set(logged)
    assert "'learning_rate'" in str(logged) and "'seed'" in str(logged)  # nested training
