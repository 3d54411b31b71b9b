"""Source → lake → raw_db against the real servers: conservation, exactly-once, crashes, layouts."""

from __future__ import annotations

import hashlib
import io
import json
import re
import signal
import uuid
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from datalake_pipelines.L1_raw_layer.ingest import ensure_ledger, ingest
from datalake_pipelines.source_simulator import QUARANTINE_KINDS, SimulationConfig, simulate
from strata.audit import ABANDONED
from strata.db import connect
from strata.errors import ConfigError, StrataError
from strata.locks import RUN_LOCK_KEY
from strata.objectstore import open_store
from strata.pipeline import run, run_stage
from strata.runlog import RunLog
from strata.settings import Settings
from tests.support import isolated, make_settings, processes_mentioning, reset_databases, run_cli

# content columns only: ingested_at / loaded_at say when, not what
CONTENT = (
    'batch_id, source_key, line_number, event, "on", at, entity_id, organization_id,'
    " location_lat, location_lng, location_at, period_start, period_finish, extra"
)


@pytest.fixture()
def warehouse(services: Settings, request: pytest.FixtureRequest) -> Settings:
    """The shared servers with empty databases and a source/lake prefix of this test's own."""
    return isolated(services, request.node.name)


def _env(settings: Settings) -> dict[str, str]:
    return {"STRATA_SOURCE_URL": settings.source_url, "STRATA_LAKE_URL": settings.lake_url}


def _checksum(settings: Settings) -> tuple[int, str]:
    with connect(settings, "raw_db") as conn:
        rows = conn.execute(
            f"select {CONTENT} from raw.events order by batch_id, line_number"
        ).fetchall()
        quarantine = conn.execute(
            "select batch_id, line_number, reason, raw_line from audit.quarantine order by 1, 2"
        ).fetchall()
    digest = hashlib.sha256(repr((rows, quarantine)).encode()).hexdigest()
    return len(rows), digest


def _source_lines(settings: Settings) -> dict[str, int]:
    source = open_store(settings.source_url, settings)
    counts = {}
    for info in source.list():
        data = source.get(info.key)
        counts[info.key] = data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
    return counts


def test_every_source_line_is_in_raw_or_quarantine(warehouse: Settings, tmp_path: Path) -> None:
    result = simulate(
        SimulationConfig(organizations=2, vehicles=8, minutes=20, seed=11, defects=True),
        open_store(warehouse.source_url, warehouse),
        tmp_path,
    )
    summary = run(warehouse)
    assert summary.stages["lake"]["objects_ingested"] == result.files
    lines = _source_lines(warehouse)
    assert sum(lines.values()) == result.events
    with connect(warehouse, "raw_db") as conn:
        per_object = {
            key: (rows, quarantined)
            for key, rows, quarantined in conn.execute(
                "select o.source_key,"
                " (select count(*) from raw.events e where e.batch_id = o.batch_id),"
                " (select count(*) from audit.quarantine q where q.batch_id = o.batch_id)"
                " from audit.lake_objects o"
            )
        }
        reasons = dict(
            conn.execute("select reason, count(*) from audit.quarantine group by 1").fetchall()
        )
        with_extra = conn.execute(
            "select count(*) from raw.events where extra is not null"
        ).fetchone()[0]
        ledger = conn.execute(
            "select sum(lines), sum(rows_accepted), sum(rows_quarantined) from audit.lake_objects"
        ).fetchone()
    assert set(per_object) == set(lines)
    for key, count in lines.items():
        assert sum(per_object[key]) == count, key
    total_raw = sum(r for r, _ in per_object.values())
    total_quarantine = sum(q for _, q in per_object.values())
    assert total_raw + total_quarantine == result.events
    assert ledger == (result.events, total_raw, total_quarantine)
    # quarantine reasons match what the simulator injected, kind by kind; nothing else rejected
    manifest = json.loads(result.manifest_path.read_text())
    injected = Counter(e["kind"] for e in manifest["entries"])
    assert reasons == {kind: injected[kind] for kind in QUARANTINE_KINDS}
    assert with_extra == injected["extra_field"]
    assert summary.stages["lake"]["schema_drift_fields"]
    assert summary.stages["raw"]["rows_loaded"] == total_raw
    _lake_files_match_the_ledger(warehouse)
    _audit_and_profile_count_the_same(warehouse, summary.run_id, result.events, total_quarantine)


