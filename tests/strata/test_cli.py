"""The strata command as people and scripts use it, against the shared embedded installation."""

from __future__ import annotations

import csv
import io
import json

from strata.objectstore import open_store
from tests.support import run_cli


def test_status_json_lists_services_dsns_and_buckets(services) -> None:  # type: ignore[no-untyped-def]
    info = json.loads(run_cli("status", "--json", home=services.home).stdout)
    assert {s["running"] for s in info["services"].values()} == {True}
    assert set(info["databases"]) == {"raw_db", "staging_db", "semantic_db", "dwh_db"}
    for db, entry in info["databases"].items():
        assert entry["dsn"].startswith("postgresql://strata_pipeline@127.0.0.1:")
        assert f"/{db}?" in entry["dsn"]
        assert entry["password_from"].endswith("secrets/pgpass")
    assert info["services"]["s3"]["endpoint"].startswith("http://127.0.0.1:")
    assert info["buckets"] == ["strata-lake", "strata-source"]
    human = run_cli("status", home=services.home).stdout
    assert "raw_db" in human and info["services"]["s3"]["endpoint"] in human


def test_sql_prints_csv_and_fails_cleanly(services) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "sql",
        "semantic_db",
        "select g as n, 'a,b' as quoted, null::int as empty from generate_series(1, 3) g",
        home=services.home,
    )
    rows = list(csv.reader(io.StringIO(result.stdout)))
    assert rows == [["n", "quoted", "empty"], ["1", "a,b", ""], ["2", "a,b", ""], ["3", "a,b", ""]]
    as_json = run_cli(
        "sql", "raw_db", """select '{"a": [1, null]}'::jsonb as b, '{"c":1}'::json as j""",
        home=services.home,
    )  # fmt: skip
    assert list(csv.reader(io.StringIO(as_json.stdout)))[1] == ['{"a": [1, null]}', '{"c":1}']

    for args, message in (
        (("sql", "nope_db", "select 1"), "unknown database 'nope_db'"),
        (("sql", "raw_db", "selec 1"), 'syntax error at or near "selec"'),
        (("sql", "raw_db", "select * from raw.missing_table"), "does not exist"),
    ):
        failed = run_cli(*args, home=services.home, check=False)
        assert failed.returncode == 1, args
        assert message in failed.stderr and "Traceback" not in failed.stderr
        assert failed.stdout == ""


def test_init_is_idempotent_from_the_cli(services) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("init", home=services.home)
    assert "nothing changed" in result.stderr


def test_simulate_writes_into_the_source_bucket(services) -> None:  # type: ignore[no-untyped-def]
    result = run_cli(
        "simulate",
        "--organizations", "2", "--vehicles", "4", "--minutes", "5", "--seed", "7",
        home=services.home,
    )  # fmt: skip
    assert "wrote" in result.stderr and "s3://strata-source/data" in result.stderr
    keys = [o.key for o in open_store(services.source_url, services).list()]
    assert keys and all(k.endswith("-events.json") for k in keys)
    written = int(result.stderr.split("wrote ", 1)[1].split(" events", 1)[0].replace(",", ""))
    lines = sum(len(open_store(services.source_url, services).get(k).splitlines()) for k in keys)
    assert lines == written


def test_commands_without_services_fail_with_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    result = run_cli("sql", "raw_db", "select 1", home=tmp_path / "never-up", check=False)
    assert result.returncode == 1
    assert "strata up" in result.stderr and "Traceback" not in result.stderr
    governance = run_cli("governance", "check", home=tmp_path / "never-up", check=False)
    assert governance.returncode == 1 and "strata up" in governance.stderr
    assert "STRATA_PG_ADMIN_DSN" not in governance.stderr  # no setting to fix when embedded
    status = run_cli("status", home=tmp_path / "never-up", check=False)
    assert status.returncode == 1  # what is unreachable is printed; scripts see the status
    assert "raw_db" in status.stdout and "Traceback" not in status.stderr


def test_an_s3_endpoint_out_of_reach_is_one_line(tmp_path) -> None:  # type: ignore[no-untyped-def]
    unreachable = {
        "STRATA_S3_ENDPOINT_URL": "http://127.0.0.1:9",
        "AWS_EC2_METADATA_DISABLED": "true",
    }
    keys = {"STRATA_S3_ACCESS_KEY_ID": "k", "STRATA_S3_SECRET_ACCESS_KEY": "not-a-secret-42"}
    for env, message in (
        (
            {**unreachable, **keys},
            'S3: Could not connect to the endpoint URL: "http://127.0.0.1:9/',
        ),
        (unreachable, "S3: no credentials: set STRATA_S3_ACCESS_KEY_ID"),
    ):
        result = run_cli("simulate", "--minutes", "1", home=tmp_path, env=env, check=False)
        assert result.returncode == 1
        assert message in result.stderr and "Traceback" not in result.stderr
        assert "not-a-secret-42" not in result.stderr + result.stdout
