"""What the Airflow DAGs under ``dags/`` are made of: one task per pipeline stage, the run
summary, the failure alert, and the defaults every DAG shares.

The DAG files import this module when Airflow parses them, so at the top it imports only the
standard library and ``airflow.sdk``; everything that reaches a database, S3 or a mail server
is imported inside the functions a task runs. A task body is one call to
:func:`run_stage_for_airflow`, which calls ``strata.pipeline.run_stage`` — the function
``strata run`` uses stage by stage — so Airflow adds scheduling, retries and alerts and
nothing else.

Every task of one DAG run works under the same Strata run id, derived from the Airflow run
id (:func:`strata_run_id`): the audit rows, run logs and check results of a DAG run share it,
and a retried task reuses it.

``python -m strata.orchestration report [DAG_ID]`` prints the latest run of a DAG from the
Airflow metadata database (task states and the summary): ``make run`` uses it.
"""

from __future__ import annotations

import sys
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

from airflow.sdk import Param, chain, task

# Namespace of the Strata run ids derived from Airflow runs (fixed: the mapping must not change).
RUN_ID_NAMESPACE = uuid.UUID("6f1c7a52-3c1e-5b8e-9d0a-2f4b5e6c7d80")


def strata_run_id(dag_id: str, airflow_run_id: str) -> uuid.UUID:
    """The Strata run id of an Airflow DAG run: the same for all its tasks and their retries."""
    return uuid.uuid5(RUN_ID_NAMESPACE, f"airflow/{dag_id}/{airflow_run_id}")


def _run_id_of(context: Mapping[str, Any]) -> uuid.UUID:
    return strata_run_id(context["dag"].dag_id, context["run_id"])


def alert_failure(context: Mapping[str, Any]) -> None:
    """``on_failure_callback`` of every task: Airflow calls it once a task has failed for good
    (never on a retry), so one failure sends one e-mail."""
    from strata.alerts import task_failed
    from strata.settings import load_settings

    ti = context["ti"]
    task_failed(
        load_settings(),
        dag_id=ti.dag_id,
        task_id=ti.task_id,
        airflow_run_id=context["run_id"],
        strata_run_id=_run_id_of(context),
        try_number=ti.try_number,
        error=context.get("exception"),
        log_url=getattr(ti, "log_url", None),
    )


DEFAULT_ARGS: dict[str, Any] = {
    "owner": "strata",
    # a stage is a transaction (or a series of them), so a retry finishes what failed
    "retries": 2,
    "retry_delay": timedelta(minutes=1),
    "retry_exponential_backoff": 2.0,  # 1-2 min, then 2-4 min (Airflow adds jitter)
    "max_retry_delay": timedelta(minutes=15),
    "on_failure_callback": alert_failure,
}

PARAMS = {
    "full_refresh": Param(False, type="boolean", description="Rebuild every layer from the lake."),
    "reprocess": Param([], type="array", description="Batch ids to re-derive through every layer."),
}

# keyword arguments of @dag shared by main_dag and the per-stage test DAGs
DAG_DEFAULTS: dict[str, Any] = {
    "start_date": datetime(2026, 1, 1, tzinfo=UTC),
    "catchup": False,
    "max_active_runs": 1,
    "default_args": DEFAULT_ARGS,
    "params": PARAMS,
}


def run_stage_for_airflow(stage: str, context: Mapping[str, Any]) -> dict[str, Any]:
    """Run one stage for a task; its small summary (counts, batch ids) becomes the XCom.

    A failed quality gate, bad settings or input that is not there yet (reports before the
    pipeline ever ran) fail the task at once: a retry would meet the same data, configuration
    or emptiness again. Anything else (a server away, the run lock held by another run) is
    retried with backoff.
    """
    from airflow.sdk.exceptions import AirflowFailException

    from dwh_pipelines.warehouse import GateFailed
    from strata.errors import ConfigError, NotReady
    from strata.pipeline import run_stage
    from strata.settings import load_settings

    params = context["params"]
    try:
        return run_stage(
            load_settings(),
            stage,
            run_id=_run_id_of(context),
            full_refresh=bool(params.get("full_refresh", False)),
            reprocess=tuple(params.get("reprocess") or ()),
        )
    except (GateFailed, ConfigError, NotReady) as exc:
        raise AirflowFailException(f"{type(exc).__name__}: {exc}") from exc


def stage_task(stage: str) -> Any:
    """The task of one stage (task id = stage name), added to the DAG being defined."""

    @task(task_id=stage, doc_md=f"`strata.pipeline.run_stage(settings, {stage!r})`")
    def one_stage(**context: Any) -> dict[str, Any]:
        return run_stage_for_airflow(stage, context)

    return one_stage()


def stage_chain(stages: list[str]) -> dict[str, Any]:
    """One task per stage, run in the order given; returns their XComArgs by stage."""
    tasks = {stage: stage_task(stage) for stage in stages}
    chain(*tasks.values())
    return tasks


def finish_run(stages: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The run summary from the stages' XComs: logged, mailed when ``STRATA_NOTIFY_SUCCESS``."""
    import logging

    from strata.alerts import format_summary, run_succeeded
    from strata.settings import load_settings

    summary = {
        "dag_id": context["dag"].dag_id,
        "airflow_run_id": context["run_id"],
        "strata_run_id": str(_run_id_of(context)),
        "stages": dict(stages),
    }
    logging.getLogger(__name__).info("run summary\n%s", format_summary(summary))
    run_succeeded(
        load_settings(),
        dag_id=summary["dag_id"],
        airflow_run_id=summary["airflow_run_id"],
        summary=summary,
    )
    return summary


def summary_task(stages: Mapping[str, Any]) -> Any:
    """The last task: collects every stage's summary (an XCom each), never data."""

    @task(task_id="summary")
    def summary(found: dict[str, Any], **context: Any) -> dict[str, Any]:
        return finish_run(found, context)

    return summary(dict(stages))


def _say(text: str, *, error: bool = False) -> None:
    (sys.stderr if error else sys.stdout).write(text + "\n")


def report(dag_id: str = "main_dag") -> int:
    """Print the latest run of ``dag_id`` (task states, summary); 0 when it succeeded."""
    from airflow.models.dagrun import DagRun
    from airflow.models.taskinstance import TaskInstance
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    from strata.alerts import format_summary

    with create_session() as session:
        run = session.scalars(
            select(DagRun).where(DagRun.dag_id == dag_id).order_by(DagRun.id.desc()).limit(1)
        ).first()
        if run is None:
            _say(f"{dag_id}: no run recorded in the Airflow metadata database", error=True)
            return 1
        _say(f"{dag_id} run {run.run_id}: {run.state}")
        for ti in session.scalars(
            select(TaskInstance)
            .where(TaskInstance.dag_id == dag_id, TaskInstance.run_id == run.run_id)
            .order_by(TaskInstance.start_date)
        ):
            _say(f"  {ti.task_id:<13} {ti.state} (try {ti.try_number})")
        row = session.scalars(
            XComModel.get_many(
                run_id=run.run_id, key="return_value", task_ids="summary", dag_ids=dag_id
            )
        ).first()
        if row is not None:
            _say(format_summary(XComModel.deserialize_value(row)))
        return 0 if run.state == "success" else 1


if __name__ == "__main__":
    if len(sys.argv) < 2 or sys.argv[1] != "report" or len(sys.argv) > 3:
        _say("usage: python -m strata.orchestration report [DAG_ID]", error=True)
        raise SystemExit(2)
    raise SystemExit(report(*sys.argv[2:]))
