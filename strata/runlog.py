"""A structured (JSON lines) log file per run under ``$STRATA_HOME/logs``, with retention."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

from strata.settings import Settings


class RunLog:
    """``log.event("lake.object", key=…, rows=…)`` appends one JSON object per line."""

    def __init__(self, settings: Settings, run_id: uuid.UUID) -> None:
        self.directory = settings.logs_dir
        self.keep = settings.log_keep
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        self.path = self.directory / f"run-{stamp}-{str(run_id)[:8]}.jsonl"
        self.run_id = run_id
        self._handle: TextIO | None = None

    def __enter__(self) -> RunLog:
        self.directory.mkdir(parents=True, exist_ok=True)
        self._handle = self.path.open("a", encoding="utf-8")
        self.event("run.start")
        self._prune()
        return self

    def __exit__(self, exc_type, exc, tb) -> None:  # type: ignore[no-untyped-def]
        if exc is not None:
            self.event("run.failed", error=f"{type(exc).__name__}: {exc}")
        else:
            self.event("run.end")
        assert self._handle is not None
        self._handle.close()

    def event(self, kind: str, **fields: Any) -> None:
        record = {"ts": datetime.now(UTC).isoformat(), "run_id": str(self.run_id), "event": kind}
        record.update(fields)
        assert self._handle is not None
        self._handle.write(json.dumps(record, default=str) + "\n")
        self._handle.flush()

    def _prune(self) -> None:
        """Keep the newest ``keep`` logs (names order by start time), this run's always among
        them, even beside another run started in the same second."""
        others = sorted(p for p in self.directory.glob("run-*.jsonl") if p != self.path)
        for old in others[: max(0, len(others) - (self.keep - 1))]:
            old.unlink(missing_ok=True)


def latest_logs(directory: Path) -> list[Path]:
    return sorted(directory.glob("run-*.jsonl"))
