"""Source → lake: each source object version exactly once, as parquet; bad lines to quarantine.

For every object in the source location that the ledger (``raw_db.audit.lake_objects``) has
not seen with its current content (ETag), the object is parsed, its accepted lines written as
``raw/<source>/<table>/ingest_date=<date>/<batch_id>.parquet`` and its rejected lines as
``quarantine/<source>/<table>/ingest_date=<date>/<batch_id>.parquet`` in the lake, and then —
in one transaction — the ledger row and the quarantined lines (``audit.quarantine``) are
committed. The batch id is derived from key, ETag and version, and the lake keys from the
batch id, so a crash before the commit is repaired by the rerun overwriting the same files.

An object replaced under the same key (new ETag) is ingested again as the next version with
its own batch id; it is never merged with the old version.
"""

from __future__ import annotations

import hashlib
import io
import multiprocessing
import os
import re
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from psycopg.types.json import Jsonb

from datalake_pipelines.L1_raw_layer.parse import (
    Parsed,
    parse_object,
    parse_object_python,
    to_arrow,
)
from strata.audit import StepStats, audited_step
from strata.concurrency import ordered_map
from strata.db import connect
from strata.errors import StrataError
from strata.faults import checkpoint
from strata.objectstore import ObjectChanged, ObjectInfo, ObjectStore, open_store
from strata.profiling import Profiler
from strata.runlog import RunLog
from strata.settings import Settings
from strata.tables import load_table
from strata.transfer import copy_arrow

SOURCE = "door2door"
LAYER = "lake"
EVENTS = load_table(Path(__file__).parent / "events" / "table.yaml")
# the source contract's file names (flat and nested layouts); anything else is reported
SOURCE_KEY = re.compile(r"(^|/)\d{4}-\d\d-\d\d-\d\d-\d\d-\d+-events\.(json|txt)$")

LEDGER_DDL = """
create table if not exists audit.lake_objects (
    batch_id text primary key,
    source_url text not null,
    source_key text not null,
    etag text not null,
    version integer not null,
    size bigint not null,
    last_modified timestamptz not null,
    lake_key text,
    quarantine_key text,
    lines bigint not null,
    rows_accepted bigint not null,
    rows_quarantined bigint not null,
    drift jsonb,
    note text,
    run_id uuid not null,
    ingested_at timestamptz not null,
    unique (source_url, source_key, version)
);
create table if not exists audit.quarantine (
    batch_id text not null,
    source_key text not null,
    line_number integer not null,
    reason text not null,
    detail text not null,
    raw_line text not null,
    primary key (batch_id, line_number)
);
"""
QUARANTINE_SCHEMA = pa.schema(
    [
        ("batch_id", pa.string()),
        ("source_key", pa.string()),
        ("line_number", pa.int32()),
        ("reason", pa.string()),
        ("detail", pa.string()),
        ("raw_line", pa.string()),
    ]
)
IN_FLIGHT = 4  # objects fetched and parsed concurrently; bounds memory to ~4 objects


@dataclass
class IngestResult:
    objects_seen: int = 0
    objects_ingested: int = 0
    lines: int = 0
    rows_accepted: int = 0
    rows_quarantined: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    drift: dict[str, int] = field(default_factory=dict)
    ignored_keys: list[str] = field(default_factory=list)
    batches: list[str] = field(default_factory=list)


@dataclass
class _Prepared:
    info: ObjectInfo
    version: int
    batch_id: str
    lines: int
    accepted: pa.Table
    quarantine: pa.Table
    lake_key: str | None
    quarantine_key: str | None
    drift: dict[str, int]
    note: str | None
    ingested_at: datetime


def batch_id_for(source_url: str, key: str, etag: str, version: int) -> str:
    digest = hashlib.sha256(f"{source_url}\0{key}\0{etag}\0{version}".encode()).hexdigest()
    return digest[:24]


def ensure_ledger(settings: Settings) -> None:
    with connect(settings, "raw_db", autocommit=True) as conn:
        conn.execute(LEDGER_DDL)


def pending_objects(
    settings: Settings, source: ObjectStore
) -> tuple[list[tuple[ObjectInfo, int]], list[str], int]:
    """(new object versions with their version number, ignored keys, objects seen)."""
    if not source.exists():
        raise StrataError(
            f"the source location {source.url} does not exist (bucket or folder; set by"
            " STRATA_SOURCE_URL)"
        )
    with connect(settings, "raw_db") as conn:
        latest = {
            key: (etag, version)
            for key, etag, version in conn.execute(
                "select distinct on (source_key) source_key, etag, version"
                " from audit.lake_objects where source_url = %s"
                " order by source_key, version desc",
                (source.url,),
            )
        }
    pending, ignored, seen = [], [], 0
    for info in source.list():
        if not SOURCE_KEY.search(info.key):
            ignored.append(info.key)
            continue
        seen += 1
        known = latest.get(info.key)
        if known is None:
            pending.append((info, 1))
        elif known[0] != info.etag:
            pending.append((info, known[1] + 1))
    pending.sort(key=lambda item: item[0].key)
    return pending, ignored, seen


