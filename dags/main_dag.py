"""main_dag: the whole Strata pipeline, every hour, one task per stage.

new source objects → lake parquet → raw_db → staging (gate) → semantic (gate) → dwh (gate) →
reporting views → HTML reports → governance apply → summary. Each task calls the same function as `strata run` does for that
stage (`strata.pipeline.run_stage`), under the Strata run id of this DAG run, and hands on
only a small summary (counts, batch ids). A failed gate fails its task at once, publishes
nothing and mails an alert; other failures are retried with exponential backoff.

Trigger with `{"full_refresh": true}` or `{"reprocess": ["BATCH_ID"]}` as run conf for what
`strata run --full-refresh` / `--reprocess` do. See docs/airflow.md.
"""

from __future__ import annotations

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_chain, summary_task

# The stages in order (the same as strata.pipeline.STAGES; a test holds them equal).
STAGES = ["lake", "raw", "staging", "semantic", "dwh", "presentation", "reports", "governance"]


@dag(dag_id="main_dag", schedule="@hourly", tags=["strata", "pipeline"], **DAG_DEFAULTS)
def main_dag() -> None:
    summary_task(stage_chain(STAGES))


pipeline = main_dag()

if __name__ == "__main__":
    pipeline.test()
