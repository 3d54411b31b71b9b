"""The ``strata`` command line (typer + rich).

User mistakes and environment problems (``StrataError``) print one red line and exit 1;
anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import csv
import json
import sys
import time
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from strata.errors import StrataError
from strata.settings import DATABASES, Settings, load_settings

app = typer.Typer(
    help="Strata: JSON-lines events in S3 to a governed PostgreSQL warehouse.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console(stderr=True)
out = Console()


def _settings() -> Settings:
    return load_settings()


@app.command()
def up() -> None:
    """Start the embedded PostgreSQL and S3 (unless external ones are configured) and bootstrap."""
    from strata.services import up as services_up

    started = time.monotonic()
    with console.status("starting services and bootstrapping…"):
        info = services_up(_settings())
    for item in info["created"]:
        console.print(f"  created {item}")
    _print_status(info)
    console.print(f"[green]up[/green] in {time.monotonic() - started:.1f} s")


@app.command()
def down() -> None:
    """Stop the embedded services; data stays under $STRATA_HOME."""
    from strata.services import down as services_down

    stopped = services_down(_settings())
    console.print(f"stopped: {', '.join(stopped) if stopped else 'nothing was running'}")


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Machine-readable output.")] = False,
) -> None:
    """Services, database DSNs (password-free), S3 endpoint and buckets."""
    from strata.services import status as services_status

    info = services_status(_settings())
    if as_json:
        out.print_json(json.dumps(info))
    else:
        _print_status(info)
    unreachable = (
        [name for name, svc in info["services"].items() if svc.get("running") is False]
        + [db for db, d in info["databases"].items() if d.get("error")]
        + [layer for layer, counts in info.get("layers", {}).items() if "error" in counts]
    )
    if unreachable:  # printed above; the exit status is for scripts and health checks
        raise typer.Exit(1)


def _print_status(info: dict) -> None:
    """Plain lines, never wrapped, so a DSN can be copied straight from the terminal."""
    out.print(f"[bold]Strata[/bold] at {info['home']}", soft_wrap=True)
    for name, svc in info["services"].items():
        running = svc.get("running")
        state = {True: "[green]running[/green]", False: "[red]stopped[/red]"}.get(running, "")
        where = svc.get("endpoint") or svc.get("address") or ""
        extra = f"  credentials: {svc['credentials_from']}" if svc.get("credentials_from") else ""
        out.print(f"  {name:<12} {svc['mode']:<9} {state} {where}{extra}", soft_wrap=True)
    for db, d in info["databases"].items():
        out.print(f"  {db:<12} {d.get('dsn') or d.get('error', '')}", soft_wrap=True)
    for role, url in info["locations"].items():
        out.print(f"  {role + ' at':<12} {url}", soft_wrap=True)
    for layer, counts in info.get("layers", {}).items():
        if "error" in counts:
            out.print(f"  {layer:<12} [red]{counts['error']}[/red]", soft_wrap=True)
            continue
        extra = f", {counts['quarantined']:,} quarantined" if "quarantined" in counts else ""
        out.print(
            f"  {layer + ' layer':<15} {counts['batches']:,} batches, {counts['rows']:,} rows{extra}",
            soft_wrap=True,
        )
        for env, tables in counts.get("tables", {}).items():
            if tables:
                listed = ", ".join(f"{t} {n:,}" for t, n in tables.items())
                out.print(f"  {'':<15}   {env}: {listed}", soft_wrap=True)
        if checks := counts.get("checks"):
            state = "[red]failing[/red]" if checks["fail"] else "[green]passing[/green]"
            bad = f": {', '.join(checks['not_passing'])}" if checks["not_passing"] else ""
            since = (
                f" (the layer has run without failing since, at {checks['clean_run_since']},"
                " with nothing new to check)"
                if checks["fail"] and checks.get("clean_run_since")
                else ""
            )
            out.print(
                f"  {'':<15}   checks {state} at {checks['at']}: {checks['pass']} pass,"
                f" {checks['warn']} warn, {checks['fail']} fail{bad}{since}",
                soft_wrap=True,
            )
        for table, changes in counts.get("not_as_declared", {}).items():
            out.print(
                f"  {'':<15}   [yellow]prod.{table} is not as declared[/yellow]"
                f" ({'; '.join(changes)}): `strata run --full-refresh` rebuilds it",
                soft_wrap=True,
            )
        if undeclared := counts.get("not_declared"):
            out.print(
                f"  {'':<15}   [yellow]not declared any more[/yellow]:"
                f" {', '.join('prod.' + t for t in undeclared)} (drop once nothing reads them)",
                soft_wrap=True,
            )


@app.command()
def init() -> None:
    """Create the databases, schemas and buckets (idempotent; `up` does it too)."""
    from strata.bootstrap import bootstrap

    report = bootstrap(_settings())
    if report.created:
        for item in report.created:
            console.print(f"  created {item}")
    else:
        console.print("everything already exists; nothing changed")


def _progress(label: str, unit: str) -> Progress:
    """The one progress-bar style of the CLI (on stderr, gone when done)."""
    return Progress(
        TextColumn(label),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} " + unit),
        TimeElapsedColumn(),
        console=console,
        transient=True,
    )


class Layout(StrEnum):
    flat = "flat"
    nested = "nested"


@app.command()
def simulate(
    organizations: Annotated[int, typer.Option(min=1, help="Organizations (clients).")] = 2,
    vehicles: Annotated[int, typer.Option(min=1, help="Vehicles in the fleet.")] = 10,
    minutes: Annotated[int, typer.Option(min=1, help="Simulated minutes.")] = 60,
    start: Annotated[
        str, typer.Option(help="Start time, ISO-8601 (UTC if no zone).")
    ] = "2019-06-01T08:00:00Z",
    seed: Annotated[int, typer.Option(help="Random seed: same seed, same bytes.")] = 42,
    defects: Annotated[bool, typer.Option("--defects", help="Mix in real-world defects.")] = False,
    layout: Annotated[
        Layout, typer.Option(help="flat *.json or nested YYYY/MM/DD/HH/MM/*.txt")
    ] = Layout.flat,
    target: Annotated[
        str | None, typer.Option(help="Where to write (default: STRATA_SOURCE_URL).")
    ] = None,
) -> None:
    """Write a simulated door2door fleet as JSON-lines files into the source location."""
    from datalake_pipelines.source_simulator import SimulationConfig
    from datalake_pipelines.source_simulator import simulate as run_sim
    from strata.objectstore import open_store

    try:
        start_at = datetime.fromisoformat(start.replace("Z", "+00:00"))
    except ValueError:
        raise StrataError(f"--start {start!r} is not an ISO-8601 timestamp") from None
    if start_at.tzinfo is None:
        start_at = start_at.replace(tzinfo=UTC)
    settings = _settings()
    location = target or settings.source_url
    store = open_store(location, settings)
    config = SimulationConfig(
        organizations=organizations,
        vehicles=vehicles,
        minutes=minutes,
        start=start_at.astimezone(UTC),
        seed=seed,
        defects=defects,
        layout=layout.value,
    )
    began = time.monotonic()
    with _progress("simulating", "min") as progress:
        task = progress.add_task("simulate", total=minutes)
        result = run_sim(
            config,
            store,
            settings.home / "simulator",
            progress=lambda done, total: progress.update(task, completed=done, total=total),
        )
    seconds = time.monotonic() - began
    console.print(
        f"wrote {result.events:,} events in {result.files:,} files "
        f"({result.bytes / 1e6:.1f} MB) to {store.url} in {seconds:.1f} s"
    )
    injected = {k: v for k, v in result.defects.items() if v}
    if injected:
        kinds = ", ".join(f"{k}={v}" for k, v in sorted(injected.items()))
        console.print(f"defects injected: {kinds}")
        console.print(f"manifest: {result.manifest_path}")


@app.command("run")
def run_command(
    full_refresh: Annotated[
        bool, typer.Option("--full-refresh", help="Rebuild the layers from the lake.")
    ] = False,
    reprocess: Annotated[
        list[str] | None,
        typer.Option(
            "--reprocess",
            metavar="BATCH_ID",
            help="Re-derive this raw batch through staging, semantic and dwh (repeatable).",
        ),
    ] = None,
) -> None:
    """Run every stage in order (what main_dag runs), without Airflow."""
    from strata.pipeline import run

    settings = _settings()
    began = time.monotonic()
    with _progress("{task.description}", "") as bar:
        tasks: dict[str, int] = {}

        def progress(stage: str, done: int, total: int) -> None:
            if stage not in tasks:
                tasks[stage] = bar.add_task(stage, total=total)
            bar.update(tasks[stage], completed=done, total=total)

        summary = run(
            settings,
            full_refresh=full_refresh,
            reprocess=tuple(reprocess or ()),
            progress=progress,
        )
    lake, raw = summary.stages["lake"], summary.stages["raw"]
    out.print(
        f"lake: {lake['objects_ingested']} new objects ({lake['objects_seen']} seen), "
        f"{lake['lines']:,} lines -> {lake['rows_accepted']:,} accepted, "
        f"{lake['rows_quarantined']:,} quarantined in {lake['seconds']} s",
        soft_wrap=True,
    )
    if lake["quarantine_reasons"]:
        reasons = ", ".join(f"{k}={v}" for k, v in sorted(lake["quarantine_reasons"].items()))
        out.print(f"  quarantine reasons: {reasons}", soft_wrap=True)
    if lake["schema_drift_fields"]:
        drift = ", ".join(f"{k}={v}" for k, v in sorted(lake["schema_drift_fields"].items()))
        out.print(f"  schema drift (kept in raw.events.extra): {drift}", soft_wrap=True)
    if lake["ignored_objects"]:
        out.print(
            f"  ignored {lake['ignored_objects']} objects not named like source files (see log)"
        )
    out.print(
        f"raw:  {raw['batches_loaded']} batches, {raw['rows_loaded']:,} rows loaded in {raw['seconds']} s",
        soft_wrap=True,
    )
    for name in ("staging", "semantic", "dwh"):
        stage = summary.stages[name]
        if not stage["batches"] and not stage.get("full_refresh"):
            out.print(f"{name + ':':9} nothing new")
            continue
        written = ", ".join(f"{t} {n:,}" for t, n in stage["rows_out"].items())
        removed = ", ".join(f"{k}={v:,}" for k, v in sorted(stage["removed"].items()) if v)
        out.print(
            f"{name + ':':9} {stage['batches']} batches"
            + (" (a full refresh)" if stage.get("full_refresh") else "")
            + f", {stage['rows_in']:,} rows in -> {written};"
            f" {stage['checks']} checks passed in {stage['seconds']} s"
            + (f"; removed: {removed}" if removed else "")
            + (f"; warnings: {', '.join(stage['warnings'])}" if stage["warnings"] else "")
            + (f"; rebuilt as declared: {', '.join(stage['rebuilt'])}" if stage["rebuilt"] else ""),
            soft_wrap=True,
        )
    views = summary.stages["presentation"]["views"]
    out.print(f"reporting: views {', '.join(views)}", soft_wrap=True)
    found = summary.stages["presentation"]["answer"]
    if found["periods"]:
        out.print(
            f"answer:   average distance travelled by a vehicle during an operating period ="
            f" {found['avg_distance_km_mean_of_periods']:.3f} km (mean over {found['periods']}"
            f" live periods; {found['avg_distance_km_pooled']:.3f} km pooled over"
            f" {found['vehicle_periods']} vehicle-periods) — dwh_db"
            " reporting.avg_distance_per_operating_period",
            soft_wrap=True,
        )
    else:
        out.print("answer:   no live operating period with location updates yet")
    out.print(
        f"run {summary.run_id} in {time.monotonic() - began:.1f} s; log: {summary.log_path}",
        soft_wrap=True,
    )


@app.command("reject-batch")
def reject_batch_command(
    batch_id: Annotated[str, typer.Argument(help="A raw batch id (raw_db audit.batches).")],
    reason: Annotated[str, typer.Option("--reason", help="Why it is set aside.")] = "rejected",
) -> None:
    """Set a raw batch aside: the warehouse layers skip it from now on (it stays in raw_db)."""
    from dwh_pipelines.warehouse import reject_batch

    if (earlier := reject_batch(_settings(), batch_id, reason)) is not None:
        out.print(
            f"batch {batch_id} was already set aside ({earlier}); its reason is now: {reason}"
        )
    else:
        out.print(f"batch {batch_id} set aside ({reason}); the next run skips it")


def _utc(option: str, value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        at = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        raise StrataError(f"{option} {value!r} is not an ISO-8601 timestamp") from None
    return (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)


@app.command("report")
def report_command(
    since: Annotated[
        str | None, typer.Option(help="Start of the per-client period, ISO-8601 (UTC if no zone).")
    ] = None,
    until: Annotated[str | None, typer.Option(help="End of that period (exclusive).")] = None,
    profiles: Annotated[
        bool, typer.Option("--profiles/--no-profiles", help="Also profile each layer's main table.")
    ] = True,
) -> None:
    """Write the HTML reports and profiles to $STRATA_HOME/reports (index.html links them)."""
    from reporting import render_reports

    began = time.monotonic()
    with console.status("rendering reports…"):
        paths = render_reports(
            _settings(),
            since=_utc("--since", since),
            until=_utc("--until", until),
            profiles=profiles,
        )
    for path in paths:
        out.print(str(path), soft_wrap=True)
    console.print(f"{len(paths)} reports in {time.monotonic() - began:.1f} s; open {paths[0]}")


from governance.cli import app as governance_app  # noqa: E402 - the sub-app, mounted here

app.add_typer(governance_app, name="governance")


@app.command("sql")
def sql_command(
    db: Annotated[str, typer.Argument(help=f"One of {', '.join(DATABASES)}.")],
    query: Annotated[str, typer.Argument(help="One SQL statement.")],
) -> None:
    """Run one statement as the pipeline and print the result as CSV on stdout."""
    import psycopg
    from psycopg.types.string import TextLoader

    from strata.db import connect

    if db not in DATABASES:
        raise StrataError(f"unknown database {db!r}; expected one of {', '.join(DATABASES)}")
    with connect(_settings(), db) as conn, conn.cursor() as cur:
        for json_type in ("json", "jsonb"):  # as PostgreSQL writes it, not as a Python dict
            cur.adapters.register_loader(json_type, TextLoader)
        try:
            cur.execute(query)
        except psycopg.Error as exc:
            raise StrataError(f"{db}: {str(exc).strip()}") from None
        if cur.description is None:
            console.print(cur.statusmessage or "ok")
            return
        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow([col.name for col in cur.description])
        while rows := cur.fetchmany(10_000):
            writer.writerows(rows)


def main() -> None:
    try:
        app()
    except StrataError as exc:
        console.print(f"[red]error:[/red] {exc}", highlight=False, soft_wrap=True)
        sys.exit(1)
    except KeyboardInterrupt:
        console.print("[red]interrupted[/red]")
        sys.exit(130)
    except Exception as exc:  # an S3 endpoint that cannot be reached is no bug of Strata's
        from strata.objectstore import s3_failure

        if (message := s3_failure(exc)) is None:
            raise
        console.print(f"[red]error:[/red] {message}", highlight=False, soft_wrap=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
