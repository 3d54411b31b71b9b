"""Helpers shared by the tests (imported as ``tests.support``)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from strata.settings import Settings, load_settings

REPO = Path(__file__).resolve().parents[1]
STRATA = Path(sys.executable).parent / "strata"


def make_settings(home: Path, **overrides: object) -> Settings:
    return load_settings(_env_file=None, home=home, **overrides)


def run_cli(
    *args: str, home: Path, env: dict[str, str] | None = None, check: bool = True
) -> subprocess.CompletedProcess[str]:
    """Run the installed ``strata`` console script as a user would."""
    full_env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
    full_env.update({"STRATA_HOME": str(home), "COLUMNS": "200"})
    full_env.update(env or {})
    result = subprocess.run(
        [str(STRATA), *args],
        capture_output=True,
        text=True,
        env=full_env,
        cwd=home.parent,
        timeout=300,
        check=False,
    )
    if check and result.returncode != 0:
        raise AssertionError(
            f"strata {' '.join(args)} exited {result.returncode}\n{result.stdout}\n{result.stderr}"
        )
    return result


def processes_mentioning(text: str) -> list[int]:
    """Live (non-zombie) processes whose command line mentions ``text``."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[-1].split()[0]
        except (FileNotFoundError, ProcessLookupError, PermissionError):
            continue
        if text in cmdline and state != "Z" and int(entry.name) != os.getpid():
            found.append(int(entry.name))
    return found


WAREHOUSE_SCHEMAS = {
    "raw_db": ("raw", "audit"),
    "staging_db": ("dev", "prod", "audit"),
    "semantic_db": ("dev", "prod", "audit"),
    "dwh_db": ("dev", "prod", "reporting", "audit"),
}


def reset_databases(settings: Settings) -> None:
    """Empty all four databases (drop their data schemas) and bootstrap them again."""
    from strata.bootstrap import bootstrap
    from strata.db import connect

    for db, schemas in WAREHOUSE_SCHEMAS.items():
        with connect(settings, db, autocommit=True) as conn:
            for schema in schemas:
                conn.execute(f"drop schema if exists {schema} cascade")
    bootstrap(settings)


def isolated(services: Settings, name: str) -> Settings:
    """The shared servers, emptied, with a source and lake prefix of this test's own."""
    import uuid

    tag = f"{name[:40]}-{uuid.uuid4().hex[:6]}".replace("[", "-").replace("]", "")
    settings = make_settings(
        services.home,
        source_url=f"s3://strata-source/{tag}/data",
        lake_url=f"s3://strata-lake/{tag}",
    )
    reset_databases(settings)
    return settings
