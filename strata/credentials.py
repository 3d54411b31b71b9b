"""Generated secrets of the embedded services, kept under ``$STRATA_HOME/secrets`` with 0600.

Nothing here is ever printed or written to the repository; ``strata status`` shows where a
secret lives, not what it is.
"""

from __future__ import annotations

import json
import os
import secrets
import string
from pathlib import Path

from strata.errors import ServiceError

_ALPHABET = string.ascii_letters + string.digits


def generate_secret(length: int = 32) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def write_private(path: Path, text: str) -> None:
    """Write a file readable by its owner only, never exposing it with wider permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    tmp = path.with_name(f".{path.name}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)
    os.replace(tmp, path)


def read_private(path: Path) -> str:
    try:
        mode = path.stat().st_mode & 0o777
    except FileNotFoundError:
        raise ServiceError(f"secret file {path} is missing; run `strata up` to create it") from None
    if mode & 0o077:
        raise ServiceError(f"secret file {path} has mode {mode:o}; it must be 0600")
    return path.read_text(encoding="utf-8")


def load_or_create_json(path: Path, factory: dict[str, str]) -> dict[str, str]:
    """Read a JSON secret file, creating it from ``factory`` the first time."""
    if path.exists():
        return json.loads(read_private(path))
    write_private(path, json.dumps(factory, indent=2) + "\n")
    return factory
