"""Source bucket → lake → raw_db on the embedded services: events/s, per-stage split, peak memory.

Starts its own embedded installation in a temporary STRATA_HOME and simulates about
``--events`` events into a folder (not timed). Then, ``--runs`` times, uploads that fleet to a
new prefix of the source bucket (not timed) and times one run of the lake ingest and raw load
in this process, pointed at that prefix: every repetition ingests 1M new objects' events into
the same raw_db, which keeps what the earlier ones loaded (as a real warehouse would). The
median run is the result; every run is printed, because this machine's speed swings by tens of
percent from minute to minute. A last run with nothing new measures the no-op cost.

The pipeline's modules are imported before the clock starts: the bench measures the hop's
throughput, not the process start (importing them takes about 0.7 s, once per process). The
first repetition still pays the lake bucket's first writes (SeaweedFS grows its volumes).

    python bench/bench_raw.py --events 1000000 [--defects] [--runs 3]
"""

from __future__ import annotations

import resource
import statistics
import sys
import time

from common import arguments, fleet, installation, print_report, upload

import datalake_pipelines.L1_raw_layer.ingest  # noqa: F401  (imported before the clock)
import dwh_pipelines.L1_raw_layer.load  # noqa: F401
from datalake_pipelines.source_simulator import simulate
from strata.objectstore import open_store
from strata.pipeline import run


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)

    with installation("strata-bench-raw-", keep=args.keep) as settings:
        folder = settings.home.parent / "fleet"
        began = time.monotonic()
        sim = simulate(
            fleet(args.events, args.defects),
            open_store(str(folder), settings),
            settings.home / "simulator",
        )
        simulate_s = time.monotonic() - began
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        runs = []
        for repetition in range(1, args.runs + 1):
            source_url = f"{settings.source_url}/run{repetition}"
            upload(settings, folder, files, source_url)
            current = settings.model_copy(update={"source_url": source_url})
            began = time.monotonic()
            summary = run(current, until="raw")
            seconds = time.monotonic() - began
            lake, raw = summary.stages["lake"], summary.stages["raw"]
            runs.append(
                {
                    "run_s": round(seconds, 2),
                    "events_per_s": round(sim.events / seconds),
                    "lake_ingest_s": lake["seconds"],
                    "raw_load_s": raw["seconds"],
                    "rows_loaded": raw["rows_loaded"],
                    "rows_quarantined": lake["rows_quarantined"],
                }
            )
            print(f"run {repetition}: {runs[-1]}", flush=True)
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

        began = time.monotonic()
        noop = run(current, until="raw")
        noop_s = time.monotonic() - began

    median = sorted(runs, key=lambda r: r["run_s"])[len(runs) // 2]
    report = {
        "events": sim.events,
        "files": sim.files,
        "source_mb": round(sim.bytes / 1e6, 1),
        "defects": args.defects,
        "simulate_s": round(simulate_s, 2),
        "runs_s": [r["run_s"] for r in runs],
        "median_run_s": median["run_s"],
        "events_per_s": median["events_per_s"],
        "events_per_s_each_run": [r["events_per_s"] for r in runs],
        "events_per_s_mean_of_runs": round(statistics.mean(r["events_per_s"] for r in runs)),
        "lake_ingest_s": median["lake_ingest_s"],
        "raw_load_s": median["raw_load_s"],
        "rows_loaded": median["rows_loaded"],
        "rows_quarantined": median["rows_quarantined"],
        "peak_rss_mib": round(peak_mib, 1),
        "peak_rss_before_runs_mib": round(rss_before, 1),
        "noop_rerun_s": round(noop_s, 2),
        "noop_rerun_rows": noop.stages["raw"]["rows_loaded"],
    }
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
