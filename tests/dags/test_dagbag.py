"""The DAG files as Airflow's parser sees them: ids, task order, retries, tags, and that
parsing them reaches no database, no network and no heavy library.

The parse runs in a fresh interpreter (the DagBag is filled there), with every Strata
server pointed at a port this test listens on: a connection attempt by libpq, boto3 or
anything else would be accepted and counted, and Python-level connects are also caught by
an audit hook.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest

from strata.orchestration import alert_failure
from strata.pipeline import STAGES
from tests.dags.airflow_setup import DAGS, airflow_environment
from tests.support import REPO

STAGE_DAGS = {f"test_{stage}_dag": stage for stage in STAGES}
HEAVY = ("psycopg", "psycopg2", "boto3", "botocore", "pyarrow", "pandas", "numpy", "plotly")
HEAVY += ("strata.pipeline", "strata.db", "dwh_pipelines", "datalake_pipelines")

PARSE = """
import json, sys
attempts = []
def watch(event, args):
    if event == "socket.connect":
        attempts.append(repr(args[1]))
sys.addaudithook(watch)
from airflow.dag_processing.dagbag import DagBag
bag = DagBag(dag_folder=sys.argv[1])
found = {}
for dag in bag.dags.values():
    found[dag.dag_id] = {
        "file": dag.fileloc, "tags": sorted(dag.tags), "schedule": str(dag.schedule),
        "catchup": dag.catchup, "max_active_runs": dag.max_active_runs,
        "tasks": {
            t.task_id: {
                "upstream": sorted(t.upstream_task_ids), "retries": t.retries,
                "backoff": t.retry_exponential_backoff,
                "on_failure": [f"{c.__module__}.{c.__qualname__}" for c in t.on_failure_callback],
                "on_retry": len(t.on_retry_callback or []),
            }
            for t in dag.topological_sort()
        },
        "order": [t.task_id for t in dag.topological_sort()],
    }
heavy = sorted({m.split(".")[0] if not m.startswith("strata.") else m
                for m in sys.modules if m in HEAVY or m.split(".")[0] in HEAVY})
print(json.dumps({"errors": bag.import_errors, "dags": found, "attempts": attempts, "heavy": heavy}))
"""


@pytest.fixture(scope="module")
def parsed(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    root = tmp_path_factory.mktemp("parse")
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    accepted: list[str] = []

    def accept() -> None:
        while True:
            try:
                conn, peer = listener.accept()
            except OSError:
                return
            accepted.append(str(peer))
            conn.close()

    threading.Thread(target=accept, daemon=True).start()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STRATA_", "AIRFLOW"))}
    env.update(airflow_environment(root / "airflow"))
    env.update(
        {
            "STRATA_HOME": str(root / "strata-home"),
            "STRATA_PG_DSN": f"postgresql://strata_pipeline@127.0.0.1:{port}/postgres",
            "STRATA_PG_PASSWORD": "unused",
            "STRATA_S3_ENDPOINT_URL": f"http://127.0.0.1:{port}",
            "STRATA_S3_ACCESS_KEY_ID": "unused",
            "STRATA_S3_SECRET_ACCESS_KEY": "unused",
            "STRATA_SMTP_HOST": "127.0.0.1",
            "STRATA_SMTP_PORT": str(port),
            "STRATA_SMTP_TO": "nobody@example.org",
        }
    )
    script = f"HEAVY = {HEAVY!r}\n" + PARSE
    result = subprocess.run(
        [sys.executable, "-c", script, str(DAGS)],
        capture_output=True,
        text=True,
        env=env,
        cwd=root,
        timeout=120,
        check=False,
    )
    listener.close()
    assert result.returncode == 0, result.stderr[-3000:]
    found = json.loads(result.stdout.strip().splitlines()[-1])
    found["accepted"] = accepted
    found["home_created"] = (root / "strata-home").exists()
    return found


def test_every_dag_file_imports_and_declares_the_expected_dags(parsed: dict[str, Any]) -> None:
    assert parsed["errors"] == {}
    assert set(parsed["dags"]) == {"main_dag", *STAGE_DAGS}
    for dag_id, dag in parsed["dags"].items():
        assert Path(dag["file"]).resolve() == DAGS / f"{dag_id}.py"
        assert "strata" in dag["tags"] and len(dag["tags"]) >= 2, dag_id
        assert dag["catchup"] is False and dag["max_active_runs"] == 1, dag_id
        for task_id, task in dag["tasks"].items():
            assert task["retries"] >= 2 and task["backoff"] > 1, (dag_id, task_id)
            # alerts only when a task has failed for good: nothing on a retry
            assert task["on_failure"] == [f"{alert_failure.__module__}.alert_failure"]
            assert task["on_retry"] == 0


def test_main_dag_runs_every_stage_in_order_hourly(parsed: dict[str, Any]) -> None:
    main = parsed["dags"]["main_dag"]
    assert main["schedule"] == "@hourly"
    assert main["order"] == [*STAGES, "summary"]
    for before, after in zip(STAGES, STAGES[1:], strict=False):
        assert main["tasks"][after]["upstream"] == [before]
    assert main["tasks"]["summary"]["upstream"] == sorted(STAGES)


def test_each_stage_has_a_test_dag_of_its_own_run_on_demand(parsed: dict[str, Any]) -> None:
    for dag_id, stage in STAGE_DAGS.items():
        dag = parsed["dags"][dag_id]
        assert dag["order"] == [stage] and stage in dag["tags"]
        assert dag["schedule"] == "None"  # not scheduled: it would race main_dag for the run lock


def test_parsing_touches_no_database_network_or_heavy_library(parsed: dict[str, Any]) -> None:
    assert parsed["accepted"] == [], "a DAG file connected to a server while being parsed"
    assert parsed["attempts"] == []
    assert parsed["heavy"] == []
    assert not parsed["home_created"], "parsing wrote to STRATA_HOME"


def test_the_dag_files_are_thin() -> None:
    for path in DAGS.glob("*.py"):
        text = path.read_text()
        assert "from airflow.sdk import dag" in text, path
        assert text.rstrip().endswith(".test()"), path
        assert "import strata.pipeline" not in text and "psycopg" not in text, path
    assert (REPO / "dags" / "main_dag.py").exists()
