"""A deterministic door2door fleet written as JSON-lines event files into an ``ObjectStore``.

The pipelines need a source that looks like the real one (ARCHITECTURE §4: file names, line
format, at-least-once delivery, late files) and whose truth is known, so that every layer can
be tested against it. Everything is derived from ``random.Random(seed)``: the same
configuration gives byte-identical files under identical keys, which makes reruns and
"load in any order" tests meaningful.

Time is kept in integer milliseconds since the epoch. Positions move with the spherical
destination-point formula, so the haversine length of a step is exactly ``speed * dt`` (up
to float rounding), and the speed is clamped a little below ``MAX_SPEED_KMH`` to leave room
for that rounding, the 6-decimal coordinates and the GPS jitter of parked vehicles.

Events are produced minute by minute (all vehicles advance to the end of the minute, the
minute's lines are sorted by ``at`` and written in chunks), so memory holds one minute of
lines plus per-vehicle state; with defects also the few lines and files held back to be
delivered late (at most ``_MAX_LATE_FILES`` files) and the manifest entries.

With ``defects=True`` the stream also carries the faults the pipelines must survive; each
one is listed in a manifest (kept outside the store) so that tests can check that the
pipelines quarantined or kept exactly what they should.
"""

from __future__ import annotations

import json
import math
import random
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from math import asin, atan2, cos, degrees, radians, sin
from operator import itemgetter
from pathlib import Path
from typing import Any, Literal

from strata.objectstore import ObjectStore

MAX_SPEED_KMH = 50.0
"""No two consecutive valid updates of a vehicle imply a higher speed (haversine, R=6371 km)."""

EARTH_RADIUS_KM = 6371.0

DEFECT_KINDS: tuple[str, ...] = (
    "malformed_json",
    "duplicate_event",
    "late_event",
    "late_file",
    "null_location",
    "missing_location",
    "unknown_event_type",
    "extra_field",
    "out_of_range_coordinate",
    "timestamp_without_zone",
)
QUARANTINE_KINDS: frozenset[str] = frozenset(
    {"malformed_json", "unknown_event_type", "out_of_range_coordinate", "timestamp_without_zone"}
)
"""Defects the raw/staging layers must reject into quarantine, with a reason."""
KEPT_KINDS: frozenset[str] = frozenset(DEFECT_KINDS) - QUARANTINE_KINDS
"""Defects that are legal under the source contract and must be handled, not rejected."""

_MINUTE_MS = 60_000
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NEVER = 1 << 62

# movement
_SPEED_CAP_KMH = MAX_SPEED_KMH * 0.95
_SPEED_SWING_KMH = 8.0  # ±4 km/h per update, so a vehicle leaving a break starts slowly
_HEADING_SWING_RAD = 0.7  # ±0.35 rad per update
_UPDATE_MIN_MS = 2_500
_UPDATE_SPREAD_MS = 1_001  # updates every 2.5–3.5 s
_LOCATION_LAG_MS = 400  # location.at is up to this much before the event's at
_JITTER_RAD = 2.0 / (EARTH_RADIUS_KM * 1000.0)  # ±2 m per axis while parked
_RAD_PER_MS_PER_KMH = 1.0 / 3_600_000.0 / EARTH_RADIUS_KM  # angular distance of 1 ms at 1 km/h
_COORD_DECIMALS = 6
_LAT_MIN, _LAT_MAX = radians(52.40), radians(52.60)
_LNG_MIN, _LNG_MAX = radians(13.20), radians(13.60)
_LAT_CENTRE, _LNG_CENTRE = radians(52.50), radians(13.40)

# lifecycle
_DEREGISTER_SHARE = 0.6
_DELETED_PERIOD_SHARE = 0.2

