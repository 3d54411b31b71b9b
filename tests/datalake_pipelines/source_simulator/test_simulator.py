"""The simulator against the source contract (ARCHITECTURE §4), checked by code written here.

The validator, the haversine and the file-name patterns below are deliberately independent
of the simulator's code: they restate the contract, so a bug in the simulator cannot hide
behind a shared helper.
"""

from __future__ import annotations

import json
import re
from collections import Counter, defaultdict
from datetime import UTC, datetime, timedelta, timezone
from math import asin, cos, radians, sin, sqrt
from pathlib import Path
from typing import Any

import pytest

from datalake_pipelines.source_simulator import (
    DEFECT_KINDS,
    KEPT_KINDS,
    MAX_SPEED_KMH,
    QUARANTINE_KINDS,
    SimulationConfig,
    SimulationResult,
    simulate,
)
from strata.objectstore import LocalStore

TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$")
UUID4 = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$")
FLAT = re.compile(r"^(\d{4})-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d+)-events\.json$")
NESTED = re.compile(
    r"^(\d{4})/(\d\d)/(\d\d)/(\d\d)/(\d\d)/(\d{4})-(\d\d)-(\d\d)-(\d\d)-(\d\d)-(\d+)-events\.txt$"
)
VEHICLE_EVENTS = {"register", "update", "deregister", "break_start", "break_end"}
PERIOD_EVENTS = {"create", "delete"}
TOP_KEYS = {"event", "on", "at", "data", "organization_id"}
START = datetime(2019, 6, 1, 8, 0, tzinfo=UTC)

# manifest kinds whose lines are not valid updates for the speed rule
NOT_AN_UPDATE = {
    "malformed_json",
    "out_of_range_coordinate",
    "timestamp_without_zone",
    "null_location",
    "missing_location",
    "unknown_event_type",
}


# --- helpers written for the tests -------------------------------------------------------


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    phi1, phi2 = radians(lat1), radians(lat2)
    a = sin((phi2 - phi1) / 2) ** 2 + cos(phi1) * cos(phi2) * sin(radians(lng2 - lng1) / 2) ** 2
    return 2 * 6371.0 * asin(sqrt(a))


def parse_ts(text: str) -> datetime:
    assert TS.match(text), text
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def file_minute(key: str) -> tuple[datetime, int]:
    """(name time, part) of a file key in either layout."""
    match = FLAT.match(key)
    if match:
        y, mo, d, h, mi, part = match.groups()
    else:
        match = NESTED.match(key)
        assert match, f"{key!r} matches neither file-name pattern"
        groups = match.groups()
        assert groups[:5] == groups[5:10], f"{key!r}: folder and file name disagree"
        y, mo, d, h, mi, part = *groups[:5], groups[10]
    return datetime(int(y), int(mo), int(d), int(h), int(mi), tzinfo=UTC), int(part)


def validate(event: Any) -> None:
    """The §4 contract (with the break extension) for one clean event."""
    assert isinstance(event, dict)
    assert list(event) == ["event", "on", "at", "data", "organization_id"]
    assert isinstance(event["organization_id"], str) and event["organization_id"]
    assert TS.match(event["at"]), event["at"]
    data = event["data"]
    assert isinstance(data, dict)
    if event["on"] == "vehicle":
        assert event["event"] in VEHICLE_EVENTS
        assert UUID4.match(data["id"]), data["id"]
        if event["event"] == "update":
            assert set(data) == {"id", "location"}
            location = data["location"]
            assert set(location) == {"lat", "lng", "at"}
            assert isinstance(location["lat"], float) and -90 <= location["lat"] <= 90
            assert isinstance(location["lng"], float) and -180 <= location["lng"] <= 180
            assert TS.match(location["at"]), location["at"]
        else:
            assert set(data) == {"id"}, f"{event['event']} must carry only data.id"
    else:
        assert event["on"] == "operating_period"
        assert event["event"] in PERIOD_EVENTS
        assert set(data) == {"id", "start", "finish"}
        assert isinstance(data["id"], str) and data["id"]
        assert parse_ts(data["start"]) < parse_ts(data["finish"])


