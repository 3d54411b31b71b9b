"""The one audit writer: ``audit.etl_runs``, ``audit.batches`` and ``audit.profile_metrics``.

Every database has the same audit schema, so each hop records what it did where it wrote.
A hop inserts its rows and its ``audit.batches`` entries in the same transaction: the ledger
can never claim a batch whose rows are missing, nor miss one whose rows are there.
"""

from __future__ import annotations

import functools
import subprocess
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import psycopg
from psycopg.types.json import Jsonb

import strata
from strata.db import connect
from strata.errors import StrataError
from strata.settings import DATABASES, Settings

AUDIT_DDL = """
create table if not exists audit.etl_runs (
    run_id uuid not null,
    layer text not null,
    step text not null,
    target text not null,
    started_at timestamptz not null,
    ended_at timestamptz,
    status text not null check (status in ('running', 'success', 'failed')),
    rows_in bigint not null default 0,
    rows_out bigint not null default 0,
    rows_rejected bigint not null default 0,
    data_min_at timestamptz,
    data_max_at timestamptz,
    load_type text not null,
    previous_watermark text,
    environment text not null,
    code_version text not null,
    error text,
    details jsonb,
    primary key (run_id, layer, step, target)
);
create table if not exists audit.batches (
    layer text not null,
    batch_id text not null,
    source_key text,
    rows bigint not null,
    load_seq bigint,
    run_id uuid not null,
    applied_at timestamptz not null default now(),
    primary key (layer, batch_id)
);
create table if not exists audit.profile_metrics (
    run_id uuid not null,
    layer text not null,
    target text not null,
    column_name text not null,
    metric text not null,
    value double precision,
    value_text text,
    measured_at timestamptz not null default now(),
    primary key (run_id, layer, target, column_name, metric)
);
"""


def ensure_audit_schema(conn: psycopg.Connection) -> None:
    conn.execute(AUDIT_DDL)


@functools.cache
def code_version() -> str:
    """The package version plus the git commit when running from a checkout."""
    version = strata.__version__
    repo = Path(strata.__file__).resolve().parents[1]
    if (repo / ".git").exists():
        try:
            sha = subprocess.run(
                ["git", "-C", str(repo), "rev-parse", "--short", "HEAD"],
                capture_output=True,
                text=True,
                timeout=5,
                check=True,
            ).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            sha = ""
        if sha:
            version += f"+g{sha}"
    return version


@dataclass
class StepStats:
    """What a step measured; written to ``audit.etl_runs`` when the step ends."""

    rows_in: int = 0
    rows_out: int = 0
    rows_rejected: int = 0
    data_min_at: datetime | None = None
    data_max_at: datetime | None = None
    previous_watermark: str | None = None
    details: dict = field(default_factory=dict)
    load_type: str | None = None  # when the step found it must run otherwise than it began

    def widen(self, low: datetime | None, high: datetime | None) -> None:
        if low is not None and (self.data_min_at is None or low < self.data_min_at):
            self.data_min_at = low
        if high is not None and (self.data_max_at is None or high > self.data_max_at):
            self.data_max_at = high


ABANDONED = "the process ended before this step finished (killed?); found by a later run"


def close_abandoned_steps(settings: Settings) -> int:
    """Steps still ``running`` when a run takes the run lock were left by a process that died
    (a kill, a crash of the machine): mark them failed, so that the audit says so. Returns
    how many."""
    closed = 0
    for db in DATABASES:
        try:
            conn = connect(settings, db, autocommit=True)
        except StrataError:  # not reachable: the stage that needs it will say so
            continue
        with conn:
            if conn.execute("select to_regclass('audit.etl_runs')").fetchone()[0] is None:
                continue  # not initialized yet: nothing ran there
            closed += conn.execute(
                "update audit.etl_runs set status = 'failed', ended_at = now(), error = %s"
                " where status = 'running'",
                (ABANDONED,),
            ).rowcount
    return closed


