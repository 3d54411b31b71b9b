"""Embedded services against the real servers: lifecycle, bootstrap, locks, external mode."""

from __future__ import annotations

import json
import os
import socket
import stat
from pathlib import Path

import boto3
import psycopg
import pytest
from botocore import UNSIGNED
from botocore.config import Config
from botocore.exceptions import ClientError

from strata.bootstrap import SCHEMAS, bootstrap
from strata.db import connect, session_options, target
from strata.objectstore import S3Store, open_store, s3_client
from strata.services import down, status, up
from strata.services.postgres import ADMIN_USER, PIPELINE_USER, EmbeddedPostgres
from strata.services.s3 import EmbeddedS3
from strata.services.state import port_accepts
from strata.settings import DATABASES
from tests.support import make_settings, processes_mentioning, run_cli


def _server_ports(settings) -> list[int]:  # type: ignore[no-untyped-def]
    state = json.loads((settings.home / "services.json").read_text())
    return [state["pg"]["port"], *state["s3"].values()]


def test_up_down_up_keeps_data_and_leaves_no_process(server_home: Path) -> None:
    settings = make_settings(server_home)
    first = up(settings)
    try:
        pids = {n: s["pid"] for n, s in first["services"].items()}
        assert all(pids.values()) and all(s["running"] for s in first["services"].values())
        again = up(settings)  # idempotent: same servers, nothing new created
        assert {n: s["pid"] for n, s in again["services"].items()} == pids
        assert again["created"] == []

        with connect(settings, "raw_db") as conn:
            conn.execute("create table sandbox.keep_me (id int primary key, note text)")
            conn.execute("insert into sandbox.keep_me values (1, 'survives a restart')")
        lake = open_store(settings.lake_url, settings)
        lake.put("probe/keep.txt", b"object survives a restart")

        ports = _server_ports(settings)
        assert down(settings) == ["s3", "postgres"]
        assert processes_mentioning(str(settings.home)) == []
        assert not any(port_accepts(p) for p in ports)
        assert down(settings) == []  # nothing left to stop
        stopped = run_cli("status", home=settings.home, check=False)
        assert stopped.returncode == 1 and "stopped" in stopped.stdout  # for health checks

        up(settings)
        with connect(settings, "raw_db") as conn:
            assert conn.execute("select note from sandbox.keep_me").fetchall() == [
                ("survives a restart",)
            ]
        lake = open_store(settings.lake_url, settings)
        assert lake.get("probe/keep.txt") == b"object survives a restart"
    finally:
        down(settings)
    assert processes_mentioning(str(settings.home)) == []


def _catalog_snapshot(settings) -> dict:  # type: ignore[no-untyped-def]
    snap: dict = {}
    with connect(settings, "postgres", admin=True) as conn:
        snap["databases"] = conn.execute(
            "select datname, pg_get_userbyid(datdba), datacl::text from pg_database order by 1"
        ).fetchall()
        snap["roles"] = conn.execute(
            "select rolname, rolsuper, rolcanlogin from pg_roles order by 1"
        ).fetchall()
    for db in DATABASES:
        with connect(settings, db) as conn:
            snap[db] = conn.execute(
                "select nspname, pg_get_userbyid(nspowner), nspacl::text from pg_namespace "
                "order by 1"
            ).fetchall()
    snap["buckets"] = sorted(b["Name"] for b in s3_client(settings).list_buckets()["Buckets"])
    return snap


def test_bootstrap_twice_changes_nothing(services) -> None:  # type: ignore[no-untyped-def]
    before = _catalog_snapshot(services)
    report = bootstrap(services)
    assert report.created == []
    assert _catalog_snapshot(services) == before
    for db, schemas in SCHEMAS.items():
        names = {row[0] for row in before[db]}
        assert set(schemas) <= names, db
    assert {"strata-source", "strata-lake"} <= set(before["buckets"])
    # PUBLIC gets no CONNECT on the warehouse databases
    with connect(services, "postgres", admin=True) as conn:
        for db in DATABASES:
            (allowed,) = conn.execute(
                "select has_database_privilege('public', %s, 'CONNECT')", (db,)
            ).fetchone()
            assert allowed is False, db


