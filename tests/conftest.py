"""Shared fixtures: one real embedded installation (PostgreSQL + SeaweedFS) per test session.

Tests never read the developer's environment or ``.env``: every ``STRATA_*`` variable is
removed and settings are built with ``_env_file=None``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from strata.settings import Settings
from tests.support import make_settings


@pytest.fixture(autouse=True, scope="session")
def _clean_environment() -> Iterator[None]:
    saved = {k: v for k, v in os.environ.items() if k.startswith("STRATA_")}
    for key in saved:
        del os.environ[key]
    yield
    os.environ.update(saved)


@pytest.fixture(scope="session")
def _servers_root() -> Iterator[Path]:
    """Where test installations live: NOT under pytest's own temp root, whose folders pytest
    resets to mode 0700 whenever another pytest session starts on the machine — which would
    lock the server user (``pgserver``) out of a running cluster's data folder."""
    root = Path(tempfile.mkdtemp(prefix="strata-tests-"))
    yield root
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture()
def server_home(_servers_root: Path) -> Path:
    """A fresh ``STRATA_HOME`` for a test that starts its own embedded servers."""
    return Path(tempfile.mkdtemp(dir=_servers_root)) / ".strata"


@pytest.fixture(scope="session")
def services(_servers_root: Path) -> Iterator[Settings]:
    """A running embedded installation shared by the tests that only read or add to it."""
    from strata.services import down, up

    settings = make_settings(_servers_root / "shared" / ".strata")
    up(settings)
    yield settings
    down(settings)