# defects: per update event, each kind at this rate; late files per written file
_EVENT_DEFECTS: tuple[str, ...] = tuple(k for k in DEFECT_KINDS if k != "late_file")
_DEFECT_RATE_PER_KIND = 0.003
_EVENT_DEFECT_RATE = _DEFECT_RATE_PER_KIND * len(_EVENT_DEFECTS)
_LATE_FILE_RATE = 0.02
_MAX_LATE_FILES = 8

_at = itemgetter(0)
_dumps = json.dumps


@dataclass(frozen=True)
class SimulationConfig:
    """What to simulate; ``start`` must be timezone-aware and is normalised to UTC."""

    organizations: int = 2
    vehicles: int = 10
    minutes: int = 60
    start: datetime = datetime(2019, 6, 1, 8, 0, tzinfo=UTC)
    seed: int = 42
    defects: bool = False
    layout: Literal["flat", "nested"] = "flat"
    lines_per_file: int = 5000

    def __post_init__(self) -> None:
        for name in ("organizations", "vehicles", "minutes", "lines_per_file"):
            value = getattr(self, name)
            if not isinstance(value, int) or value < 1:
                raise ValueError(
                    f"SimulationConfig.{name} must be a positive integer, got {value!r}"
                )
        if self.layout not in ("flat", "nested"):
            raise ValueError(
                f"SimulationConfig.layout must be 'flat' or 'nested', got {self.layout!r}"
            )
        if self.start.tzinfo is None or self.start.utcoffset() is None:
            raise ValueError(f"SimulationConfig.start must be timezone-aware, got {self.start!r}")
        object.__setattr__(self, "start", self.start.astimezone(UTC))

    def to_json(self) -> dict[str, Any]:
        return {
            "organizations": self.organizations,
            "vehicles": self.vehicles,
            "minutes": self.minutes,
            "start": self.start.isoformat().replace("+00:00", "Z"),
            "seed": self.seed,
            "defects": self.defects,
            "layout": self.layout,
            "lines_per_file": self.lines_per_file,
        }


@dataclass
class SimulationResult:
    """What was written: ``events`` counts lines of every kind, ``keys`` is in upload order."""

    files: int
    events: int
    bytes: int
    defects: dict[str, int]
    manifest_path: Path | None
    keys: list[str] = field(default_factory=list)


class _Clock:
    """ISO-8601 UTC timestamps with milliseconds; two per event, so cached per second."""

    __slots__ = ("prefixes",)

    def __init__(self) -> None:
        self.prefixes: dict[int, str] = {}  # second -> "YYYY-MM-DDTHH:MM:SS."

    def prefix(self, sec: int) -> str:
        if len(self.prefixes) > 4096:  # bounded: a long run only needs recent seconds
            self.prefixes.clear()
        prefix = datetime.fromtimestamp(sec, UTC).strftime("%Y-%m-%dT%H:%M:%S.")
        self.prefixes[sec] = prefix
        return prefix

    def iso(self, ms: int) -> str:
        sec = ms // 1000
        prefix = self.prefixes.get(sec) or self.prefix(sec)
        return f"{prefix}{ms - sec * 1000:03d}Z"


