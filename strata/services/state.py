"""Where the embedded services keep their state, and which ports they were given.

Ports are chosen once and remembered in ``$STRATA_HOME/services.json`` so that DSNs and the S3
endpoint stay stable across ``down``/``up``. A port that is set explicitly
(``STRATA_PG_PORT``, ``STRATA_S3_PORT``) must be free or ``up`` fails naming it; a remembered
port that something else took meanwhile is replaced by a free one, which ``status`` reports.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

from strata.errors import ServiceError

HOST = "127.0.0.1"


def port_is_free(port: int, host: str = HOST) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def port_accepts(port: int, host: str = HOST, timeout: float = 0.5) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        return sock.connect_ex((host, port)) == 0


def free_port(preferred: int | None, taken: set[int]) -> int:
    """``preferred`` when it is free, else one the kernel hands out."""
    if preferred and preferred not in taken and port_is_free(preferred):
        return preferred
    for _ in range(100):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((HOST, 0))
            port = sock.getsockname()[1]
        if port not in taken:
            return port
    raise ServiceError("could not find a free TCP port on 127.0.0.1")


class ServiceState:
    """The JSON file of chosen ports, guarded by a lock so two ``up`` calls never race."""

    def __init__(self, home: Path) -> None:
        self.home = home
        self.path = home / "services.json"

    def read(self) -> dict[str, dict[str, int]]:
        if not self.path.exists():
            return {}
        return json.loads(self.path.read_text(encoding="utf-8"))

    def write(self, data: dict[str, dict[str, int]]) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, self.path)

    @contextlib.contextmanager
    def locked(self, timeout: float = 120.0) -> Iterator[None]:
        self.home.mkdir(parents=True, exist_ok=True)
        with open(self.home / ".services.lock", "w") as handle:

            def acquired() -> bool:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    return False
                return True

            if not wait_until(acquired, timeout):
                raise ServiceError(f"another strata command holds {self.home / '.services.lock'}")
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)


def choose_ports(
    wanted: dict[str, int],
    remembered: dict[str, int],
    explicit: dict[str, int | None],
    variable: dict[str, str],
) -> dict[str, int]:
    """Ports for one service: explicit ones must be free, others keep or replace the old one."""
    chosen: dict[str, int] = {}
    for name, default in wanted.items():
        fixed = explicit.get(name)
        if fixed is not None:
            if not port_is_free(fixed):
                raise ServiceError(
                    f"port {fixed} on {HOST} is already in use ({variable[name]}); "
                    "stop what uses it or choose another port"
                )
            chosen[name] = fixed
            continue
        chosen[name] = free_port(remembered.get(name, default), set(chosen.values()))
    return chosen


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    """Poll ``predicate`` until it is true or the deadline passes (no blind sleeps)."""
    deadline = time.monotonic() + timeout
    while True:
        if predicate():
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
