"""Staging → semantic → dwh against the real servers: the answer, order, gate, crashes, increments.

The answer is compared with ``oracle.py``, a plain-Python computation from the source lines
that shares no code with the project. Content checksums cover every prod table and leave out
only bookkeeping that says *when* rather than *what* (``_seq``, ``ingested_at``).
"""

from __future__ import annotations

import json
import random
import shutil
import signal
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

import psycopg
import pytest
from psycopg import sql

import governance
from dwh_pipelines.warehouse import (
    GateFailed,
    Layer,
    _load_layer,
    apply_presentation,
    ensure_layer,
    layer_named,
    reject_batch,
    run_layer,
)
from strata.db import connect
from strata.errors import ConfigError, StrataError
from strata.pipeline import run, run_stage
from strata.runlog import RunLog
from strata.settings import Settings
from strata.tables import column_differences, declared_columns, table_columns
from tests.dwh_pipelines.fleets import (
    LAYER_DBS,
    assert_answer_is,
    checksums,
    loaded,
    published_answer,
    simulate_fleet,
    source_lines,
    warehouse_settings,
)
from tests.dwh_pipelines.oracle import (
    average_distance_per_period,
    distinct_valid_events,
    pairs_touched,
)
from tests.support import reset_databases, run_cli


@pytest.fixture()
def empty(services: Settings) -> Settings:
    reset_databases(services)
    return services


def _last_run_rows(settings: Settings, run_id: uuid.UUID) -> dict[str, tuple[int, dict]]:
    found = {}
    for db in LAYER_DBS:
        with connect(settings, db) as conn:
            for layer, rows_in, details in conn.execute(
                "select layer, rows_in, details from audit.etl_runs where run_id = %s", (run_id,)
            ):
                found[layer] = (rows_in, details)
    return found


FLEETS = {
    "two-orgs-defects": dict(organizations=2, vehicles=12, minutes=75, seed=3, defects=True),
    "three-orgs-defects": dict(organizations=3, vehicles=20, minutes=50, seed=11, defects=True),
    "one-org-clean-long": dict(organizations=1, vehicles=8, minutes=130, seed=33, defects=False),
}


@pytest.mark.parametrize("fleet", sorted(FLEETS))
def test_answer_equals_an_independent_computation(
    empty: Settings, tmp_path: Path, fleet: str
) -> None:
    source = tmp_path / "source"
    manifests = simulate_fleet(source, **FLEETS[fleet])
    settings = warehouse_settings(empty, source)
    run(settings)
    lines = source_lines(source)
    expected = average_distance_per_period(lines)
    assert expected, "the fleet has no live operating period with updates"
    assert_answer_is(settings, expected)
    got = published_answer(settings)
    # the fleet really exercised what the definition talks about
    text = b"\n".join(lines)
    assert b'"break_start"' in text and b'"delete"' in text
    if FLEETS[fleet]["defects"]:
        manifest = json.loads(next(manifests.glob("*.json")).read_text())
        kinds = {kind for kind, count in manifest["counts"].items() if count}
        assert {"duplicate_event", "late_event", "late_file"} <= kinds
    # staging keeps each distinct event once and accounts for every other raw row as removed
    with connect(settings, "raw_db") as conn:
        (raw_rows,) = conn.execute("select count(*) from raw.events").fetchone()
    with connect(settings, "staging_db") as conn:
        (kept,) = conn.execute("select count(*) from prod.stg_events").fetchone()
        (removed,) = conn.execute(
            "select sum(rows_rejected) from audit.etl_runs"
            " where layer = 'staging' and status = 'success'"
        ).fetchone()
        checks = dict(
            conn.execute("select check_name, status from audit.dq_results where layer = 'staging'")
        )
    assert kept == distinct_valid_events(lines)
    assert kept + removed == raw_rows
    assert (removed > 0) == FLEETS[fleet]["defects"]
    assert checks["removed_only_duplicates"] == checks["reconcile_rows"] == "pass"
    # deleted periods are left out of the answer, not lost
    with connect(settings, "dwh_db") as conn:
        (deleted,) = conn.execute(
            "select count(*) from prod.dim_operating_period where is_deleted"
        ).fetchone()
    assert deleted > 0 and not set(got) & _deleted_ids(settings)


def _event(kind: str, on: str, at: str, entity: str, org: str, **data: object) -> bytes:
    """One source line, written by hand."""
    body = {"event": kind, "on": on, "at": f"2019-06-01T{at}Z", "organization_id": org}
    return json.dumps({**body, "data": {"id": entity, **data}}).encode()


def _track(vehicle: str, org: str, minutes: range) -> list[bytes]:
    """One update a minute from 10:01, moving north-east."""
    return [
        _event(
            "update", "vehicle", f"10:{m:02d}:00.000", vehicle, org,
            location={"lat": 52.5 + m / 1000, "lng": 13.4 + m / 1000, "at": f"2019-06-01T10:{m:02d}:00.000Z"},
        )  # fmt: skip
        for m in minutes
    ]


def _period(kind: str, at: str, period: str, org: str) -> bytes:
    return _event(
        kind, "operating_period", at, period, org,
        start="2019-06-01T10:00:00.000Z", finish="2019-06-01T10:30:00.000Z",
    )  # fmt: skip