class Run:
    """One simulation read back: files in name order, lines, manifest entries by position."""

    def __init__(self, root: Path, result: SimulationResult, config: SimulationConfig) -> None:
        self.root, self.result, self.config = root, result, config
        store = LocalStore(root)
        self.keys = sorted((info.key for info in store.list()), key=file_minute)
        self.raw = {key: store.get(key) for key in self.keys}
        self.lines: list[tuple[str, int, str]] = []  # (key, 1-based line, text) in name order
        for key in self.keys:
            data = self.raw[key].decode("ascii")
            assert data.endswith("\n") and "\n\n" not in data, key
            for number, text in enumerate(data[:-1].split("\n"), start=1):
                self.lines.append((key, number, text))
        self.manifest: dict[str, Any] | None = None
        self.kinds: dict[tuple[str, int], str] = {}
        if result.manifest_path is not None:
            self.manifest = json.loads(result.manifest_path.read_text())
            for entry in self.manifest["entries"]:
                self.kinds[(entry["key"], entry["line"])] = entry["kind"]

    def clean(self) -> list[tuple[str, int, dict[str, Any]]]:
        """Lines that are not in the manifest, parsed."""
        return [
            (key, number, json.loads(text))
            for key, number, text in self.lines
            if (key, number) not in self.kinds
        ]

    def parsed(self, exclude: set[str]) -> list[tuple[str, int, dict[str, Any]]]:
        """Lines parsed, except those whose manifest kind is in ``exclude``."""
        out = []
        for key, number, text in self.lines:
            if self.kinds.get((key, number)) in exclude:
                continue
            out.append((key, number, json.loads(text)))
        return out


def run(root: Path, **overrides: Any) -> Run:
    config = SimulationConfig(**overrides)
    result = simulate(config, LocalStore(root / "source"), root / "manifests")
    return Run(root / "source", result, config)


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """A 10-vehicle hour with defects, small files: shared by the read-only tests."""
    return run(tmp_path_factory.mktemp("fleet"), vehicles=10, minutes=60, defects=True)


@pytest.fixture(scope="module")
def clean_fleet(tmp_path_factory: pytest.TempPathFactory) -> Run:
    return run(tmp_path_factory.mktemp("clean"), vehicles=10, minutes=60, lines_per_file=97)


# --- determinism -------------------------------------------------------------------------


def test_same_config_gives_identical_files_and_keys(tmp_path: Path) -> None:
    settings = dict(vehicles=4, minutes=12, seed=7, defects=True, lines_per_file=60)
    first, second = run(tmp_path / "a", **settings), run(tmp_path / "b", **settings)
    assert first.result.keys == second.result.keys
    assert first.keys == second.keys
    assert first.raw == second.raw
    assert first.manifest is not None and second.manifest is not None
    assert first.manifest["entries"] == second.manifest["entries"]
    assert first.manifest["counts"] == second.manifest["counts"]

    other = run(tmp_path / "c", **{**settings, "seed": 8})
    assert other.raw != first.raw
    assert b"".join(other.raw.values()) != b"".join(first.raw.values())


def test_defects_do_not_change_the_fleet(clean_fleet: Run, tmp_path: Path) -> None:
    """The faults come from their own random stream: the true fleet is the same."""
    noisy = run(tmp_path, vehicles=10, minutes=60, defects=True, lines_per_file=97)
    registers = [e for _, _, e in clean_fleet.clean() if e["event"] == "register"]
    noisy_registers = [e for _, _, e in noisy.clean() if e["event"] == "register"]
    assert registers == noisy_registers


# --- the format ----------------------------------------------------------------------------


def test_clean_lines_follow_the_contract_and_are_json_dumps(clean_fleet: Run) -> None:
    assert clean_fleet.result.manifest_path is None
    assert clean_fleet.kinds == {}
    events = clean_fleet.clean()
    assert len(events) == clean_fleet.result.events
    seen = Counter()
    for _, _, event in events:
        validate(event)
        seen[(event["event"], event["on"])] += 1
    # lines are json.dumps(event) with default separators and key order
    for key, number, text in clean_fleet.lines:
        assert json.dumps(json.loads(text)) == text, (key, number)
    assert seen[("register", "vehicle")] == 10
    assert seen[("update", "vehicle")] > 10 * 60 * 15
    assert seen[("break_start", "vehicle")] == seen[("break_end", "vehicle")] >= 1
    assert seen[("deregister", "vehicle")] >= 1
    assert seen[("create", "operating_period")] >= 2
    assert set(seen) <= {(e, "vehicle") for e in VEHICLE_EVENTS} | {
        (e, "operating_period") for e in PERIOD_EVENTS
    }


