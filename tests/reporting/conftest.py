"""Fixtures of the report tests: headless Chromium from Debian, and reports rendered from a real
pipeline run on a small simulated fleet."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import uuid
from pathlib import Path

import pytest

from datalake_pipelines.source_simulator import SimulationConfig, simulate
from strata.objectstore import open_store
from strata.pipeline import run
from strata.settings import Settings
from tests.support import make_settings, reset_databases

BROWSERS = ("chromium", "chromium-browser")


def _find_chromium() -> str | None:
    return next((path for name in BROWSERS if (path := shutil.which(name))), None)


@pytest.fixture(scope="session")
def chromium() -> str:
    """The Chromium binary; installed from Debian (``apt-get install -y chromium``) when
    missing. Never skips: a browser test that silently does not run proves nothing."""
    if found := _find_chromium():
        return found
    if shutil.which("apt-get") is None:
        pytest.fail("chromium is missing and apt-get is not available to install it")
    sudo = [] if os.geteuid() == 0 else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    steps = (
        [*sudo, "apt-get", "update"],
        [*sudo, "apt-get", "install", "-y", "--no-install-recommends", "chromium"],
    )
    for step in steps:
        done = subprocess.run(step, capture_output=True, text=True, env=env, timeout=900)
        if done.returncode != 0:
            pytest.fail(
                f"cannot install chromium: `{' '.join(step)}` exited {done.returncode}\n"
                f"{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
            )
    found = _find_chromium()
    if found is None:
        pytest.fail("apt-get installed chromium but no chromium binary is on PATH")
    return found


_ARTIFACTS: list[Path] = []


@pytest.fixture(scope="session")
def artifacts() -> Path:
    """Screenshots are kept here after the session; the folder is printed in the summary."""
    folder = Path(tempfile.gettempdir()) / "strata-report-artifacts" / uuid.uuid4().hex[:8]
    folder.mkdir(parents=True)
    _ARTIFACTS.append(folder)
    return folder


def pytest_terminal_summary(terminalreporter) -> None:  # type: ignore[no-untyped-def]
    for folder in _ARTIFACTS:
        shots = len(list(folder.glob("*.png")))
        terminalreporter.write_line(f"report screenshots ({shots}) kept in {folder}")


FLEET = dict(organizations=2, vehicles=8, minutes=70, seed=5, defects=True)


@pytest.fixture(scope="session")
def rendered(services: Settings, _servers_root: Path) -> tuple[Settings, list[Path]]:
    """A real pipeline run on a small simulated fleet (with defects, so there is quarantine),
    then ``render_reports``: the settings and the paths it returned."""
    from reporting import render_reports

    source = _servers_root / f"report-source-{uuid.uuid4().hex[:6]}"
    simulate(SimulationConfig(**FLEET), open_store(str(source), None), source.with_name(source.name + "-manifest"))  # type: ignore[arg-type]
    settings = make_settings(
        services.home,
        source_url=str(source),
        lake_url=f"s3://strata-lake/reports-{uuid.uuid4().hex[:8]}",
    )
    reset_databases(settings)
    run(settings)
    return settings, render_reports(settings)
