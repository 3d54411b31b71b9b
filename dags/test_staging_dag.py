"""test_staging_dag: the staging stage alone, on demand — raw_db → staging_db dev, gate, publish to staging_db.prod.

It works on whatever the previous layer has published, under the run lock, like main_dag's
`staging` task. Not scheduled (it would race main_dag for the run lock): trigger it in the UI,
with `airflow dags test test_staging_dag` or `python dags/test_staging_dag.py`.
"""

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_task


@dag(dag_id="test_staging_dag", schedule=None, tags=["strata", "test", "staging"], **DAG_DEFAULTS)
def staging_only() -> None:
    stage_task("staging")


staging = staging_only()

if __name__ == "__main__":
    staging.test()