def _lake_files_match_the_ledger(settings: Settings) -> None:
    """Each batch's accepted rows and quarantined lines are parquet files in the lake, under
    the object's date partition, holding exactly what raw_db and audit.quarantine hold."""
    lake = open_store(settings.lake_url, settings)
    with connect(settings, "raw_db") as conn:
        ledger = conn.execute(
            "select batch_id, last_modified, lake_key, quarantine_key, rows_accepted,"
            " rows_quarantined from audit.lake_objects"
        ).fetchall()
        quarantined = {}
        for batch_id, line, reason, raw_line in conn.execute(
            "select batch_id, line_number, reason, raw_line from audit.quarantine"
        ):
            quarantined.setdefault(batch_id, set()).add((line, reason, raw_line))
    assert any(row[5] for row in ledger)
    for batch_id, modified, lake_key, quarantine_key, accepted, rejected in ledger:
        partition = f"ingest_date={modified.astimezone(UTC):%Y-%m-%d}"
        assert lake_key == (
            f"raw/door2door/events/{partition}/{batch_id}.parquet" if accepted else None
        )
        assert quarantine_key == (
            f"quarantine/door2door/events/{partition}/{batch_id}.parquet" if rejected else None
        )
        if accepted:
            rows = pq.read_metadata(io.BytesIO(lake.get(lake_key))).num_rows
            assert rows == accepted
        if rejected:
            table = pq.read_table(io.BytesIO(lake.get(quarantine_key)))
            assert set(table["batch_id"].to_pylist()) == {batch_id}
            columns = (table[c].to_pylist() for c in ("line_number", "reason", "raw_line"))
            lines = zip(*columns, strict=True)
            assert set(lines) == quarantined[batch_id]


def _audit_and_profile_count_the_same(
    settings: Settings, run_id: uuid.UUID, lines: int, rejected: int
) -> None:
    """audit.etl_runs and the profile metrics of both hops agree with raw_db's own counts."""
    with connect(settings, "raw_db") as conn:
        runs = {
            row[0]: row[1:]
            for row in conn.execute(
                "select layer, status, rows_in, rows_out, rows_rejected, load_type,"
                " previous_watermark, environment, code_version, error,"
                " ended_at >= started_at, data_min_at, data_max_at"
                " from audit.etl_runs where run_id = %s",
                (run_id,),
            )
        }
        metrics = {
            (layer, column, metric): value if text is None else text
            for layer, column, metric, value, text in conn.execute(
                "select layer, column_name, metric, value, value_text from audit.profile_metrics"
                " where run_id = %s",
                (run_id,),
            )
        }
        loaded, lat_nulls, first_at, last_at = conn.execute(
            "select count(*), count(*) - count(location_lat), min(at), max(at) from raw.events"
        ).fetchone()
    assert loaded + rejected == lines
    assert set(runs) == {"lake", "raw"}
    for layer, rows_in, rows_rejected, watermark in (
        ("lake", lines, rejected, None),
        ("raw", loaded, 0, "0 batches applied"),
    ):
        status, n_in, n_out, n_rejected, load_type, previous, env, version, error, *rest = runs[
            layer
        ]
        assert (status, n_in, n_out, n_rejected) == ("success", rows_in, loaded, rows_rejected)
        assert (load_type, previous, env, error) == ("incremental", watermark, "embedded", None)
        assert version and rest == [True, first_at, last_at]
        assert metrics[(layer, "*", "rows_in")] == rows_in
        assert metrics[(layer, "*", "rows_out")] == loaded
        assert metrics[(layer, "*", "rows_rejected")] == rows_rejected
        assert metrics[(layer, "location_lat", "null_count")] == lat_nulls > 0
        assert datetime.fromisoformat(metrics[(layer, "at", "min")]) == first_at
        assert datetime.fromisoformat(metrics[(layer, "at", "max")]) == last_at


