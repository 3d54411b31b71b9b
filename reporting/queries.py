"""Bounded reads for the reports: every query aggregates in PostgreSQL or has a LIMIT, so a
report costs about the same on a thousand events as on a billion (apart from the scans the
views themselves do), and runs under a statement timeout.

The frames returned are small (hundreds of rows) and are the inputs of ``reporting.figures``.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pandas as pd
import psycopg

from strata.db import connect
from strata.errors import NotReady, StrataError
from strata.settings import Settings

STATEMENT_TIMEOUT_MS = 60_000
MAX_ORGANIZATIONS = 50  # bars in the per-client chart; the rest are counted in the title
MAX_HOURS = 24 * 7  # default period: the last week of data (at most 168 × 50 hourly rows)
MAX_PERIODS = 500  # operating periods drawn (the overall answer covers all of them)
MAX_PATH_POINTS = 20_000
MAX_RUNS = 20  # pipeline runs shown in the health report
MAX_REASONS = 50


@dataclass(frozen=True)
class Period:
    start: datetime
    end: datetime  # exclusive


def _frame(conn: psycopg.Connection, query: str, params: Any = None) -> pd.DataFrame:
    cur = conn.execute(query, params)
    columns = [d.name for d in cur.description or ()]
    return pd.DataFrame(cur.fetchall(), columns=columns)


def _open(settings: Settings, db: str) -> psycopg.Connection:
    conn = connect(settings, db, autocommit=True)
    conn.execute(f"set statement_timeout = {STATEMENT_TIMEOUT_MS}")
    return conn


def _has(conn: psycopg.Connection, relation: str) -> bool:
    return conn.execute("select to_regclass(%s) is not null", (relation,)).fetchone()[0]


@contextmanager
def _view(settings: Settings, view: str) -> Iterator[psycopg.Connection]:
    """A dwh_db connection, after checking that ``reporting.<view>`` exists."""
    with _open(settings, "dwh_db") as conn:
        if not _has(conn, f"reporting.{view}"):
            raise NotReady(
                f"dwh_db has no view reporting.{view};"
                " run the pipeline (`strata run`) before `strata report`"
            )
        yield conn


def choose_period(
    settings: Settings, since: datetime | None = None, until: datetime | None = None
) -> Period:
    """The period of the per-client report: as given, or the last week of data up to the
    latest hour with updates (the whole data when there is less)."""
    if since is not None and until is not None:
        if since >= until:
            raise StrataError(f"the report period is empty: since {since} >= until {until}")
        return Period(since, until)
    with _view(settings, "no_updates_per_client") as conn:
        latest = conn.execute(
            "select max(location_at) from prod.fct_vehicle_location_updates"
        ).fetchone()[0]
    latest = latest or datetime.now(UTC)  # no data yet: the week up to now
    end = until or (latest.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1))
    start = since or end - timedelta(hours=MAX_HOURS)
    if start >= end:
        raise StrataError(f"the report period is empty: since {start} >= until {end}")
    return Period(start, end)


def updates_per_client(settings: Settings, period: Period) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(totals per organization, rows per organization and hour) within the period, for the
    ``MAX_ORGANIZATIONS`` busiest organizations; ``totals.attrs['others']`` counts the rest.
    One pass over the view (it aggregates the whole fact table)."""
    with _view(settings, "no_updates_per_client") as conn:
        rows = _frame(
            conn,
            "with hours as materialized (select organization_id, hour_start_at, updates"
            "  from reporting.no_updates_per_client"
            "  where hour_start_at >= %(start)s and hour_start_at < %(end)s),"
            " totals as (select organization_id, sum(updates)::bigint as total from hours"
            "  group by organization_id order by total desc, organization_id limit %(orgs)s)"
            " select h.organization_id, h.hour_start_at, h.updates::bigint as updates, t.total,"
            "  (select count(distinct organization_id) from hours) as organizations"
            " from hours as h join totals as t using (organization_id)"
            " order by h.hour_start_at, h.organization_id",
            {"start": period.start, "end": period.end, "orgs": MAX_ORGANIZATIONS},
        )
    totals = (
        rows.groupby("organization_id", as_index=False)["total"]
        .first()
        .rename(columns={"total": "updates"})
        .sort_values(["updates", "organization_id"], ascending=[False, True], ignore_index=True)
    )
    totals.attrs["others"] = int(rows["organizations"].iloc[0]) - len(totals) if len(rows) else 0
    return totals, rows[["organization_id", "hour_start_at", "updates"]]


