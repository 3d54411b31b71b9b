"""test_lake_dag: the lake stage alone, on demand — new source objects → lake parquet (quarantine for bad lines).

It works on whatever the previous layer has published, under the run lock, like main_dag's
`lake` task. Not scheduled (it would race main_dag for the run lock): trigger it in the UI,
with `airflow dags test test_lake_dag` or `python dags/test_lake_dag.py`.
"""

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_task


@dag(dag_id="test_lake_dag", schedule=None, tags=["strata", "test", "lake"], **DAG_DEFAULTS)
def lake_only() -> None:
    stage_task("lake")


lake = lake_only()

if __name__ == "__main__":
    lake.test()
