"""main_dag run by Airflow (``dag.test()``, in this process, SQLite metadata) against the
real embedded PostgreSQL and S3: the answer it publishes, and what a failed gate does.

The answer is compared with the independent oracle of the warehouse tests; the fleet, the
source reading and the prod checksums are the warehouse tests' own helpers.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from strata.db import connect
from strata.orchestration import report, strata_run_id
from strata.pipeline import STAGES, run
from strata.settings import Settings
from tests.dags.airflow_setup import load_dag_module
from tests.dags.smtp_receiver import smtp_server
from tests.dwh_pipelines.fleets import (
    LAYER_DBS,
    assert_answer_is,
    checksums,
    simulate_fleet,
    source_lines,
    warehouse_settings,
)
from tests.dwh_pipelines.oracle import average_distance_per_period
from tests.support import reset_databases

pytestmark = pytest.mark.slow


def _point_tasks_at(env: pytest.MonkeyPatch, settings: Settings, smtp_port: int) -> None:
    """What the tasks' own ``load_settings()`` reads: this installation and the test mailbox."""
    env.setenv("STRATA_HOME", str(settings.home))
    env.setenv("STRATA_SOURCE_URL", settings.source_url)
    env.setenv("STRATA_LAKE_URL", settings.lake_url)
    env.setenv("STRATA_SMTP_HOST", "127.0.0.1")
    env.setenv("STRATA_SMTP_PORT", str(smtp_port))
    env.setenv("STRATA_SMTP_STARTTLS", "false")
    env.setenv("STRATA_SMTP_TO", "oncall@example.org")


def _states(dag_run) -> dict[str, str]:  # type: ignore[no-untyped-def]
    return {ti.task_id: str(ti.state) for ti in dag_run.get_task_instances()}


def test_main_dag_publishes_the_answer_of_the_oracle(
    services: Settings,
    airflow_db: Path,
    task_environment: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "source"
    simulate_fleet(source, organizations=2, vehicles=8, minutes=40, seed=17, defects=True)
    settings = warehouse_settings(services, source)
    reset_databases(settings)
    main = load_dag_module("main_dag").pipeline
    with smtp_server() as (port, mails):
        _point_tasks_at(task_environment, settings, port)
        task_environment.setenv("STRATA_NOTIFY_SUCCESS", "true")
        dag_run = main.test()

    assert dag_run.state == "success", _states(dag_run)
    assert _states(dag_run) == {task: "success" for task in [*STAGES, "summary"]}
    expected = average_distance_per_period(source_lines(source))
    assert expected
    assert_answer_is(settings, expected)

    # every task of the DAG run wrote its audit rows under the run's one Strata run id
    run_id = strata_run_id("main_dag", dag_run.run_id)
    for db in ("raw_db", *LAYER_DBS):
        with connect(settings, db) as conn:
            ids = {r[0] for r in conn.execute("select distinct run_id from audit.etl_runs")}
        assert ids == {run_id}, db

    # the summary travelled by XCom: what `make run` prints, and the success e-mail
    capsys.readouterr()
    assert report("main_dag") == 0
    printed = capsys.readouterr().out
    assert f"main_dag run {dag_run.run_id}: success" in printed
    assert f"Answer: {len(expected)} operating periods" in printed
    assert [m["Subject"].strip() for m in mails] == [
        f"[strata] main_dag succeeded in run {dag_run.run_id}"
    ]
    body = mails[0].get_content()
    assert f"Answer: {len(expected)} operating periods" in body
    assert json.loads(body[body.index("{") :])["strata_run_id"] == str(run_id)


def _period_finishing_before_it_starts(source: Path) -> bytes:
    """A well-formed copy of a real period creation (so the lake accepts it) with start and
    finish swapped: a batch that breaks a staging fail-check."""
    for line in source_lines(source):
        event = json.loads(line)
        if event.get("event") == "create" and event["data"].get("finish"):
            data = event["data"]
            data["id"], data["start"], data["finish"] = "op_bad", data["finish"], data["start"]
            return json.dumps(event).encode() + b"\n"
    raise AssertionError("the simulated fleet created no operating period")


def test_a_failed_gate_fails_the_run_at_the_gate_keeps_prod_and_mails_once(
    services: Settings,
    airflow_db: Path,
    task_environment: pytest.MonkeyPatch,
    tmp_path: Path,
) -> None:
    source = tmp_path / "source"
    simulate_fleet(source, organizations=1, vehicles=4, minutes=20, seed=23)
    settings = warehouse_settings(services, source)
    reset_databases(settings)
    run(settings)  # a published warehouse to protect
    before = checksums(settings)
    (source / "2019-06-01-08-40-0-events.json").write_bytes(
        _period_finishing_before_it_starts(source)
    )
    main = load_dag_module("main_dag").pipeline
    with smtp_server() as (port, mails):
        _point_tasks_at(task_environment, settings, port)
        dag_run = main.test()

    states = _states(dag_run)
    assert dag_run.state == "failed"
    assert states == {
        "lake": "success",
        "raw": "success",
        "staging": "failed",
        **{
            task: "upstream_failed"
            for task in ("semantic", "dwh", "presentation", "reports", "governance", "summary")
        },
    }
    staging = next(ti for ti in dag_run.get_task_instances() if ti.task_id == "staging")
    assert staging.try_number == 1, "a failed gate is not retried"
    assert checksums(settings) == before

    assert len(mails) == 1, [m["Subject"] for m in mails]
    mail = mails[0]
    assert (
        mail["Subject"].strip()
        == f"[strata] main_dag.staging failed (GateFailed) in run {dag_run.run_id}"
    )
    assert mail["To"] == "oncall@example.org"
    body = mail.get_content()
    for expected in (
        "DAG:        main_dag",
        "Task:       staging (try 1)",
        f"Run:        {dag_run.run_id}",
        f"Strata run: {strata_run_id('main_dag', dag_run.run_id)}",
        "Error:      GateFailed: staging gate failed: check stg_events.operating_period_has_window"
        " found 1 offending rows",
        "staging_db: staging stg_events.operating_period_has_window — 1 offending rows",
    ):
        assert expected in body, f"{expected!r} not in\n{body}"


def test_a_task_whose_input_is_not_there_yet_fails_at_once(
    services: Settings, task_environment: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Reports before the pipeline ever ran: a retry would find raw.events missing again."""
    from types import SimpleNamespace

    from airflow.sdk.exceptions import AirflowFailException

    from strata.orchestration import run_stage_for_airflow

    settings = warehouse_settings(services, tmp_path / "source")
    reset_databases(settings)
    with connect(settings, "raw_db") as conn:
        conn.execute("drop table if exists raw.events")
    task_environment.setenv("STRATA_HOME", str(settings.home))
    context = {"params": {}, "dag": SimpleNamespace(dag_id="test_reports_dag"), "run_id": "r1"}
    with pytest.raises(AirflowFailException, match=r"NotReady: .* run the pipeline"):
        run_stage_for_airflow("reports", context)
