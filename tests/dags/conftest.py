"""Airflow for the DAG tests: in this process, metadata in a temporary SQLite database.

Airflow reads ``AIRFLOW_HOME`` once, when it is first imported (``airflow.sdk`` included), so
this file sets the environment when pytest loads it, before any test module here imports
Airflow, and refuses to go on if Airflow was already loaded with another home.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.dags.airflow_setup import airflow_environment

if "airflow.configuration" in sys.modules:
    raise RuntimeError(
        "Airflow was imported before tests/dags/conftest.py could give it a temporary"
        f" AIRFLOW_HOME (it uses {os.environ.get('AIRFLOW_HOME', '~/airflow')})"
    )
AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="strata-airflow-"))
os.environ.update(airflow_environment(AIRFLOW_HOME))


@pytest.fixture(scope="session", autouse=True)
def _remove_airflow_home() -> Iterator[None]:
    yield
    shutil.rmtree(AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """Airflow's metadata database (SQLite under the temporary AIRFLOW_HOME), migrated."""
    from airflow.utils.db import initdb

    initdb()
    return AIRFLOW_HOME


@pytest.fixture()
def task_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> pytest.MonkeyPatch:
    """A working directory without ``.env`` and no ``STRATA_*`` variable: each test sets the
    ones its tasks (which call ``load_settings()``) should see."""
    for key in [k for k in os.environ if k.startswith("STRATA_")]:
        monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return monkeypatch