@contextmanager
def audited_step(
    settings: Settings,
    db: str,
    *,
    run_id: uuid.UUID,
    layer: str,
    step: str,
    target: str,
    load_type: str,
) -> Iterator[StepStats]:
    """Record a step as running, then as success or failed (with the error), in ``db``."""
    stats = StepStats()
    started = datetime.now(UTC)
    with connect(settings, db, autocommit=True) as conn:
        conn.execute(
            "insert into audit.etl_runs (run_id, layer, step, target, started_at, status,"
            " load_type, environment, code_version) values (%s,%s,%s,%s,%s,'running',%s,%s,%s)"
            " on conflict (run_id, layer, step, target) do update set started_at = excluded.started_at,"
            " status = 'running', error = null",
            (run_id, layer, step, target, started, load_type, settings.environment, code_version()),
        )
    error: str | None = None
    try:
        yield stats
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        with connect(settings, db, autocommit=True) as conn:
            conn.execute(
                "update audit.etl_runs set ended_at = %s, status = %s, rows_in = %s,"
                " rows_out = %s, rows_rejected = %s, data_min_at = %s, data_max_at = %s,"
                " previous_watermark = %s, error = %s, details = %s,"
                " load_type = coalesce(%s, load_type)"
                " where run_id = %s and layer = %s and step = %s and target = %s",
                (
                    datetime.now(UTC),
                    "failed" if error else "success",
                    stats.rows_in,
                    stats.rows_out,
                    stats.rows_rejected,
                    stats.data_min_at,
                    stats.data_max_at,
                    stats.previous_watermark,
                    error,
                    Jsonb(stats.details),
                    stats.load_type,
                    run_id,
                    layer,
                    step,
                    target,
                ),
            )


def applied_batches(conn: psycopg.Connection, layer: str) -> set[str]:
    return {
        row[0]
        for row in conn.execute("select batch_id from audit.batches where layer = %s", (layer,))
    }


FULL_REFRESHES_DDL = """
create table if not exists audit.full_refreshes (
    layer text not null,
    seq bigint not null,
    upstream_seq bigint,
    run_id uuid not null,
    refreshed_at timestamptz not null default now()
);
comment on table audit.full_refreshes is
  'Each full refresh a layer published: its seq (the publish or load sequence value every row
   of it is at or above) and the full refresh of the layer upstream that it followed. A layer
   below that has not followed the latest one finishes it on its next run.';
"""


def record_full_refresh(
    conn: psycopg.Connection,
    *,
    layer: str,
    seq: int,
    upstream_seq: int | None,
    run_id: uuid.UUID,
) -> None:
    """Call inside the transaction that publishes the full refresh."""
    conn.execute(FULL_REFRESHES_DDL)
    conn.execute(
        "insert into audit.full_refreshes (layer, seq, upstream_seq, run_id)"
        " values (%s, %s, %s, %s)",
        (layer, seq, upstream_seq, run_id),
    )


def last_full_refresh(conn: psycopg.Connection, layer: str) -> tuple[int, int | None] | None:
    """(seq, upstream seq) of ``layer``'s latest full refresh in this database, if any."""
    if conn.execute("select to_regclass('audit.full_refreshes')").fetchone()[0] is None:
        return None
    row = conn.execute(
        "select seq, upstream_seq from audit.full_refreshes where layer = %s"
        " order by seq desc limit 1",
        (layer,),
    ).fetchone()
    return (int(row[0]), row[1]) if row else None


def record_batch(
    conn: psycopg.Connection,
    *,
    layer: str,
    batch_id: str,
    source_key: str | None,
    rows: int,
    run_id: uuid.UUID,
    load_seq: int | None = None,
) -> None:
    """Call inside the transaction that wrote the batch's rows."""
    conn.execute(
        "insert into audit.batches (layer, batch_id, source_key, rows, load_seq, run_id)"
        " values (%s, %s, %s, %s, %s, %s)",
        (layer, batch_id, source_key, rows, load_seq, run_id),
    )


@dataclass(frozen=True)
class Metric:
    column_name: str
    metric: str
    value: float | None = None
    value_text: str | None = None


def write_metrics(
    conn: psycopg.Connection,
    *,
    run_id: uuid.UUID,
    layer: str,
    target: str,
    metrics: Iterable[Metric],
) -> None:
    rows = [
        (run_id, layer, target, m.column_name, m.metric, m.value, m.value_text) for m in metrics
    ]
    with conn.cursor() as cur:
        cur.executemany(
            "insert into audit.profile_metrics (run_id, layer, target, column_name, metric,"
            " value, value_text) values (%s,%s,%s,%s,%s,%s,%s)"
            " on conflict (run_id, layer, target, column_name, metric)"
            " do update set value = excluded.value, value_text = excluded.value_text,"
            " measured_at = now()",
            rows,
        )
