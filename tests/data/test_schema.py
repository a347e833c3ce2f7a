import datetime as dt

import numpy as np
import pandas as pd
import polars as pl
import pytest

from recurra.data.arrays import arrays_to_frame, compute_delta, forward_fill, frame_to_arrays
from recurra.data.schema import COLUMNS, SchemaError, quantile_column, validate_frame


def _frame(**overrides):
    base = {
        "series_id": ["a", "a", "b"],
        "timestamp": [dt.datetime(2024, 1, 1, 2), dt.datetime(2024, 1, 1, 1),
                      dt.datetime(2024, 1, 1, 1)],
        "value": [1.0, None, 3.0],
    }
    base.update(overrides)
    return pl.DataFrame(base)


def test_validate_fills_defaults_sorts_and_converts_to_utc():
    frame = validate_frame(_frame())
    assert frame.columns == list(COLUMNS)
    assert frame["channel"].to_list() == ["value"] * 3
    assert frame["observed"].to_list() == [False, True, True]
    assert frame["timestamp"].dtype == pl.Datetime("us", "UTC")
    assert frame["timestamp"][0] == dt.datetime(2024, 1, 1, 1, tzinfo=dt.UTC)


def test_validate_converts_aware_timestamps_to_utc():
    stamps = pl.Series([dt.datetime(2024, 1, 1, 12)] * 1).dt.replace_time_zone("Europe/Paris")
    frame = validate_frame(pl.DataFrame({"series_id": ["a"], "timestamp": stamps,
                                         "value": [1.0]}))
    assert frame["timestamp"][0] == dt.datetime(2024, 1, 1, 11, tzinfo=dt.UTC)


def test_validate_accepts_pandas_with_nan_as_missing():
    pdf = pd.DataFrame({"series_id": ["a", "a"],
                        "timestamp": pd.to_datetime(["2024-01-01", "2024-01-02"]),
                        "value": [np.nan, 2.0]})
    frame = validate_frame(pdf)
    assert frame["observed"].to_list() == [False, True]


@pytest.mark.parametrize("overrides, message", [
    ({"value": ["x", "y", "z"]}, "'value' must be numeric"),
    ({"value": [1.0, float("inf"), 2.0]}, "NaN/inf"),
    ({"timestamp": ["2024", "2024", "2024"]}, "'timestamp' must be a Datetime"),
    ({"series_id": ["a", "a", None]}, "'series_id' has 1 null"),
])
def test_validate_rejects_bad_columns_with_named_rule(overrides, message):
    with pytest.raises(SchemaError, match=message):
        validate_frame(_frame(**overrides))


def test_validate_rejects_missing_columns_and_duplicates_and_bad_mask():
    with pytest.raises(SchemaError, match=r"missing required column\(s\) \['value'\]"):
        validate_frame(_frame().drop("value"))
    duplicated = _frame(timestamp=[dt.datetime(2024, 1, 1)] * 3, series_id=["a"] * 3)
    with pytest.raises(SchemaError, match="3 rows share"):
        validate_frame(duplicated)
    with pytest.raises(SchemaError, match="must equal value.is_not_null"):
        validate_frame(_frame(observed=[True, True, True]))


def test_quantile_column_names():
    assert quantile_column(0.1) == "q10"
    assert quantile_column(0.9) == "q90"
    assert quantile_column(0.025) == "q2.5"
    with pytest.raises(ValueError, match="strictly between 0 and 1"):
        quantile_column(1.0)


def test_delta_follows_grud_definition():
    elapsed = np.array([0.0, 1.0, 3.0, 4.0, 6.0])
    observed = np.array([[1, 0], [0, 0], [1, 1], [0, 1], [1, 0]], dtype=bool)
    delta = compute_delta(elapsed, observed)
    # recursive definition from Che et al. 2018, written out step by step
    expected = np.zeros_like(delta)
    for t in range(1, len(elapsed)):
        gap = elapsed[t] - elapsed[t - 1]
        expected[t] = np.where(observed[t - 1], gap, gap + expected[t - 1])
    np.testing.assert_allclose(delta, expected)


