"""The format-3 state tree on tiny hand-made states: types, dtypes, shapes, identity."""

from __future__ import annotations

import collections
import dataclasses
import json

import numpy as np
import pytest
import torch

from recurra.anomaly.base import Calibration, StreamState
from recurra.anomaly.thresholds import SpotState
from recurra.data.schema import RecurraError
from recurra.nn.grud import GRUDState
from recurra.nn.state_tree import decode_state, encode_state


def _round_trip(state, **kwargs):
    tree, buffers = encode_state(state)
    text = json.dumps(tree, allow_nan=False)  # standard JSON
    return decode_state(json.loads(text), buffers, **kwargs)


def _same(a, b):
    assert type(a) is type(b), (a, b)
    if isinstance(a, np.ndarray):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert a.flags.f_contiguous == b.flags.f_contiguous
        if a.dtype.kind == "O":
            for x, y in zip(a.reshape(-1), b.reshape(-1), strict=True):
                _same(x, y)
        elif a.dtype.kind in "mM":  # NaT != NaT: compare the int64 values
            assert np.array_equal(a.view(np.int64), b.view(np.int64))
        else:
            assert np.array_equal(a, b, equal_nan=a.dtype.kind in "fc")
    elif isinstance(a, torch.Tensor):
        assert (a.dtype, a.shape, a.device, a.stride()) == (b.dtype, b.shape, b.device,
                                                            b.stride())
        assert torch.equal(a, b) and a.requires_grad == b.requires_grad
    elif isinstance(a, np.generic):
        assert a.dtype == b.dtype and (a == b or (a != a and b != b))
    elif isinstance(a, dict):
        assert list(a) == list(b)
        for key in a:
            _same(a[key], b[key])
    elif isinstance(a, list | tuple):
        assert len(a) == len(b)
        for x, y in zip(a, b, strict=True):
            _same(x, y)
    elif dataclasses.is_dataclass(a):
        for field in dataclasses.fields(a):
            _same(getattr(a, field.name), getattr(b, field.name))
    elif isinstance(a, float) and a != a:
        assert b != b
    else:
        assert a == b


@pytest.mark.parametrize("value", [
    None, True, 0, -(2 ** 70), 1.5, float("inf"), float("-inf"), float("nan"), "", "$x",
    [], (), {}, [1, (2, [3])], ((),), {"a": {"b": []}}, {"$tag": 1}, {1: "int key"},
    {("s1", "value"): 0.5}, {None: 1, 2.5: 2}, {1, 2}, frozenset({"a"}), b"\x00\xff",
])
def test_plain_values_keep_their_types(value):
    _same(value, _round_trip(value))


@pytest.mark.parametrize("array", [
    np.arange(5.0), np.arange(6, dtype=np.float32).reshape(2, 3), np.array(3, np.int64),
    np.zeros((0, 4)), np.zeros(0, np.int64), np.array([True, False]),
    np.array(["2024-01-01T00", "NaT"], "datetime64[us]"), np.array([1, 2], "timedelta64[s]"),
    np.array([np.nan, np.inf]), np.arange(6.0).reshape(2, 3).T, np.array([1 + 2j]),
    np.array([1, 2], ">i4"), np.array(["a", "bcd"]), np.array([b"x"]),
    np.array([None, {"k": (1,)}, np.ones(2)], dtype=object), np.array("zero-d string"),
    np.arange(24, dtype=np.uint8).reshape(2, 3, 4), np.array([1.5], np.float16),
])
def test_numpy_arrays_keep_dtype_shape_and_order(array):
    _same(array, _round_trip(array))


@pytest.mark.parametrize("scalar", [
    np.float64(1.25), np.float32(np.nan), np.int64(-3), np.bool_(True), np.uint8(7),
    np.datetime64("2024-01-01T12:00", "us"), np.datetime64("NaT", "us"),
    np.timedelta64(5, "h"), np.complex128(1 - 1j), np.str_("s"), np.float16(0.5),
])
def test_numpy_scalars_keep_their_dtype(scalar):
    _same(scalar, _round_trip(scalar))


def test_numpy_dtypes_and_torch_dtypes_and_devices():
    state = [np.dtype("<M8[us]"), np.dtype(np.float32), torch.float16, torch.bool,
             torch.device("cpu"), torch.device("cuda", 1)]
    assert _round_trip(state) == state


def test_tensors_keep_dtype_shape_stride_grad_and_parameters():
    state = {"f": torch.randn(2, 3), "t": torch.randn(3, 2).T, "b": torch.tensor([True]),
             "i": torch.arange(4), "h": torch.ones(2, dtype=torch.bfloat16),
             "empty": torch.zeros(0, 3), "scalar": torch.tensor(2.0),
             "grad": torch.ones(2, requires_grad=True),
             "param": torch.nn.Parameter(torch.ones(3)),
             "frozen": torch.nn.Parameter(torch.ones(1), requires_grad=False)}
    loaded = _round_trip(state)
    _same(state, loaded)
    assert type(loaded["param"]) is torch.nn.Parameter and loaded["param"].requires_grad
    assert not loaded["frozen"].requires_grad


