"""Columnar nodes of the state tree: many objects of one shape written as columns load back
equal, with their types, identities and defaults, and refuse what they must refuse."""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import replace

import numpy as np
import pytest
import torch

from recurra.anomaly.calibration import Calibration
from recurra.anomaly.stream import Chunk, StreamState
from recurra.anomaly.thresholds import SpotState
from recurra.data.schema import RecurraError
from recurra.nn.state_columns import MIN_ROWS
from recurra.nn.state_tree import decode_state, encode_state
from tests.nn.test_state_tree import _Foreign, _round_trip, _same

N = MIN_ROWS + 4


def _columns(state):
    """The encoded tree's state node (JSON), and the state loaded back."""
    tree, buffers = encode_state(state)
    tree = json.loads(json.dumps(tree, allow_nan=False))
    return tree["state"], decode_state(tree, buffers)


def _column_kinds(node):
    return {field: next(k for k in column if k != "none") for field, column in node["r"]["f"]}


def _stream(i: int) -> StreamState:
    rows = 3 if i % 2 else 2
    tail = Chunk(np.arange(rows).astype("datetime64[us]") + i, np.full((rows, 2), i / 3),
                 np.full((rows, 2), i / 3), np.ones((rows, 2), bool),
                 np.ones((rows, 2)), np.arange(rows, dtype=np.float64))
    return StreamState(tail=tail, last_seen=np.array([i, i + 1.0]), smooth=i / 7 or None,
                       spot=SpotState(1.0, i, 2, 0.5, 0.25, 0.01, float(i)) if i % 3 else None,
                       model_state=(torch.full((1, 1, 4), float(i)), np.float32(i)),
                       n_rows=i, extra={"k": i} if i == 2 else {})


def test_a_mapping_of_one_dataclass_is_one_columnar_node_and_loads_equal():
    state = {f"s{i}": _stream(i) for i in range(N)}
    node, loaded = _columns({"stream": state})
    node = node["stream"]
    assert node["$cols"] == "dict" and node["k"] == list(state)
    assert node["r"]["class"] == "recurra.anomaly.stream.StreamState"
    kinds = _column_kinds(node)
    assert kinds["last_seen"] == "a" and kinds["tail"] == "r" and kinds["spot"] == "r"
    assert kinds["smooth"] == "fl" and kinds["n_rows"] == "s" and kinds["low"] == "k"
    assert kinds["model_state"] == "r" and kinds["extra"] == "e"  # dicts of other keys
    tail = dict(node["r"]["f"])["tail"]["r"]
    assert _column_kinds({"r": tail})["values"] == "ra"  # 2 or 3 rows: ragged
    assert "none" in dict(node["r"]["f"])["spot"] and "none" in dict(node["r"]["f"])["smooth"]
    _same(state, loaded["stream"])
    assert all(type(s) is StreamState for s in loaded["stream"].values())


def test_fewer_rows_than_the_minimum_keep_their_own_nodes():
    state = {f"s{i}": _stream(i) for i in range(MIN_ROWS - 1)}
    node, loaded = _columns(state)
    assert "$cols" not in node and node["s0"]["$dc"] == "recurra.anomaly.stream.StreamState"
    _same(state, loaded)


@pytest.mark.parametrize("rows", [
    [{"a": i, "b": np.arange(3) * i, "c": None} for i in range(N)],  # dicts of one key set
    [(float(i), np.ones((2, 2)) * i, "x") for i in range(N)],  # tuples of one length
    [() for _ in range(N)],
    [{} for _ in range(N)],
    [(np.float64(i), np.datetime64(i, "us"), np.int32(i), bool(i % 2)) for i in range(N)],
    [(float("nan") if i == 3 else float(i), float("inf"), i * 0.5) for i in range(N)],
    [(1 if i % 2 else 1.5, True if i % 2 else 0, "s" if i else None) for i in range(N)],
    [(np.array(float(i)), np.zeros((0, 2)), np.ones(i % 4, np.int64)) for i in range(N)],
    [(torch.full((2,), float(i)), torch.arange(i % 3 + 1)) for i in range(N)],
])
def test_records_of_dicts_tuples_scalars_arrays_and_tensors(rows):
    node, loaded = _columns({"list": rows, "dict": {(i, "k"): row for i, row in
                                                      enumerate(copy.deepcopy(rows))}})
    assert node["list"]["$cols"] == "list" and node["dict"]["$cols"] == "dict"
    _same(rows, loaded["list"])
    _same(dict(enumerate(rows)), dict(enumerate(loaded["dict"].values())))
    assert list(loaded["dict"]) == [(i, "k") for i in range(N)]


def test_an_empty_mapping_and_mixed_rows_stay_ordinary():
    mixed = {f"s{i}": _stream(i) if i % 2 else Calibration(np.zeros(1), np.ones(1), 1.0)
             for i in range(N)}
    state = {"empty": {}, "none": [], "mixed": mixed, "ints": list(range(N))}
    node, loaded = _columns(state)
    assert node["empty"] == {} and node["none"] == [] and node["ints"] == list(range(N))
    assert "$cols" not in node["mixed"]
    _same(state, loaded)


def test_arrays_in_fortran_order_or_of_other_dtypes_load_as_they_were():
    rows = [{"f": np.asfortranarray(np.ones((2, 3)) * i),
             "d": np.ones(2, np.float32 if i % 2 else np.float64),
             "s": np.array(["a", "bc"])} for i in range(N)]
    node, loaded = _columns(rows)
    assert _column_kinds(node) == {"f": "e", "d": "e", "s": "e"}
    _same(rows, loaded)
    assert loaded[0]["f"].flags.f_contiguous


