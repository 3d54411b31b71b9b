"""test_reports_dag: the reports stage alone, on demand — the HTML reports and the profiles in $STRATA_HOME/reports.

It works on whatever the previous layer has published, under the run lock, like main_dag's
`reports` task. Not scheduled (it would race main_dag for the run lock): trigger it in the UI,
with `airflow dags test test_reports_dag` or `python dags/test_reports_dag.py`.
"""

from airflow.sdk import dag

from strata.orchestration import DAG_DEFAULTS, stage_task


@dag(
    dag_id="test_reports_dag",
    schedule=None,
    tags=["strata", "test", "reports"],
    **DAG_DEFAULTS,
)
def reports_only() -> None:
    stage_task("reports")


reports = reports_only()

if __name__ == "__main__":
    reports.test()