def test_s3_roundtrip_and_refused_requests(services) -> None:  # type: ignore[no-untyped-def]
    store = open_store("s3://strata-lake/tests/roundtrip", services)
    assert isinstance(store, S3Store)
    payload = os.urandom(3 * 1024 * 1024)
    info = store.put("a/b/blob.bin", payload)
    store.put("a/other.txt", b"x")
    listed = {o.key: o for o in store.list("a/")}
    assert set(listed) == {"a/b/blob.bin", "a/other.txt"}
    assert listed["a/b/blob.bin"].size == len(payload)
    assert listed["a/b/blob.bin"].etag == info.etag
    assert store.get("a/b/blob.bin") == payload

    endpoint = EmbeddedS3(services).endpoint()
    anonymous = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        config=Config(signature_version=UNSIGNED, retries={"max_attempts": 1}),
    )
    for call in (
        lambda: anonymous.list_objects_v2(Bucket="strata-lake"),
        lambda: anonymous.get_object(Bucket="strata-lake", Key="tests/roundtrip/a/other.txt"),
        lambda: anonymous.put_object(Bucket="strata-lake", Key="tests/anon.txt", Body=b"no"),
    ):
        with pytest.raises(ClientError) as refused:
            call()
        assert refused.value.response["Error"]["Code"] == "AccessDenied"

    creds = EmbeddedS3(services).credentials()
    wrong = boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name="us-east-1",
        aws_access_key_id=creds["access_key_id"],
        aws_secret_access_key=creds["secret_access_key"] + "x",
        config=Config(retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as refused:
        wrong.list_objects_v2(Bucket="strata-lake")
    assert refused.value.response["Error"]["Code"] == "SignatureDoesNotMatch"
    with pytest.raises(ClientError):
        wrong.put_object(Bucket="strata-lake", Key="tests/wrong.txt", Body=b"no")
    assert [o.key for o in store.list("a/other")] == ["a/other.txt"]


def test_tcp_login_needs_the_right_password(services) -> None:  # type: ignore[no-untyped-def]
    pg = EmbeddedPostgres(services)
    port = pg.status().port
    base = f"host=127.0.0.1 port={port} dbname=raw_db sslmode=disable"
    right = pg.password(PIPELINE_USER)
    with psycopg.connect(f"{base} user={PIPELINE_USER}", password=right) as conn:
        # session_user: the login (after governance the session acts as the owner role)
        assert conn.execute("select session_user").fetchone() == (PIPELINE_USER,)
    for user, password in (
        (PIPELINE_USER, right + "x"),
        (ADMIN_USER, right),
        ("nobody", right),
    ):
        with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
            psycopg.connect(f"{base} user={user} passfile=/dev/null", password=password)
    with pytest.raises(psycopg.OperationalError, match="password"):
        psycopg.connect(f"{base} user={PIPELINE_USER} passfile=/dev/null")
    # the server listens on TCP loopback only; the DSN we print carries no secret
    assert "password" not in target(services, "raw_db").url
    assert right not in json.dumps(status(services))


def test_sessions_keep_the_users_options_and_add_strata_s(services, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # PGOPTIONS (or a DSN's options) is kept; Strata's UTC setting comes after it
    monkeypatch.setenv("PGOPTIONS", "-c work_mem=77MB -c TimeZone=Asia/Tokyo")
    with connect(services, "raw_db") as conn:
        shown = [conn.execute(f"show {name}").fetchone()[0] for name in ("work_mem", "TimeZone")]
    assert shown == ["77MB", "UTC"]
    params = {"options": "-c statement_timeout=5s"}
    assert session_options(params).startswith("-c statement_timeout=5s ")
    monkeypatch.delenv("PGOPTIONS")
    with connect(services, "raw_db") as conn:
        assert conn.execute("show work_mem").fetchone()[0] != "77MB"


def test_generated_secrets_are_private(services) -> None:  # type: ignore[no-untyped-def]
    secrets = [
        services.secrets_dir / "pgpass",
        services.secrets_dir / "s3.json",
        services.home / "s3" / "identities.json",
    ]
    for path in secrets:
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(services.secrets_dir.stat().st_mode) == 0o700


def test_external_mode_starts_nothing(services, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    pg = EmbeddedPostgres(services)
    s3 = EmbeddedS3(services)
    creds = s3.credentials()
    password_file = tmp_path / "pg.password"
    password_file.write_text(pg.password(PIPELINE_USER))
    password_file.chmod(0o600)
    secret_file = tmp_path / "s3.secret"
    secret_file.write_text(creds["secret_access_key"])
    env = {
        "STRATA_PG_DSN": f"postgresql://{PIPELINE_USER}@127.0.0.1:{pg.status().port}/postgres",
        "STRATA_PG_PASSWORD_FILE": str(password_file),
        "STRATA_S3_ENDPOINT_URL": s3.endpoint(),
        "STRATA_S3_ACCESS_KEY_ID": creds["access_key_id"],
        "STRATA_S3_SECRET_ACCESS_KEY_FILE": str(secret_file),
        "STRATA_SOURCE_URL": "s3://strata-external-source/data",
    }
    home = tmp_path / ".strata"
    run_cli("up", home=home, env=env)
    info = json.loads(run_cli("status", "--json", home=home, env=env).stdout)
    # an embedded server would run with its data folder under this home on its command line
    # (other tests' servers may come and go meanwhile, so only this home is looked for)
    assert not (home / "pg").exists() and not (home / "s3").exists()
    assert processes_mentioning(str(home)) == []
    assert not (home / "services.json").exists()  # no embedded port was ever chosen
    assert info["services"]["postgres"]["mode"] == "external"
    assert info["services"]["s3"] == {
        "mode": "external",
        "endpoint": s3.endpoint(),
        "credentials_from": "STRATA_S3_SECRET_ACCESS_KEY_FILE",
    }
    assert "STRATA_PG_PASSWORD_FILE" in info["databases"]["raw_db"]["password_from"]
    # the same code paths reach the external servers: the new bucket exists, SQL runs
    assert "strata-external-source" in {
        b["Name"] for b in s3_client(services).list_buckets()["Buckets"]
    }
    csv_out = run_cli(
        "sql", "dwh_db", "select current_database(), session_user", home=home, env=env
    )
    assert csv_out.stdout.splitlines() == [
        "current_database,session_user",
        f"dwh_db,{PIPELINE_USER}",
    ]
    down_out = run_cli("down", home=home, env=env)
    assert "nothing was running" in down_out.stderr


def test_busy_explicit_port_is_a_clear_error(tmp_path: Path) -> None:
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        result = run_cli(
            "up", home=tmp_path / ".strata", env={"STRATA_PG_PORT": str(busy)}, check=False
        )
    assert result.returncode == 1
    assert f"port {busy}" in result.stderr and "STRATA_PG_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert processes_mentioning(str(tmp_path)) == []


def test_busy_remembered_port_is_replaced_and_reported(server_home: Path) -> None:
    home = server_home
    settings = make_settings(home)
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        busy = holder.getsockname()[1]
        home.mkdir(parents=True)
        (home / "services.json").write_text(json.dumps({"pg": {"port": busy}}))
        try:
            info = up(settings)
            address = info["services"]["postgres"]["address"]
            assert address != f"127.0.0.1:{busy}"
            reported = json.loads(run_cli("status", "--json", home=home).stdout)
            assert reported["services"]["postgres"]["address"] == address
            assert address.split(":")[1] in reported["databases"]["raw_db"]["dsn"]
            with connect(settings, "raw_db") as conn:
                assert conn.execute("select 1").fetchone() == (1,)
        finally:
            down(settings)
    assert processes_mentioning(str(home)) == []