def test_the_answer_on_edge_cases_the_simulator_does_not_make(
    empty: Settings, tmp_path: Path
) -> None:
    """Breaks started twice, a period created again after its delete, a vehicle deregistered
    before it registered, and a break start that arrives late inside a closed break: the
    published answer equals the independent computation, run by run."""
    source = tmp_path / "source"
    source.mkdir()
    first = [
        # a second break_start before the break_end (a retry): one break, 10:02-10:06
        _period("create", "09:00:00.000", "op_a", "org_a"),
        _event("break_start", "vehicle", "10:02:00.000", "v_a", "org_a"),
        _event("break_start", "vehicle", "10:04:00.000", "v_a", "org_a"),
        _event("break_end", "vehicle", "10:06:00.000", "v_a", "org_a"),
        *_track("v_a", "org_a", range(1, 13)),
        # created, deleted, created again: live
        _period("create", "09:00:00.000", "op_b", "org_b"),
        _period("delete", "09:10:00.000", "op_b", "org_b"),
        _period("create", "09:20:00.000", "op_b", "org_b"),
        *_track("v_b", "org_b", range(1, 5)),
        # deregistered before it registered: registered, and no gate fails
        _period("create", "09:00:00.000", "op_c", "org_c"),
        _event("deregister", "vehicle", "09:00:00.000", "v_c", "org_c"),
        _event("register", "vehicle", "09:30:00.000", "v_c", "org_c"),
        *_track("v_c", "org_c", range(1, 4)),
        # a closed break, 10:02:30-10:04:30; its late retry comes in the second file
        _period("create", "09:00:00.000", "op_d", "org_d"),
        _event("break_start", "vehicle", "10:02:30.000", "v_d", "org_d"),
        _event("break_end", "vehicle", "10:04:30.000", "v_d", "org_d"),
        *_track("v_d", "org_d", range(1, 11)),
    ]
    (source / "2019-06-01-10-00-0-events.json").write_bytes(b"\n".join(first) + b"\n")
    settings = warehouse_settings(empty, source)
    run(settings)
    assert_answer_is(settings, average_distance_per_period(source_lines(source)))
    late = _event("break_start", "vehicle", "10:03:30.000", "v_d", "org_d")
    (source / "2019-06-01-09-00-0-events.json").write_bytes(late + b"\n")
    run(settings)
    expected = average_distance_per_period(source_lines(source))
    assert_answer_is(settings, expected)
    # what the rules give here, beyond agreeing with each other
    assert set(expected) == {"op_a", "op_b", "op_c", "op_d"}
    assert all(avg > 0 for _, avg in expected.values())
    with connect(settings, "semantic_db") as conn:
        assert conn.execute(
            "select lifecycle_status, deregistered_at from prod.mdm_vehicles"
            " where vehicle_id = 'v_c'"
        ).fetchone() == ("registered", None)
        assert conn.execute(
            "select break_start_at::time::text, break_end_at::time::text"
            " from prod.mdm_vehicle_breaks order by vehicle_id, break_start_at"
        ).fetchall() == [("10:02:00", "10:06:00"), ("10:02:30", "10:04:30")]


def _deleted_ids(settings: Settings) -> set[str]:
    with connect(settings, "dwh_db") as conn:
        return {
            r[0]
            for r in conn.execute(
                "select operating_period_id from prod.dim_operating_period where is_deleted"
            )
        }


