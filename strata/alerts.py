"""E-mail alerts: a task that has finally failed (a failed quality gate included), and, when
``STRATA_NOTIFY_SUCCESS`` is on, a summary of each successful run.

Plain SMTP from the standard library, configured by ``STRATA_SMTP_*``: the alert must still go
out when the thing that broke is the warehouse, so it depends on nothing but the mail server.
With no server configured nothing is sent and one log line says so and why. Airflow calls
:func:`task_failed` as the tasks' ``on_failure_callback``, which runs only when a task has
failed for good (after its last retry, or at once for a failure that no retry can fix), never
on a retry: one failure, one e-mail.
"""

from __future__ import annotations

import json
import logging
import smtplib
import socket
import uuid
from collections.abc import Mapping
from email.message import EmailMessage
from typing import Any

from strata.errors import StrataError
from strata.settings import Settings

log = logging.getLogger(__name__)

LAYER_DATABASES = ("staging_db", "semantic_db", "dwh_db")  # the databases with gates


def send(settings: Settings, subject: str, body: str) -> bool:
    """Send one e-mail to ``STRATA_SMTP_TO``; False (and a log line) when no server is set."""
    if not settings.smtp_host:
        log.warning(
            "alert not sent: STRATA_SMTP_HOST is not set (no mail server configured); "
            "subject was: %s",
            subject,
        )
        return False
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = settings.smtp_from
    message["To"] = ", ".join(settings.alert_recipients)
    message.set_content(body)
    where = f"{settings.smtp_host}:{settings.smtp_port}"
    try:
        with smtplib.SMTP(
            settings.smtp_host, settings.smtp_port, timeout=settings.smtp_timeout
        ) as smtp:
            if settings.smtp_starttls:
                smtp.starttls()
            if settings.smtp_user and settings.smtp_password:
                smtp.login(settings.smtp_user, settings.smtp_password.get_secret_value())
            smtp.send_message(message)
    except (smtplib.SMTPException, OSError) as exc:
        raise StrataError(
            f"alert not sent: the mail server {where} failed: {type(exc).__name__}: {exc}"
        ) from exc
    log.info("alert sent to %s via %s: %s", message["To"], where, subject)
    return True


def failing_checks(settings: Settings, strata_run_id: uuid.UUID) -> list[str]:
    """The blocking checks that failed in this Strata run, read from every gate's
    ``audit.dq_results`` (the same rows ``strata status`` shows)."""
    from strata.db import connect

    found = []
    for db in LAYER_DATABASES:
        with connect(settings, db) as conn:
            if not conn.execute("select to_regclass('audit.dq_results')").fetchone()[0]:
                continue
            rows = conn.execute(
                "select distinct layer, table_name, check_name, offending_rows"
                " from audit.dq_results where run_id = %s and status = 'fail'"
                " order by layer, table_name, check_name",
                (strata_run_id,),
            ).fetchall()
        found += [
            f"{db}: {layer} {table}.{check} — {n} offending rows" for layer, table, check, n in rows
        ]
    return found


def task_failed(
    settings: Settings,
    *,
    dag_id: str,
    task_id: str,
    airflow_run_id: str,
    strata_run_id: uuid.UUID,
    try_number: int | None,
    error: BaseException | str | None,
    log_url: str | None = None,
) -> bool:
    """The failure e-mail: which DAG, task and run, the error, and the failing checks."""
    cause = error.__cause__ if isinstance(error, BaseException) and error.__cause__ else error
    kind = type(cause).__name__ if isinstance(cause, BaseException) else "error"
    import psycopg

    try:
        checks = failing_checks(settings, strata_run_id)
    except (StrataError, psycopg.Error) as exc:  # the warehouse may be what failed: still mail
        checks = [f"(could not read audit.dq_results: {exc})"]
    subject = f"[strata] {dag_id}.{task_id} failed ({kind}) in run {airflow_run_id}"
    lines = [
        f"DAG:        {dag_id}",
        f"Task:       {task_id} (try {try_number})",
        f"Run:        {airflow_run_id}",
        f"Strata run: {strata_run_id}",
        f"Error:      {kind}: {cause}",
        "",
        "Failing checks:" if checks else "Failing checks: none recorded for this run",
        *(f"  - {c}" for c in checks),
    ]
    if log_url:
        lines += ["", f"Log: {log_url}"]
    if checks:
        lines += [
            "",
            "Nothing was published past the failed gate. Inspect the candidate in <db>.dev and",
            "audit.dq_results; `strata reject-batch BATCH_ID` sets a bad batch aside.",
        ]
    return send(settings, subject, "\n".join(lines) + "\n")


def run_succeeded(
    settings: Settings, *, dag_id: str, airflow_run_id: str, summary: Mapping[str, Any]
) -> bool:
    """The optional success e-mail (``STRATA_NOTIFY_SUCCESS``): the run summary."""
    if not settings.notify_success:
        return False
    subject = f"[strata] {dag_id} succeeded in run {airflow_run_id}"
    body = format_summary(summary) + "\n\n" + json.dumps(summary, indent=2, default=str) + "\n"
    return send(settings, subject, body)


def format_summary(summary: Mapping[str, Any]) -> str:
    """A few lines for people: rows per stage and the answer."""
    lines = [f"Strata run {summary.get('strata_run_id')} (host {socket.gethostname()})"]
    for stage, found in summary.get("stages", {}).items():
        counts = {
            k: v
            for k, v in found.items()
            if isinstance(v, int | float) and not isinstance(v, bool) and k != "seconds"
        }
        shown = ", ".join(f"{k}={v}" for k, v in counts.items())
        took = f" ({found['seconds']} s)" if "seconds" in found else ""
        lines.append(f"  {stage:<13} {shown}{took}".rstrip())
    answer = summary.get("stages", {}).get("presentation", {}).get("answer")
    if answer:
        lines.append(
            f"Answer: {answer['periods']} operating periods, {answer['vehicle_periods']} vehicle"
            f" periods; average distance per vehicle and period"
            f" {_km(answer['avg_distance_km_mean_of_periods'])} (mean of the periods),"
            f" {_km(answer['avg_distance_km_pooled'])} (pooled)"
        )
    return "\n".join(lines)


def _km(value: object) -> str:
    return "n/a" if value is None else f"{float(value):.3f} km"  # type: ignore[arg-type]
