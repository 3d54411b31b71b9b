"""Report generation on a warehouse of about ``--events`` events: ``strata report`` as a user
runs it (a fresh process: imports included), then ``render_reports`` in process, cold and
warm, with and without the profiles.

Builds its own embedded installation and loads the simulated fleet through the whole
pipeline first (not timed; see bench_warehouse.py for that), unless ``--home`` names an
installation kept by an earlier ``--keep`` run.

    python bench/bench_reports.py --events 1000000 [--keep | --home /tmp/…/.strata]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from contextlib import nullcontext
from pathlib import Path

from common import fleet, installation, print_report

from datalake_pipelines.source_simulator import simulate
from strata.db import connect
from strata.objectstore import open_store
from strata.pipeline import run
from strata.settings import load_settings

STRATA = Path(sys.executable).parent / "strata"


def _arguments(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--defects", action="store_true", help="inject the simulator's defects")
    parser.add_argument("--keep", action="store_true", help="keep the installation afterwards")
    parser.add_argument("--home", type=Path, help="reuse this loaded STRATA_HOME (not removed)")
    return parser.parse_args(argv)


def _timed(call):  # type: ignore[no-untyped-def]
    began = time.monotonic()
    result = call()
    return result, round(time.monotonic() - began, 2)


def main(argv: list[str] | None = None) -> int:
    args = _arguments(argv)
    from reporting import render_reports

    context = (
        nullcontext(load_settings(_env_file=None, home=args.home))
        if args.home
        else installation("strata-bench-reports-", keep=args.keep)
    )
    with context as settings:
        if args.home is None:
            source = open_store(settings.source_url, settings)
            simulate(fleet(args.events, args.defects), source, settings.home / "simulator")
            _, load_s = _timed(lambda: run(settings))
        else:
            load_s = None
        with connect(settings, "dwh_db") as conn:
            facts = conn.execute(
                "select count(*) from prod.fct_vehicle_location_updates"
            ).fetchone()
        with connect(settings, "raw_db") as conn:
            events = conn.execute("select count(*) from raw.events").fetchone()[0]

        env = {k: v for k, v in os.environ.items() if not k.startswith("STRATA_")}
        env["STRATA_HOME"] = str(settings.home)
        cli, cli_s = _timed(
            lambda: subprocess.run(
                [str(STRATA), "report"], env=env, capture_output=True, text=True, check=False
            )
        )
        if cli.returncode != 0:
            raise SystemExit(f"strata report failed:\n{cli.stdout}\n{cli.stderr}")
        paths, cold_s = _timed(lambda: render_reports(settings))
        _, warm_s = _timed(lambda: render_reports(settings))
        _, pages_s = _timed(lambda: render_reports(settings, profiles=False))
        folder = paths[0].parent
        report = {
            "raw_events": events,
            "fct_location_rows": facts[0],
            "pipeline_run_s (not part of the bench)": load_s,
            "cli_strata_report_s": cli_s,
            "render_reports_cold_in_process_s": cold_s,
            "render_reports_warm_s": warm_s,
            "pages_only_s (--no-profiles)": pages_s,
            "profiles_s (warm - pages)": round(warm_s - pages_s, 2),
            "reports": len(paths),
            "reports_mib": round(sum(p.stat().st_size for p in folder.iterdir()) / 2**20, 1),
            "home": str(settings.home) if (args.keep or args.home) else "removed",
        }
    return print_report(report)


if __name__ == "__main__":
    sys.exit(main())
