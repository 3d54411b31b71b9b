"""test_dwh_dag: the dwh stage alone, on demand — semantic_db.prod → dwh_db dev (star schema), gate, publish to dwh_db.prod.

It works on whatever the previous layer has published, under the run lock, like main_dag's
`dwh` task. Not scheduled (it would race main_dag for the run lock): trigger it in the UI,
with `airflow dags test test_dwh_dag` or `python dags/test_dwh_dag.py`.
"""

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_task


@dag(dag_id="test_dwh_dag", schedule=None, tags=["strata", "test", "dwh"], **DAG_DEFAULTS)
def dwh_only() -> None:
    stage_task("dwh")


dwh = dwh_only()

if __name__ == "__main__":
    dwh.test()
