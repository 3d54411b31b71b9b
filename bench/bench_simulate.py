"""How fast the source simulator writes events, and how much memory it needs to do it.

The simulator works minute by minute, so its peak memory should not grow with the number of
events; this bench writes a fleet of about ``--events`` events (defects on, as in the tests)
into a local folder and reports throughput and peak RSS.

    python bench/bench_simulate.py --events 1000000 [--target FOLDER]
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from datalake_pipelines.source_simulator import SimulationConfig, simulate
from strata.objectstore import LocalStore

MINUTES = 90
# measured: with registrations in the first 10% of the window, breaks and ~60% of vehicles
# deregistering in the second half, a vehicle averages ~15.75 lines per simulated minute
EVENTS_PER_VEHICLE_MINUTE = 15.75


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="about this many events")
    parser.add_argument(
        "--target", type=Path, default=None, help="folder to write into (default: a temp folder)"
    )
    parser.add_argument("--seed", type=int, default=42)
    args = parser.parse_args(argv)

    scratch = Path(tempfile.mkdtemp(prefix="strata-bench-"))
    target = args.target if args.target is not None else scratch / "source"
    vehicles = max(1, round(args.events / (MINUTES * EVENTS_PER_VEHICLE_MINUTE)))
    config = SimulationConfig(
        organizations=max(1, vehicles // 50),
        vehicles=vehicles,
        minutes=MINUTES,
        seed=args.seed,
        defects=True,
    )
    try:
        began = time.perf_counter()
        result = simulate(config, LocalStore(target), scratch / "manifests")
        seconds = time.perf_counter() - began
    finally:
        shutil.rmtree(scratch)  # the manifest, and the events unless --target was given

    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux
    numbers = {
        "events": result.events,
        "files": result.files,
        "vehicles": vehicles,
        "minutes": MINUTES,
        "mb": round(result.bytes / 1e6, 1),
        "seconds": round(seconds, 2),
        "events_per_s": round(result.events / seconds),
        "peak_rss_mib": round(peak_mib, 1),
        "defects": sum(result.defects.values()),
    }
    width = max(len(name) for name in numbers)
    for name, value in numbers.items():
        print(f"{name:<{width}}  {value:>12,}")
    print(json.dumps({"bench": "simulate", **numbers}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
