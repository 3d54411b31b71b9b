"""Source bucket → dwh_db.prod on the embedded services, checks included: events/s, per-hop
split, peak memory, the CPU time of every process during the run; then an incremental run
that adds 1% more source objects.

Simulates about ``--events`` events into a local folder (not timed). Then, ``--runs`` times,
starts a new embedded installation in a temporary STRATA_HOME, uploads 99% of the objects to
its source bucket and times one ``strata run`` (every layer) in this process: a first load.
The median first load is the result; every one is printed, because this machine's speed
swings from minute to minute. On the last installation the held-back 1% is uploaded — late
files scattered over the whole window — and a second run is timed, then a third with nothing
new.

    python bench/bench_warehouse.py --events 1000000 [--runs 3] [--keep]
"""

from __future__ import annotations

import os
import random
import resource
import sys
import tempfile
import time
from pathlib import Path

from common import arguments, fleet, installation, machine_busy_seconds, print_report, upload

from datalake_pipelines.source_simulator import simulate
from strata.objectstore import open_store
from strata.pipeline import run
from strata.settings import Settings, load_settings


def _split(summary) -> dict[str, float]:  # type: ignore[no-untyped-def]
    stages = summary.stages
    return {
        "lake_and_raw_s": stages["raw"]["seconds"],
        "staging_s": stages["staging"]["seconds"],
        "semantic_s": stages["semantic"]["seconds"],
        "dwh_s": stages["dwh"]["seconds"],
    }


def _cpu(before: float | None, after: float | None, wall_s: float) -> dict[str, float]:
    """The first run's CPU time over all processes (PostgreSQL backends, S3, this one) and what
    it bounds: on these cores, that work cannot take less than cpu_s / cores."""
    if before is None or after is None:
        return {}
    cpu_s = after - before
    cores = os.cpu_count() or 1
    return {
        "first_run_cpu_s": round(cpu_s, 1),
        "first_run_cores_busy": round(cpu_s / wall_s, 2),
        "first_run_cpu_bound_s": round(cpu_s / cores, 1),
    }


def _first_load(settings: Settings, folder: Path, early: list[Path]) -> dict:
    """Upload the early objects and time one ``strata run`` over them (every layer)."""
    upload(settings, folder, early)
    busy_before = machine_busy_seconds()
    began = time.monotonic()
    summary = run(settings)
    seconds = time.monotonic() - began
    return {
        "summary": summary,
        "seconds": seconds,
        **_cpu(busy_before, machine_busy_seconds(), seconds),
    }


def main(argv: list[str] | None = None) -> int:
    args = arguments(__doc__, argv)

    with tempfile.TemporaryDirectory(prefix="strata-bench-wh-fleet-") as scratch:
        folder = Path(scratch) / "fleet"
        local = load_settings(_env_file=None, home=Path(scratch) / ".strata")
        sim = simulate(
            fleet(args.events, args.defects), open_store(str(folder), local), Path(scratch) / "sim"
        )
        files = sorted(p for p in folder.rglob("*") if p.is_file())
        late = set(random.Random(7).sample(files, max(1, round(len(files) / 100))))
        early = [f for f in files if f not in late]
        early_events = sum(f.read_bytes().count(b"\n") for f in early)
        late_events = sum(f.read_bytes().count(b"\n") for f in late)

        loads = []
        for repetition in range(1, args.runs + 1):
            last = repetition == args.runs
            # each repetition a first load into new databases (its own installation)
            with installation("strata-bench-wh-", keep=args.keep and last) as settings:
                loads.append(_first_load(settings, folder, early))
                print(f"first load {repetition}: {loads[-1]['seconds']:.2f} s", flush=True)
                if last:  # then late data, then nothing new, on the last installation
                    upload(settings, folder, sorted(late))
                    began = time.monotonic()
                    second = run(settings)
                    incremental_s = time.monotonic() - began
                    began = time.monotonic()
                    third = run(settings)
                    noop_s = time.monotonic() - began
        peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    median = sorted(loads, key=lambda x: x["seconds"])[len(loads) // 2]
    first = median["summary"]
    report = {
        "events_simulated": sim.events,
        "files": sim.files,
        "defects": args.defects,
        "first_run_events": early_events,
        "first_runs_s": [round(x["seconds"], 2) for x in loads],
        "first_run_s": round(median["seconds"], 2),
        "events_per_s": round(early_events / median["seconds"]),
        **_split(first),
        "fct_location_rows": first.stages["dwh"]["rows_out"]["fct_vehicle_location_updates"],
        "checks_run": sum(first.stages[s]["checks"] for s in ("staging", "semantic", "dwh")),
        "peak_rss_mib": round(peak_mib, 1),
        **{k: v for k, v in median.items() if k.startswith("first_run_")},
        "incremental_objects": len(late),
        "incremental_events": late_events,
        "incremental_run_s": round(incremental_s, 2),
        **{f"incremental_{k}": v for k, v in _split(second).items()},
        "incremental_rows_in": {
            s: second.stages[s]["rows_in"] for s in ("staging", "semantic", "dwh")
        },
        "incremental_pairs_recomputed": second.stages["dwh"]["rows_out"][
            "fct_vehicle_operating_periods"
        ],
        "all_pairs": first.stages["dwh"]["rows_out"]["fct_vehicle_operating_periods"],
        "noop_run_s": round(noop_s, 2),
        "noop_rows_in": {s: third.stages[s]["rows_in"] for s in ("staging", "semantic", "dwh")},
        # where the median first run's time went: the slowest steps of each layer
        **{
            f"{s}_slowest_steps_s": dict(
                sorted(first.stages[s]["step_seconds"].items(), key=lambda kv: -kv[1])[:6]
            )
            for s in ("staging", "semantic", "dwh")
        },
    }
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
