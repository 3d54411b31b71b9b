"""What the DAG tests share: Airflow's environment for a home, and importing a DAG file."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType

from tests.support import REPO

DAGS = REPO / "dags"


def airflow_environment(home: Path) -> dict[str, str]:
    """The variables that give Airflow a home, SQLite metadata and our DAGs folder."""
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_FOLDER": str(DAGS),
    }


def load_dag_module(name: str) -> ModuleType:
    """Import ``dags/<name>.py`` the way Airflow's parser does (by path, not as a package)."""
    spec = importlib.util.spec_from_file_location(f"strata_dag_{name}", DAGS / f"{name}.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
