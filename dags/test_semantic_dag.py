"""test_semantic_dag: the semantic stage alone, on demand — staging_db.prod → semantic_db dev, gate, publish to semantic_db.prod.

It works on whatever the previous layer has published, under the run lock, like main_dag's
`semantic` task. Not scheduled (it would race main_dag for the run lock): trigger it in the UI,
with `airflow dags test test_semantic_dag` or `python dags/test_semantic_dag.py`.
"""

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_task


@dag(dag_id="test_semantic_dag", schedule=None, tags=["strata", "test", "semantic"], **DAG_DEFAULTS)
def semantic_only() -> None:
    stage_task("semantic")


semantic = semantic_only()

if __name__ == "__main__":
    semantic.test()