def test_identity_inside_across_and_after_columns_is_kept():
    shared = np.arange(3.0)
    calibrations = {f"s{i}": Calibration(np.zeros(2) + i, np.ones(2), 1.0, low=np.zeros(2),
                                         spot=SpotState(1.0, i, 2, 0.5, 0.25, 0.01, 1.0))
                    for i in range(N)}
    streams = {sid: StreamState(low=cal.low, recent=shared, high=np.ones(2) if i % 2 else None,
                                spot=cal.spot if i % 3 else replace(cal.spot, n_seen=-i))
               for i, (sid, cal) in enumerate(calibrations.items())}
    state = {"calibration": calibrations, "stream": streams, "again": calibrations["s1"],
             "mean": calibrations["s2"].mean, "spot": calibrations["s3"].spot}
    tree, buffers = encode_state(state)
    spot = dict(tree["state"]["stream"]["r"]["f"])["spot"]
    assert "r" in spot and spot["ref"][0] == [i for i in range(N) if i % 3]
    loaded = decode_state(tree, buffers)
    for i, sid in enumerate(calibrations):
        assert loaded["stream"][sid].low is loaded["calibration"][sid].low
        assert (loaded["stream"][sid].spot is loaded["calibration"][sid].spot) == bool(i % 3)
        assert loaded["stream"][sid].recent is loaded["stream"]["s0"].recent
    assert loaded["again"] is loaded["calibration"]["s1"]
    assert loaded["mean"] is loaded["calibration"]["s2"].mean
    assert loaded["spot"] is loaded["calibration"]["s3"].spot
    _same(state, loaded)
    loaded["calibration"]["s0"].mean[0] = 99.0  # rows of one stacked column stay apart
    assert loaded["calibration"]["s1"].mean[0] == 1.0


def test_tensor_rows_viewing_a_batch_share_its_storage_after_loading():
    batch = torch.arange(2.0 * N).reshape(N, 2)
    own = [torch.full((3,), float(i)) for i in range(N)]
    state = {"rows": [(batch[i], own[i]) for i in range(N)], "batch": batch,
             "view": own[4][1:]}
    node, loaded = _columns(state)
    assert _column_kinds(node["rows"]) == {0: "tv", 1: "t"}
    _same(state, loaded)
    rows = loaded["rows"]
    assert rows[3][0].untyped_storage().data_ptr() == loaded["batch"].untyped_storage() \
        .data_ptr()
    loaded["view"][0] = -1.0  # a later view of a stacked row is a view of that row
    assert rows[4][1][1].item() == -1.0 and rows[5][1][1].item() == 5.0


def test_a_dataclass_that_gained_a_field_gives_every_row_its_default():
    state = [StreamState(smooth=float(i)) for i in range(N)]
    tree, buffers = encode_state(state)
    fields = tree["state"]["r"]["f"]
    tree["state"]["r"]["f"] = [f for f in fields if f[0] != "extra"]  # saved before the field
    loaded = decode_state(tree, buffers)
    assert [s.extra for s in loaded] == [{}] * N
    assert loaded[0].extra is not loaded[1].extra  # default_factory: one per row


def test_a_class_outside_recurra_is_refused_in_a_column_on_save_and_on_load():
    rows = {f"s{i}": StreamState(model_state=_Foreign(i)) for i in range(N)}
    with pytest.raises(RecurraError, match=r"state\['stream'\]\[\*\]\.model_state: "
                                           r"tests.nn.test_state_tree._Foreign is not a "
                                           r"recurra class"):
        encode_state({"stream": rows})
    with pytest.raises(RecurraError, match=r"state\['x'\]\['s0'\]: tests.nn.test_state_tree."
                                           r"_Foreign is not a recurra class"):
        encode_state({"x": {f"s{i}": _Foreign(i) for i in range(N)}})
    tree, buffers = encode_state([Calibration(np.zeros(1), np.ones(1), float(i))
                                  for i in range(N)])
    tree["state"]["r"]["class"] = "tests.nn.test_state_tree._Foreign"
    with pytest.raises(RecurraError, match="m/state.json: names the class .*_Foreign.* not "
                                           "under 'recurra.'"):
        decode_state(tree, buffers, source="m/state.json")


@pytest.mark.parametrize(("change", "message"), [
    (lambda r: r.update(of="what"), "unknown columnar record kind"),
    (lambda r: r.update(n=N + 1), f"holds {N} values for {N + 1} rows"),
    (lambda r: r["f"][0].__setitem__(1, {"zzz": 1}), "unknown column"),
    (lambda r: r.update({"class": "recurra.anomaly.thresholds.gpd_moments"}),
     "not a dataclass"),
])
def test_a_bad_columnar_node_raises_naming_the_file(change, message):
    tree, buffers = encode_state([Calibration(np.zeros(2), np.ones(2), float(i))
                                  for i in range(N)])
    change(tree["state"]["r"])
    with pytest.raises(RecurraError, match=f"m/state.json.*({message})"):
        decode_state(tree, buffers, source="m/state.json")


def test_plain_value_round_trips_still_hold_inside_columns():
    rows = [{"v": v} for v in ([1, 2], (3,), {"$x": 1}, b"b", {1, 2}, None, "s", 2.5,
                               np.dtype("f4"), torch.float16)] * 2
    _same(rows, _round_trip(rows))
    assert dataclasses.is_dataclass(_round_trip([StreamState()] * 1)[0])
