"""test_governance_dag: the governance stage alone, on demand — `strata governance apply`: roles, grants, ownership, coarse views.

It works on whatever the previous layer has published, under the run lock, like main_dag's
`governance` task. Not scheduled (it would race main_dag for the run lock): trigger it in the UI,
with `airflow dags test test_governance_dag` or `python dags/test_governance_dag.py`.
"""

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_task


@dag(
    dag_id="test_governance_dag",
    schedule=None,
    tags=["strata", "test", "governance"],
    **DAG_DEFAULTS,
)
def governance_only() -> None:
    stage_task("governance")


governance = governance_only()

if __name__ == "__main__":
    governance.test()
