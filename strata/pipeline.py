"""``strata run``: every stage in order, the same functions the Airflow tasks call.

The lake ingest and the raw load are separate hops with separate ledgers and transactions.
Within one run they overlap: each batch the ingest commits is handed over, rows still in
memory, to the raw load running beside it (a bounded queue, so memory stays bounded and a
slow load slows the ingest down). Batches the load did not receive this way — left by an
earlier interrupted run, say — are read back from the lake afterwards.
"""

from __future__ import annotations

import queue
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from strata.errors import StrataError
from strata.locks import run_lock
from strata.runlog import RunLog
from strata.settings import Settings

Progress = Callable[[str, int, int], None]
HANDOFF_BATCHES = 16  # batches waiting between the two hops at most
_DONE = object()


@dataclass
class RunSummary:
    run_id: uuid.UUID
    log_path: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


class _Handoff:
    """The bounded queue between the ingest (producer thread) and the load (consumer)."""

    def __init__(self) -> None:
        self.items: queue.Queue[object] = queue.Queue(maxsize=HANDOFF_BATCHES)
        self.consumer_gone = threading.Event()

    def put(self, batch_id: str, source_key: str, table: object) -> None:
        while not self.consumer_gone.is_set():
            try:
                self.items.put((batch_id, source_key, table), timeout=0.5)
                return
            except queue.Full:
                continue
        # the load failed: stop the ingest too (what it committed is loaded by the next run)
        raise StrataError("the raw load stopped, so the lake ingest stops too")

    def close(self) -> None:
        self.items.put(_DONE)

    def __iter__(self) -> Iterator[Any]:
        while (item := self.items.get()) is not _DONE:
            yield item


def run(
    settings: Settings,
    *,
    full_refresh: bool = False,
    reprocess: tuple[str, ...] = (),
    until: str | None = None,
    progress: Progress | None = None,
) -> RunSummary:
    """Every stage in order; ``until="raw"`` stops after the raw load (the lake/raw bench)."""
    from datalake_pipelines.L1_raw_layer.ingest import ensure_ledger, ingest
    from dwh_pipelines.L1_raw_layer.load import load
    from dwh_pipelines.warehouse import check_reprocess, layers

    run_id = uuid.uuid4()
    with run_lock(settings), RunLog(settings, run_id) as log:
        summary = RunSummary(run_id, str(log.path))
        ensure_ledger(settings)
        if reprocess:  # a mistyped or rejected id stops the run before anything changes
            check_reprocess(settings, reprocess)

        def stage_progress(name: str) -> Callable[[int, int], None] | None:
            return (lambda done, total: progress(name, done, total)) if progress else None

        # (the ledger's DDL above: the two hops run side by side below, and concurrent
        # CREATE … IF NOT EXISTS of the same table can collide in the catalog)
        handoff = _Handoff()
        outcome: dict[str, Any] = {}
        started = time.monotonic()

        def produce() -> None:
            try:
                outcome["lake"] = ingest(
                    settings,
                    run_id,
                    log,
                    progress=stage_progress("lake"),
                    on_commit=handoff.put,
                )
            except BaseException as exc:  # noqa: BLE001 - re-raised in the main thread below
                outcome["error"] = exc
            finally:
                outcome["lake_seconds"] = round(time.monotonic() - started, 2)
                handoff.close()

        producer = threading.Thread(target=produce, name="lake-ingest", daemon=True)
        producer.start()
        try:
            raw = load(
                settings,
                run_id,
                log,
                full_refresh=full_refresh,
                progress=stage_progress("raw"),
                incoming=handoff,
            )
        finally:
            handoff.consumer_gone.set()
            producer.join()
        if "error" in outcome:
            raise outcome["error"]
        summary.stages["lake"] = _lake_summary(outcome["lake"], outcome["lake_seconds"])
        summary.stages["raw"] = _raw_summary(raw, time.monotonic() - started)
        if until == "raw":
            return summary
        for layer in layers():
            if progress:
                progress(layer.name, 0, 1)
            summary.stages[layer.name] = _layer_stage(
                settings, layer.name, run_id, log, full_refresh, reprocess
            )
            if progress:
                progress(layer.name, 1, 1)
        summary.stages["presentation"] = _presentation_stage(settings, log)
    return summary


STAGES = ("lake", "raw", "staging", "semantic", "dwh", "presentation", "reports", "governance")
"""What main_dag runs, in order. ``strata run`` runs the first six (the data path); the
reports (``strata report``) and ``strata governance apply`` are separate commands there."""


