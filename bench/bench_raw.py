"""Source bucket → lake → raw_db on the embedded services: events/s, per-stage split, peak memory.

Starts its own embedded installation in a temporary STRATA_HOME, simulates about ``--events``
events into the source bucket (not timed), then times one ``strata run`` (lake ingest and raw
load) in this process and a second, incremental run with nothing new.

    python bench/bench_raw.py --events 1000000 [--defects]
"""

from __future__ import annotations

import resource
import sys
import time

from common import arguments, fleet, installation, print_report

from datalake_pipelines.source_simulator import simulate
from strata.objectstore import open_store
from strata.pipeline import run


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)

    with installation("strata-bench-raw-", keep=args.keep) as settings:
        began = time.monotonic()
        sim = simulate(
            fleet(args.events, args.defects),
            open_store(settings.source_url, settings),
            settings.home / "simulator",
        )
        simulate_s = time.monotonic() - began
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        began = time.monotonic()
        first = run(settings, until="raw")
        total_s = time.monotonic() - began
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        began = time.monotonic()
        second = run(settings, until="raw")
        noop_s = time.monotonic() - began

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
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