def latest_path(settings: Settings) -> pd.DataFrame:
    with _view(settings, "latest_updates_on_top1_client") as conn:
        return _frame(
            conn,
            "select organization_id, vehicle_id, position, location_at, location_lat,"
            " location_lng, is_in_break from reporting.latest_updates_on_top1_client"
            " order by position limit %s",
            (MAX_PATH_POINTS,),
        )


def avg_distance(settings: Settings) -> tuple[pd.DataFrame, dict[str, Any]]:
    """(the latest ``MAX_PERIODS`` periods, the overall answer over every period)."""
    with _view(settings, "avg_distance_per_operating_period") as conn:
        periods = _frame(
            conn,
            "select operating_period_id, organization_id, start_at, finish_at, vehicles,"
            " total_distance_km, avg_distance_km from reporting.avg_distance_per_operating_period"
            " order by start_at desc, operating_period_id limit %s",
            (MAX_PERIODS,),
        )
        count, mean_of_periods, pooled, vehicle_periods = conn.execute(
            "select count(*), avg(avg_distance_km order by operating_period_id),"
            " sum(total_distance_km order by operating_period_id) / nullif(sum(vehicles), 0),"
            " coalesce(sum(vehicles), 0)::bigint"
            " from reporting.avg_distance_per_operating_period"
        ).fetchone()
    overall = {
        "periods": count,
        "avg_distance_km_mean_of_periods": mean_of_periods,
        "avg_distance_km_pooled": pooled,
        "vehicle_periods": vehicle_periods,
    }
    return periods, overall


# ------------------------------------------------------------------ pipeline health

AUDIT_DATABASES = ("raw_db", "staging_db", "semantic_db", "dwh_db")
STEP_COLUMNS = ["run_id", "layer", "step", "target", "status", "started_at", "rows_in"]
STEP_COLUMNS += ["rows_out", "rows_rejected", "seconds", "error"]
CHECK_COLUMNS = ["layer", "table_name", "check_name", "severity", "status", "offending_rows"]
CHECK_COLUMNS += ["checked_at"]


def _every_database(
    settings: Settings, table: str, query: str, columns: list[str], params: Any = None
) -> pd.DataFrame:
    """``query`` on each database that has ``table`` (an audit table), rows concatenated."""
    frames = []
    for db in AUDIT_DATABASES:
        with _open(settings, db) as conn:
            if _has(conn, table):
                frames.append(_frame(conn, query, params))
    frames = [f for f in frames if not f.empty]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=columns)


def run_steps(settings: Settings) -> pd.DataFrame:
    """One row per step of the latest ``MAX_RUNS`` runs, from ``audit.etl_runs`` of every
    database: the ``STEP_COLUMNS`` and run_started_at (the run's first step)."""
    steps = _every_database(
        settings,
        "audit.etl_runs",
        "select run_id::text as run_id, layer, step, target, status, started_at,"
        " rows_in, rows_out, rows_rejected,"
        " extract(epoch from coalesce(ended_at, now()) - started_at)::float8 as seconds, error"
        " from audit.etl_runs order by started_at desc limit %s",
        STEP_COLUMNS,
        (MAX_RUNS * 10,),
    )
    steps["run_started_at"] = steps.groupby("run_id")["started_at"].transform("min")
    runs = steps.drop_duplicates("run_id").sort_values("run_started_at", ascending=False)
    latest = runs["run_id"].head(MAX_RUNS)
    steps = steps[steps["run_id"].isin(set(latest))]
    return steps.sort_values(["run_started_at", "started_at"]).reset_index(drop=True)


def rejected_reasons(settings: Settings) -> pd.DataFrame:
    """reason, rows: every quarantined source line (raw_db ``audit.quarantine``)."""
    with _open(settings, "raw_db") as conn:
        if not _has(conn, "audit.quarantine"):
            return pd.DataFrame(columns=["reason", "rows"])
        return _frame(
            conn,
            "select reason, count(*) as rows from audit.quarantine"
            " group by reason order by rows desc, reason limit %s",
            (MAX_REASONS,),
        )


def latest_checks(settings: Settings) -> pd.DataFrame:
    """Every check result (``CHECK_COLUMNS``) of each layer's latest gate (``audit.dq_results``)."""
    return _every_database(
        settings,
        "audit.dq_results",
        "with latest as (select distinct on (layer) layer, run_id"
        " from audit.dq_results order by layer, checked_at desc)"
        " select d.layer, d.table_name, d.check_name, d.severity, d.status,"
        " d.offending_rows, d.checked_at from audit.dq_results as d"
        " join latest using (layer, run_id) order by d.table_name, d.check_name limit 5000",
        CHECK_COLUMNS,
    )
