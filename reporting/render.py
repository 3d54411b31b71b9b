"""Render the reports into ``$STRATA_HOME/reports``: one HTML page per subject, the profiling
reports, and ``index.html`` linking them.

Offline by construction: plotly.js is written once, as ``plotly.min.js`` beside the pages
(``include_plotlyjs="directory"``), never embedded in every page nor taken from a CDN; the
map of the latest path is drawn on plain axes, without tiles; ydata-profiling inlines its own
assets. Every page is written to a temporary name and renamed, so a browser (or a person)
never opens half a page, and the index is written last.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
from plotly.offline import get_plotlyjs

from reporting import figures, queries
from strata.settings import Settings

PLOTLY_BUNDLE = "plotly.min.js"
STYLE = """
body { font-family: system-ui, sans-serif; margin: 1.5rem 2rem; color: #222; }
h1 { font-size: 1.5rem; } p.note { color: #555; max-width: 60rem; }
nav a, li a { color: #1f4e9c; } li { margin: .4rem 0; } footer { color: #777; margin-top: 2rem; }
.figure { margin: 1rem 0 2rem; border-top: 1px solid #eee; }
table.facts td { padding: .15rem 1rem .15rem 0; }
"""


@dataclass(frozen=True)
class Report:
    path: Path
    title: str
    summary: str
    seconds: float


def reports_dir(settings: Settings) -> Path:
    return settings.home / "reports"


def _write(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def _page(title: str, note: str, body: str, generated: datetime, *, nav: bool = True) -> str:
    return (
        '<!doctype html>\n<html lang="en"><head><meta charset="utf-8">'
        f"<title>{html.escape(title)}</title><style>{STYLE}</style></head><body>"
        + ('<nav><a href="index.html">&larr; all reports</a></nav>' if nav else "")
        + f"<h1>{html.escape(title)}</h1><p class='note'>{note}</p>{body}"
        f"<footer>generated {generated:%Y-%m-%d %H:%M:%S} UTC by strata report</footer>"
        "</body></html>\n"
    )


def figures_html(figs: list[go.Figure]) -> str:
    """The figures as ``<div>``s; the first one carries the ``<script src="plotly.min.js">``."""
    parts = []
    for i, fig in enumerate(figs):
        div = fig.to_html(
            full_html=False,
            include_plotlyjs="directory" if i == 0 else False,
            config={"displaylogo": False, "responsive": True},
            div_id=f"figure-{i}",
        )
        parts.append(f'<div class="figure">{div}</div>')
    return "".join(parts)


def _facts(rows: list[tuple[str, Any]]) -> str:
    cells = "".join(
        f"<tr><td>{html.escape(k)}</td><td><b>{html.escape(str(v))}</b></td></tr>" for k, v in rows
    )
    return f'<table class="facts">{cells}</table>'


def _km(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f} km"


# ------------------------------------------------------------------ one function per report


def _updates_per_client(
    settings: Settings, since: datetime | None, until: datetime | None
) -> tuple[str, str, str]:
    period = queries.choose_period(settings, since, until)
    totals, hourly = queries.updates_per_client(settings, period)
    others = totals.attrs.get("others", 0)
    note = (
        "Location updates per organization (client) over the chosen period, from"
        " <code>dwh_db.reporting.no_updates_per_client</code>. Choose another period with"
        " <code>strata report --since … --until …</code>."
        + (f" {others} less busy organizations are not drawn." if others else "")
    )
    body = figures_html(
        [
            figures.updates_per_client(totals, period.start, period.end),
            figures.updates_per_client_by_hour(hourly),
        ]
    )
    summary = f"{int(totals['updates'].sum()) if not totals.empty else 0:,} updates"
    return note, body, f"{summary}, {len(totals)} organizations"


def _latest_path(settings: Settings) -> tuple[str, str, str]:
    path = queries.latest_path(settings)
    note = (
        "The path of the busiest vehicle of the top organization in the latest hour of data,"
        " in time order (<code>dwh_db.reporting.latest_updates_on_top1_client</code>). Drawn"
        " on longitude/latitude axes at true ground scale instead of map tiles, so it needs"
        " no network; crosses mark updates during a break."
    )
    summary = (
        f"vehicle {path['vehicle_id'].iloc[0]}, {len(path)} updates"
        if not path.empty
        else "no data"
    )
    return note, figures_html([figures.latest_path(path)]), summary


def _avg_distance(settings: Settings) -> tuple[str, str, str]:
    periods, overall = queries.avg_distance(settings)
    mean = overall["avg_distance_km_mean_of_periods"]
    note = (
        "The BI answer: for each live operating period, the average over the organization's"
        " vehicles (with at least one update in the period) of the haversine distance"
        " travelled, breaks excluded (<code>dwh_db.reporting.avg_distance_per_operating_period"
        "</code>)."
        + (
            f" The latest {len(periods)} of {overall['periods']} periods are drawn."
            if overall["periods"] > len(periods)
            else ""
        )
    )
    facts = _facts(
        [
            ("average distance per vehicle and period (mean of the periods)", _km(mean)),
            (
                "pooled over all vehicle-periods",
                _km(overall["avg_distance_km_pooled"]),
            ),
            ("live operating periods with updates", overall["periods"]),
            ("vehicle-periods", overall["vehicle_periods"]),
        ]
    )
    body = facts + figures_html([figures.avg_distance_per_period(periods, mean)])
    return note, body, f"{_km(mean)} over {overall['periods']} periods"


def _pipeline_health(settings: Settings) -> tuple[str, str, str]:
    steps = queries.run_steps(settings)
    reasons = queries.rejected_reasons(settings)
    checks = queries.latest_checks(settings)
    by_status = (
        checks.groupby(["layer", "status"]).size().rename("checks").reset_index()
        if not checks.empty
        else checks.assign(checks=[]).loc[:, ["layer", "status", "checks"]]
    )
    failed = steps[steps["status"] == "failed"] if not steps.empty else steps
    note = (
        "From the audit tables of the four databases: rows written by each layer per run"
        " (<code>audit.etl_runs</code>, the latest"
        f" {queries.MAX_RUNS} runs), source lines rejected by reason"
        " (<code>raw_db.audit.quarantine</code>), the checks of each layer's latest gate"
        " (<code>audit.dq_results</code>) and the time each layer took."
    )
    errors = "".join(
        f"<li>{html.escape(str(r.layer))} in run {html.escape(str(r.run_id)[:8])}:"
        f" {html.escape(str(r.error))}</li>"
        for r in failed.itertuples()
    )
    body = (f"<h2>Failed steps</h2><ul>{errors}</ul>" if errors else "") + figures_html(
        [
            figures.rows_through_layers(steps),
            figures.rejected_by_reason(reasons),
            figures.check_results(by_status),
            figures.checks_not_passing(checks),
            figures.run_durations(steps),
        ]
    )
    not_passing = int((checks["status"] != "pass").sum()) if not checks.empty else 0
    summary = (
        f"runs: {steps['run_id'].nunique() if not steps.empty else 0},"
        f" {int(reasons['rows'].sum()) if not reasons.empty else 0:,} rejected lines,"
        f" {len(checks)} checks ({not_passing} not passing), {len(failed)} failed steps"
    )
    return note, body, summary


PAGES: dict[str, tuple[str, Callable[..., tuple[str, str, str]]]] = {
    "no_updates_per_client": ("Location updates per client", _updates_per_client),
    "latest_updates_on_top1_client": (
        "Latest path of the top client's busiest vehicle",
        _latest_path,
    ),
    "avg_distance_per_operating_period": (
        "Average distance per vehicle and operating period",
        _avg_distance,
    ),
    "pipeline_health": ("Pipeline health", _pipeline_health),
}


def _index(reports: list[Report], profiles: list[dict[str, Any]], generated: datetime) -> str:
    items = "".join(
        f'<li><a href="{html.escape(r.path.name)}">{html.escape(r.title)}</a> &mdash;'
        f" {html.escape(r.summary)}</li>"
        for r in reports
    )
    profile_items = "".join(
        f'<li><a href="{html.escape(p["path"].name)}">{html.escape(p["table"])}</a>'
        f" ({html.escape(p['layer'])} layer, sample of {p['rows']:,} rows"
        + (
            "; sensitive: "
            + html.escape(", ".join(f"{c} ({t})" for c, t in p["sensitive"].items()))
            if p["sensitive"]
            else ""
        )
        + ")</li>"
        for p in profiles
    )
    body = f"<h2>Reports</h2><ul>{items}</ul>" + (
        f"<h2>Profiles of each layer's main table</h2><ul>{profile_items}</ul>" if profiles else ""
    )
    note = (
        "Everything here opens offline, straight from disk; plotly.js sits beside the pages"
        " (<code>plotly.min.js</code>)."
    )
    return _page("Strata reports", note, body, generated, nav=False)


def render_reports(
    settings: Settings,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    profiles: bool = True,
    sample_rows: int | None = None,
) -> list[Path]:
    """Write every report into ``$STRATA_HOME/reports``; the HTML paths, ``index.html`` first.

    ``since``/``until`` choose the period of the per-client report (default: the last week
    of data). ``profiles=False`` skips the ydata-profiling reports (the slow part).
    """
    folder = reports_dir(settings)
    folder.mkdir(parents=True, exist_ok=True)
    # the path report draws precise coordinates: the folder is its owner's alone (a team that
    # serves the reports decides who else may read them)
    folder.chmod(0o700)
    generated = datetime.now(UTC)
    _write(folder / PLOTLY_BUNDLE, get_plotlyjs())  # once, shared by every page
    reports = []
    for name, (title, build) in PAGES.items():
        began = time.monotonic()
        args = (settings, since, until) if name == "no_updates_per_client" else (settings,)
        note, body, summary = build(*args)
        path = folder / f"{name}.html"
        _write(path, _page(title, note, body, generated))
        reports.append(Report(path, title, summary, time.monotonic() - began))
    profiled: list[dict[str, Any]] = []
    if profiles:
        from reporting.profiles import SAMPLE_ROWS, profile_all

        profiled = profile_all(settings, folder, sample_rows or SAMPLE_ROWS)
    index = folder / "index.html"
    _write(index, _index(reports, profiled, generated))
    return [index, *(r.path for r in reports), *(p["path"] for p in profiled)]
