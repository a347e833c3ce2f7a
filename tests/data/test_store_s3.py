"""The Delta store on S3: a real S3-compatible HTTP endpoint (moto's server on 127.0.0.1),
reached through ``RECURRA_STORE=s3://bucket/prefix`` and the usual ``AWS_*`` variables."""

from __future__ import annotations

import datetime as dt

import polars as pl
import pytest

from recurra.data.schema import CHANNEL, OBSERVED, SERIES_ID, TIMESTAMP, VALUE, validate_frame

moto_server = pytest.importorskip("moto.server")
boto3 = pytest.importorskip("boto3")

BUCKET = "recurra-test"


@pytest.fixture(scope="module")
def endpoint():
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    boto3.client("s3", endpoint_url=url, region_name="us-east-1", aws_access_key_id="test",
                 aws_secret_access_key="test").create_bucket(Bucket=BUCKET)
    yield url
    server.stop()


@pytest.fixture
def s3_env(endpoint, monkeypatch):
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "test")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "test")
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    monkeypatch.delenv("AWS_ALLOW_HTTP", raising=False)
    return endpoint


def frame(ids=("a", "b"), n=5, offset=0.0) -> pl.DataFrame:
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    rows = [(s, "value", start + dt.timedelta(hours=h), float(h) + offset, True)
            for s in ids for h in range(n)]
    return validate_frame(pl.DataFrame(rows, orient="row",
                                       schema=[SERIES_ID, CHANNEL, TIMESTAMP, VALUE, OBSERVED]))


def test_store_root_keeps_an_s3_uri(monkeypatch, tmp_path):
    from recurra.data.paths import store_root

    monkeypatch.setenv("RECURRA_STORE", "s3://bucket/some/prefix/")
    assert store_root() == "s3://bucket/some/prefix"
    assert not (tmp_path / "s3:").exists()
    monkeypatch.setenv("RECURRA_STORE", f"file://{tmp_path}/local")
    assert store_root() == (tmp_path / "local").resolve()


def test_round_trip_through_recurra_store(s3_env, monkeypatch):
    from recurra.data.store import Store

    monkeypatch.setenv("RECURRA_STORE", f"s3://{BUCKET}/round-trip")
    store = Store()
    assert store.uri == f"s3://{BUCKET}/round-trip"
    assert store.storage_options["AWS_ALLOW_HTTP"] == "true"
    first = store.upsert(frame(), source="a.csv")
    assert (first.n_new, first.version) == (10, 0)
    again = store.upsert(frame(), source="a.csv")
    assert (again.n_new, again.n_unchanged, again.version) == (0, 10, 0)  # no new commit
    changed = store.upsert(frame(ids=("a",), offset=1.0), source="b.csv")
    assert changed.n_updated == 5
    read = Store(f"s3://{BUCKET}/round-trip").read(series_ids=["a"])
    assert read[VALUE].to_list() == [1.0, 2.0, 3.0, 4.0, 5.0]
    assert store.read(series_ids=["a"], version=0)[VALUE].to_list() == [0.0, 1.0, 2.0, 3.0, 4.0]
    assert sorted(store.catalogue()[SERIES_ID].to_list()) == ["a", "b"]

    runs = pl.DataFrame({"run_id": ["r1", "r2"], "status": ["ok", "failed"]})
    store.write_table("runs", runs, key=["run_id"])
    store.write_table("runs", pl.DataFrame({"run_id": ["r2"], "status": ["ok"]}),
                      key=["run_id"])
    assert store.read_table("runs").sort("run_id")["status"].to_list() == ["ok", "ok"]
    assert "runs" in store.tables()
    store.add_quarantine(pl.DataFrame({"source_file": ["a.csv"], "line": [3],
                                       "reason": ["bad"], "raw": ["x"]}))
    assert store.quarantine().height == 1


def test_cli_store_summary_on_s3(s3_env, monkeypatch):
    from typer.testing import CliRunner

    from recurra.data.store import Store
    from recurra.pipelines.cli import app

    uri = f"s3://{BUCKET}/cli"
    Store(uri).upsert(frame(ids=("sensor-1",)), source="cli.csv")
    monkeypatch.setenv("RECURRA_STORE", uri)
    result = CliRunner().invoke(app, ["store", "summary"])
    assert result.exit_code == 0, result.output
    assert "store catalogue (1 series/channel pairs)" in result.output


def test_dashboard_opens_an_s3_store(s3_env):
    from recurra.dashboards.data_access import open_store
    from recurra.data.store import Store

    uri = f"s3://{BUCKET}/dash"
    Store(uri).upsert(frame(ids=("d",)), source="d.csv")
    assert open_store(uri).read(series_ids="d").height == 5


def test_missing_bucket_names_the_uri(s3_env):
    from recurra.data.store import Store, StoreError

    with pytest.raises(StoreError, match=r"s3://no-such-bucket/store/series.*bucket"):
        Store("s3://no-such-bucket/store").upsert(frame(), source="a.csv")


def test_wrong_credentials_name_the_uri(s3_env, monkeypatch):
    from recurra.data.store import Store, StoreError

    Store(f"s3://{BUCKET}/creds").upsert(frame(), source="a.csv")
    from moto import settings

    monkeypatch.setattr(settings, "INITIAL_NO_AUTH_ACTION_COUNT", 0)  # the server checks keys
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "not-a-key")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StoreError, match=rf"s3://{BUCKET}/creds/series.*credentials"):
        Store(f"s3://{BUCKET}/creds").read()


def test_prefix_that_is_not_a_delta_table(s3_env):
    from recurra.data.store import Store, StoreError

    boto3.client("s3", endpoint_url=s3_env, region_name="us-east-1").put_object(
        Bucket=BUCKET, Key="plain/series/part-0.parquet", Body=b"not parquet")
    store = Store(f"s3://{BUCKET}/plain")
    try:
        store.upsert(frame(), source="a.csv")
    except StoreError as error:
        assert f"s3://{BUCKET}/plain/series" in str(error)
    else:
        pytest.fail("writing over a prefix that holds non-Delta files should be refused")
