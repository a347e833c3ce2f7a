"""The Prefect ingest flow: report, idempotence, content-hash caching, retries."""

from __future__ import annotations

import pytest

from recurra.data.ingest import SourceSpec
from recurra.data.schema import SchemaError
from recurra.data.store import Store
from recurra.pipelines import ingest as ingest_pipeline


def write_csv(path, rows: int, start_value: float = 0.0):
    lines = ["timestamp,value"] + [f"2024-01-01 {h:02d}:00:00,{start_value + h}"
                                   for h in range(rows)]
    path.write_text("\n".join(lines) + "\nbad,1\n")
    return path


def test_flow_ingests_caches_and_reloads_changed_files(prefect_harness, tmp_path):
    csv = write_csv(tmp_path / "plant.csv", 5)
    root = str(tmp_path / "store")
    report = ingest_pipeline.ingest_flow([SourceSpec("sensor", csv)], store_root=root)
    source = report.sources[0]
    assert (source.n_rows_in, source.n_new, source.n_quarantined) == (6, 5, 1)
    assert Store(root).read().height == 5
    again = ingest_pipeline.ingest_flow([{"kind": "sensor", "path": str(csv)}], store_root=root)
    assert again.sources[0].n_new == 5  # cached result of the first run: same file bytes
    write_csv(csv, 8)  # appended rows: new content, new cache key
    third = ingest_pipeline.ingest_flow([SourceSpec("sensor", csv)], store_root=root)
    assert (third.sources[0].n_new, third.sources[0].n_unchanged) == (3, 5)
    assert Store(root).read().height == 8


def test_fingerprint_depends_on_bytes_and_options(tmp_path):
    csv = write_csv(tmp_path / "a.csv", 3)
    spec = SourceSpec("sensor", csv)
    first = ingest_pipeline.source_fingerprint(spec, "root")
    assert first == ingest_pipeline.source_fingerprint(SourceSpec("sensor", csv), "root")
    assert first != ingest_pipeline.source_fingerprint(
        SourceSpec("sensor", csv, {"series_id": "x"}), "root")
    write_csv(csv, 3, start_value=1.0)
    assert first != ingest_pipeline.source_fingerprint(spec, "root")


def test_transient_os_errors_are_retried(prefect_harness, tmp_path, monkeypatch):
    calls = []
    real = ingest_pipeline.ingest_source

    def flaky(spec, store):
        calls.append(1)
        if len(calls) < 2:
            raise OSError("network share went away")
        return real(spec, store)

    monkeypatch.setattr(ingest_pipeline, "ingest_source", flaky)
    monkeypatch.setattr(ingest_pipeline.ingest_source_task, "retry_delay_seconds", [0, 0, 0])
    csv = write_csv(tmp_path / "flaky.csv", 2)
    report = ingest_pipeline.ingest_flow([SourceSpec("sensor", csv)],
                                         store_root=str(tmp_path / "s"))
    assert len(calls) == 2 and report.sources[0].n_new == 2


def test_invalid_source_is_a_clear_error(prefect_harness, tmp_path):
    with pytest.raises(SchemaError, match="must be one of"):
        ingest_pipeline.ingest_flow([{"kind": "excel", "path": "x"}],
                                    store_root=str(tmp_path / "s"))


def test_cli_ingest_exit_codes_and_store_commands(tmp_path):
    from typer.testing import CliRunner

    from recurra.pipelines.cli import app

    runner = CliRunner()
    store = str(tmp_path / "store")
    csv = write_csv(tmp_path / "plant.csv", 3)
    result = runner.invoke(app, ["ingest", str(csv), "--kind", "sensor", "--store", store,
                                 "--option", "series_id=plant/1"])
    assert result.exit_code == 2, result.output
    assert "unparseable timestamp" in result.output
    result = runner.invoke(app, ["ingest", str(csv), "--store", store, "--allow-rejects"])
    assert result.exit_code == 0, result.output
    result = runner.invoke(app, ["ingest", str(csv), "--kind", "excel", "--store", store])
    assert result.exit_code == 1 and "must be one of" in result.output
    summary = runner.invoke(app, ["store", "summary", "--store", store])
    assert summary.exit_code == 0 and "plant/1" in summary.output
    quarantine = runner.invoke(app, ["store", "quarantine", "--store", store])
    assert quarantine.exit_code == 0 and "bad,1" in quarantine.output


def test_cli_option_values_are_parsed_as_json_when_possible():
    from recurra.pipelines.cli_data import parse_options

    assert parse_options(["a=1", "b=x", 'c=["u","v"]', "d=true"]) == {
        "a": 1, "b": "x", "c": ["u", "v"], "d": True}