def test_second_run_changes_nothing(warehouse: Settings, tmp_path: Path) -> None:
    simulate(
        SimulationConfig(vehicles=5, minutes=10, seed=3, defects=True),
        open_store(warehouse.source_url, warehouse),
        tmp_path,
    )
    run(warehouse)
    with connect(warehouse, "raw_db") as conn:
        before = conn.execute(
            "select md5(string_agg(e::text, '|' order by batch_id, line_number)) from raw.events e"
        ).fetchone()
    second = run(warehouse)
    assert second.stages["lake"]["objects_ingested"] == 0
    assert second.stages["raw"]["rows_loaded"] == 0
    with connect(warehouse, "raw_db") as conn:
        after = conn.execute(
            "select md5(string_agg(e::text, '|' order by batch_id, line_number)) from raw.events e"
        ).fetchone()
        audit = conn.execute(
            "select layer, rows_in, rows_out, status from audit.etl_runs where run_id = %s order by layer",
            (second.run_id,),
        ).fetchall()
    assert after == before  # including loaded_at: not one row rewritten
    assert audit == [("lake", 0, 0, "success"), ("raw", 0, 0, "success")]


@pytest.mark.parametrize(
    "fault",
    [
        "lake.after_put:1",
        "lake.after_put:4",
        "lake.after_commit:2",
        "raw.before_commit:1",
        "raw.after_commit:1",
    ],
)
def test_sigkill_then_rerun_equals_one_clean_run(
    warehouse: Settings, tmp_path: Path, fault: str
) -> None:
    simulate(
        SimulationConfig(vehicles=5, minutes=12, seed=5, defects=True),
        open_store(warehouse.source_url, warehouse),
        tmp_path,
    )
    killed = run_cli(
        "run", home=warehouse.home, env={**_env(warehouse), "STRATA_FAULT": fault}, check=False
    )
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    with connect(warehouse, "raw_db") as conn:
        left = conn.execute(
            "select layer, step from audit.etl_runs where status = 'running' order by 1"
        ).fetchall()
    assert left  # the killed process could not say how its step ended
    run_cli("run", home=warehouse.home, env=_env(warehouse))
    with connect(warehouse, "raw_db") as conn:  # the rerun did, before it began
        assert conn.execute(
            "select layer, step, error from audit.etl_runs where status = 'running'"
            " or error = %s order by 1",
            (ABANDONED,),
        ).fetchall() == [(layer, step, ABANDONED) for layer, step in left]
    crashed = _checksum(warehouse)
    # the same source in a clean installation state, one run
    reset_databases(warehouse)
    run_cli("run", home=warehouse.home, env=_env(warehouse))
    assert crashed == _checksum(warehouse)
    assert crashed[0] > 0