def _parquet_bytes(table: pa.Table, dictionary: list[str] | bool = True) -> bytes:
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="snappy", use_dictionary=dictionary)
    return sink.getvalue()


def _die_with_parent(parent: int) -> None:
    """Worker initializer: exit as soon as the run's process is gone, even after a SIGKILL —
    an orphaned parser would outlive the run and hold its output pipes open. (Linux's
    PDEATHSIG is no use here: it fires when the *thread* that started the worker ends.)
    ``parent`` comes from the run itself: the run may already be dead when this starts."""

    def watch() -> None:
        tick = threading.Event()  # never set: a dead parent cannot signal, so poll it
        while os.getppid() == parent:
            tick.wait(0.5)
        os._exit(1)

    threading.Thread(target=watch, name="parent-watch", daemon=True).start()


class _LineParsers:
    """Worker processes for objects the fast path cannot take whole (a bad line makes the
    reference parser read every line in Python, which holds the GIL: threads would not help).
    Started on first need, so clean runs never pay for them."""

    def __init__(self, workers: int) -> None:
        self.workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()

    def __call__(self, data: bytes) -> Parsed:
        with self._lock:
            if self._pool is None:
                self._pool = ProcessPoolExecutor(
                    max_workers=self.workers,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_die_with_parent,
                    initargs=(os.getpid(),),
                )
        return self._pool.submit(parse_object_python, data).result()

    def __enter__(self) -> _LineParsers:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)


READ_ATTEMPTS = 3


def fetch_listed(source: ObjectStore, info: ObjectInfo) -> tuple[ObjectInfo, bytes]:
    """The listed object's bytes, with the identity they really have: an object replaced
    since the listing is read as the version now under its key (the ledger must never record
    one version's bytes under another's ETag)."""
    for _ in range(READ_ATTEMPTS):
        try:
            return info, source.get(info.key, etag=info.etag)
        except ObjectChanged:
            info = source.stat(info.key)
    raise StrataError(
        f"{source.url}/{info.key} was replaced {READ_ATTEMPTS} times while being read;"
        " the next run ingests the version that stays"
    )


def _prepare(
    info: ObjectInfo,
    version: int,
    source: ObjectStore,
    lake: ObjectStore,
    fallback: Callable[[bytes], Parsed] | None = None,
) -> _Prepared:
    """Fetch, parse and write the lake files of one object version (no database work)."""
    info, data = fetch_listed(source, info)
    batch_id = batch_id_for(source.url, info.key, info.etag, version)
    ingested_at = datetime.now(UTC)
    parsed = parse_object(data, fallback)
    note = None
    if not data:
        note = "empty object"
    elif not data.endswith(b"\n"):
        note = "object does not end with a newline (truncated upload?)"
    accepted = to_arrow(
        parsed,
        EVENTS.arrow_schema(),
        {"batch_id": batch_id, "source_key": info.key, "ingested_at": ingested_at},
    )
    quarantine = pa.table(
        {
            "batch_id": [batch_id] * len(parsed.quarantined),
            "source_key": [info.key] * len(parsed.quarantined),
            "line_number": [q.line_number for q in parsed.quarantined],
            "reason": [q.reason for q in parsed.quarantined],
            "detail": [q.detail for q in parsed.quarantined],
            # PostgreSQL text cannot hold NUL; everything else is kept as received
            "raw_line": [q.raw_line.replace("\x00", "\\u0000") for q in parsed.quarantined],
        },
        schema=QUARANTINE_SCHEMA,
    )
    partition = f"ingest_date={info.last_modified.astimezone(UTC):%Y-%m-%d}"
    lake_key = quarantine_key = None
    if accepted.num_rows:
        lake_key = f"raw/{SOURCE}/{EVENTS.name}/{partition}/{batch_id}.parquet"
        lake.put(lake_key, _parquet_bytes(accepted, EVENTS.dictionary_columns))
    if quarantine.num_rows:
        quarantine_key = f"quarantine/{SOURCE}/{EVENTS.name}/{partition}/{batch_id}.parquet"
        lake.put(quarantine_key, _parquet_bytes(quarantine))
    checkpoint("lake.after_put")
    return _Prepared(
        info=info,
        version=version,
        batch_id=batch_id,
        lines=parsed.lines,
        accepted=accepted,
        quarantine=quarantine,
        lake_key=lake_key,
        quarantine_key=quarantine_key,
        drift=parsed.drift_fields,
        note=note,
        ingested_at=ingested_at,
    )


Committed = Callable[[str, str, pa.Table], None]


