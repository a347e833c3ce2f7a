from dataclasses import dataclass

import pytest

from recurra.data.schema import RecurraError
from recurra.nn.persistence import load_estimator, save_estimator


@dataclass(frozen=True)
class _Config:
    scale: float = 2.0
    lags: tuple[int, ...] = (1, 24)


class _Estimator:
    def __init__(self, config: _Config) -> None:
        self.config = config
        self.state_ = None

    def _get_state(self):
        return {"state": self.state_}

    def _set_state(self, state):
        self.state_ = state["state"]


class _Other(_Estimator):
    pass


def test_round_trip_restores_config_and_state(tmp_path):
    estimator = _Estimator(_Config(scale=3.0))
    estimator.state_ = [1.0, 2.0]
    loaded = load_estimator(save_estimator(estimator, tmp_path / "model"))
    assert type(loaded) is _Estimator
    assert loaded.config == _Config(scale=3.0, lags=(1, 24))
    assert loaded.state_ == [1.0, 2.0]


def test_saving_again_replaces_the_folder(tmp_path):
    estimator = _Estimator(_Config())
    estimator.state_ = 1
    save_estimator(estimator, tmp_path / "model")
    estimator.state_ = 2
    save_estimator(estimator, tmp_path / "model")
    assert load_estimator(tmp_path / "model").state_ == 2
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"]


def test_load_checks_the_expected_class_and_the_folder(tmp_path):
    save_estimator(_Estimator(_Config()), tmp_path / "model")
    with pytest.raises(RecurraError, match="holds a _Estimator, not a _Other"):
        load_estimator(tmp_path / "model", expected=_Other)
    with pytest.raises(RecurraError, match="not a saved Recurra model"):
        load_estimator(tmp_path)


def test_tensors_and_the_rest_round_trip_with_shared_storage_kept(tmp_path):
    import numpy as np
    import torch

    base = torch.arange(6.0)
    estimator = _Estimator(_Config())
    estimator.state_ = {"s0": {"h": base[:3], "buffer": np.ones(4), "n": 3},
                        "s1": {"h": base[3:], "param": torch.nn.Parameter(torch.ones(2))},
                        "whole": base}
    folder = save_estimator(estimator, tmp_path / "model")
    assert sorted(p.name for p in folder.iterdir()) == ["meta.json", "state.json",
                                                         "weights.pt"]
    buffers = torch.load(folder / "weights.pt", weights_only=True)  # no objects: safe load
    assert buffers["tensors"].numel() == (6 + 2) * 4  # float32 bytes of the two storages
    state = load_estimator(folder).state_
    assert torch.equal(state["s0"]["h"], base[:3]) and state["s0"]["n"] == 3
    assert np.array_equal(state["s0"]["buffer"], np.ones(4))
    assert torch.equal(state["s1"]["param"], torch.ones(2))
    state["whole"][0] = 42.0  # views of one storage stay views of one storage
    assert state["s0"]["h"][0].item() == 42.0


def test_a_folder_in_format_1_still_loads(tmp_path):
    import json

    import torch

    folder = tmp_path / "old"
    folder.mkdir()
    (folder / "meta.json").write_text(json.dumps({
        "format_version": 1, "class": f"{__name__}._Estimator",
        "config_class": f"{__name__}._Config", "config": {"scale": 5.0, "lags": [2]}}))
    torch.save({"state": {"h": torch.ones(3), "n": [1, 2]}}, folder / "state.pt")
    loaded = load_estimator(folder)
    assert loaded.config == _Config(scale=5.0, lags=(2,))
    assert torch.equal(loaded.state_["h"], torch.ones(3)) and loaded.state_["n"] == [1, 2]


def test_an_unknown_format_names_the_versions_it_reads(tmp_path):
    folder = save_estimator(_Estimator(_Config()), tmp_path / "model")
    meta = (folder / "meta.json").read_text().replace('"format_version": 3',
                                                      '"format_version": 9')
    (folder / "meta.json").write_text(meta)
    with pytest.raises(RecurraError, match="format_version 9 .* reads 1, 2, 3"):
        load_estimator(folder)


def _saved(tmp_path):
    import numpy as np

    estimator = _Estimator(_Config())
    estimator.state_ = {"x": np.arange(100.0), "n": 1}
    return save_estimator(estimator, tmp_path / "model")


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage", "missing"])
def test_a_corrupt_weights_file_is_named(tmp_path, damage):
    weights = _saved(tmp_path) / "weights.pt"
    data = weights.read_bytes()
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes({"truncate": data[: len(data) // 2],
                             "flip": data[:-40] + bytes([data[-40] ^ 1]) + data[-39:],
                             "garbage": b"not a zip"}[damage])
    with pytest.raises(RecurraError, match="weights.pt"):
        load_estimator(tmp_path / "model")


@pytest.mark.parametrize("text", ["", '{"weights": "weights.pt", "sha', "[1, 2]",
                                  "{\"weights\": 3}"])
def test_a_corrupt_state_json_is_named(tmp_path, text):
    (_saved(tmp_path) / "state.json").write_text(text)
    with pytest.raises(RecurraError, match="state.json"):
        load_estimator(tmp_path / "model")


def test_a_corrupt_meta_json_is_named(tmp_path):
    (_saved(tmp_path) / "meta.json").write_text('{"format_version": 3, "cla')
    with pytest.raises(RecurraError, match="meta.json cannot be read as JSON"):
        load_estimator(tmp_path / "model")


def test_a_state_naming_a_class_outside_recurra_is_refused(tmp_path):
    import json

    folder = _saved(tmp_path)
    document = json.loads((folder / "state.json").read_text())
    document["state"]["state"] = {"$obj": "os._wrap_close", "$v": {}}
    (folder / "state.json").write_text(json.dumps(document))
    with pytest.raises(RecurraError, match=r"state.json: names the class 'os._wrap_close', "
                                           r"which is not under 'recurra.'"):
        load_estimator(folder)


def test_a_state_holding_a_foreign_object_is_not_saved(tmp_path):
    from collections import Counter

    estimator = _Estimator(_Config())
    estimator.state_ = {"ok": [1, 2], "bad": [Counter()]}
    with pytest.raises(RecurraError, match=r"state\['state'\]\['bad'\]\[0\]: "
                                           r"collections.Counter is not a recurra class"):
        save_estimator(estimator, tmp_path / "model")
    assert not (tmp_path / "model").exists()
