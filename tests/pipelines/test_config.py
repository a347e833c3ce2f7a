"""The pipeline config: the bundled default loads, and every error names its key."""

from __future__ import annotations

import dataclasses

import pytest

from recurra.pipelines.config import ConfigError, PipelineConfig, load_config, parse_config


def _raw(**overrides) -> dict:
    raw = {
        "groups": {"g": {"series": ["s*"], "forecaster": "f", "detector": "d"}},
        "models": {
            "f": {"class": "recurra.forecasting.baselines.SeasonalNaiveForecaster",
                  "params": {"horizon": 6, "season": 24}},
            "d": {"class": "recurra.anomaly.baselines.RollingZScoreDetector",
                  "params": {"window": 8, "threshold": {"kind": "quantile"}}},
        },
    }
    raw.update(overrides)
    return raw


def test_default_config_loads_and_builds_every_model():
    config = load_config()
    assert isinstance(config, PipelineConfig)
    assert {"nab", "air", "prices"} <= set(config.groups)
    assert config.runner.kind == "threads"
    for model in config.models.values():
        estimator = model.build()
        assert estimator.config is not None
    assert config.group_of("nab/realTraffic/speed_6005").name == "nab"
    assert config.group_of("unknown") is None


def test_group_matching_and_model_names():
    config = parse_config(_raw())
    group = config.groups["g"]
    assert group.matches("s0") and not group.matches("x0")
    assert group.model_name("forecaster") == "recurra-g-forecast"
    assert group.model_name("detector") == "recurra-g-detect"


def test_nested_params_become_nested_configs():
    raw = _raw(models={"f": {"class": "recurra.forecasting.RNNForecaster",
                             "params": {"hidden_size": 4, "quantiles": [0.1, 0.9],
                                        "train": {"max_epochs": 1}}}})
    raw["groups"]["g"]["detector"] = ""
    forecaster = parse_config(raw).models["f"].build()
    assert forecaster.config.train.max_epochs == 1
    assert forecaster.config.quantiles == (0.1, 0.9)


@pytest.mark.parametrize(("overrides", "message"), [
    ({"runner": {"kind": "spark"}}, r"`runner.kind` \('spark'\) must be one of"),
    ({"runner": {"max_workers": 0}}, r"`runner.max_workers` \(0\) must be a positive"),
    ({"runner": {"max_workers": "2"}}, r"`runner.max_workers` \('2'\) must be of type int"),
    ({"schedules": {"detect": "hourly"}}, r"`schedules.detect` \('hourly'\) must be a 5-field"),
    ({"schedules": {"nightly": "0 2 * * *"}}, r"`schedules` has unknown key\(s\) \['nightly'\]"),
    ({"monitoring": {"error_margin": 0.5}}, r"`monitoring.error_margin` \(0.5\) must be >= 1"),
    ({"monitoring": {"drift_test": "chi2"}}, r"`monitoring.drift_test` \('chi2'\) must be one"),
    ({"training": {"validation_share": 0.95}}, r"`training.validation_share` \(0.95\)"),
    ({"groups": {}}, r"`groups` is empty"),
    ({"sources": [{"name": "x", "kind": "nab"}]}, r"`sources.x.path` is empty"),
    ({"sources": [{"name": "x", "kind": "ftp", "path": "a"}]}, r"`sources.x.kind` \('ftp'\)"),
    ({"extra": 1}, r"`\(top level\)` has unknown key\(s\) \['extra'\]"),
])
def test_errors_name_key_value_and_rule(overrides, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_raw(**overrides))


def test_group_referencing_unknown_model():
    raw = _raw()
    raw["groups"]["g"]["forecaster"] = "missing"
    with pytest.raises(ConfigError, match=r"`groups.g.forecaster` \('missing'\) is not a "
                                          r"\[models\.\*\] table; defined: \['d', 'f'\]"):
        parse_config(raw)


def test_bad_group_name_and_patterns():
    raw = _raw()
    raw["groups"] = {"a/b": {"series": ["*"]}}
    with pytest.raises(ConfigError, match=r"`groups.a/b`: the group name"):
        parse_config(raw)
    raw["groups"] = {"g": {"series": []}}
    with pytest.raises(ConfigError, match=r"`groups.g.series` \(\[\]\) must be a non-empty"):
        parse_config(raw)