def test_non_defect_lines_with_defects_on_follow_the_contract(fleet: Run) -> None:
    clean = fleet.clean()
    assert len(clean) > 8_000
    for _, _, event in clean:
        validate(event)
    for key, number, text in fleet.lines:
        if (key, number) not in fleet.kinds:
            assert json.dumps(json.loads(text)) == text, (key, number)


def test_organizations_and_vehicles(clean_fleet: Run) -> None:
    orgs = {e["organization_id"] for _, _, e in clean_fleet.clean()}
    assert len(orgs) == 2
    assert all(re.match(r"^org-[0-9a-f]{8}$", org) for org in orgs)
    vehicle_orgs = defaultdict(set)
    for _, _, e in clean_fleet.clean():
        if e["on"] == "vehicle":
            vehicle_orgs[e["data"]["id"]].add(e["organization_id"])
    assert len(vehicle_orgs) == 10
    assert all(len(o) == 1 for o in vehicle_orgs.values())
    assert {next(iter(o)) for o in vehicle_orgs.values()} == orgs


# --- movement --------------------------------------------------------------------------------


def _updates_by_vehicle(run_: Run) -> dict[str, list[tuple[datetime, float, float]]]:
    tracks: dict[str, list[tuple[datetime, float, float]]] = defaultdict(list)
    for _, _, event in run_.parsed(NOT_AN_UPDATE):
        if event["event"] == "update" and event["on"] == "vehicle":
            location = event["data"]["location"]
            tracks[event["data"]["id"]].append(
                (parse_ts(location["at"]), location["lat"], location["lng"])
            )
    return {vid: sorted(set(track)) for vid, track in tracks.items()}


