"""The alert mail itself: settings, the no-server case, a server that fails, the success
summary switch. (The failure e-mail of a real DAG run is in test_main_dag.py.)"""

from __future__ import annotations

import logging
import socket
import uuid
from pathlib import Path

import pytest

from strata import alerts
from strata.errors import ConfigError, StrataError
from tests.dags.smtp_receiver import smtp_server
from tests.support import make_settings


def test_smtp_settings_follow_the_secret_file_pattern_and_go_together(tmp_path: Path) -> None:
    secret = tmp_path / "smtp-password"
    secret.write_text("p4ss\n")
    settings = make_settings(
        tmp_path,
        smtp_host="mail.example.org",
        smtp_to="a@example.org, b@example.org",
        smtp_user="strata",
        smtp_password_file=secret,
    )
    assert settings.smtp_password and settings.smtp_password.get_secret_value() == "p4ss"
    assert settings.alert_recipients == ["a@example.org", "b@example.org"]
    assert settings.smtp_port == 587 and settings.smtp_starttls and not settings.notify_success
    with pytest.raises(ConfigError, match="STRATA_SMTP_HOST and STRATA_SMTP_TO go together"):
        make_settings(tmp_path, smtp_host="mail.example.org")
    with pytest.raises(ConfigError, match="STRATA_SMTP_USER and STRATA_SMTP_PASSWORD"):
        make_settings(tmp_path, smtp_host="h", smtp_to="a@example.org", smtp_user="strata")
    with pytest.raises(ConfigError, match="either STRATA_SMTP_PASSWORD or"):
        make_settings(tmp_path, smtp_password="x", smtp_password_file=secret)


def test_without_a_mail_server_nothing_is_sent_and_the_log_says_why(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="strata.alerts"):
        assert not alerts.send(make_settings(tmp_path), "subject S", "body")
    assert "alert not sent: STRATA_SMTP_HOST is not set" in caplog.text
    assert "subject S" in caplog.text


def test_a_mail_server_that_cannot_be_reached_is_an_error_naming_it(tmp_path: Path) -> None:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    settings = make_settings(
        tmp_path, smtp_host="127.0.0.1", smtp_port=port, smtp_to="a@example.org", smtp_timeout=5
    )
    with pytest.raises(StrataError, match=f"alert not sent: the mail server 127.0.0.1:{port}"):
        alerts.send(settings, "s", "b")


def test_the_success_summary_is_sent_only_when_switched_on(tmp_path: Path) -> None:
    summary = {"strata_run_id": "r", "stages": {"raw": {"rows_loaded": 3, "seconds": 0.1}}}
    with smtp_server() as (port, mails):
        common = dict(smtp_host="127.0.0.1", smtp_port=port, smtp_starttls=False)
        off = make_settings(tmp_path, smtp_to="a@example.org", **common)
        assert not alerts.run_succeeded(off, dag_id="d", airflow_run_id="r1", summary=summary)
        on = make_settings(tmp_path, smtp_to="a@example.org", notify_success=True, **common)
        assert alerts.run_succeeded(on, dag_id="d", airflow_run_id="r1", summary=summary)
    assert [m["Subject"].strip() for m in mails] == ["[strata] d succeeded in run r1"]
    assert "raw           rows_loaded=3 (0.1 s)" in mails[0].get_content()


def test_a_failure_mail_still_goes_out_when_the_warehouse_is_unreachable(tmp_path: Path) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    with smtp_server() as (port, mails):
        settings = make_settings(
            tmp_path,
            pg_dsn=f"postgresql://strata_pipeline@127.0.0.1:{dead}/postgres",
            pg_password="x",
            smtp_host="127.0.0.1",
            smtp_port=port,
            smtp_starttls=False,
            smtp_to="a@example.org",
        )
        error = RuntimeError("connection refused")
        assert alerts.task_failed(
            settings,
            dag_id="main_dag",
            task_id="raw",
            airflow_run_id="scheduled__x",
            strata_run_id=uuid.uuid4(),
            try_number=3,
            error=error,
        )
    body = mails[0].get_content()
    assert (
        "Task:       raw (try 3)" in body and "Error:      RuntimeError: connection refused" in body
    )
    assert "could not read audit.dq_results: cannot connect to staging_db" in body
