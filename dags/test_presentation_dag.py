"""test_presentation_dag: the presentation stage alone, on demand — the reporting views in dwh_db.reporting, and the answer.

It works on whatever the previous layer has published, under the run lock, like main_dag's
`presentation` task. Not scheduled (it would race main_dag for the run lock): trigger it in the UI,
with `airflow dags test test_presentation_dag` or `python dags/test_presentation_dag.py`.
"""

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_task


@dag(
    dag_id="test_presentation_dag",
    schedule=None,
    tags=["strata", "test", "presentation"],
    **DAG_DEFAULTS,
)
def presentation_only() -> None:
    stage_task("presentation")


presentation = presentation_only()

if __name__ == "__main__":
    presentation.test()