class _Defects:
    """Decides, applies and records the injected faults (its own RNG stream)."""

    def __init__(self, rng: random.Random, first_bucket: int, last_bucket: int) -> None:
        self.rng = rng
        self.last = last_bucket
        self.bucket = first_bucket
        # from 30% into the window, any kind not seen yet is forced on the next eligible event,
        # so that every kind occurs at least once even in a small fleet
        self.forced_from = first_bucket + (last_bucket - first_bucket + 1) * 3 // 10
        self.seen: set[str] = set()  # membership only, never iterated
        self.forcing = False
        self.random = rng.random
        self.pending: dict[int, list[tuple[int, str, str | None]]] = {}
        self.entries: list[dict[str, Any]] = []
        self.late_files: list[tuple[str, bytes]] = []

    def start_minute(self, bucket: int) -> None:
        self.bucket = bucket
        self._update_forcing()

    def _update_forcing(self) -> None:
        self.forcing = self.bucket >= self.forced_from and any(
            kind not in self.seen for kind in _EVENT_DEFECTS
        )

    def pick(self, r: float) -> str | None:
        """The defect for an update, given its draw ``r`` (None: the update stays clean)."""
        if r < _EVENT_DEFECT_RATE:
            kind = _EVENT_DEFECTS[int(r / _DEFECT_RATE_PER_KIND)]
            if kind == "late_event" and self.bucket + 2 > self.last:
                return None
            return kind
        if self.forcing:
            for kind in _EVENT_DEFECTS:
                if kind not in self.seen and (kind != "late_event" or self.bucket + 2 <= self.last):
                    return kind
        return None

    def apply(self, kind: str, out: list, at_ms: int, ev: dict[str, Any]) -> None:
        """Emit ``ev`` (an update) altered by ``kind``; extra lines follow the valid one."""
        self.seen.add(kind)
        self._update_forcing()
        rnd = self.rng.random
        data = ev["data"]
        if kind == "malformed_json":
            line = _dumps(ev)
            cut = len(line) // 4 + int(rnd() * (len(line) // 2))
            out.append((at_ms, line[:cut], kind))
            return
        if kind == "duplicate_event":
            line = _dumps(ev)
            out.append((at_ms, line, None))
            if rnd() < 0.5 and self.bucket < self.last:
                self._deliver_later(self.bucket + 1, line, kind)
            else:
                out.append((at_ms, line, kind))
            return
        if kind == "late_event":
            delay = min(2 + int(rnd() * 14), self.last - self.bucket)
            self._deliver_later(self.bucket + delay, _dumps(ev), kind)
            return
        if kind == "unknown_event_type":
            out.append((at_ms, _dumps(ev), None))
            if rnd() < 0.5:
                name = ("refuel", "charge", "maintenance")[int(rnd() * 3)]
                odd = {"event": name, "on": "vehicle", "at": ev["at"], "data": {"id": data["id"]}}
            else:
                odd = {"event": "update", "on": "scooter", "at": ev["at"], "data": data}
            odd["organization_id"] = ev["organization_id"]
            out.append((at_ms, _dumps(odd), kind))
            return
        location = data["location"]
        variant = int(rnd() * 3)
        if kind == "null_location":
            if variant == 0:
                data["location"] = None
            elif variant == 1:
                location["lat"] = None
            else:
                location["lat"] = location["lng"] = None
        elif kind == "missing_location":
            del data["location"]
        elif kind == "extra_field":
            if variant == 0:
                ev["source"] = "gps-v2"
            else:
                data["battery_level"] = round(rnd(), 2)
        elif kind == "out_of_range_coordinate":
            if variant == 0:
                location["lat"] = round(location["lat"] + 100.0, _COORD_DECIMALS)
            elif variant == 1:
                location["lng"] = round(location["lng"] + 180.0, _COORD_DECIMALS)
            else:
                location["lat"] = round(-location["lat"] - 45.0, _COORD_DECIMALS)
        elif kind == "timestamp_without_zone":
            ev["at"] = ev["at"][:-1]
        else:  # pragma: no cover - the kinds are a closed set
            raise AssertionError(f"unknown defect kind {kind!r}")
        out.append((at_ms, _dumps(ev), kind))

    def _deliver_later(self, bucket: int, line: str, kind: str) -> None:
        self.pending.setdefault(bucket, []).append((0, line, kind))

    def deliveries(self, bucket: int) -> list[tuple[int, str, str | None]]:
        return self.pending.pop(bucket, [])

    def record_file(
        self, bucket: int, key: str, chunk: list[tuple[int, str, str | None]], data: bytes
    ) -> bool:
        """Record the defects in a file just cut; True if the file is to be uploaded last."""
        for number, item in enumerate(chunk, start=1):
            if item[2] is not None:
                self.entries.append({"key": key, "line": number, "kind": item[2]})
        # never from the last minute (it would not be out of order), and a few at most: held
        # files stay in memory until the end
        if bucket >= self.last or len(self.late_files) >= _MAX_LATE_FILES:
            return False
        late = self.rng.random() < _LATE_FILE_RATE
        if late or (bucket >= self.forced_from and "late_file" not in self.seen):
            self.seen.add("late_file")
            self.entries.append({"key": key, "line": 0, "kind": "late_file"})
            self.late_files.append((key, data))
            return True
        return False

    def counts(self) -> dict[str, int]:
        counts = dict.fromkeys(DEFECT_KINDS, 0)
        for entry in self.entries:
            counts[entry["kind"]] += 1
        return counts