def test_nested_layout_from_a_local_folder(
    services: Settings, warehouse: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "landing"
    settings = make_settings(services.home, source_url=str(folder), lake_url=warehouse.lake_url)
    result = simulate(
        SimulationConfig(vehicles=4, minutes=8, seed=9, layout="nested"),
        open_store(str(folder), settings),
        tmp_path,
    )
    assert all(k.endswith(".txt") and k.count("/") == 5 for k in result.keys)
    summary = run(settings)
    assert summary.stages["lake"]["objects_ingested"] == result.files
    assert summary.stages["raw"]["rows_loaded"] == result.events
    with connect(settings, "raw_db") as conn:
        keys = {k for (k,) in conn.execute("select distinct source_key from raw.events")}
    assert keys == set(result.keys)


def test_replaced_object_is_a_new_version(warehouse: Settings, tmp_path: Path) -> None:
    source = open_store(warehouse.source_url, warehouse)
    result = simulate(SimulationConfig(vehicles=3, minutes=5, seed=2), source, tmp_path)
    run(warehouse)
    key = result.keys[0]
    original = source.get(key).splitlines(keepends=True)
    source.put(key, b"".join(original[:-2]))  # the producer re-delivers a shorter file
    second = run(warehouse)
    assert second.stages["lake"]["objects_ingested"] == 1
    with connect(warehouse, "raw_db") as conn:
        versions = conn.execute(
            "select o.version, count(e.*) from audit.lake_objects o"
            " join raw.events e using (batch_id) where o.source_key = %s group by 1 order by 1",
            (key,),
        ).fetchall()
    assert versions == [(1, len(original)), (2, len(original) - 2)]
    assert run(warehouse).stages["lake"]["objects_ingested"] == 0


def test_bad_objects_are_explained_not_fatal(
    services: Settings, warehouse: Settings, tmp_path: Path
) -> None:
    folder = tmp_path / "landing"
    settings = make_settings(services.home, source_url=str(folder), lake_url=warehouse.lake_url)
    line = (
        '{"event": "register", "on": "vehicle", "at": "2019-06-01T10:00:00.000Z",'
        ' "data": {"id": "v1"}, "organization_id": "org-1"}'
    )
    files = {
        "2019-06-01-10-00-0-events.json": b"",
        "2019-06-01-10-01-0-events.json": (line + "\n" + line[:30]).encode(),
        "2019-06-01-10-02-0-events.json": line.encode()
        + b"\n\xff\xfe broken\n\n"
        + line.encode()
        + b"\n",
        # a clean object but for one latin-1 byte inside a string: that line is quarantined
        "2019-06-01-10-03-0-events.json": (
            line + "\n" + line.replace('"v1"', '"v\u00e9"') + "\n"
        ).encode("latin-1"),
        # U+0000 in a string, a time beyond 9999 once in UTC, a number only text holds exactly
        "2019-06-01-10-04-0-events.json": (
            line
            + "\n"
            + line.replace('"v1"', '"v\\u0000"')
            + "\n"
            + line.replace("2019-06-01T10:00:00.000Z", "9999-12-31T23:30:00-01:00")
            + "\n"
            + line.replace('"org-1"', '"org-1", "order": 123456789012345678901234567890')
            + "\n"
        ).encode(),
        "README.txt": b"not an event file\n",
    }
    folder.mkdir()
    for name, data in files.items():
        (folder / name).write_bytes(data)
    summary = run(settings)
    assert summary.stages["lake"]["objects_ingested"] == 5
    assert summary.stages["lake"]["ignored_objects"] == 1
    with connect(settings, "raw_db") as conn:
        notes = dict(conn.execute("select source_key, note from audit.lake_objects").fetchall())
        reasons = conn.execute(
            "select source_key, line_number, reason from audit.quarantine order by 1, 2"
        ).fetchall()
        details = conn.execute(
            "select details from audit.etl_runs where run_id = %s and layer = 'lake'",
            (summary.run_id,),
        ).fetchone()[0]
    assert notes["2019-06-01-10-00-0-events.json"] == "empty object"
    assert "truncated" in notes["2019-06-01-10-01-0-events.json"]
    assert reasons == [
        ("2019-06-01-10-01-0-events.json", 2, "truncated_line"),
        ("2019-06-01-10-02-0-events.json", 2, "invalid_utf8"),
        ("2019-06-01-10-02-0-events.json", 3, "blank_line"),
        ("2019-06-01-10-03-0-events.json", 2, "invalid_utf8"),
        ("2019-06-01-10-04-0-events.json", 2, "nul_character"),
        ("2019-06-01-10-04-0-events.json", 3, "invalid_timestamp"),
    ]
    assert details["ignored_objects"] == ["README.txt"]
    assert summary.stages["raw"]["rows_loaded"] == 6
    with connect(settings, "staging_db") as conn:  # and on through staging
        extra = conn.execute(
            "select extra::text from prod.stg_events where extra is not null"
        ).fetchall()
    assert extra == [('{"order": 123456789012345678901234567890}',)]  # every digit


def test_metrics_lineage_sensitivity_and_logs(warehouse: Settings, tmp_path: Path) -> None:
    settings = make_settings(
        warehouse.home, source_url=warehouse.source_url, lake_url=warehouse.lake_url, log_keep=2
    )
    simulate(
        SimulationConfig(vehicles=4, minutes=6, seed=4),
        open_store(settings.source_url, settings),
        tmp_path,
    )
    summary = run(settings)
    with connect(settings, "raw_db") as conn:
        metrics = {
            (layer, column, metric): (value, text)
            for layer, column, metric, value, text in conn.execute(
                "select layer, column_name, metric, value, value_text from audit.profile_metrics where run_id = %s",
                (summary.run_id,),
            )
        }
        lake_key = conn.execute("select lake_key from audit.lake_objects limit 1").fetchone()[0]
        runs = conn.execute(
            "select layer, status, rows_in, data_min_at is not null, environment, code_version"
            " from audit.etl_runs where run_id = %s order by layer",
            (summary.run_id,),
        ).fetchall()
        lineage = conn.execute(
            "select count(*) from raw.events where batch_id is null or source_key is null"
            " or line_number is null or ingested_at is null or loaded_at is null"
        ).fetchone()[0]
    total = summary.stages["raw"]["rows_loaded"]
    for layer in ("lake", "raw"):
        assert metrics[(layer, "*", "rows_out")][0] == total
        assert metrics[(layer, "location_lat", "sensitive")][1] == "precise_geolocation"
        assert metrics[(layer, "entity_id", "distinct_count")][0] >= 4  # vehicles and periods
        assert metrics[(layer, "at", "min")][1].startswith("2019-06-01T08:0")
        assert (layer, "location_lat", "null_count") in metrics
    assert [r[:4] for r in runs] == [
        ("lake", "success", total, True),
        ("raw", "success", total, True),
    ]
    assert lineage == 0
    parquet = pq.read_table(io.BytesIO(open_store(settings.lake_url, settings).get(lake_key)))
    assert parquet.schema.field("location_lat").metadata[b"sensitivity"] == b"precise_geolocation"
    assert b"location_lat" in parquet.schema.metadata[b"strata.sensitive_columns"]
    log_lines = [json.loads(x) for x in Path(summary.log_path).read_text().splitlines()]
    assert {"run.start", "lake.object", "lake.profile", "raw.profile", "run.end"} <= {
        x["event"] for x in log_lines
    }
    run(settings)
    run(settings)
    assert len(list(settings.logs_dir.glob("run-*.jsonl"))) == 2


def test_a_second_run_waits_for_the_lock(warehouse: Settings) -> None:
    with connect(warehouse, "raw_db", autocommit=True) as holder:
        holder.execute("select pg_advisory_lock(%s)", (RUN_LOCK_KEY,))
        blocked = run_cli("run", home=warehouse.home, env=_env(warehouse), check=False)
    assert blocked.returncode == 1
    assert "run lock" in blocked.stderr and "Traceback" not in blocked.stderr


def test_distinct_entities_match_the_source(warehouse: Settings, tmp_path: Path) -> None:
    result = simulate(
        SimulationConfig(organizations=3, vehicles=6, minutes=8, seed=8),
        open_store(warehouse.source_url, warehouse),
        tmp_path,
    )
    summary = run(warehouse)
    ids, orgs = set(), set()
    source = open_store(warehouse.source_url, warehouse)
    for key in result.keys:
        for raw in source.get(key).splitlines():
            event = json.loads(raw)
            ids.add(event["data"]["id"])
            orgs.add(event["organization_id"])
    with connect(warehouse, "raw_db") as conn:
        metrics = dict(
            conn.execute(
                "select column_name, value from audit.profile_metrics"
                " where run_id = %s and layer = 'raw' and metric = 'distinct_count'",
                (summary.run_id,),
            ).fetchall()
        )
    assert metrics == {"entity_id": len(ids), "organization_id": len(orgs)}
    assert len(orgs) == 3


def test_unreachable_database_is_one_clear_line(tmp_path: Path) -> None:
    env = {
        "STRATA_PG_DSN": "postgresql://nobody@127.0.0.1:9/postgres",
        "STRATA_SOURCE_URL": str(tmp_path),
    }
    failed = run_cli("run", home=tmp_path / ".strata", env=env, check=False)
    assert failed.returncode == 1
    assert "cannot connect to raw_db" in failed.stderr and "Traceback" not in failed.stderr


@pytest.mark.parametrize("where", ["folder", "bucket"])
def test_a_missing_source_location_is_one_clear_line(
    warehouse: Settings, tmp_path: Path, where: str
) -> None:
    # an empty location is fine (nothing new); a missing one is a typo, not "nothing new"
    source = str(tmp_path / "no-such-folder") if where == "folder" else "s3://no-such-bucket/x"
    env = {**_env(warehouse), "STRATA_SOURCE_URL": source}
    failed = run_cli("run", home=warehouse.home, env=env, check=False)
    assert failed.returncode == 1
    assert f"the source location {source} does not exist" in failed.stderr
    assert "Traceback" not in failed.stderr
    (tmp_path / "empty").mkdir()
    empty = run_cli(
        "run", home=warehouse.home, env={**env, "STRATA_SOURCE_URL": str(tmp_path / "empty")}
    )
    assert empty.returncode == 0


def test_load_seq_marks_what_each_run_added(warehouse: Settings, tmp_path: Path) -> None:
    source = open_store(warehouse.source_url, warehouse)
    result = simulate(SimulationConfig(vehicles=3, minutes=6, seed=12), source, tmp_path)
    late = result.keys[-1]
    late_bytes = source.get(late)
    source.delete(late)  # this object arrives after the first run
    run(warehouse)
    with connect(warehouse, "raw_db") as conn:
        (first_max,) = conn.execute("select max(load_seq) from raw.events").fetchone()
    source.put(late, late_bytes)
    second = run(warehouse)
    with connect(warehouse, "raw_db") as conn:
        new_rows = conn.execute(
            "select distinct source_key from raw.events where load_seq > %s", (first_max,)
        ).fetchall()
        mismatched = conn.execute(
            "select count(*) from raw.events e join audit.batches b"
            " on b.layer = 'raw' and b.batch_id = e.batch_id where b.load_seq <> e.load_seq"
        ).fetchone()[0]
    assert new_rows == [(late,)]
    assert second.stages["raw"]["rows_loaded"] == late_bytes.count(b"\n")
    assert mismatched == 0


def test_status_reports_batches_per_layer(warehouse: Settings, tmp_path: Path) -> None:
    result = simulate(
        SimulationConfig(vehicles=3, minutes=4, seed=21, defects=True),
        open_store(warehouse.source_url, warehouse),
        tmp_path,
    )
    summary = run(warehouse)
    layers = json.loads(run_cli("status", "--json", home=warehouse.home).stdout)["layers"]
    lake = summary.stages["lake"]
    assert list(layers)[:2] == ["lake", "raw"]
    assert layers["lake"]["batches"] == result.files
    assert layers["lake"]["rows"] == lake["rows_accepted"]
    assert layers["lake"]["quarantined"] == lake["rows_quarantined"]
    assert layers["raw"] == {
        "database": "raw_db",
        "batches": result.files,
        "rows": lake["rows_accepted"],
    }


def test_a_killed_run_leaves_no_parser_process(warehouse: Settings, tmp_path: Path) -> None:
    # defects make every object go to the reference parser's worker processes
    simulate(
        SimulationConfig(vehicles=5, minutes=12, seed=6, defects=True),
        open_store(warehouse.source_url, warehouse),
        tmp_path,
    )
    killed = run_cli(
        "run",
        home=warehouse.home,
        env={**_env(warehouse), "STRATA_FAULT": "lake.after_commit:3"},
        check=False,
    )
    assert killed.returncode == -signal.SIGKILL
    assert processes_mentioning("multiprocessing.spawn") == []


def test_an_unreadable_lake_file_fails_the_load_by_name_then_loads_once_restored(
    warehouse: Settings, tmp_path: Path
) -> None:
    simulate(
        SimulationConfig(vehicles=2, minutes=3, seed=5),
        open_store(warehouse.source_url, warehouse),
        tmp_path,
    )
    lake_run = run_stage(warehouse, "lake")
    with connect(warehouse, "raw_db") as conn:
        lake_key, expected = conn.execute(
            "select lake_key, rows_accepted from audit.lake_objects order by source_key limit 1"
        ).fetchone()
        ingested = conn.execute("select sum(rows_accepted) from audit.lake_objects").fetchone()[0]
    lake = open_store(warehouse.lake_url, warehouse)
    original = lake.get(lake_key)
    lake.put(lake_key, b"not parquet")
    with pytest.raises(StrataError, match=re.escape(lake_key)):
        run_stage(warehouse, "raw")
    with connect(warehouse, "raw_db") as conn:
        status, error = conn.execute(
            "select status, error from audit.etl_runs where layer = 'raw'"
        ).fetchone()
        loaded = conn.execute("select count(*) from raw.events").fetchone()[0]
    assert status == "failed" and lake_key in error
    assert loaded < ingested  # the group holding the bad file committed nothing
    lake.put(lake_key, original)
    raw_run = run_stage(warehouse, "raw")
    with connect(warehouse, "raw_db") as conn:
        per_batch = conn.execute(
            "select count(*) from raw.events e join audit.lake_objects o using (batch_id)"
            " where o.lake_key = %s",
            (lake_key,),
        ).fetchone()[0]
        loaded = conn.execute("select count(*) from raw.events").fetchone()[0]
    assert per_batch == expected and loaded == ingested
    assert raw_run["rows_loaded"] == ingested and lake_run["objects_ingested"] > 1


def test_raw_table_unlike_its_declaration_stops_the_run_untouched(
    warehouse: Settings, tmp_path: Path
) -> None:
    source = open_store(warehouse.source_url, warehouse)
    result = simulate(SimulationConfig(vehicles=2, minutes=4, seed=14), source, tmp_path)
    late = result.keys[-1]
    late_bytes = source.get(late)
    source.delete(late)
    run(warehouse)
    before = _checksum(warehouse)
    with connect(warehouse, "raw_db") as conn:  # the table as an older declaration made it
        conn.execute("alter table raw.events add column note text")
        conn.execute("alter table raw.events alter column line_number type bigint")
    source.put(late, late_bytes)
    with pytest.raises(
        ConfigError,
        match=r"raw_db\.raw\.events no longer matches its declaration .*events/table\.yaml:"
        r" column line_number is declared integer but is bigint;"
        r" column note is no longer declared\. It was not changed",
    ):
        run(warehouse)
    assert _checksum(warehouse) == before
    with connect(warehouse, "raw_db") as conn:
        conn.execute("alter table raw.events drop column note")
        conn.execute("alter table raw.events alter column line_number type integer")
    assert run(warehouse).stages["raw"]["rows_loaded"] == late_bytes.count(b"\n")


def test_a_full_refresh_gives_up_on_a_reader_that_keeps_its_transaction_open(
    warehouse: Settings, tmp_path: Path
) -> None:
    source = open_store(warehouse.source_url, warehouse)
    simulate(SimulationConfig(vehicles=2, minutes=3, seed=15), source, tmp_path)
    run(warehouse, until="raw")
    before = _checksum(warehouse)
    impatient = warehouse.model_copy(update={"lock_timeout_s": 0.5})
    with connect(warehouse, "raw_db") as reader:  # e.g. an engineer's client, left open
        reader.execute("select count(*) from raw.events").fetchone()
        (pid,) = reader.execute("select pg_backend_pid()").fetchone()
        with pytest.raises(
            StrataError,
            match=rf"raw: the full refresh waited 0\.5 s \(STRATA_LOCK_TIMEOUT_S\) for other"
            rf" sessions to let go of raw_db\.raw; nothing was published\. Holding locks there"
            rf" now: pid {pid} \(",
        ):
            run(impatient, full_refresh=True, until="raw")
        assert _checksum(warehouse) == before
    run(impatient, full_refresh=True, until="raw")  # the reader has gone: it proceeds
    assert _checksum(warehouse) == before


def test_a_lake_step_that_fails_later_records_the_objects_it_committed(
    warehouse: Settings, tmp_path: Path
) -> None:
    """Each object commits on its own: when the step fails after some have, its audit row
    and run log still say what went in (the next run does not ingest them again)."""
    objects = simulate(
        SimulationConfig(vehicles=2, minutes=3, seed=16),
        open_store(warehouse.source_url, warehouse),
        tmp_path,
    ).keys
    handed: list[str] = []

    def stop_at_the_second(batch_id: str, source_key: str, table: object) -> None:
        handed.append(batch_id)
        if len(handed) == 2:
            raise RuntimeError("the next hop is gone")

    run_id = uuid.uuid4()
    ensure_ledger(warehouse)
    with RunLog(warehouse, run_id) as log, pytest.raises(RuntimeError, match="next hop is gone"):
        ingest(warehouse, run_id, log, on_commit=stop_at_the_second)
    with connect(warehouse, "raw_db") as conn:
        status, rows_out, details = conn.execute(
            "select status, rows_out, details from audit.etl_runs where run_id = %s",
            (run_id,),
        ).fetchone()
        committed = conn.execute(
            "select sum(rows_accepted) from audit.lake_objects where batch_id = any(%s)",
            (handed,),
        ).fetchone()[0]
    assert status == "failed"
    assert details["objects_ingested"] == 2 and rows_out == committed > 0
    events = [json.loads(line) for line in log.path.read_text().splitlines()]
    assert [e["batch_id"] for e in events if e["event"] == "lake.object"] == handed
    # the next run ingests the others, once
    assert run_stage(warehouse, "lake")["objects_ingested"] == len(objects) - 2 > 0