def test_a_class_path_from_before_the_recurra_package_builds_with_a_warning_naming_the_key():
    raw = _raw()
    raw["models"]["f"]["class"] = "forecasting.baselines.SeasonalNaiveForecaster"
    with pytest.warns(FutureWarning, match=r"`models.f.class` = 'forecasting.baselines.Seasonal"
                                           r"NaiveForecaster'.*write 'recurra.forecasting"):
        model = parse_config(raw).models["f"].build()
    from recurra.forecasting.baselines import SeasonalNaiveForecaster

    assert type(model) is SeasonalNaiveForecaster


def test_model_errors_are_reported_at_build_time():
    raw = _raw()
    raw["models"]["f"]["params"] = {"horizon": 6, "seasons": 3}
    with pytest.raises(ConfigError, match=r"`models.f.params` has unknown key\(s\) "
                                          r"\['seasons'\]; valid keys of SeasonalNaiveConfig"):
        parse_config(raw).models["f"].build()
    raw["models"]["f"] = {"class": "recurra.forecasting.nope.Missing"}
    with pytest.raises(ConfigError, match=r"`models.f.class` \('recurra.forecasting.nope."
                                          r"Missing'\) cannot be imported"):
        parse_config(raw).models["f"].build()
    raw["models"]["f"] = {"class": "Missing"}
    with pytest.raises(ConfigError, match=r"`models.f.class` \('Missing'\) must be a dotted"):
        parse_config(raw)