def _breaks(run_: Run) -> dict[str, list[tuple[datetime, datetime]]]:
    edges: dict[str, list[tuple[datetime, str]]] = defaultdict(list)
    for _, _, event in run_.clean():
        if event["event"] in ("break_start", "break_end"):
            edges[event["data"]["id"]].append((parse_ts(event["at"]), event["event"]))
    breaks = {}
    for vid, marks in edges.items():
        marks.sort()
        assert [m for _, m in marks] == ["break_start", "break_end"] * (len(marks) // 2)
        breaks[vid] = [(marks[i][0], marks[i + 1][0]) for i in range(0, len(marks), 2)]
    return breaks


@pytest.mark.parametrize("which", ["clean_fleet", "fleet"])
def test_no_consecutive_updates_exceed_the_speed_cap(
    which: str, request: pytest.FixtureRequest
) -> None:
    run_: Run = request.getfixturevalue(which)
    tracks = _updates_by_vehicle(run_)
    assert len(tracks) == 10
    total_km, fastest = 0.0, 0.0
    for vid, track in tracks.items():
        for (t1, lat1, lng1), (t2, lat2, lng2) in zip(track, track[1:], strict=False):
            hours = (t2 - t1).total_seconds() / 3600
            if hours <= 0:
                continue
            km = haversine_km(lat1, lng1, lat2, lng2)
            total_km += km
            fastest = max(fastest, km / hours)
            assert km / hours <= MAX_SPEED_KMH, (vid, t1, t2, km / hours)
        assert all(52.3 < lat < 52.7 and 13.1 < lng < 13.7 for _, lat, lng in track), vid
    assert total_km > 10 * 5  # vehicles do move: ~10 vehicles for most of an hour
    assert fastest > MAX_SPEED_KMH * 0.5


def test_breaks_exist_and_only_jitter_inside(clean_fleet: Run) -> None:
    tracks = _updates_by_vehicle(clean_fleet)
    breaks = _breaks(clean_fleet)
    assert sum(len(b) for b in breaks.values()) >= 1
    for vid, spans in breaks.items():
        for begin, end in spans:
            assert timedelta(minutes=3) <= end - begin <= timedelta(minutes=15)
            inside = [(lat, lng) for at, lat, lng in tracks[vid] if begin <= at <= end]
            assert len(inside) >= 30
            for (lat1, lng1), (lat2, lng2) in zip(inside, inside[1:], strict=False):
                assert haversine_km(lat1, lng1, lat2, lng2) < 0.010  # a few metres of GPS noise


# --- lifecycle ------------------------------------------------------------------------------


def test_lifecycle(fleet: Run) -> None:
    by_vehicle: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for _, _, event in fleet.parsed(NOT_AN_UPDATE):
        if event["on"] == "vehicle":
            by_vehicle[event["data"]["id"]].append(event)
    assert len(by_vehicle) == 10
    window_end = START + timedelta(minutes=60)
    deregistered = 0
    for vid, events in by_vehicle.items():
        events.sort(key=lambda e: parse_ts(e["at"]))
        registers = [e for e in events if e["event"] == "register"]
        assert len(registers) == 1 and events[0]["event"] == "register", vid
        assert "location" not in registers[0]["data"]
        assert parse_ts(registers[0]["at"]) < START + timedelta(minutes=6)
        deregisters = [e for e in events if e["event"] == "deregister"]
        assert len(deregisters) <= 1
        if deregisters:
            deregistered += 1
            assert "location" not in deregisters[0]["data"]
            last = parse_ts(deregisters[0]["at"])
            assert all(parse_ts(e["at"]) <= last for e in events), vid
            assert events[-1]["event"] == "deregister"
        previous = None
        for event in events:
            assert START <= parse_ts(event["at"]) < window_end
            if event["event"] != "update":
                assert set(event["data"]) == {"id"}
                continue
            location_at = parse_ts(event["data"]["location"]["at"])
            assert location_at <= parse_ts(event["at"])
            assert parse_ts(event["at"]) - location_at < timedelta(seconds=1)
            if previous is not None and event["at"] != previous[0]:  # skip duplicates
                assert location_at > previous[1], vid
            previous = (event["at"], location_at)
    assert 1 <= deregistered < 10


def test_operating_periods(clean_fleet: Run) -> None:
    window_end = START + timedelta(minutes=60)
    creates: dict[str, dict[str, Any]] = {}
    deletes: dict[str, dict[str, Any]] = {}
    for _, _, event in clean_fleet.clean():
        if event["on"] != "operating_period":
            continue
        target = creates if event["event"] == "create" else deletes
        assert event["data"]["id"] not in target, "period ids are unique"
        target[event["data"]["id"]] = event
    per_org: dict[str, list[tuple[datetime, datetime]]] = defaultdict(list)
    for create in creates.values():
        at, start = parse_ts(create["at"]), parse_ts(create["data"]["start"])
        assert START <= at <= start
        per_org[create["organization_id"]].append((start, parse_ts(create["data"]["finish"])))
    for op_id, delete in deletes.items():
        create = creates[op_id]
        assert delete["data"] == create["data"]
        assert delete["organization_id"] == create["organization_id"]
        assert parse_ts(create["at"]) < parse_ts(delete["at"]) < window_end
    assert len(per_org) == 2
    for periods in per_org.values():
        periods.sort()
        assert periods[0][0] == START and periods[-1][1] >= window_end
        for (_, finish), (start, _) in zip(periods, periods[1:], strict=False):
            assert finish == start  # consecutive, covering the window
        for start, finish in periods:
            assert timedelta(minutes=20) <= finish - start <= timedelta(minutes=60)


# --- files ---------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["flat", "nested"])
def test_file_names_sizes_and_order(layout: str, tmp_path: Path) -> None:
    run_ = run(tmp_path, vehicles=6, minutes=8, layout=layout, lines_per_file=40)
    result = run_.result
    assert sorted(result.keys) == sorted(run_.keys)
    assert result.files == len(run_.keys)
    assert result.events == len(run_.lines)
    assert result.bytes == sum(len(data) for data in run_.raw.values())
    pattern = FLAT if layout == "flat" else NESTED
    parts = defaultdict(list)
    for key in run_.keys:
        assert pattern.match(key), key
        minute, part = file_minute(key)
        parts[minute].append(part)
        assert 1 <= run_.raw[key].count(b"\n") <= 40
    assert len(parts) == 8
    for numbers in parts.values():
        assert sorted(numbers) == list(range(len(numbers)))
    assert max(len(n) for n in parts.values()) > 1
    # events are in time order, minute by minute, and sit in the file of their minute
    ats = [parse_ts(e["at"]) for _, _, e in run_.clean()]
    assert ats == sorted(ats)
    for key, _, event in run_.clean():
        at = parse_ts(event["at"])
        assert at.replace(second=0, microsecond=0) == file_minute(key)[0]


def test_minutes_without_events_write_no_file(tmp_path: Path) -> None:
    run_ = run(tmp_path, organizations=1, vehicles=1, minutes=90, seed=3)
    names = {file_minute(key)[0] for key in run_.keys}
    expected = {parse_ts(e["at"]).replace(second=0, microsecond=0) for _, _, e in run_.clean()}
    assert names == expected


# --- defects -------------------------------------------------------------------------------


def test_defect_kinds_are_partitioned() -> None:
    assert QUARANTINE_KINDS.isdisjoint(KEPT_KINDS)
    assert QUARANTINE_KINDS | KEPT_KINDS == set(DEFECT_KINDS)
    assert {"malformed_json", "unknown_event_type"} <= QUARANTINE_KINDS
    assert {"duplicate_event", "late_file", "null_location"} <= KEPT_KINDS


def test_no_defects_without_the_flag(clean_fleet: Run) -> None:
    assert sum(clean_fleet.result.defects.values()) == 0
    assert clean_fleet.result.manifest_path is None
    assert not (clean_fleet.root.parent / "manifests").exists()
    texts = [text for _, _, text in clean_fleet.lines]
    assert len(texts) == len(set(texts))  # no duplicates either


def _found_by_reading(run_: Run) -> dict[str, set[tuple[str, int]]]:
    """Every defect the files show, found without the manifest."""
    found: dict[str, set[tuple[str, int]]] = defaultdict(set)
    seen_texts: set[str] = set()
    for key, number, text in run_.lines:
        position = (key, number)
        if text in seen_texts:
            found["duplicate_event"].add(position)
        seen_texts.add(text)
        try:
            event = json.loads(text)
        except json.JSONDecodeError:
            found["malformed_json"].add(position)
            continue
        if (event.get("on"), event.get("event")) not in {
            *(("vehicle", e) for e in VEHICLE_EVENTS),
            *(("operating_period", e) for e in PERIOD_EVENTS),
        }:
            found["unknown_event_type"].add(position)
            continue
        data = event["data"]
        if set(event) != TOP_KEYS or (
            event["on"] == "vehicle" and not set(data) <= {"id", "location"}
        ):
            found["extra_field"].add(position)
        if not TS.match(event["at"]):
            assert re.match(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}$", event["at"])
            found["timestamp_without_zone"].add(position)
        elif parse_ts(event["at"]).replace(second=0, microsecond=0) <= file_minute(key)[
            0
        ] - timedelta(minutes=2):
            found["late_event"].add(position)
        if event["event"] == "update":
            if "location" not in data:
                found["missing_location"].add(position)
            elif data["location"] is None or None in (
                data["location"]["lat"],
                data["location"]["lng"],
            ):
                found["null_location"].add(position)
            elif not (
                -90 <= data["location"]["lat"] <= 90 and -180 <= data["location"]["lng"] <= 180
            ):
                found["out_of_range_coordinate"].add(position)
    return found


def test_manifest_matches_what_the_files_show(fleet: Run) -> None:
    manifest = fleet.manifest
    assert manifest is not None and fleet.result.manifest_path is not None
    assert fleet.result.manifest_path.name == "manifest-seed42-20190601T0800.json"
    assert manifest["config"]["defects"] is True and manifest["config"]["seed"] == 42
    assert manifest["counts"] == fleet.result.defects
    assert set(manifest["counts"]) == set(DEFECT_KINDS)
    by_kind: dict[str, set[tuple[str, int]]] = defaultdict(set)
    for entry in manifest["entries"]:
        by_kind[entry["kind"]].add((entry["key"], entry["line"]))
    for kind in DEFECT_KINDS:
        assert manifest["counts"][kind] == len(by_kind[kind]) >= 1, kind
    found = _found_by_reading(fleet)
    for kind in DEFECT_KINDS:
        if kind == "late_file":
            continue
        assert found[kind] == by_kind[kind], kind
    # each kind is a small share of the stream
    for kind in DEFECT_KINDS:
        assert manifest["counts"][kind] < 0.01 * fleet.result.events, kind
    # the manifest never lands in the store
    assert all(file_minute(key) for key in fleet.keys)


def test_late_files_are_uploaded_last(fleet: Run) -> None:
    assert fleet.manifest is not None
    late = [e["key"] for e in fleet.manifest["entries"] if e["kind"] == "late_file"]
    assert late and all(
        e["line"] == 0 for e in fleet.manifest["entries"] if e["kind"] == "late_file"
    )
    uploads = fleet.result.keys
    assert uploads[-len(late) :] == late
    for key in late:
        assert any(file_minute(other) > file_minute(key) for other in uploads[: -len(late)])


def test_late_events_arrive_2_to_15_minutes_late(fleet: Run) -> None:
    assert fleet.manifest is not None
    for entry in fleet.manifest["entries"]:
        if entry["kind"] != "late_event":
            continue
        line = fleet.raw[entry["key"]].decode().split("\n")[entry["line"] - 1]
        own = parse_ts(json.loads(line)["at"]).replace(second=0, microsecond=0)
        delay = file_minute(entry["key"])[0] - own
        assert timedelta(minutes=2) <= delay <= timedelta(minutes=15)
        validate(json.loads(line))


def test_kept_defect_lines_are_otherwise_valid(fleet: Run) -> None:
    """Duplicates and late events are exact valid events; drift adds a field and nothing else."""
    texts = {(key, number): text for key, number, text in fleet.lines}
    for (key, number), kind in fleet.kinds.items():
        if kind in ("duplicate_event", "late_event"):
            validate(json.loads(texts[(key, number)]))
        elif kind == "extra_field":
            event = json.loads(texts[(key, number)])
            event.pop("source", None)
            event["data"].pop("battery_level", None)
            validate(event)


@pytest.mark.parametrize("seed", range(5))
def test_every_kind_occurs_in_a_small_fleet(seed: int, tmp_path: Path) -> None:
    run_ = run(tmp_path, vehicles=5, minutes=10, seed=seed, defects=True, layout="nested")
    counts = run_.result.defects
    assert all(counts[kind] >= 1 for kind in DEFECT_KINDS), counts
    found = _found_by_reading(run_)
    assert len(found["malformed_json"]) == counts["malformed_json"]
    assert len(found["duplicate_event"]) == counts["duplicate_event"]


# --- configuration and progress -------------------------------------------------------------


def test_config_is_checked_and_start_normalised() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        SimulationConfig(start=datetime(2019, 6, 1, 8, 0))
    with pytest.raises(ValueError, match="vehicles"):
        SimulationConfig(vehicles=0)
    with pytest.raises(ValueError, match="layout"):
        SimulationConfig(layout="deep")  # type: ignore[arg-type]
    berlin = datetime(2019, 6, 1, 10, 0, tzinfo=timezone(timedelta(hours=2)))
    assert SimulationConfig(start=berlin).start == START
    assert SimulationConfig().start == START


def test_progress_reports_every_minute(tmp_path: Path) -> None:
    calls: list[tuple[int, int]] = []
    config = SimulationConfig(vehicles=2, minutes=5)
    simulate(
        config,
        LocalStore(tmp_path / "s"),
        tmp_path / "m",
        progress=lambda d, t: calls.append((d, t)),
    )
    assert calls == [(done, 5) for done in range(6)]


def test_a_start_between_minutes_keeps_events_in_the_window(tmp_path: Path) -> None:
    start = START + timedelta(seconds=30, milliseconds=250)
    run_ = run(tmp_path, vehicles=3, minutes=4, start=start)
    ats = [parse_ts(e["at"]) for _, _, e in run_.clean()]
    assert min(ats) >= start and max(ats) < start + timedelta(minutes=4)
    assert len({file_minute(key)[0] for key in run_.keys}) == 5
