"""Source bucket → lake → raw_db on the embedded services: events/s, per-stage split, peak memory.

Starts its own embedded installation in a temporary STRATA_HOME, simulates about ``--events``
events into the source bucket (not timed), then times one ``strata run`` (lake ingest and raw
load) in this process and a second, incremental run with nothing new.

    python bench/bench_raw.py --events 1000000 [--defects]
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
from strata.objectstore import open_store
from strata.pipeline import run
from strata.services import down, up
from strata.settings import load_settings

MINUTES = 90
EVENTS_PER_VEHICLE_MINUTE = 15.75  # measured from the simulator (see bench_simulate.py)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--defects", action="store_true", help="inject the simulator's defects")
    parser.add_argument("--keep", action="store_true", help="keep the installation afterwards")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="strata-bench-raw-")) / ".strata"
    settings = load_settings(_env_file=None, home=home)
    up(settings)
    try:
        vehicles = max(1, round(args.events / (MINUTES * EVENTS_PER_VEHICLE_MINUTE)))
        began = time.monotonic()
        sim = simulate(
            SimulationConfig(
                organizations=5, vehicles=vehicles, minutes=MINUTES, seed=1, defects=args.defects
            ),
            open_store(settings.source_url, settings),
            home / "simulator",
        )
        simulate_s = time.monotonic() - began
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        began = time.monotonic()
        first = run(settings)
        total_s = time.monotonic() - began
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        began = time.monotonic()
        second = run(settings)
        noop_s = time.monotonic() - began
    finally:
        if not args.keep:
            down(settings)
            shutil.rmtree(home.parent, ignore_errors=True)

    lake, raw = first.stages["lake"], first.stages["raw"]
    report = {
        "events": sim.events,
        "files": sim.files,
        "source_mb": round(sim.bytes / 1e6, 1),
        "defects": args.defects,
        "simulate_s": round(simulate_s, 2),
        "run_s": round(total_s, 2),
        "events_per_s": round(sim.events / total_s),
        "lake_ingest_s": lake["seconds"],
        "raw_load_s": raw["seconds"],
        "rows_loaded": raw["rows_loaded"],
        "rows_quarantined": lake["rows_quarantined"],
        "peak_rss_mib": round(peak_mib, 1),
        "peak_rss_before_run_mib": round(rss_before, 1),
        "noop_rerun_s": round(noop_s, 2),
        "noop_rerun_rows": second.stages["raw"]["rows_loaded"],
    }
    width = max(map(len, report))
    for key, value in report.items():
        print(f"{key:<{width}}  {value}")
    print(json.dumps(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