class _Vehicle:
    """One vehicle's state; ``advance`` emits its events up to a time, in time order."""

    __slots__ = (
        "vid",
        "org",
        "lat",
        "lng",
        "heading",
        "speed",
        "loc_ms",
        "next_ms",
        "update_end",
        "schedule",
        "pos",
        "in_break",
        "mid",
        "tail",
    )

    def __init__(
        self,
        vid: str,
        org: str,
        lat: float,
        lng: float,
        heading: float,
        speed: float,
        first_update_ms: int,
        update_end_ms: int,
        schedule: list[tuple[int, str]],
    ) -> None:
        self.vid = vid
        self.org = org
        self.lat = lat  # radians, true position
        self.lng = lng
        self.heading = heading  # radians clockwise from north
        self.speed = speed  # km/h
        self.loc_ms: int | None = None  # location.at of the previous update
        self.update_end = update_end_ms
        self.next_ms = first_update_ms if first_update_ms < update_end_ms else _NEVER
        self.schedule = [*schedule, (_NEVER, "")]  # lifecycle events (ms, name), sorted
        self.pos = 0
        self.in_break = False
        # the constant parts of this vehicle's update lines
        self.mid = f'", "data": {{"id": "{vid}", "location": {{"lat": '
        self.tail = f'"}}}}, "organization_id": "{org}"}}'

    def next_due(self) -> int:
        return min(self.schedule[self.pos][0], self.next_ms)

    def advance(self, until: int, out: list, ctx: _Context) -> None:
        """Emit this vehicle's events with ``at < until``: lifecycle events and updates.

        The update step is inlined with its state in locals: it runs once per event and is
        where the simulator spends its time.
        """
        schedule, pos = self.schedule, self.pos  # schedule ends with a (_NEVER, "") sentinel
        rnd, clock, defects = ctx.random, ctx.clock, ctx.defects
        drandom = defects.random if defects is not None else rnd
        iso, prefixes, new_prefix = clock.iso, clock.prefixes, clock.prefix
        mid, tail = self.mid, self.tail
        lat, lng, heading, speed = self.lat, self.lng, self.heading, self.speed
        prev, t, update_end, in_break = self.loc_ms, self.next_ms, self.update_end, self.in_break
        life_ms = schedule[pos][0]
        while True:
            if life_ms <= t:  # lifecycle first on a tie
                if life_ms >= until:
                    break
                name = schedule[pos][1]
                pos += 1
                event = {
                    "event": name,
                    "on": "vehicle",
                    "at": iso(life_ms),
                    "data": {"id": self.vid},
                    "organization_id": self.org,
                }
                out.append((life_ms, _dumps(event), None))
                if name == "break_start":
                    in_break = True
                    speed = 0.0
                elif name == "break_end":
                    in_break = False
                elif name == "deregister":
                    t = _NEVER
                life_ms = schedule[pos][0]
                continue
            if t >= until:
                break
            loc_ms = t - int(rnd() * _LOCATION_LAG_MS)
            if prev is not None and loc_ms <= prev:
                loc_ms = prev + 1
            if in_break:
                # parked: the true position stays, the reported one wobbles by a few metres
                rep_lat = lat + (rnd() * 2.0 - 1.0) * _JITTER_RAD
                rep_lng = lng + (rnd() * 2.0 - 1.0) * _JITTER_RAD / cos(lat)
            else:
                if prev is not None:
                    speed += (rnd() - 0.5) * _SPEED_SWING_KMH
                    if speed < 0.0:
                        speed = 0.0
                    elif speed > _SPEED_CAP_KMH:
                        speed = _SPEED_CAP_KMH
                    heading += (rnd() - 0.5) * _HEADING_SWING_RAD
                    # destination point: the great-circle step is exactly speed * dt long
                    delta = speed * (loc_ms - prev) * _RAD_PER_MS_PER_KMH
                    sin_lat, cos_lat = sin(lat), cos(lat)
                    sin_d, cos_d = sin(delta), cos(delta)
                    new_lat = asin(sin_lat * cos_d + cos_lat * sin_d * cos(heading))
                    lng += atan2(sin(heading) * sin_d * cos_lat, cos_d - sin_lat * sin(new_lat))
                    lat = new_lat
                    if not (_LAT_MIN <= lat <= _LAT_MAX and _LNG_MIN <= lng <= _LNG_MAX):
                        toward = atan2((_LNG_CENTRE - lng) * cos(lat), _LAT_CENTRE - lat)
                        heading = toward + (rnd() - 0.5)
                rep_lat, rep_lng = lat, lng
            prev = loc_ms
            # what _Clock.iso and repr(round(x, 6)) give, inlined: this runs once per event
            sec = t // 1000
            prefix = prefixes.get(sec) or new_prefix(sec)
            at = f"{prefix}{t - sec * 1000:03d}Z"
            loc_sec = loc_ms // 1000
            if loc_sec != sec:
                prefix = prefixes.get(loc_sec) or new_prefix(loc_sec)
            loc_at = f"{prefix}{loc_ms - loc_sec * 1000:03d}Z"
            lat_txt = f"{degrees(rep_lat):.6f}".rstrip("0")
            if lat_txt[-1] == ".":
                lat_txt += "0"
            lng_txt = f"{degrees(rep_lng):.6f}".rstrip("0")
            if lng_txt[-1] == ".":
                lng_txt += "0"
            update_ms = t
            t += _UPDATE_MIN_MS + int(rnd() * _UPDATE_SPREAD_MS)
            if t >= update_end:
                t = _NEVER
            if defects is not None:
                r = drandom()
                if r < _EVENT_DEFECT_RATE or defects.forcing:
                    kind = defects.pick(r)
                    if kind is not None:
                        event = {
                            "event": "update",
                            "on": "vehicle",
                            "at": at,
                            "data": {
                                "id": self.vid,
                                "location": {
                                    "lat": float(lat_txt),
                                    "lng": float(lng_txt),
                                    "at": loc_at,
                                },
                            },
                            "organization_id": self.org,
                        }
                        defects.apply(kind, out, update_ms, event)
                        continue
            # byte-identical to json.dumps of the event (ids and timestamps need no escaping;
            # json writes floats with repr, and repr(round(x, 6)) is the 6-decimal text without
            # trailing zeros for Berlin-sized values) at a fraction of the cost; tested
            out.append(
                (
                    update_ms,
                    f'{{"event": "update", "on": "vehicle", "at": "{at}{mid}{lat_txt}'
                    f', "lng": {lng_txt}, "at": "{loc_at}{tail}',
                    None,
                )
            )
        self.lat, self.lng, self.heading, self.speed = lat, lng, heading, speed
        self.loc_ms, self.next_ms, self.pos, self.in_break = prev, t, pos, in_break


