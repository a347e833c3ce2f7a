"""Registry: gated champion/challenger promotion, manual promote, rollback, concurrency."""

from __future__ import annotations

import threading

import polars as pl
import pytest

from recurra.data.schema import RecurraError
from tests.conftest import make_frame
from tests.pipelines.test_pyfunc import TinyForecaster, mlflow_environment, mlflow_home


@pytest.fixture(scope="module")
def model_uri(tmp_path_factory):
    """A module-wide store holding one logged TinyForecaster; yields its model URI."""
    home = mlflow_home(tmp_path_factory, "registry")
    with mlflow_environment(home):
        from recurra.pipelines.tracking import MLflowTracker

        tracker = MLflowTracker(environment=False)
        frame = make_frame(n_steps=48, seed=2)
        with tracker.start_run("recurra/tiny/registry", "base"):
            uri = tracker.log_model(TinyForecaster().fit(frame), name="model")
        yield uri


def _gate(uri, name, value, **kwargs):
    from recurra.pipelines.registry import register_and_gate

    options = dict(metric="mae", higher_is_better=False, margin=0.1,
                   validation_fingerprint="abc")
    options.update(kwargs)
    return register_and_gate(uri, name, value=value, **options)


def _aliases(name):
    from recurra.pipelines.mlflow_setup import client

    return {k: str(v) for k, v in client().get_registered_model(name).aliases.items()}


def test_model_name_is_one_per_dataset_and_task():
    from recurra.pipelines.registry import model_name

    assert model_name("ett", "forecast") == "recurra-ett-forecast"
    with pytest.raises(RecurraError, match="`dataset` \\('bad name'\\) must be"):
        model_name("bad name", "forecast")


def test_first_version_becomes_champion_then_gate_by_margin(model_uri):
    name = "gate-lower"
    first = _gate(model_uri, name, 1.0)
    assert first.promoted and first.version == "1" and first.previous_champion is None
    assert _aliases(name) == {"champion": "1"}
    tie = _gate(model_uri, name, 1.0)
    assert not tie.promoted and tie.champion_version == "1" and tie.champion_value == 1.0
    within = _gate(model_uri, name, 0.95)  # better, but not by the margin 0.1
    assert not within.promoted and "does not beat champion v1" in within.reason
    assert _aliases(name) == {"champion": "1", "challenger": "3"}
    worse = _gate(model_uri, name, 2.0)
    assert not worse.promoted
    better = _gate(model_uri, name, 0.8)
    assert better.promoted and better.previous_champion == "1" and better.champion_value == 1.0
    assert "beats champion v1" in better.reason
    # the promoted version is champion; the challenger alias stays on the last unpromoted one
    assert _aliases(name) == {"champion": "5", "challenger": "4"}


def test_decision_and_scores_are_written_as_version_tags(model_uri):
    from recurra.pipelines.registry import list_versions

    name = "gate-tags"
    _gate(model_uri, name, 0.5)
    _gate(model_uri, name, 0.7)
    versions = list_versions(name)
    assert versions["version"].to_list() == [2, 1]
    newest = versions.row(0, named=True)
    assert newest["decision"] == "kept_champion" and newest["value"] == 0.7
    assert newest["champion_value"] == 0.5 and newest["metric"] == "mae"
    assert newest["validation_fingerprint"] == "abc" and newest["aliases"] == ["challenger"]
    assert "does not beat" in newest["reason"]
    oldest = versions.row(1, named=True)
    assert oldest["decision"] == "promoted" and oldest["aliases"] == ["champion"]
    assert oldest["promoted_at"] is not None and oldest["run_id"]


def test_higher_is_better_direction(model_uri):
    name = "gate-higher"
    _gate(model_uri, name, 0.5, higher_is_better=True, margin=0.0)
    assert not _gate(model_uri, name, 0.4, higher_is_better=True, margin=0.0).promoted
    assert _gate(model_uri, name, 0.6, higher_is_better=True, margin=0.0).promoted


