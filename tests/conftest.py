"""Shared fixtures: one real embedded installation (PostgreSQL + SeaweedFS) per test session.

Tests never read the developer's environment or ``.env``: every ``STRATA_*`` variable is
removed and settings are built with ``_env_file=None``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

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
def services(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Settings]:
    """A running embedded installation shared by the tests that only read or add to it."""
    from strata.services import down, up

    settings = make_settings(tmp_path_factory.mktemp("shared") / ".strata")
    up(settings)
    yield settings
    down(settings)