def test_load_config_file_errors(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "absent.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[groups\n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_config(broken)


def test_cli_reports_a_bad_config_without_a_traceback(tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from recurra.pipelines.cli import app

    monkeypatch.setenv("PREFECT_HOME", str(tmp_path / "prefect"))
    monkeypatch.setenv("RECURRA_HOME", str(tmp_path / "home"))
    bad = tmp_path / "bad.toml"
    bad.write_text('[runner]\nkind = "spark"\n[groups.g]\nseries = ["*"]\n')
    result = CliRunner().invoke(app, ["train", "--config", str(bad)])
    assert result.exit_code == 2
    assert "`runner.kind` ('spark') must be one of" in result.output
    assert "Traceback" not in result.output


def _ensemble(params: dict) -> dict:
    raw = _raw()
    raw["models"]["d"] = {"class": "recurra.anomaly.EnsembleDetector", "params": params}
    return raw


def test_ensemble_detector_from_a_models_table():
    member = {"threshold": {"kind": "likelihood", "likelihood_window": 40,
                            "likelihood_relearn": 50}}
    detector = parse_config(_ensemble({
        "members": ["rolling_zscore", "isolation_forest"],
        "configs": [{**member, "window": 8}, {**member, "n_estimators": 5}]})).models["d"].build()
    from recurra.anomaly import EnsembleDetector, ForestConfig, ZScoreConfig
    assert isinstance(detector, EnsembleDetector)
    assert detector.config.members == ("rolling_zscore", "isolation_forest")
    assert [type(c) for c in detector.config.configs] == [ZScoreConfig, ForestConfig]
    assert detector.config.configs[0].window == 8
    assert detector.config.configs[1].n_estimators == 5
    assert detector.config.configs[1].threshold.likelihood_relearn == 50


def test_default_nab_group_uses_the_nab_selected_ensemble():
    config = load_config()
    detector = config.models[config.groups["nab"].detector].build()
    assert detector.config.members == ("grud_ae", "isolation_forest")
    for member in detector.config.configs:  # benchmarks/results/anomaly_nab.json `configs`
        threshold = member.threshold
        assert (threshold.kind, threshold.likelihood_window, threshold.likelihood_level,
                threshold.likelihood_relearn, threshold.spatial_tolerance) == (
                    "likelihood", 40, 0.45, 50, 0.2)


def test_the_bundled_config_builds_every_model_without_a_future_warning():
    import warnings

    config = load_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for model in config.models.values():
            model.build()


def test_a_flat_detector_table_builds_the_same_detector_and_warns_once_per_renamed_key():
    from recurra.anomaly import DETECTOR_TRAIN, AutoencoderConfig, NetworkConfig, ThresholdConfig

    raw = _raw()
    flat = {"window": 16, "hidden_size": 8, "max_epochs": 3, "threshold": "quantile",
            "level": 0.99, "min_gap": 2}
    nested = {"window": 16, "network": {"hidden_size": 8}, "train": {"max_epochs": 3},
              "threshold": {"kind": "quantile", "level": 0.99}, "events": {"min_gap": 2}}
    for name, params in (("flat", flat), ("nested", nested)):
        raw["models"][name] = {"class": "recurra.anomaly.ReconstructionDetector",
                               "params": params}
    models = parse_config(raw).models
    with pytest.warns(FutureWarning) as caught:
        old = models["flat"].build()
    renamed = sorted(str(w.message).split(" is now ")[0] for w in caught)
    assert renamed == [f"`models.flat.params.{key}`" for key in  # `threshold = "quantile"`
                       ("hidden_size", "level", "max_epochs", "min_gap")]  # is the shorthand
    assert any("is now `models.flat.params.network.hidden_size`" in str(w.message)
               for w in caught)
    new = models["nested"].build()
    assert old.config == new.config == AutoencoderConfig(
        window=16, network=NetworkConfig(hidden_size=8),
        train=dataclasses.replace(DETECTOR_TRAIN, max_epochs=3),
        threshold=ThresholdConfig(kind="quantile", level=0.99), events=old.config.events)
    assert old.config.events.min_gap == 2 and old.config.train.learning_rate == 3e-3


@pytest.mark.parametrize(("params", "message"), [
    ({"members": ["rolling_zscore"],
      "configs": [{"threshold": {"kind": "likelihood"}, "windw": 8}]},
     r"`models.d.params.configs\[0\]` has unknown key\(s\) \['windw'\]; valid keys of "
     "ZScoreConfig"),
    ({"members": ["nope"]}, r"`models.d.params`: EnsembleConfig.members: 'nope' must be one of"),
    ({"members": ["rolling_zscore"], "configs": [{"threshold": {"kind": "spot"}}]},
     r"`models.d.params`: EnsembleConfig.configs: the config of 'rolling_zscore' must be "
     r"of class ZScoreConfig with threshold.kind='likelihood'"),
    ({"member": ["rolling_zscore"]}, r"`models.d.params` has unknown key\(s\) \['member'\]"),
])
def test_ensemble_errors_name_the_key(params, message):
    with pytest.raises(ConfigError, match=message):
        parse_config(_ensemble(params)).models["d"].build()


@pytest.mark.parametrize("cron, message", [
    ("61 25 * * *", r"minute 61 must be in 0-59"),
    ("0 25 * * *", r"hour 25 must be in 0-23"),
    ("*/0 * * * *", r"minute step '0' must be a positive integer"),
    ("0 0 32 * *", r"day of month 32 must be in 1-31"),
])
def test_cron_fields_out_of_range_are_rejected_at_load(cron, message):
    with pytest.raises(ConfigError, match=r"`schedules.detect` .*" + message):
        parse_config(_raw(schedules={"detect": cron}))
    assert parse_config(_raw(schedules={"detect": "*/15 0-23 1,15 * mon-fri"}))


def test_model_param_typos_fail_at_config_load_not_at_train_time():
    raw = _raw()
    raw["models"]["f"] = {"class": "recurra.forecasting.RNNForecaster",
                          "params": {"hiden_size": 8, "horizon": 6}}
    with pytest.raises(ConfigError, match=r"`models.f.params` has unknown key\(s\) "
                                          r"\['hiden_size'\]"):
        parse_config(raw)


def test_a_flat_forecaster_table_builds_the_nested_config_and_names_each_moved_key():
    import warnings

    from recurra.forecasting import EncoderConfig, ForecasterConfig, TBPTTConfig
    from recurra.pipelines.config import ModelConfig

    flat = ModelConfig("f", "recurra.forecasting.RNNForecaster", {
        "cell": "gru", "hidden_size": 8, "stateful": True, "tbptt_length": 20,
        "decoder": "seq2seq", "attention": "bahdanau"})
    nested = ModelConfig("f", "recurra.forecasting.RNNForecaster", {
        "encoder": {"cell": "gru", "hidden_size": 8}, "stateful": True,
        "tbptt": {"length": 20}, "decoder": {"kind": "seq2seq", "attention": "bahdanau"}})
    with pytest.warns(FutureWarning) as caught:
        old = flat.build().config
    moved = sorted(str(w.message).split("`")[1] for w in caught)
    assert moved == [f"models.f.params.{k}" for k in
                     ("attention", "cell", "hidden_size", "tbptt_length")]
    assert any("is now `models.f.params.tbptt.length`" in str(w.message) for w in caught)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        new = nested.build().config
    assert old == new == ForecasterConfig(
        encoder=EncoderConfig(cell="gru", hidden_size=8), stateful=True,
        tbptt=TBPTTConfig(length=20), decoder={"kind": "seq2seq", "attention": "bahdanau"})


def test_the_bundled_config_builds_without_old_keys():
    import warnings

    from recurra.pipelines.config import load_config

    config = load_config()
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)
        for name in ("gru_tiny", "grud_tiny", "lstm_stateful", "lstm_returns"):
            config.models[name].build()