def test_other_validation_data_is_not_compared_unless_champion_value_given(model_uri):
    name = "gate-fingerprint"
    _gate(model_uri, name, 1.0, validation_fingerprint="first-data")
    other = _gate(model_uri, name, 0.1, validation_fingerprint="second-data")
    assert not other.promoted and "other validation data" in other.reason
    rescored = _gate(model_uri, name, 0.1, validation_fingerprint="second-data",
                     champion_value=0.5)
    assert rescored.promoted and rescored.champion_value == 0.5
    assert _aliases(name)["champion"] == rescored.version


def test_bad_gate_inputs_raise_naming_the_parameter(model_uri):
    with pytest.raises(RecurraError, match="`value` \\(nan\\) must be a finite number"):
        _gate(model_uri, "gate-bad", float("nan"))
    with pytest.raises(RecurraError, match="`margin` \\(-1.0\\) must be >= 0"):
        _gate(model_uri, "gate-bad", 1.0, margin=-1.0)


def test_manual_promote_and_rollback_keep_a_champion(model_uri):
    from recurra.pipelines.registry import promote, read_history, rollback

    name = "gate-rollback"
    _gate(model_uri, name, 1.0)
    _gate(model_uri, name, 5.0)  # kept as challenger
    _gate(model_uri, name, 0.5)  # promoted: history 1, 3
    manual = promote(name, 2)
    assert manual.promoted and manual.previous_champion == "3"
    assert [h["version"] for h in read_history(name)] == ["1", "3", "2"]
    assert promote(name, "2").reason == "v2 is already the champion"
    assert rollback(name).version == "3"
    assert rollback(name).version == "1"
    with pytest.raises(RecurraError, match="no earlier champion than v1"):
        rollback(name)
    assert _aliases(name)["champion"] == "1"


def test_unknown_names_and_versions_give_clear_errors(model_uri):
    from recurra.pipelines.registry import load_champion, promote, rollback

    _gate(model_uri, "gate-known", 1.0)
    with pytest.raises(RecurraError, match="no registered model named 'nope'; known models"):
        promote("nope", 1)
    with pytest.raises(RecurraError, match="has no version '9'; versions: \\[1\\]"):
        promote("gate-known", 9)
    with pytest.raises(RecurraError, match="no registered model named 'nope'"):
        rollback("nope")
    with pytest.raises(RecurraError, match="no registered model named 'nope'"):
        load_champion("nope")


def test_concurrent_gating_keeps_aliases_consistent(model_uri):
    from recurra.pipelines.registry import list_versions, read_history

    name = "gate-threads"
    values = [0.9, 0.5, 0.7, 0.3, 0.8, 0.4]
    errors = []

    def work(value):
        try:
            _gate(model_uri, name, value, margin=0.0)
        except Exception as error:  # pragma: no cover - reported below
            errors.append(error)

    threads = [threading.Thread(target=work, args=(v,)) for v in values]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    versions = list_versions(name, with_run_metrics=False)
    assert sorted(versions["version"].to_list()) == list(range(1, len(values) + 1))
    champion = versions.filter(pl.col("aliases").list.contains("champion"))
    assert champion.height == 1 and champion["value"][0] == min(values)
    history = [h["version"] for h in read_history(name)]
    assert history[-1] == str(champion["version"][0])
    # each promotion beat the champion it replaced: the promoted values strictly decrease
    by_version = dict(zip(versions["version"].cast(pl.Utf8), versions["value"], strict=True))
    promoted_values = [by_version[v] for v in history]
    assert promoted_values == sorted(promoted_values, reverse=True)
    assert len(set(promoted_values)) == len(promoted_values)


def test_concurrent_manual_promotions_leave_history_and_alias_in_step(model_uri):
    from recurra.pipelines.registry import promote, read_history

    name = "promote-threads"
    for value in (1.0, 2.0, 3.0, 4.0):
        _gate(model_uri, name, value)
    threads = [threading.Thread(target=promote, args=(name, v)) for v in ("2", "3", "4") * 2]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    history = [h["version"] for h in read_history(name)]
    assert history[-1] == _aliases(name)["champion"]
    assert all(a != b for a, b in zip(history, history[1:], strict=False))