def test_same_files_in_any_order_and_split_give_the_same_warehouse(
    empty: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    settings = loaded(empty, source, organizations=2, vehicles=10, minutes=60, seed=8, defects=True)
    one_run = checksums(settings)
    answer = published_answer(settings)

    # the same location (batch ids name it), emptied, then filled in three shuffled parts
    reset_databases(empty)
    kept = tmp_path / "kept"
    source.rename(kept)
    source.mkdir()
    files = sorted(p for p in kept.rglob("*") if p.is_file())
    random.Random(4).shuffle(files)
    settings = warehouse_settings(empty, source)
    for part in (files[i::3] for i in range(3)):
        for f in part:
            target = source / f.relative_to(kept)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        run(settings)
    assert checksums(settings) == one_run
    assert published_answer(settings) == answer
    assert all(rows > 0 for rows, _ in one_run.values())


def test_a_failing_check_blocks_publishing_and_a_later_good_run_proceeds(
    empty: Settings, tmp_path: Path
) -> None:
    source = tmp_path / "source"
    settings = loaded(empty, source, organizations=2, vehicles=6, minutes=30, seed=5)
    before = checksums(settings)
    # an operating period that finishes before it starts passes the lake's contract checks
    # (its fields are well-formed) but breaks a staging fail-check
    bad = {
        "event": "create",
        "on": "operating_period",
        "at": "2019-06-01T08:40:00.000Z",
        "data": {
            "id": "op_bad",
            "start": "2019-06-01T09:00:00.000Z",
            "finish": "2019-06-01T08:00:00.000Z",
        },
        "organization_id": "org-bad",
    }
    (source / "2019-06-01-08-40-0-events.json").write_text(json.dumps(bad) + "\n")
    failed = run_cli(
        "run",
        home=settings.home,
        env={"STRATA_SOURCE_URL": settings.source_url, "STRATA_LAKE_URL": settings.lake_url},
        check=False,
    )
    assert failed.returncode == 1
    message = " ".join(failed.stderr.split())
    assert "check stg_events.operating_period_has_window found 1 offending rows" in message
    assert "nothing was published" in message
    assert checksums(settings) == before
    with connect(settings, "staging_db") as conn:
        status, offending = conn.execute(
            "select status, offending_rows from audit.dq_results"
            " where check_name = 'operating_period_has_window' order by checked_at desc limit 1"
        ).fetchone()
    assert (status, offending) == ("fail", 1)
    with pytest.raises(GateFailed):
        run(settings)  # still pending: still refused
    assert checksums(settings) == before

    # set the bad batch aside; new good data then flows again
    with connect(settings, "raw_db") as conn:
        (batch,) = conn.execute(
            "select batch_id from audit.lake_objects where source_key like %s",
            ("%08-40-0-events.json",),
        ).fetchone()
    run_cli(
        "reject-batch",
        batch,
        "--reason",
        "finish before start",
        home=settings.home,
        env={"STRATA_SOURCE_URL": settings.source_url, "STRATA_LAKE_URL": settings.lake_url},
    )
    assert run(settings).stages["staging"]["batches"] == 0  # nothing new to check
    status = " ".join(run_cli("status", home=settings.home).stdout.split())
    assert "stg_events.operating_period_has_window (1) (the layer has run without failing" in status
    simulate_fleet(
        tmp_path / "more", vehicles=3, minutes=5, seed=6, start=datetime(2019, 6, 1, 9, tzinfo=UTC)
    )
    for f in (tmp_path / "more").iterdir():
        shutil.copy2(f, source / f.name)
    run(settings)
    after = checksums(settings)
    assert (
        after["dwh_db.fct_vehicle_location_updates"][0]
        > before["dwh_db.fct_vehicle_location_updates"][0]
    )
    with connect(settings, "staging_db") as conn:
        assert conn.execute(
            "select count(*) from prod.stg_events where entity_id = 'op_bad'"
        ).fetchone() == (0,)


@pytest.fixture(scope="module")
def crash_fleet(tmp_path_factory: pytest.TempPathFactory) -> Path:
    source = tmp_path_factory.mktemp("crash") / "source"
    simulate_fleet(source, organizations=2, vehicles=6, minutes=25, seed=21, defects=True)
    return source


@pytest.fixture(scope="module")
def clean_checksums(services: Settings, crash_fleet: Path) -> dict[str, tuple[int, str]]:
    reset_databases(services)
    settings = warehouse_settings(services, crash_fleet)
    run(settings)
    return checksums(settings)


@pytest.mark.parametrize(
    "fault",
    [
        "staging.transfer",
        "staging.build",
        "staging.publish",
        "semantic.transfer",
        "semantic.publish",
        "dwh.build",
        "dwh.publish",
    ],
)
def test_sigkill_in_each_hop_then_rerun_equals_a_clean_run(
    services: Settings, crash_fleet: Path, clean_checksums: dict, fault: str
) -> None:
    reset_databases(services)
    settings = warehouse_settings(services, crash_fleet)
    env = {"STRATA_SOURCE_URL": settings.source_url, "STRATA_LAKE_URL": settings.lake_url}
    killed = run_cli("run", home=settings.home, env={**env, "STRATA_FAULT": fault}, check=False)
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    run_cli("run", home=settings.home, env=env)
    assert checksums(settings) == clean_checksums


@pytest.mark.parametrize("fault", ["raw.after_commit", "semantic.publish", "dwh.build"])
def test_a_full_refresh_cut_short_is_finished_by_the_next_run(
    empty: Settings, tmp_path: Path, fault: str
) -> None:
    """A batch is set aside, then the full refresh that removes its rows is killed part way:
    the next plain run finishes it in the layers that had not followed, so that prod is what
    a full refresh gives (before, those layers kept the batch's rows and the answer moved)."""
    settings = loaded(
        empty, tmp_path / "source", organizations=2, vehicles=4, minutes=10, seed=12, defects=True
    )
    with connect(settings, "raw_db") as conn:
        (batch,) = conn.execute(
            "select batch_id from audit.batches where layer = 'raw' and rows > 0"
            " order by batch_id limit 1"
        ).fetchone()
    reject_batch(settings, batch, "set aside by the test")
    env = {"STRATA_SOURCE_URL": settings.source_url, "STRATA_LAKE_URL": settings.lake_url}
    killed = run_cli(
        "run", "--full-refresh", home=settings.home, env={**env, "STRATA_FAULT": fault},
        check=False,
    )  # fmt: skip
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    finished = run(settings)
    resumed = checksums(settings)
    run(settings, full_refresh=True)
    assert checksums(settings) == resumed
    continued = [s for s in ("staging", "semantic", "dwh") if finished.stages[s]["full_refresh"]]
    expected = {
        "raw.after_commit": ["staging", "semantic", "dwh"],
        "semantic.publish": ["semantic", "dwh"],
        "dwh.build": ["dwh"],
    }
    assert continued == expected[fault]
    audited = []
    for layer in ("staging", "semantic", "dwh"):
        with connect(settings, f"{layer}_db") as conn:
            audited += conn.execute(
                "select layer from audit.etl_runs where run_id = %s and load_type = 'full_refresh'",
                (finished.run_id,),
            ).fetchall()
    assert [layer for (layer,) in audited] == continued  # and the audit says so


def test_runs_move_only_what_is_new(empty: Settings, tmp_path: Path) -> None:
    everything = tmp_path / "all"
    simulate_fleet(everything, organizations=3, vehicles=30, minutes=120, seed=12)
    files = sorted(p for p in everything.rglob("*") if p.is_file())
    late = random.Random(1).sample(files, max(1, len(files) // 100))  # ~1% arrive later
    source = tmp_path / "source"
    source.mkdir()
    for f in files:
        if f not in late:
            shutil.copy2(f, source / f.name)
    settings = warehouse_settings(empty, source)
    first = run(settings)
    totals = _last_run_rows(settings, first.run_id)

    idle = run(settings)
    for layer, (rows_in, details) in _last_run_rows(settings, idle.run_id).items():
        assert rows_in == 0 and details["batches"] == 0, layer

    for f in late:
        shutil.copy2(f, source / f.name)
    late_run = run(settings)
    moved = _last_run_rows(settings, late_run.run_id)
    late_lines = sum(len(f.read_bytes().splitlines()) for f in late)
    assert moved["staging"][0] == late_lines  # exactly the late objects' rows
    assert moved["staging"][1]["batches"] == len(late)
    # semantic and dwh move a small share: the late updates plus the histories they touch
    assert 0 < moved["semantic"][0] < 0.1 * totals["semantic"][0]
    assert 0 < moved["dwh"][0] < 0.1 * totals["dwh"][0]
    # the distances recomputed are those of the (period, vehicle) pairs the late files touch
    with connect(settings, "dwh_db") as conn:
        recomputed = set(
            conn.execute(
                "select p.operating_period_id, f.vehicle_id"
                " from dev.fct_vehicle_operating_periods as f"
                " join dev.next_dim_operating_period as p using (operating_period_sk)"
            ).fetchall()
        )
    must, may = pairs_touched(
        source_lines(everything), [line for f in late for line in f.read_bytes().splitlines()]
    )
    assert must <= recomputed <= may
    assert len(recomputed) < totals["dwh"][1]["candidate_rows"]["fct_vehicle_operating_periods"]
    # and the warehouse is right after the late data
    assert_answer_is(settings, average_distance_per_period(source_lines(everything)))


def test_full_refresh_and_reprocess_rebuild_the_same_warehouse(
    empty: Settings, tmp_path: Path
) -> None:
    settings = loaded(
        empty, tmp_path / "source", organizations=2, vehicles=5, minutes=20, seed=9, defects=True
    )
    before = checksums(settings)
    run(settings, full_refresh=True)
    assert checksums(settings) == before
    with connect(settings, "raw_db") as conn:
        (batch,) = conn.execute(
            "select batch_id from audit.batches where layer = 'raw' and rows > 0 limit 1"
        ).fetchone()
    summary = run(settings, reprocess=(batch,))
    assert summary.stages["staging"]["batches"] >= 1
    assert summary.stages["dwh"]["rows_in"] > 0  # it really went through every layer
    assert checksums(settings) == before

    # a mistyped id, or a rejected batch, stops the run before anything changes
    def runs_and_raw_loads() -> tuple[int, int]:
        with connect(settings, "raw_db") as conn:
            return conn.execute(
                "select count(*), (select max(load_seq) from raw.events) from audit.etl_runs"
            ).fetchone()

    untouched = runs_and_raw_loads()
    with pytest.raises(ConfigError, match=r"--reprocess: no raw batch deadbeef; nothing was run"):
        run(settings, full_refresh=True, reprocess=(batch, "deadbeef"))
    with pytest.raises(ConfigError, match=r"--reprocess: no raw batch deadbeef"):
        run_stage(settings, "lake", reprocess=("deadbeef",))  # an Airflow task's first stage
    assert reject_batch(settings, batch, "a first test") is None
    assert reject_batch(settings, batch, "a test") == "a first test"  # said, not silent
    with pytest.raises(
        ConfigError, match=rf"--reprocess: batch {batch} is rejected \(a test\)\. A rejected"
    ):
        run(settings, reprocess=(batch,))
    assert runs_and_raw_loads() == untouched
    assert checksums(settings) == before


def test_declarations_become_constraints_checks_and_status(empty: Settings, tmp_path: Path) -> None:
    settings = loaded(empty, tmp_path / "source", organizations=2, vehicles=4, minutes=15, seed=2)
    with connect(settings, "dwh_db") as conn:
        foreign_keys = {
            r[0]
            for r in conn.execute(
                "select conname from pg_constraint where contype = 'f'"
                " and connamespace = 'prod'::regnamespace"
            )
        }
        checks = dict(
            conn.execute(
                "select table_name || '.' || check_name, status from audit.dq_results"
            ).fetchall()
        )
        # a fact pointing at no dimension row is refused by prod itself, not only by the gate
        with pytest.raises(Exception, match="foreign key"):
            conn.execute(
                "insert into prod.fct_vehicle_operating_periods (operating_period_sk, vehicle_id,"
                " organization_sk, start_date_sk, updates, distance_km, _seq)"
                " values (1, 'v', 2, 20190601, 1, 0, 0)"
            )
            conn.commit()
    assert "fct_vehicle_location_updates_vehicle_sk_fkey" in foreign_keys
    assert "dim_vehicle_organization_sk_fkey" in foreign_keys
    assert checks["dim_vehicle.versions_do_not_overlap"] == "pass"
    assert checks["fct_vehicle_location_updates.references_vehicle_sk"] == "pass"
    assert checks["fct_vehicle_location_updates.range_location_lat"] == "pass"
    status = json.loads(run_cli("status", "--json", home=settings.home).stdout)
    dwh = status["layers"]["dwh"]
    assert dwh["tables"]["prod"]["fct_vehicle_location_updates"] > 0
    assert dwh["checks"]["fail"] == 0 and dwh["checks"]["pass"] >= 30
    assert status["layers"]["staging"]["batches"] == status["layers"]["raw"]["batches"]


def test_declaration_mistakes_name_their_file(empty: Settings, tmp_path: Path) -> None:
    settings = loaded(empty, tmp_path / "source", organizations=1, vehicles=2, minutes=5, seed=4)
    staging = layer_named("staging")
    folder = tmp_path / "L2_staging_layer"
    shutil.copytree(staging.folder, folder)
    # a computed input column may not shadow an upstream column
    layer_yaml = folder / "layer.yaml"
    original = layer_yaml.read_text()
    layer_yaml.write_text(original.replace("      event_key:", "      entity_id:"))
    with pytest.raises(ConfigError, match=r"layer\.yaml: input in_events computes upstream"):
        _load_layer(folder, staging.upstream)
    layer_yaml.write_text(original)
    # a key column may not be nullable (prod's primary key would make it not null anyway)
    stg_yaml = folder / "stg_events" / "table.yaml"
    stg_declared = stg_yaml.read_text()
    stg_yaml.write_text(
        stg_declared.replace(
            "{name: event_key, type: text, nullable: false",
            "{name: event_key, type: text, nullable: true",
        )
    )
    with pytest.raises(
        ConfigError,
        match=r"stg_events/table\.yaml: key columns \['event_key'\] must be nullable: false",
    ):
        _load_layer(folder, staging.upstream)
    stg_yaml.write_text(stg_declared.replace("write_mode: merge", "write_mode: append"))
    with pytest.raises(
        ConfigError,
        match=r"stg_events/table\.yaml: write_mode 'append'; a warehouse table is merge",
    ):
        _load_layer(folder, staging.upstream)
    stg_yaml.write_text(stg_declared)
    # a computed column the upstream server refuses fails the run naming the declaration
    layer_yaml.write_text(original.replace("md5(row(", "md5(no_such_function("))
    before = checksums(settings)
    with (
        RunLog(settings, uuid.uuid4()) as log,
        pytest.raises(StrataError, match=r"in_events from raw_db failed \(.*layer\.yaml\): "),
    ):
        run_layer(
            settings, _load_layer(folder, staging.upstream), uuid.uuid4(), log, full_refresh=True
        )
    layer_yaml.write_text(original)
    # a declared check PostgreSQL refuses fails the run naming its declaration
    table_yaml = folder / "stg_events_removed" / "table.yaml"
    declared = table_yaml.read_text()
    table_yaml.write_text(
        declared
        + "  - {name: broken, severity: fail, sql: select nothing_here from dev.in_events}\n"
    )
    with (
        RunLog(settings, uuid.uuid4()) as log,
        pytest.raises(
            StrataError,
            match=r"check stg_events_removed\.broken \(.*table\.yaml\) is not valid SQL: .*nothing_here",
        ),
    ):
        run_layer(
            settings, _load_layer(folder, staging.upstream), uuid.uuid4(), log, full_refresh=True
        )
    table_yaml.write_text(declared)
    # a transform PostgreSQL refuses fails the run naming its file
    transform = folder / "stg_events_removed" / "transform.sql"
    transform.write_text("select no_such_column from dev.in_events")
    broken = _load_layer(folder, staging.upstream)
    with (
        RunLog(settings, uuid.uuid4()) as log,
        pytest.raises(StrataError, match=r"stg_events_removed/transform\.sql\): .*no_such_column"),
    ):
        run_layer(settings, broken, uuid.uuid4(), log, full_refresh=True)
    # prod was not touched, and the declared layers still run
    assert checksums(settings) == before
    run(settings, full_refresh=True)
    assert checksums(settings) == before


def _refused_untouched(
    settings: Settings, layer: Layer, message: str, before: dict, full_refresh: bool = False
) -> None:
    """The layer's run stops on its declarations, and no prod table changed."""
    with RunLog(settings, uuid.uuid4()) as log, pytest.raises(ConfigError, match=message):
        run_layer(settings, layer, uuid.uuid4(), log, full_refresh=full_refresh)
    assert checksums(settings) == before


def test_a_changed_declaration_waits_for_a_full_refresh_that_rebuilds_prod(
    empty: Settings, tmp_path: Path
) -> None:
    staging = layer_named("staging")
    folder = tmp_path / "L2_staging_layer"
    shutil.copytree(staging.folder, folder)
    # stg_events gains a column and widens another
    table_yaml = folder / "stg_events" / "table.yaml"
    table_yaml.write_text(
        table_yaml.read_text()
        .replace("{name: line_number, type: int,", "{name: line_number, type: bigint,")
        .replace(
            "\nchecks:\n",
            '\n  - {name: event_hour, type: int, nullable: false, description: "hour of at"}'
            "\nchecks:\n",
        )
    )
    transform = folder / "stg_events" / "transform.sql"
    text = transform.read_text()
    assert "e.ingested_at\nfrom first_copy" in text
    transform.write_text(
        text.replace(
            "e.ingested_at\nfrom first_copy",
            "e.ingested_at, date_part('hour', e.at)::int as event_hour\nfrom first_copy",
        )
    )
    changed = _load_layer(folder, staging.upstream)
    # while prod is empty, it simply follows the declaration in use
    with connect(empty, "staging_db") as conn:
        assert ensure_layer(conn, changed) == set()
        assert "event_hour" in table_columns(conn, "prod", "stg_events")
        assert ensure_layer(conn, staging) == set()
        assert "event_hour" not in table_columns(conn, "prod", "stg_events")

    settings = loaded(empty, tmp_path / "source", organizations=2, vehicles=3, minutes=8, seed=6)
    governance.apply(settings)
    before = checksums(settings)
    _refused_untouched(
        settings,
        changed,
        r"staging_db\.prod\.stg_events no longer matches its declaration"
        r" .*stg_events/table\.yaml: column line_number is declared bigint but is integer;"
        r" column event_hour is declared but missing\. Prod was not changed\."
        r" `strata run --full-refresh` rebuilds such tables as declared",
        before,
    )

    # every table that differs is named at once
    semantic = layer_named("semantic")
    other = tmp_path / "L3_semantic_layer"
    shutil.copytree(semantic.folder, other)
    for table, column in (
        ("mdm_organizations", "first_seen_at"),
        ("mdm_vehicles", "organization_id"),
    ):
        path = other / table / "table.yaml"
        text = path.read_text()
        declared = f"{{name: {column}, type: {'text' if 'id' in column else 'timestamptz'}, nullable: false"
        assert declared in text
        path.write_text(text.replace(declared, declared.replace("false", "true")))
    _refused_untouched(
        settings,
        _load_layer(other, semantic.upstream),
        r"semantic: semantic_db\.prod\.mdm_organizations no longer matches .*"
        r" column first_seen_at is declared nullable but is not\."
        r" semantic_db\.prod\.mdm_vehicles no longer matches .*"
        r" column organization_id is declared nullable but is not\. Prod was not changed",
        before,
    )

    # people's objects that re-creating the tables would drop stop the run, named, and stay:
    # a view on the dev candidate, views on prod (both found before the run's work), a
    # function (found by PostgreSQL at the publish)
    people = {
        r"dev\.stg_events must be created again .*sandbox\.my_candidate": [
            "create view sandbox.my_candidate as select event_key from dev.stg_events"
        ],
        r"prod\.stg_events must be created again .* views that are not Strata's read it:"
        r" sandbox\.my_count, sandbox\.my_events\. Strata drops only its own views": [
            "create view sandbox.my_events as select event_key from prod.stg_events",
            "create view sandbox.my_count as select count(*) from sandbox.my_events",
        ],
        r"prod\.stg_events must be created again as now declared, but it carries objects that"
        r" are not Strata's and would go with it: index prod\.my_index, policy mine": [
            "create index my_index on prod.stg_events (event_at)",
            "create policy mine on prod.stg_events using (true)",
        ],
        r"prod\.stg_events must be created again as now declared, but objects that are not"
        r" Strata's depend on it: .*sandbox\.events_count": [
            "create function sandbox.events_count() returns bigint language sql stable"
            " return (select count(*) from prod.stg_events)"
        ],
    }
    for message, statements in people.items():
        with connect(settings, "staging_db") as conn:
            for statement in statements:
                conn.execute(statement)
        _refused_untouched(settings, changed, message, before, full_refresh=True)
        with connect(settings, "staging_db") as conn:
            (kept,) = conn.execute(
                "select (select count(*) from pg_class"
                "        where relnamespace = 'sandbox'::regnamespace or relname = 'my_index')"
                " + (select count(*) from pg_policy)"
                " + (select count(*) from pg_proc where pronamespace = 'sandbox'::regnamespace)"
            ).fetchone()
            assert kept == len(statements), message
            conn.execute("drop index if exists prod.my_index")
            conn.execute("drop policy if exists mine on prod.stg_events")
            conn.execute("drop view if exists sandbox.my_count, sandbox.my_events")
            conn.execute("drop view if exists sandbox.my_candidate")
            conn.execute("drop function if exists sandbox.events_count()")

    run_id = uuid.uuid4()
    with RunLog(settings, run_id) as log:
        run_layer(settings, changed, run_id, log, full_refresh=True)
    assert _last_run_rows(settings, run_id)["staging"][1]["rebuilt"] == ["stg_events"]
    with connect(settings, "staging_db") as conn:
        columns = table_columns(conn, "prod", "stg_events")
        assert columns["line_number"] == ("bigint", True)
        assert columns["event_hour"] == ("integer", True)
        hours = conn.execute(
            "select count(*) filter (where event_hour = date_part('hour', event_at)), count(*)"
            " from prod.stg_events"
        ).fetchone()
    assert hours == (before["staging_db.stg_events"][0],) * 2
    after = checksums(settings)
    assert {k: v for k, v in after.items() if k != "staging_db.stg_events"} == {
        k: v for k, v in before.items() if k != "staging_db.stg_events"
    }
    # the rebuilt table is governed as before: grants and its coarse view, as declared
    assert not governance.check(settings).differences

    # `strata status`, which knows the declared layers, says what is not as declared
    with connect(settings, "staging_db") as conn:
        conn.execute("create table prod.retired_events (event_key text)")
    status = run_cli("status", home=settings.home).stdout
    assert (
        "prod.stg_events is not as declared (column line_number is declared integer but is"
        " bigint; column event_hour is no longer declared): `strata run --full-refresh`"
        " rebuilds it"
    ) in " ".join(status.split())
    assert "not declared any more: prod.retired_events (drop once nothing reads them)" in status
    with connect(settings, "staging_db") as conn:
        conn.execute("drop table prod.retired_events")

    # the declared layers rebuild it back, to the same content
    assert run(settings, full_refresh=True).stages["staging"]["rebuilt"] == ["stg_events"]
    assert checksums(settings) == before
    assert not governance.check(settings).differences
    status = run_cli("status", home=settings.home).stdout
    assert "not as declared" not in status and "not declared any more" not in status


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new))


def _dwh_with_nullable(tmp_path: Path, table: str, column: str, declared_type: str) -> Path:
    """A copy of the dwh layer in which ``table.column`` (declared not null) is nullable."""
    folder = tmp_path / "L4_dwh_layer"
    shutil.copytree(layer_named("dwh").folder, folder)
    declared = f"{column}, type: {declared_type}, nullable: "
    _edit(folder / table / "table.yaml", declared + "false", declared + "true")
    return folder


def test_a_dwh_rebuild_keeps_the_reporting_views_and_drops_undeclared_keys(
    empty: Settings, tmp_path: Path
) -> None:
    settings = loaded(empty, tmp_path / "source", organizations=2, vehicles=3, minutes=8, seed=7)
    governance.apply(settings)
    before, answer = checksums(settings), published_answer(settings)
    dwh = layer_named("dwh")
    # dim_time.day_part becomes nullable (a rebuild), the location facts stop referencing
    # dim_time (a foreign key to drop), dim_organization lists two columns the other way round
    folder = _dwh_with_nullable(tmp_path, "dim_time", "day_part", "text")
    _edit(
        folder / "fct_vehicle_location_updates" / "table.yaml",
        "nullable: false, references: dim_time.time_sk,",
        "nullable: false,",
    )
    organization = folder / "dim_organization"
    first = '  - {name: first_seen_at, type: timestamptz, nullable: false, description: "its earliest event"}\n'
    last = '  - {name: last_seen_at, type: timestamptz, nullable: false, description: "its latest event"}\n'
    _edit(organization / "table.yaml", first + last, last + first)
    _edit(
        organization / "transform.sql", "first_seen_at, last_seen_at", "last_seen_at, first_seen_at"
    )
    views = (
        "select array_agg(format('%I.%I', schemaname, viewname) order by schemaname, viewname)"
        " from pg_views"
        " where schemaname in ('reporting', 'coarse')"
    )
    keys = (
        "select array_agg(conname::text order by conname) from pg_constraint"
        " where contype = 'f' and connamespace = 'prod'::regnamespace"
    )
    with connect(settings, "dwh_db") as conn:
        views_before, keys_before = (
            conn.execute(views).fetchone()[0],
            conn.execute(keys).fetchone()[0],
        )
    assert "fct_vehicle_location_updates_time_sk_fkey" in keys_before

    run_id = uuid.uuid4()
    with RunLog(settings, run_id) as log:
        result = run_layer(
            settings, _load_layer(folder, dwh.upstream), run_id, log, full_refresh=True
        )
    assert result.details["rebuilt"] == ["dim_time"]
    with connect(settings, "dwh_db") as conn:  # right after the dwh publish: no presentation yet
        assert conn.execute(views).fetchone()[0] == views_before
        assert conn.execute(keys).fetchone()[0] == sorted(
            set(keys_before) - {"fct_vehicle_location_updates_time_sk_fkey"}
        )
        assert table_columns(conn, "prod", "dim_time")["day_part"] == ("text", False)
    assert published_answer(settings) == answer
    assert not governance.check(settings).differences

    # the declared layers bring every table, key and view back, to the same content
    run(settings, full_refresh=True)
    assert checksums(settings) == before
    with connect(settings, "dwh_db") as conn:
        assert conn.execute(keys).fetchone()[0] == keys_before
    assert not governance.check(settings).differences


def test_declared_types_compare_with_their_size_and_precision(
    services: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Both branches on this server: PostgreSQL 17+ compares sizes and precisions; before 17
    (no ``to_regtypemod``) both sides leave them out, so equal types never differ forever."""
    import strata.tables

    columns = [("a", "numeric(12,3)"), ("b", "varchar(64)"), ("c", "timestamptz(3)"), ("d", "int")]
    wider = [(n, "numeric(14,3)" if n == "a" else t, False) for n, t in columns]
    with connect(services, "staging_db") as conn:
        assert conn.info.server_version >= 170000  # the embedded server: the first branch runs
        conn.execute(
            "create temp table sized (a numeric(12,3), b varchar(64), c timestamptz(3), d int)"
        )
        (schema,) = conn.execute(
            "select nspname from pg_namespace where oid = pg_my_temp_schema()"
        ).fetchone()

        def differences(declared: list[tuple[str, str, bool]]) -> list[str]:
            return column_differences(
                table_columns(conn, schema, "sized"), declared_columns(conn, declared)
            )

        same = [(n, t, False) for n, t in columns]
        assert differences(same) == []
        assert differences(wider) == ["column a is declared numeric(14,3) but is numeric(12,3)"]
        # as on PostgreSQL 15/16: sizes left out on both sides, other types still compared
        monkeypatch.setattr(strata.tables, "_reads_typmods", lambda conn: False)
        assert differences(same) == []
        assert differences(wider) == []
        assert differences([(n, "text" if n == "d" else t, False) for n, t in columns]) == [
            "column d is declared text but is integer"
        ]


@contextmanager
def _reading(
    settings: Settings, database: str, table: str
) -> Iterator[tuple[psycopg.Connection, int]]:
    """A session that has read ``prod.<table>`` and keeps its transaction open (an analyst's
    client, say): the connection and its pid."""
    with connect(settings, database) as reader:
        reader.execute(sql.SQL("select count(*) from {}").format(sql.Identifier("prod", table)))
        yield reader, reader.execute("select pg_backend_pid()").fetchone()[0]


def _first_waited_for(settings: Settings, database: str, tables: Sequence[str]) -> str:
    """Wait until a session waits for a lock on one of ``prod``'s ``tables`` (asked again
    every 10 ms, for at most 30 s): that table."""
    deadline = time.monotonic() + 30
    with connect(settings, database, autocommit=True) as watcher:
        while time.monotonic() < deadline:
            row = watcher.execute(
                "select c.relname::text from pg_locks as l join pg_class as c on c.oid = l.relation"
                " where not l.granted and c.relnamespace = 'prod'::regnamespace"
                " and c.relname = any(%s)",
                (list(tables),),
            ).fetchone()
            if row:
                return str(row[0])
            threading.Event().wait(0.01)
    raise AssertionError(f"nothing waited for {', '.join(tables)} in 30 s")


def _small_fleet_waiting(
    empty: Settings, folder: Path, seed: int, timeout_s: float
) -> tuple[Settings, Settings]:
    """A small fleet loaded; its settings, and the same waiting ``timeout_s`` for locks."""
    settings = loaded(empty, folder, organizations=1, vehicles=2, minutes=5, seed=seed)
    return settings, settings.model_copy(update={"lock_timeout_s": timeout_s})


def _full_refresh(settings: Settings, layer: str) -> None:
    with RunLog(settings, uuid.uuid4()) as log:
        run_layer(settings, layer_named(layer), uuid.uuid4(), log, full_refresh=True)


def _full_refresh_changes_nothing(settings: Settings, layer: str, before: dict) -> None:
    """Once the readers have gone, a full refresh proceeds; prod is as it was."""
    _full_refresh(settings, layer)
    assert checksums(settings) == before


def _full_refresh_fails(settings: Settings, layer: str, match: str) -> None:
    """A full refresh of ``layer`` that stops with a StrataError matching ``match``."""
    with pytest.raises(StrataError, match=match):
        _full_refresh(settings, layer)


def test_a_publish_gives_up_on_a_reader_that_keeps_its_transaction_open(
    empty: Settings, tmp_path: Path
) -> None:
    settings, impatient = _small_fleet_waiting(empty, tmp_path / "source", 8, 0.5)
    before = checksums(settings)
    with _reading(settings, "staging_db", "stg_events") as (_, pid):
        _full_refresh_fails(
            impatient,
            "staging",
            rf"staging: the publish waited 0\.5 s \(STRATA_LOCK_TIMEOUT_S\) for other sessions"
            rf" to let go of staging_db\.prod; nothing was published\. Holding locks there now:"
            rf" pid {pid} \(\w+, (idle in transaction|more with pg_read_all_stats)",
        )
        assert checksums(settings) == before
    _full_refresh_changes_nothing(impatient, "staging", before)


def test_a_publish_waits_for_its_tables_at_most_the_lock_timeout_in_all(
    empty: Settings, tmp_path: Path
) -> None:
    """Two readers hold two of the tables a full refresh of dwh needs alone. The one the
    publish waits for first lets go after 0.8 of the timeout, the other never: waiting for
    each lock the whole timeout in turn would give up after 1.8 timeouts."""
    timeout = 3.0
    settings, impatient = _small_fleet_waiting(empty, tmp_path / "source", 10, timeout)
    before = checksums(settings)
    held = ("dim_date", "fct_vehicle_operating_periods")
    readers: dict[str, psycopg.Connection] = {}
    waits: list[tuple[str, float]] = []  # (table the publish waited for first, when)
    publish_ended = threading.Event()

    def let_the_first_waited_for_go() -> None:
        first = _first_waited_for(settings, "dwh_db", held)
        waits.append((first, time.monotonic()))
        # that reader holds on for 0.8 of the timeout, or until the publish has ended
        publish_ended.wait(0.8 * timeout)
        readers[first].rollback()

    with (
        _reading(settings, "dwh_db", held[0]) as (readers[held[0]], first_pid),
        _reading(settings, "dwh_db", held[1]) as (readers[held[1]], second_pid),
    ):
        pids = dict(zip(held, (first_pid, second_pid), strict=True))
        watcher = threading.Thread(target=let_the_first_waited_for_go)
        watcher.start()
        try:
            with pytest.raises(StrataError, match=r"dwh: the publish waited 3 s") as failure:
                _full_refresh(impatient, "dwh")
        finally:
            gave_up = time.monotonic()
            publish_ended.set()
        watcher.join()
        assert len(waits) == 1, "the publish never waited for a reader's table"
        first, began = waits[0]
        (other,) = set(held) - {first}
        assert f"Holding locks there now: pid {pids[other]} (" in str(failure.value)
        assert gave_up - began < 1.4 * timeout  # one timeout in all, not 1.8
        assert checksums(settings) == before
    _full_refresh_changes_nothing(impatient, "dwh", before)


def test_a_publish_that_meets_a_reader_in_a_deadlock_gives_up_cleanly(
    empty: Settings, tmp_path: Path
) -> None:
    """A reader holds one table the publish needs alone and, while the publish waits for it
    holding another, asks for that other one: PostgreSQL ends the publish's side of the
    deadlock; the run says so, publishes nothing, and the reader's query completes."""
    settings, impatient = _small_fleet_waiting(empty, tmp_path / "source", 11, 30)
    before = checksums(settings)
    answered: list[int] = []

    def ask_for_dim_date_once_the_publish_waits(reader: psycopg.Connection) -> None:
        _first_waited_for(settings, "dwh_db", ["fct_vehicle_operating_periods"])
        answered.append(reader.execute("select count(*) from prod.dim_date").fetchone()[0])

    with _reading(settings, "dwh_db", "fct_vehicle_operating_periods") as (reader, pid):
        asker = threading.Thread(target=ask_for_dim_date_once_the_publish_waits, args=(reader,))
        asker.start()
        _full_refresh_fails(
            impatient,
            "dwh",
            rf"dwh: the publish met another session asking for the tables of dwh_db\.prod it held"
            rf" \(a deadlock, which PostgreSQL ended\); nothing was published\. Holding locks"
            rf" there now: pid {pid} \(",
        )
        asker.join()
        assert answered and answered[0] > 0
        reader.rollback()
    assert checksums(settings) == before


def test_an_empty_dwh_table_follows_its_declaration_and_keeps_the_reporting_views(
    empty: Settings, tmp_path: Path
) -> None:
    dwh = layer_named("dwh")
    folder = _dwh_with_nullable(tmp_path, "dim_organization", "last_seen_at", "timestamptz")
    views = (
        "select array_agg(format('%I.%I', schemaname, viewname) order by schemaname, viewname)"
        " from pg_views where schemaname = 'reporting'"
    )
    with connect(empty, "dwh_db") as conn:
        ensure_layer(conn, dwh)
    apply_presentation(empty)
    with connect(empty, "dwh_db") as conn:
        before = conn.execute(views).fetchone()[0]
        assert len(before) == 3
        assert ensure_layer(conn, _load_layer(folder, dwh.upstream)) == set()
    with connect(empty, "dwh_db") as conn:  # committed: the table as declared, the views kept
        assert table_columns(conn, "prod", "dim_organization")["last_seen_at"][1] is False
        assert conn.execute(views).fetchone()[0] == before


def test_preparing_a_layer_gives_up_on_a_reader_that_keeps_its_transaction_open(
    empty: Settings, tmp_path: Path
) -> None:
    settings, impatient = _small_fleet_waiting(empty, tmp_path / "source", 9, 0.5)
    with connect(settings, "dwh_db") as conn:  # a foreign key the declarations do not have
        conn.execute(
            "alter table prod.fct_vehicle_operating_periods add constraint stray_fkey"
            " foreign key (organization_sk) references prod.dim_organization (organization_sk)"
        )
    with _reading(settings, "dwh_db", "fct_vehicle_operating_periods") as (_, pid):
        _full_refresh_fails(
            impatient,
            "dwh",
            rf"dwh: preparing its tables waited 0\.5 s \(STRATA_LOCK_TIMEOUT_S\) .* Holding locks"
            rf" there now: pid {pid} \(",
        )
    _full_refresh(impatient, "dwh")  # the reader has gone: the stray key goes
    with connect(settings, "dwh_db") as conn:
        assert not conn.execute(
            "select 1 from pg_constraint where conname = 'stray_fkey'"
        ).fetchone()
