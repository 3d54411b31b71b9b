"""What the pipeline benchmarks share: a throw-away embedded installation and a fleet size."""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from datalake_pipelines.source_simulator import SimulationConfig
from strata.concurrency import ordered_map
from strata.objectstore import open_store
from strata.services import down, up
from strata.settings import Settings, load_settings

MINUTES = 90
EVENTS_PER_VEHICLE_MINUTE = 15.75  # measured from the simulator (see bench_simulate.py)


def fleet(events: int, defects: bool) -> SimulationConfig:
    """About ``events`` events: 5 organizations over 90 minutes, vehicles to match."""
    vehicles = max(1, round(events / (MINUTES * EVENTS_PER_VEHICLE_MINUTE)))
    return SimulationConfig(
        organizations=5, vehicles=vehicles, minutes=MINUTES, seed=1, defects=defects
    )


@contextmanager
def installation(prefix: str, keep: bool = False) -> Iterator[Settings]:
    """Embedded servers in a temporary STRATA_HOME, stopped and removed afterwards."""
    home = Path(tempfile.mkdtemp(prefix=prefix)) / ".strata"
    settings = load_settings(_env_file=None, home=home)
    up(settings)
    try:
        yield settings
    finally:
        if not keep:
            down(settings)
            shutil.rmtree(home.parent, ignore_errors=True)


def upload(settings: Settings, folder: Path, files: list[Path], url: str | None = None) -> None:
    """Put ``files`` (keys relative to ``folder``) into the source location (or ``url``)."""
    source = open_store(url or settings.source_url, settings)

    def put(path: Path) -> None:
        source.put(str(path.relative_to(folder)), path.read_bytes())

    for _ in ordered_map(put, files, in_flight=8, name="upload"):
        pass


def machine_busy_seconds() -> float | None:
    """CPU seconds every process of the machine has spent busy so far (Linux ``/proc/stat``:
    user, nice, system, irq, softirq, steal), summed over its cores; None elsewhere."""
    try:
        with open("/proc/stat", encoding="ascii") as handle:
            fields = handle.readline().split()
    except OSError:
        return None
    user, nice, system, _idle, _iowait, irq, softirq, steal = (int(x) for x in fields[1:9])
    return (user + nice + system + irq + softirq + steal) / os.sysconf("SC_CLK_TCK")


def print_report(report: dict) -> int:
    """Aligned lines for people, then one JSON line for tools; the exit status."""
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(report))
    return 0


def arguments(doc: str | None, argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(doc or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--defects", action="store_true", help="inject the simulator's defects")
    parser.add_argument(
        "--runs",
        type=lambda text: max(1, int(text)),
        default=3,
        help="timed repetitions, at least 1 (median reported)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the installation afterwards")
    return parser.parse_args(argv)
