"""The settings object: every STRATA_* variable, secrets from files, errors that name the variable."""

from __future__ import annotations

from pathlib import Path

import pytest

from strata.errors import ConfigError
from strata.settings import load_settings
from tests.support import run_cli


def test_defaults_are_the_embedded_installation(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, home=tmp_path / "h")
    assert settings.home == (tmp_path / "h").resolve()
    assert settings.embedded_pg and settings.embedded_s3
    assert settings.source_url.startswith("s3://") and settings.lake_url.startswith("s3://")


def test_environment_and_dotenv_are_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dotenv = tmp_path / ".env"
    dotenv.write_text("STRATA_LOG_KEEP=7\nSTRATA_LAKE_URL=s3://lake-from-dotenv\n")
    monkeypatch.setenv("STRATA_LAKE_URL", "s3://lake-from-env")  # environment wins over .env
    settings = load_settings(_env_file=dotenv)
    assert settings.log_keep == 7
    assert settings.lake_url == "s3://lake-from-env"


def test_external_servers_switch_off_embedding(tmp_path: Path) -> None:
    settings = load_settings(
        _env_file=None,
        pg_dsn="postgresql://pipeline@db.internal:5432/postgres",
        s3_endpoint_url="https://s3.eu-central-1.amazonaws.com/",
    )
    assert not settings.embedded_pg and not settings.embedded_s3
    assert settings.s3_endpoint_url == "https://s3.eu-central-1.amazonaws.com"
    per_db = load_settings(
        _env_file=None,
        **{
            f"{db}_dsn": f"postgresql://u@h/{db}"
            for db in ("raw_db", "staging_db", "semantic_db", "dwh_db")
        },
    )
    assert not per_db.embedded_pg
    only_local = load_settings(
        _env_file=None, source_url=str(tmp_path / "src"), lake_url=str(tmp_path / "lake")
    )
    assert not only_local.embedded_s3


def test_secrets_come_from_files(tmp_path: Path) -> None:
    secret = tmp_path / "secret"
    secret.write_text("s3cr3t\n")
    settings = load_settings(
        _env_file=None,
        s3_endpoint_url="http://127.0.0.1:1",
        s3_access_key_id="key",
        s3_secret_access_key_file=secret,
        pg_password_file=secret,
    )
    assert settings.s3_secret_access_key.get_secret_value() == "s3cr3t"
    assert settings.pg_password.get_secret_value() == "s3cr3t"
    assert "s3cr3t" not in repr(settings)


@pytest.mark.parametrize(
    ("overrides", "named"),
    [
        ({"pg_port": "not-a-port"}, "STRATA_PG_PORT"),
        ({"pg_port": 70000}, "STRATA_PG_PORT"),
        ({"log_keep": 0}, "STRATA_LOG_KEEP"),
        ({"source_url": "ftp://example/data"}, "STRATA_SOURCE_URL"),
        ({"lake_url": "s3://"}, "STRATA_LAKE_URL"),
        ({"s3_endpoint_url": "localhost:8333"}, "STRATA_S3_ENDPOINT_URL"),
        ({"pg_dsn": "host='unterminated"}, "STRATA_PG_DSN"),
        ({"pg_password_file": "/nonexistent/secret"}, "STRATA_PG_PASSWORD_FILE"),
        ({"pg_password": "a", "pg_password_file": "/etc/hostname"}, "STRATA_PG_PASSWORD_FILE"),
        ({"s3_endpoint_url": "http://h:1", "s3_access_key_id": "k"}, "STRATA_S3_SECRET_ACCESS_KEY"),
    ],
)
def test_invalid_settings_name_the_variable(overrides: dict, named: str) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(_env_file=None, **overrides)


def test_cli_reports_bad_settings_in_one_line(tmp_path: Path) -> None:
    result = run_cli("status", home=tmp_path / "h", env={"STRATA_PG_PORT": "abc"}, check=False)
    assert result.returncode == 1
    assert "STRATA_PG_PORT" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_the_admin_dsn_has_its_own_password(tmp_path: Path) -> None:
    from strata.db import target

    secret = tmp_path / "admin"
    secret.write_text("admin-secret\n")
    settings = load_settings(
        _env_file=None,
        home=tmp_path,
        pg_dsn="postgresql://strata_pipeline@db.example:5432/postgres",
        pg_password="pipeline-secret",
        pg_admin_dsn="postgresql://postgres@db.example:5432/postgres",
        pg_admin_password_file=secret,
    )
    pipeline, admin = target(settings, "dwh_db"), target(settings, "dwh_db", admin=True)
    assert (pipeline.params["user"], pipeline.password) == ("strata_pipeline", "pipeline-secret")
    assert (admin.params["user"], admin.password) == ("postgres", "admin-secret")
    assert admin.password_source == f"STRATA_PG_ADMIN_PASSWORD_FILE ({secret})"
    # without an admin DSN the pipeline's role (and password) does the admin's work
    alone = load_settings(_env_file=None, home=tmp_path, pg_dsn=settings.pg_dsn, pg_password="p")
    assert target(alone, "dwh_db", admin=True).password == "p"
    # an admin DSN without a password of its own tries the pipeline's (as before it had one)
    shared = settings.model_copy(update={"pg_admin_password": None})
    assert target(shared, "dwh_db", admin=True).password == "pipeline-secret"
    # an admin password without its DSN is a mistake, named
    with pytest.raises(ConfigError, match="STRATA_PG_ADMIN_PASSWORD is the password of"):
        load_settings(_env_file=None, home=tmp_path, pg_admin_password="x")
