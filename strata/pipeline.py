"""``strata run``: every stage in order, the same functions the Airflow tasks call."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from strata.locks import run_lock
from strata.runlog import RunLog
from strata.settings import Settings

Progress = Callable[[str, int, int], None]


@dataclass
class RunSummary:
    run_id: uuid.UUID
    log_path: str
    stages: dict[str, dict[str, Any]] = field(default_factory=dict)


def run(
    settings: Settings, *, full_refresh: bool = False, progress: Progress | None = None
) -> RunSummary:
    from datalake_pipelines.L1_raw_layer.ingest import ingest
    from dwh_pipelines.L1_raw_layer.load import load

    run_id = uuid.uuid4()
    with run_lock(settings), RunLog(settings, run_id) as log:
        summary = RunSummary(run_id, str(log.path))

        def stage_progress(name: str) -> Callable[[int, int], None] | None:
            return (lambda done, total: progress(name, done, total)) if progress else None

        started = time.monotonic()
        lake = ingest(settings, run_id, log, progress=stage_progress("lake"))
        summary.stages["lake"] = {
            "objects_ingested": lake.objects_ingested,
            "objects_seen": lake.objects_seen,
            "lines": lake.lines,
            "rows_accepted": lake.rows_accepted,
            "rows_quarantined": lake.rows_quarantined,
            "quarantine_reasons": lake.reasons,
            "schema_drift_fields": lake.drift,
            "ignored_objects": len(lake.ignored_keys),
            "seconds": round(time.monotonic() - started, 2),
        }
        started = time.monotonic()
        raw = load(settings, run_id, log, full_refresh=full_refresh, progress=stage_progress("raw"))
        summary.stages["raw"] = {
            "batches_loaded": raw.batches_loaded,
            "rows_loaded": raw.rows_loaded,
            "seconds": round(time.monotonic() - started, 2),
        }
    return summary