def ingest(
    settings: Settings,
    run_id: uuid.UUID,
    log: RunLog,
    progress: Callable[[int, int], None] | None = None,
    on_commit: Committed | None = None,
) -> IngestResult:
    """Ingest every new source object version into the lake and the ledger.

    ``on_commit(batch_id, source_key, table)`` is called after each batch has committed, with
    its accepted rows still in memory, so a run can hand them to the next hop without reading
    them back from the lake.
    """
    ensure_ledger(settings)
    source = open_store(settings.source_url, settings)
    lake = open_store(settings.lake_url, settings)
    result = IngestResult()
    profiler = Profiler(EVENTS)
    with audited_step(
        settings,
        "raw_db",
        run_id=run_id,
        layer=LAYER,
        step="ingest",
        target=f"{lake.url}/raw/{SOURCE}/{EVENTS.name}",
        load_type="incremental",
    ) as stats:
        pending, result.ignored_keys, result.objects_seen = pending_objects(settings, source)
        for key in result.ignored_keys:
            log.event("lake.ignored_object", key=key, reason="name is not a source event file")
        if progress:
            progress(0, len(pending))
        with (
            connect(settings, "raw_db") as conn,
            _LineParsers(workers=os.cpu_count() or 2) as line_parsers,
        ):
            prepared_objects = ordered_map(
                lambda item: _prepare(item[0], item[1], source, lake, line_parsers),
                pending,
                in_flight=IN_FLIGHT,
                name="lake",
            )
            for done, prepared in enumerate(prepared_objects, 1):
                with conn.transaction():
                    _commit(conn, prepared, source.url, run_id)
                # committed: the audit and the log say so even if what follows fails
                _account(result, prepared)
                _tally(stats, result)
                log.event(
                    "lake.object",
                    key=prepared.info.key,
                    version=prepared.version,
                    batch_id=prepared.batch_id,
                    lines=prepared.lines,
                    accepted=prepared.accepted.num_rows,
                    quarantined=prepared.quarantine.num_rows,
                    note=prepared.note,
                )
                checkpoint("lake.after_commit")
                if on_commit is not None:
                    on_commit(prepared.batch_id, prepared.info.key, prepared.accepted)
                profiler.add(
                    prepared.accepted,
                    rows_in=prepared.lines,
                    rejected=prepared.quarantine.num_rows,
                )
                if progress:
                    progress(done, len(pending))
            profiler.publish(
                conn,
                run_id=run_id,
                layer=LAYER,
                target=f"{SOURCE}.{EVENTS.name}",
                stats=stats,
                log=log,
            )
        _tally(stats, result)
    if result.drift:
        log.event("lake.schema_drift", fields=result.drift)
    return result


def _tally(stats: StepStats, result: IngestResult) -> None:
    stats.rows_in = result.lines
    stats.rows_out = result.rows_accepted
    stats.rows_rejected = result.rows_quarantined
    stats.details = {
        "objects_seen": result.objects_seen,
        "objects_ingested": result.objects_ingested,
        "quarantine_reasons": result.reasons,
        "schema_drift_fields": result.drift,
        "ignored_objects": result.ignored_keys,
    }


def _commit(conn, prepared: _Prepared, source_url: str, run_id: uuid.UUID) -> None:  # type: ignore[no-untyped-def]
    info = prepared.info
    conn.execute(
        "insert into audit.lake_objects (batch_id, source_url, source_key, etag, version, size,"
        " last_modified, lake_key, quarantine_key, lines, rows_accepted, rows_quarantined,"
        " drift, note, run_id, ingested_at)"
        " values (%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s,%s)",
        (
            prepared.batch_id,
            source_url,
            info.key,
            info.etag,
            prepared.version,
            info.size,
            info.last_modified,
            prepared.lake_key,
            prepared.quarantine_key,
            prepared.lines,
            prepared.accepted.num_rows,
            prepared.quarantine.num_rows,
            Jsonb(prepared.drift) if prepared.drift else None,
            prepared.note,
            run_id,
            prepared.ingested_at,
        ),
    )
    if prepared.quarantine.num_rows:
        copy_arrow(
            conn,
            "audit",
            "quarantine",
            QUARANTINE_SCHEMA.names,
            ["text", "text", "integer", "text", "text", "text"],
            prepared.quarantine,
        )


def _account(result: IngestResult, prepared: _Prepared) -> None:
    result.objects_ingested += 1
    result.lines += prepared.lines
    result.rows_accepted += prepared.accepted.num_rows
    result.rows_quarantined += prepared.quarantine.num_rows
    result.batches.append(prepared.batch_id)
    for reason in prepared.quarantine["reason"].to_pylist():
        result.reasons[reason] = result.reasons.get(reason, 0) + 1
    for name, count in prepared.drift.items():
        result.drift[name] = result.drift.get(name, 0) + count