def run_stage(
    settings: Settings,
    stage: str,
    *,
    run_id: uuid.UUID | None = None,
    full_refresh: bool = False,
    reprocess: tuple[str, ...] = (),
) -> dict[str, Any]:
    """One stage alone, under the run lock and with its own run log: what each Airflow task
    calls. Returns a small JSON-able summary (counts and batch ids, never rows)."""
    from datalake_pipelines.L1_raw_layer.ingest import ensure_ledger, ingest
    from dwh_pipelines.L1_raw_layer.load import load

    if stage not in STAGES:
        raise StrataError(f"unknown stage {stage!r}; expected one of {', '.join(STAGES)}")
    run_id = run_id or uuid.uuid4()
    if stage == "governance":  # apply takes the run lock itself
        import governance

        with RunLog(settings, run_id) as log:
            began = time.monotonic()
            report = governance.apply(settings)
            found = {
                "changes_applied": report.applied,
                "seconds": round(time.monotonic() - began, 2),
                "run_id": str(run_id),
                "log": str(log.path),
            }
            log.event("governance.apply", **found)
        return found
    with run_lock(settings), RunLog(settings, run_id) as log:
        began = time.monotonic()
        if reprocess:  # every stage of a DAG run is given them: the first one stops it
            from dwh_pipelines.warehouse import check_reprocess

            ensure_ledger(settings)
            check_reprocess(settings, reprocess)
        if stage == "lake":
            ensure_ledger(settings)
            result = ingest(settings, run_id, log)
            found = _lake_summary(result, time.monotonic() - began)
            found["batch_ids"] = result.batches
        elif stage == "raw":
            loaded = load(settings, run_id, log, full_refresh=full_refresh)
            found = _raw_summary(loaded, time.monotonic() - began)
            found["batch_ids"] = loaded.batches
        elif stage == "presentation":
            found = _presentation_stage(settings, log)
        elif stage == "reports":
            from reporting import render_reports

            pages = render_reports(settings)
            found = {
                "pages": [str(p) for p in pages],
                "seconds": round(time.monotonic() - began, 2),
            }
            log.event("reports", pages=found["pages"])
        else:
            found = _layer_stage(settings, stage, run_id, log, full_refresh, reprocess)
        found["run_id"] = str(run_id)
        found["log"] = str(log.path)
    return found


def _lake_summary(lake: Any, seconds: float) -> dict[str, Any]:
    return {
        "objects_ingested": lake.objects_ingested,
        "objects_seen": lake.objects_seen,
        "lines": lake.lines,
        "rows_accepted": lake.rows_accepted,
        "rows_quarantined": lake.rows_quarantined,
        "quarantine_reasons": lake.reasons,
        "schema_drift_fields": lake.drift,
        "ignored_objects": len(lake.ignored_keys),
        "seconds": round(seconds, 2),
    }


def _raw_summary(raw: Any, seconds: float) -> dict[str, Any]:
    return {
        "batches_loaded": raw.batches_loaded,
        "rows_loaded": raw.rows_loaded,
        "seconds": round(seconds, 2),
    }


def _layer_stage(
    settings: Settings,
    name: str,
    run_id: uuid.UUID,
    log: RunLog,
    full_refresh: bool,
    reprocess: tuple[str, ...],
) -> dict[str, Any]:
    from dwh_pipelines.warehouse import layer_named, run_layer

    began = time.monotonic()
    result = run_layer(
        settings, layer_named(name), run_id, log, full_refresh=full_refresh, reprocess=reprocess
    )
    return {
        "batches": result.batches,
        "rows_in": result.rows_in,
        "rows_out": result.rows_out,
        "removed": result.details.get("removed", {}),
        "rebuilt": result.details.get("rebuilt", []),
        "full_refresh": result.full_refresh,
        "checks": len(result.checks),
        "warnings": [f"{c.table}.{c.name}" for c in result.checks if c.status == "warn"],
        "seconds": round(time.monotonic() - began, 2),
        "step_seconds": result.details.get("seconds", {}),
    }


def _presentation_stage(settings: Settings, log: RunLog) -> dict[str, Any]:
    from dwh_pipelines.warehouse import apply_presentation

    found = {"views": apply_presentation(settings, log), "answer": answer(settings)}
    log.event("answer", **found["answer"])
    return found


def answer(settings: Settings) -> dict[str, Any]:
    """The BI answer as published: the mean of the per-period averages, and pooled."""
    from strata.db import connect

    with connect(settings, "dwh_db") as conn:
        periods, mean_of_periods, pooled, vehicle_periods = conn.execute(
            "select count(*), avg(avg_distance_km order by operating_period_id),"
            " sum(total_distance_km order by operating_period_id) / nullif(sum(vehicles), 0),"
            " coalesce(sum(vehicles), 0)"
            " from reporting.avg_distance_per_operating_period"
        ).fetchone()
    return {
        "periods": periods,
        "vehicle_periods": int(vehicle_periods),
        "avg_distance_km_mean_of_periods": mean_of_periods,
        "avg_distance_km_pooled": pooled,
    }