def test_list_models_and_load_champion(model_uri):
    from recurra.pipelines.registry import list_models, load_champion, load_champion_estimator

    name = "gate-listed"
    _gate(model_uri, name, 0.25)
    models = list_models()
    row = models.filter(pl.col("name") == name).row(0, named=True)
    assert row["champion_version"] == 1 and row["n_versions"] == 1
    assert row["metric"] == "mae" and row["champion_value"] == 0.25
    assert row["challenger_version"] is None and row["champion_run_id"]
    assert models["name"].to_list() == sorted(models["name"].to_list())
    estimator = load_champion_estimator(name)
    assert isinstance(estimator, TinyForecaster)
    frame = make_frame(n_steps=24, seed=4)
    from recurra.pipelines.pyfunc import to_model_input

    result = load_champion(name).predict(to_model_input(frame))
    assert result.equals(estimator.predict(frame=frame).to_pandas())


def test_models_cli_list_promote_rollback_and_errors(model_uri):
    import json

    from typer.testing import CliRunner

    from recurra.pipelines.cli import app

    name = "gate-cli"
    _gate(model_uri, name, 1.0)
    _gate(model_uri, name, 2.0)
    runner = CliRunner()
    listed = runner.invoke(app, ["models", "list", "--json"])
    assert listed.exit_code == 0, listed.output
    rows = [json.loads(line) for line in listed.output.splitlines() if line.startswith("{")]
    assert any(r["name"] == name and r["champion_version"] == 1 for r in rows)
    versions = runner.invoke(app, ["models", "list", name])
    assert versions.exit_code == 0 and "challenger" in versions.output
    promoted = runner.invoke(app, ["models", "promote", name, "2"])
    assert promoted.exit_code == 0 and "champion is v2 (was v1)" in promoted.output
    rolled = runner.invoke(app, ["models", "rollback", name])
    assert rolled.exit_code == 0 and "champion is v1" in rolled.output
    missing = runner.invoke(app, ["models", "promote", name, "7"])
    assert missing.exit_code == 2 and "has no version '7'" in missing.output
    unknown = runner.invoke(app, ["models", "rollback", "nope"])
    assert unknown.exit_code == 2 and "no registered model named 'nope'" in unknown.output
    ui = runner.invoke(app, ["mlflow-ui", "--dry-run", "--port", "5123"])
    assert ui.exit_code == 0 and "mlflow ui --backend-store-uri sqlite:///" in ui.output
    assert "--port 5123" in ui.output


def test_track_and_register_logs_a_run_and_gates_on_the_validation_fingerprint(model_uri):
    from mlflow import MlflowClient

    from recurra.pipelines.registry import list_versions, track_and_register

    name = "tracked-and-registered"
    train, valid = make_frame(n_steps=48, seed=7), make_frame(n_steps=24, seed=8)
    model = TinyForecaster().fit(train)
    first = track_and_register(model, name, experiment="recurra/tiny/forecast", metric="mae",
                               value=0.5, higher_is_better=False, validation=valid,
                               metrics={"mse": 0.3})
    second = track_and_register(model, name, experiment="recurra/tiny/forecast",
                                metric="mae", value=0.4, higher_is_better=False,
                                validation=valid)
    assert first.promoted and second.promoted and second.champion_value == 0.5
    row = list_versions(name).row(0, named=True)
    run = MlflowClient().get_run(row["run_id"])
    assert run.data.params["config.horizon"] == "3"
    assert run.data.metrics["mae"] == 0.4
    assert run.data.tags["recurra.validation.n_rows"] == "48"
    assert row["validation_fingerprint"] == run.data.tags["recurra.validation.content_hash"]


def test_register_by_run_id_uses_the_runs_model(model_uri):
    from mlflow import MlflowClient

    from recurra.pipelines.registry import list_versions

    run_id = MlflowClient().get_logged_model(model_uri.rsplit("/", 1)[-1]).source_run_id
    decision = _gate(run_id, "gate-by-run", 1.0)
    assert decision.promoted
    assert list_versions("gate-by-run")["run_id"].to_list() == [run_id]


def test_unregistrable_model_is_a_clear_error(model_uri):
    with pytest.raises(RecurraError, match="`model` \\('runs:/no-such-run/model'\\) could not"):
        _gate("no-such-run", "gate-bad-uri", 1.0)
