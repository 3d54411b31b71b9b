"""The run log's retention: the newest logs stay, this run's always among them."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

from strata.runlog import RunLog
from strata.settings import load_settings


def test_retention_keeps_the_newest_logs(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, home=tmp_path / ".strata", log_keep=2)
    settings.logs_dir.mkdir(parents=True)
    old = settings.logs_dir / "run-20190601T100000-00000000.jsonl"
    newer = settings.logs_dir / "run-20190601T110000-00000000.jsonl"
    for path in (old, newer):
        path.write_text("{}\n")
    with RunLog(settings, uuid.uuid4()) as log:
        log.event("step", rows=1)
    assert sorted(settings.logs_dir.iterdir()) == sorted([newer, log.path])
    events = [json.loads(line)["event"] for line in log.path.read_text().splitlines()]
    assert events == ["run.start", "step", "run.end"]


def test_retention_never_removes_this_runs_log(tmp_path: Path) -> None:
    settings = load_settings(_env_file=None, home=tmp_path / ".strata", log_keep=1)
    settings.logs_dir.mkdir(parents=True)
    log = RunLog(settings, uuid.uuid4())
    # another run's log from the same second, whose name sorts after this run's
    same_second = settings.logs_dir / f"{log.path.name[:19]}-ffffffff.jsonl"
    same_second.write_text("{}\n")
    with log:
        log.event("step", rows=1)
    assert list(settings.logs_dir.iterdir()) == [log.path]
