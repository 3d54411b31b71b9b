"""test_raw_dag: the raw stage alone, on demand — lake parquet batches not yet loaded → raw_db.raw.events.

It works on whatever the previous layer has published, under the run lock, like main_dag's
`raw` task. Not scheduled (it would race main_dag for the run lock): trigger it in the UI,
with `airflow dags test test_raw_dag` or `python dags/test_raw_dag.py`.
"""

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_task


@dag(dag_id="test_raw_dag", schedule=None, tags=["strata", "test", "raw"], **DAG_DEFAULTS)
def raw_only() -> None:
    stage_task("raw")


raw = raw_only()

if __name__ == "__main__":
    raw.test()