@dataclass
class _Context:
    random: Callable[[], float]
    clock: _Clock
    defects: _Defects | None


def _organizations(rng: random.Random, count: int) -> list[str]:
    ids: list[str] = []
    while len(ids) < count:
        candidate = f"org-{rng.getrandbits(32):08x}"
        if candidate not in ids:
            ids.append(candidate)
    return ids


def _vehicles(
    rng: random.Random, orgs: list[str], count: int, start_ms: int, end_ms: int
) -> list[_Vehicle]:
    window = end_ms - start_ms
    rnd = rng.random
    fleet = []
    for i in range(count):
        vid = str(uuid.UUID(int=rng.getrandbits(128), version=4))
        register = start_ms + int(rnd() * max(1, window // 10))
        active_end = end_ms
        if rnd() < _DEREGISTER_SHARE:
            active_end = max(register + 1, start_ms + window // 2 + int(rnd() * window * 0.45))
        schedule = [(register, "register")]
        r = rnd()
        n_breaks = 0 if r < 0.2 else (1 if r < 0.7 else 2)
        lo, hi = register + _MINUTE_MS, active_end - 30_000
        if n_breaks and hi > lo:
            segment = (hi - lo) // n_breaks
            for b in range(n_breaks):
                duration = 180_000 + int(rnd() * 720_001)  # 3–15 min
                room = segment - 2_000
                offset = rnd()
                if room < 180_000:
                    continue
                duration = min(duration, room)
                begin = lo + b * segment + 1_000 + int(offset * (room - duration + 1))
                schedule.append((begin, "break_start"))
                schedule.append((begin + duration, "break_end"))
        if active_end < end_ms:
            schedule.append((active_end, "deregister"))
        fleet.append(
            _Vehicle(
                vid=vid,
                org=orgs[i % len(orgs)],
                lat=radians(52.40 + rnd() * 0.20),
                lng=radians(13.20 + rnd() * 0.40),
                heading=rnd() * 2.0 * math.pi,
                speed=rnd() * 30.0,
                first_update_ms=register + _UPDATE_MIN_MS + int(rnd() * _UPDATE_SPREAD_MS),
                update_end_ms=active_end,
                schedule=schedule,
            )
        )
    return fleet


def _operating_periods(
    rng: random.Random, orgs: list[str], start_ms: int, end_ms: int, clock: _Clock
) -> list[tuple[int, str, str | None]]:
    """Consecutive 20–60 minute periods per organization covering the window; ~20% deleted."""
    rnd = rng.random
    events: list[tuple[int, str, str | None]] = []
    for org in orgs:
        short = org.removeprefix("org-")
        period_start, n = start_ms, 1
        while period_start < end_ms:
            finish = period_start + (20 + int(rnd() * 41)) * _MINUTE_MS
            data = {
                "id": f"op_{short}_{n}",
                "start": clock.iso(period_start),
                "finish": clock.iso(finish),
            }
            earliest = max(start_ms, period_start - 10 * _MINUTE_MS)
            created = earliest + int(rnd() * (period_start - earliest + 1))
            events.append(
                (created, _dumps(_period_event("create", created, data, org, clock)), None)
            )
            if rnd() < _DELETED_PERIOD_SHARE:
                lo, hi = created + _MINUTE_MS, min(end_ms - 1, finish + 10 * _MINUTE_MS)
                if lo <= hi:
                    deleted = lo + int(rnd() * (hi - lo + 1))
                    event = _period_event("delete", deleted, data, org, clock)
                    events.append((deleted, _dumps(event), None))
            period_start, n = finish, n + 1
    events.sort(key=_at)
    return events


def _period_event(
    name: str, ms: int, data: dict[str, str], org: str, clock: _Clock
) -> dict[str, Any]:
    return {
        "event": name,
        "on": "operating_period",
        "at": clock.iso(ms),
        "data": data,
        "organization_id": org,
    }


def _file_key(bucket: int, part: int, layout: str) -> str:
    moment = datetime.fromtimestamp(bucket * 60, UTC)
    stamp = moment.strftime("%Y-%m-%d-%H-%M")
    if layout == "nested":
        return f"{moment:%Y/%m/%d/%H/%M}/{stamp}-{part}-events.txt"
    return f"{stamp}-{part}-events.json"


def simulate(
    config: SimulationConfig,
    store: ObjectStore,
    manifest_dir: Path,
    progress: Callable[[int, int], None] | None = None,
) -> SimulationResult:
    """Write the fleet's events into ``store``; with defects, also the manifest of faults.

    ``progress(done_minutes, total_minutes)`` is called after each minute is written.
    """
    rng = random.Random(config.seed)
    # drawn first and always, so the fleet is the same with and without defects
    defect_rng = random.Random(rng.getrandbits(64))
    clock = _Clock()
    start_ms = (config.start - _EPOCH) // timedelta(milliseconds=1)
    end_ms = start_ms + config.minutes * _MINUTE_MS
    first_bucket, last_bucket = start_ms // _MINUTE_MS, (end_ms - 1) // _MINUTE_MS
    total = last_bucket - first_bucket + 1

    orgs = _organizations(rng, config.organizations)
    fleet = _vehicles(rng, orgs, config.vehicles, start_ms, end_ms)
    periods = _operating_periods(rng, orgs, start_ms, end_ms, clock)
    defects = _Defects(defect_rng, first_bucket, last_bucket) if config.defects else None
    ctx = _Context(random=rng.random, clock=clock, defects=defects)

    keys: list[str] = []
    lines = size = 0
    next_period = 0
    if progress is not None:
        progress(0, total)
    for done, bucket in enumerate(range(first_bucket, last_bucket + 1), start=1):
        until = (bucket + 1) * _MINUTE_MS
        items: list[tuple[int, str, str | None]] = []
        while next_period < len(periods) and periods[next_period][0] < until:
            items.append(periods[next_period])
            next_period += 1
        if defects is not None:
            defects.start_minute(bucket)
        for vehicle in fleet:
            if vehicle.next_due() < until:
                vehicle.advance(until, items, ctx)
        items.sort(key=_at)  # stable: ties keep generation order, so output is deterministic
        if defects is not None:
            items.extend(defects.deliveries(bucket))
        lpf = config.lines_per_file
        for part, lo in enumerate(range(0, len(items), lpf)):
            chunk = items[lo : lo + lpf]
            key = _file_key(bucket, part, config.layout)
            data = ("\n".join([item[1] for item in chunk]) + "\n").encode()
            lines += len(chunk)
            size += len(data)
            if defects is not None and defects.record_file(bucket, key, chunk, data):
                continue  # held back: uploaded after all the others
            store.put(key, data)
            keys.append(key)
        if progress is not None:
            progress(done, total)

    manifest_path = None
    counts = dict.fromkeys(DEFECT_KINDS, 0)
    if defects is not None:
        if defects.pending:
            raise AssertionError(f"undelivered late lines for minutes {sorted(defects.pending)}")
        for key, data in defects.late_files:
            store.put(key, data)
            keys.append(key)
        counts = defects.counts()
        manifest_path = _write_manifest(config, store, manifest_dir, counts, defects.entries)
    return SimulationResult(
        files=len(keys),
        events=lines,
        bytes=size,
        defects=counts,
        manifest_path=manifest_path,
        keys=keys,
    )


def _write_manifest(
    config: SimulationConfig,
    store: ObjectStore,
    manifest_dir: Path,
    counts: dict[str, int],
    entries: list[dict[str, Any]],
) -> Path:
    manifest_dir.mkdir(parents=True, exist_ok=True)
    path = manifest_dir / f"manifest-seed{config.seed}-{config.start:%Y%m%dT%H%M}.json"
    manifest = {
        "config": config.to_json(),
        "store": store.url,
        "quarantine_kinds": sorted(QUARANTINE_KINDS),
        "kept_kinds": sorted(KEPT_KINDS),
        "counts": counts,
        "entries": entries,
    }
    path.write_text(json.dumps(manifest, indent=1) + "\n", encoding="utf-8")
    return path