def test_forward_fill_uses_fill_before_first_observation():
    values = np.array([[np.nan], [2.0], [np.nan], [5.0]])
    observed = ~np.isnan(values)
    filled = forward_fill(values, observed, fill=np.array([9.0]))
    assert filled[:, 0].tolist() == [9.0, 2.0, 2.0, 5.0]


def test_frame_to_arrays_round_trip(multichannel_frame):
    arrays = frame_to_arrays(multichannel_frame)
    assert [a.series_id for a in arrays] == ["s0", "s1"]
    first = arrays[0]
    assert first.channels == ("c0", "c1", "c2")
    assert first.values.shape == (240, 3)
    assert np.isnan(first.values[~first.observed]).all()
    assert first.time_scale == 3600.0
    back = arrays_to_frame(first)
    original = validate_frame(multichannel_frame).filter(pl.col("series_id") == "s0")
    assert back.equals(original)


# ContractFrame: checked once where data enters, then passed on -------------------------
def _unsorted_frame() -> pl.DataFrame:
    return pl.DataFrame({"series_id": ["b", "a", "a"],
                         "timestamp": [dt.datetime(2024, 1, 1), dt.datetime(2024, 1, 2),
                                       dt.datetime(2024, 1, 1)],
                         "value": [1.0, None, 3.0]})


def test_contract_checks_once_and_validate_frame_then_skips_the_checks(monkeypatch):
    from recurra.data import schema

    checked = schema.contract(_unsorted_frame(), name="train")
    assert isinstance(checked, schema.ContractFrame)
    assert checked.frame.equals(validate_frame(_unsorted_frame()))
    calls = []
    monkeypatch.setattr(schema, "_validated", lambda df, name: calls.append(name))
    assert validate_frame(checked) is checked.frame
    assert schema.contract(checked) is checked
    assert frame_to_arrays(checked)[0].series_id == "a"
    assert calls == []
    validate_frame(_unsorted_frame(), name="other")  # a plain frame is still checked
    assert calls == ["other"]


def test_contract_rejects_bad_input_like_validate_frame():
    from recurra.data.schema import contract

    bad = _unsorted_frame().with_columns(pl.lit("a").alias("series_id"))
    with pytest.raises(SchemaError, match="train: .*duplicate"):
        contract(bad, name="train")


def test_contract_frame_cannot_be_made_without_the_checks():
    from recurra.data.schema import ContractFrame

    with pytest.raises(TypeError, match="contract"):
        ContractFrame(_unsorted_frame())


def test_contract_frame_reads_like_its_frame_and_row_filters_keep_the_contract():
    from recurra.data.schema import OBSERVED, ContractFrame, contract

    checked = contract(_unsorted_frame())
    assert checked.height == len(checked) == 3
    assert checked["series_id"].to_list() == ["a", "a", "b"]
    changed = checked.with_columns(pl.lit(None, pl.Float64).alias("value"))
    assert type(changed) is pl.DataFrame  # a polars result is a plain frame again
    observed = checked.rows(pl.col(OBSERVED))
    assert isinstance(observed, ContractFrame)
    assert observed.frame.equals(checked.frame.filter(pl.col(OBSERVED)))


def test_with_values_keeps_the_rows_and_checks_only_the_new_values():
    from recurra.data.schema import OBSERVED, VALUE, ContractFrame, contract

    checked = contract(_unsorted_frame())
    changed = checked.with_values(pl.Series([None, 2.0, 5.0]))
    assert isinstance(changed, ContractFrame)
    assert changed[VALUE].to_list() == [None, 2.0, 5.0]
    assert changed[OBSERVED].to_list() == [False, True, True]  # the mask follows the values
    assert changed.frame.drop(VALUE, OBSERVED).equals(checked.frame.drop(VALUE, OBSERVED))
    with pytest.raises(SchemaError, match="prices: column 'value' has 1 NaN/inf"):
        checked.with_values(pl.Series([1.0, float("inf"), 2.0]), name="prices")
    with pytest.raises(SchemaError, match="frame: 2 new values for 3 rows"):
        checked.with_values(pl.Series([1.0, 2.0]))
