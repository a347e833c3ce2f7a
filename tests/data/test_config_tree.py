"""Config trees: nested tables become parts, old flat keys move into them with a warning."""

from __future__ import annotations

import dataclasses
import warnings
from dataclasses import dataclass, field
from typing import Any, ClassVar

import pytest

from recurra.data.config_tree import ConfigKeyError, build_config, config_to_tree


@dataclass(frozen=True)
class Encoder:
    hidden_size: int = 8
    cell: str = "lstm"


@dataclass(frozen=True)
class Member:
    window: int = 4


@dataclass(frozen=True)
class Model:
    FLAT_KEYS: ClassVar[dict[str, str]] = {"hidden_size": "encoder.hidden_size",
                                           "cell": "encoder.cell"}
    horizon: int = 6
    encoder: Encoder = field(default_factory=Encoder)
    extra: Encoder | None = None
    members: tuple[Member, ...] = ()
    levels: tuple[float, ...] = (0.1, 0.9)


def test_nested_tables_lists_and_optional_parts_become_dataclasses():
    config = build_config(Model, {"encoder": {"hidden_size": 32}, "extra": {"cell": "gru"},
                                  "members": [{"window": 2}, {}], "levels": [0.2, 0.8]})
    assert config == Model(encoder=Encoder(hidden_size=32), extra=Encoder(cell="gru"),
                           members=(Member(2), Member()), levels=(0.2, 0.8))
    assert build_config(Model, config_to_tree(config)) == config


def test_old_flat_keys_move_into_their_part_with_a_warning_naming_both():
    with pytest.warns(FutureWarning) as caught:
        config = build_config(Model, {"hidden_size": 16, "cell": "gru",
                                      "encoder": {}}, where="models.rnn.params")
    assert config.encoder == Encoder(hidden_size=16, cell="gru")
    messages = sorted(str(w.message) for w in caught)
    assert messages[0].startswith("`models.rnn.params.cell` is now "
                                  "`models.rnn.params.encoder.cell`")
    assert "`models.rnn.params.hidden_size` is now" in messages[1]


def test_a_flat_key_next_to_a_given_part_instance_keeps_the_rest_of_the_part():
    with pytest.warns(FutureWarning):
        config = build_config(Model, {"hidden_size": 64, "encoder": Encoder(cell="gru")})
    assert config.encoder == Encoder(hidden_size=64, cell="gru")


def test_saved_models_load_flat_keys_silently():
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        config = build_config(Model, {"hidden_size": 4}, warn=False)
    assert config.encoder.hidden_size == 4


def test_a_key_given_both_ways_is_an_error_naming_both():
    with pytest.raises(ConfigKeyError, match="both `hidden_size`.*`encoder.hidden_size`"):
        build_config(Model, {"hidden_size": 4, "encoder": {"hidden_size": 8}}, warn=False)


def test_unknown_keys_list_the_valid_ones_or_are_ignored_for_saved_models():
    with pytest.raises(ConfigKeyError, match=r"`p.encoder` has unknown key\(s\) \['size'\]; "
                                             r"valid keys of Encoder: \['cell', 'hidden_size'\]"):
        build_config(Model, {"encoder": {"size": 3}}, where="p")
    assert build_config(Model, {"gone": 1, "horizon": 3}, unknown="ignore").horizon == 3


def test_only_init_fields_are_keys():
    assert "FLAT_KEYS" not in {f.name for f in dataclasses.fields(Model)}


@dataclass(frozen=True)
class Threshold:
    kind: str = "spot"
    level: float = 0.9


@dataclass(frozen=True)
class Detector:
    FLAT_KEYS: ClassVar[dict[str, str]] = {"threshold": "threshold.kind",
                                           "level": "threshold.level",
                                           "hidden_size": "train.hidden_size",
                                           "cell": "train.cell"}
    threshold: Threshold = field(default_factory=Threshold)
    train: Encoder = field(default_factory=lambda: Encoder(hidden_size=32))


def test_a_flat_key_named_like_its_part_moves_into_it_whatever_the_order():
    for values in ({"threshold": "quantile", "level": 0.5},
                   {"level": 0.5, "threshold": "quantile"}):
        with pytest.warns(FutureWarning) as caught:
            config = build_config(Detector, values, where="p")
        assert config.threshold == Threshold(kind="quantile", level=0.5)
        assert sorted(str(w.message).split(";")[0] for w in caught) == [
            "`p.level` is now `p.threshold.level`", "`p.threshold` is now `p.threshold.kind`"]
    assert build_config(Detector, {"threshold": {"kind": "ksigma"}}).threshold.kind == "ksigma"


def test_a_table_fills_the_fields_default_part_not_the_classes_defaults():
    assert build_config(Detector, {"train": {"cell": "gru"}}).train == Encoder(32, "gru")
    with pytest.warns(FutureWarning):
        assert build_config(Detector, {"cell": "gru"}).train == Encoder(32, "gru")
    assert build_config(Model, {"encoder": {"cell": "gru"}}).encoder == Encoder(8, "gru")


def test_a_flat_key_next_to_a_part_instance_replaces_only_that_key_of_the_instance():
    with pytest.warns(FutureWarning):
        config = build_config(Detector, {"cell": "gru", "train": Encoder(hidden_size=8)})
    assert config.train == Encoder(hidden_size=8, cell="gru")  # not the field default's 32
    with pytest.raises(ConfigKeyError, match="both `cell`"):
        build_config(Detector, {"cell": "gru", "train": Encoder(cell="gru")}, warn=False)


@dataclass(frozen=True)
class Pair:
    kinds: tuple[str, ...] = ("a",)
    parts: tuple[Any, ...] = ()

    @classmethod
    def build_parts(cls, values, *, where, warn, unknown):
        classes = {"a": Member, "e": Encoder}
        parts = tuple(build_config(classes[k], v, where=f"{where}.parts[{i}]", warn=warn,
                                   unknown=unknown)
                      for i, (k, v) in enumerate(zip(values["kinds"], values["parts"],
                                                             strict=True)))
        return {**values, "parts": parts}


def test_build_parts_builds_parts_whose_class_another_key_names():
    config = build_config(Pair, {"kinds": ["a", "e"], "parts": [{"window": 2}, {"cell": "gru"}]})
    assert config.parts == (Member(2), Encoder(cell="gru"))
    with pytest.raises(ConfigKeyError, match=r"`config.parts\[1\]` has unknown key"):
        build_config(Pair, {"kinds": ["a", "e"], "parts": [{}, {"window": 3}]})