def test_views_share_a_storage_and_shared_objects_stay_shared():
    base = torch.arange(6.0)
    array = np.ones(3)
    inner = [1]
    state = {"a": base[:2], "b": base[2:].view(2, 2), "array": array, "again": array,
             "lists": (inner, inner)}
    tree, buffers = encode_state(state)
    assert buffers["tensors"].numel() == 6 * 4  # one storage, stored once
    loaded = decode_state(tree, buffers)
    loaded["a"][0] = 7.0
    loaded["b"][0, 0] = 8.0
    assert loaded["a"].untyped_storage().data_ptr() == loaded["b"].untyped_storage().data_ptr()
    assert loaded["b"].storage_offset() == 2
    assert loaded["again"] is loaded["array"] and loaded["lists"][0] is loaded["lists"][1]
    assert state["a"][0].item() == 0.0  # the saved state is untouched


def test_tensors_of_different_storages_do_not_share_one_after_loading():
    loaded = _round_trip({"a": torch.ones(2), "b": torch.zeros(2)})
    loaded["a"].add_(1)
    assert torch.equal(loaded["b"], torch.zeros(2))


def test_map_location_puts_every_tensor_there():
    loaded = _round_trip({"a": torch.ones(2)}, map_location="cpu")
    assert loaded["a"].device == torch.device("cpu")


def test_nested_recurra_dataclasses_and_named_tuples():
    spot = SpotState(**{f.name: np.float64(0.5) if f.name == "peak_sum" else 1
                        for f in dataclasses.fields(SpotState)})
    calibration = Calibration(mean=np.zeros(2), std=np.ones(2, np.float32), time_scale=3600.0,
                              threshold=float("inf"), spot=spot)
    stream = StreamState(last_seen=np.array([1, 2], "datetime64[us]"), smooth=0.5,
                         model_state=GRUDState(torch.zeros(1, 1, 2), torch.ones(1, 2),
                                               torch.tensor([[True, False]])),
                         extra={"k": (1, 2)})
    loaded = _round_trip({"cal": calibration, "stream": stream})
    _same(calibration, loaded["cal"])
    _same(stream, loaded["stream"])
    assert type(loaded["stream"].model_state) is GRUDState


def test_an_ordered_dict_keeps_its_attributes():
    state_dict = torch.nn.Linear(2, 1).state_dict()
    loaded = _round_trip(state_dict)
    assert type(loaded) is collections.OrderedDict
    assert loaded._metadata == state_dict._metadata
    _same(dict(state_dict), dict(loaded))


def test_a_missing_field_takes_its_default_and_a_dataclass_may_gain_fields():
    tree, buffers = encode_state(StreamState(smooth=1.0))
    del tree["state"]["$v"]["extra"]  # saved before the field existed
    assert decode_state(tree, buffers).extra == {}


@dataclasses.dataclass
class _Foreign:
    value: int = 1


def test_classes_outside_recurra_are_neither_saved_nor_loaded():
    with pytest.raises(RecurraError, match=r"state\['a'\]\[1\]: tests.nn.test_state_tree."
                                           r"_Foreign is not a recurra class"):
        encode_state({"a": [0, _Foreign()]})
    for node in ({"$dc": "tests.nn.test_state_tree._Foreign", "$v": {}},
                 {"$obj": "subprocess.Popen", "$v": {}}, {"$nt": "os.stat_result", "$v": []}):
        tree = {"tree_version": 1, "storages": [], "state": node}
        with pytest.raises(RecurraError, match="model/state.json: names the class .* not "
                                               "under 'recurra.'"):
            decode_state(tree, {}, source="model/state.json")


def test_old_module_paths_of_recurra_classes_still_load():
    tree, buffers = encode_state(StreamState(smooth=2.0))
    tree["state"]["$dc"] = "anomaly.base.StreamState"  # the path before the recurra package
    assert decode_state(tree, buffers).smooth == 2.0


@pytest.mark.parametrize(("node", "message"), [
    ({"$what": 1}, "unknown node '\\$what'"),
    ({"$dc": "recurra.anomaly.base.Nope", "$v": {}}, "which this Recurra does not have"),
    ({"$dc": "recurra.nn.grud.GRUDState", "$v": {}}, "is not a dataclass"),
    ({"$nd": ["<f8", 0, [99]]}, "runs past its buffer"),
    ({"$ref": 5}, "refers to object 5"),
    ({"$tensor": [0, 0, [1], [1], "float32"]}, "not a valid state tree"),
])
def test_a_bad_tree_raises_naming_the_file(node, message):
    tree = {"tree_version": 1, "storages": [], "state": node}
    with pytest.raises(RecurraError, match=f"m/state.json.*{message}"):
        decode_state(tree, {"array:<f8": torch.zeros(8, dtype=torch.uint8)},
                     source="m/state.json")


def test_an_unknown_tree_version_is_refused():
    with pytest.raises(RecurraError, match="state tree version 9 is not supported"):
        decode_state({"tree_version": 9, "storages": [], "state": None}, {})


def test_many_small_arrays_pack_into_one_buffer_per_dtype():
    state = {f"s{i}": {"a": np.full(3, i, np.float64), "b": np.arange(i % 4),
                       "t": np.array([i], "datetime64[us]")} for i in range(500)}
    tree, buffers = encode_state(state)
    assert sorted(buffers) == ["array:<M8[us]", "array:<f8", "array:<i8"]
    _same(state, decode_state(tree, buffers))
