"""The warehouse's answer computed independently, in plain Python, from the source JSON lines.

This follows the written definition (ARCHITECTURE §5) and the source contract (§4) only; it
imports nothing from the project, so a shared mistake cannot make the test pass.

Definition: for each operating period P (created, not deleted) and each vehicle V of P's
organization, take V's location updates whose location.at lies in [P.start, P.finish], ordered
by location.at (ties: lat, lng); distance(V, P) = sum of haversine distances (R = 6371.0 km)
between consecutive updates, skipping a segment when either end lies inside one of V's breaks
[break_start.at, matching break_end.at] (a break without its end yet is open-ended). Pairs
with at least one update count; the answer per period is the mean over its vehicles.

Where §5 leaves it open, the rules docs/architecture.md writes down ("The answer's definition,
in detail"): a vehicle is on break from a break_start until the next break_end (a start while
on break, an end while not, change nothing; at one instant a start comes first); a period is
deleted when its latest create/delete is a delete (a delete wins at one instant).
"""

from __future__ import annotations

import json
import math
import re
from collections import defaultdict
from collections.abc import Iterable
from datetime import datetime

TIMESTAMP = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(\.\d+)?Z$")
VEHICLE_EVENTS = {"register", "update", "deregister", "break_start", "break_end"}
PERIOD_EVENTS = {"create", "delete"}


def _ts(text: object) -> float | None:
    if not isinstance(text, str) or not TIMESTAMP.match(text):
        return None
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def _valid_events(lines: Iterable[bytes]) -> Iterable[dict]:
    """Lines that honour the source contract, exact duplicates once."""
    seen: set[str] = set()
    for raw in lines:
        try:
            event = json.loads(raw)
        except (ValueError, UnicodeDecodeError):
            continue
        if not isinstance(event, dict) or not isinstance(event.get("data"), dict):
            continue
        kind, on = event.get("event"), event.get("on")
        if not (
            (on == "vehicle" and kind in VEHICLE_EVENTS)
            or (on == "operating_period" and kind in PERIOD_EVENTS)
        ):
            continue
        if _ts(event.get("at")) is None or not event["data"].get("id"):
            continue
        if not event.get("organization_id"):
            continue
        location = event["data"].get("location")
        if isinstance(location, dict):
            lat, lng = location.get("lat"), location.get("lng")
            if (lat is not None and not -90 <= lat <= 90) or (
                lng is not None and not -180 <= lng <= 180
            ):
                continue
            if location.get("at") is not None and _ts(location["at"]) is None:
                continue
        if on == "operating_period" and (
            _ts(event["data"].get("start")) is None or _ts(event["data"].get("finish")) is None
        ):
            continue
        identity = json.dumps(event, sort_keys=True)
        if identity in seen:
            continue
        seen.add(identity)
        yield event


def distinct_valid_events(lines: Iterable[bytes]) -> int:
    """How many distinct events the source contract lets through (exact duplicates once)."""
    return sum(1 for _ in _valid_events(lines))


def haversine_km(lat1: float, lng1: float, lat2: float, lng2: float) -> float:
    phi1, phi2 = math.radians(lat1), math.radians(lat2)
    dphi, dlmb = phi2 - phi1, math.radians(lng2) - math.radians(lng1)
    a = math.sin(dphi / 2) ** 2 + math.cos(phi1) * math.cos(phi2) * math.sin(dlmb / 2) ** 2
    return 2 * 6371.0 * math.asin(math.sqrt(a))


def average_distance_per_period(lines: Iterable[bytes]) -> dict[str, tuple[int, float]]:
    """{operating period id: (vehicles counted, average distance km)} for live periods."""
    created: dict[str, tuple[float, str, float, float]] = {}
    deleted: dict[str, float] = {}  # period: its latest delete
    updates: dict[tuple[str, str], list[tuple[float, float, float]]] = defaultdict(list)
    break_events: dict[str, list[tuple[float, str]]] = defaultdict(list)
    for event in _valid_events(lines):
        data, at = event["data"], _ts(event["at"])
        if event["on"] == "operating_period":
            if event["event"] == "delete":
                deleted[data["id"]] = max(at, deleted.get(data["id"], at))
            elif data["id"] not in created or at > created[data["id"]][0]:
                created[data["id"]] = (
                    at,
                    event["organization_id"],
                    _ts(data["start"]),
                    _ts(data["finish"]),
                )
        elif event["event"] == "update":
            location = data.get("location")
            if not isinstance(location, dict):
                continue
            lat, lng, when = location.get("lat"), location.get("lng"), _ts(location.get("at"))
            if lat is None or lng is None or when is None:
                continue
            updates[(event["organization_id"], data["id"])].append((when, lat, lng))
        elif event["event"] in ("break_start", "break_end"):
            break_events[data["id"]].append((at, event["event"]))

    breaks: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for vehicle, events in break_events.items():
        began: float | None = None  # the open break's start, while on break
        for t, kind in sorted(events, key=lambda e: (e[0], e[1] == "break_end")):
            if kind == "break_start" and began is None:
                began = t
            elif kind == "break_end" and began is not None:
                breaks[vehicle].append((began, t))
                began = None
        if began is not None:
            breaks[vehicle].append((began, math.inf))

    def in_break(vehicle: str, when: float) -> bool:
        return any(start <= when <= end for start, end in breaks.get(vehicle, ()))

    answer: dict[str, tuple[int, float]] = {}
    for period, (created_at, org, start, finish) in created.items():
        if deleted.get(period, -math.inf) >= created_at:
            continue
        distances = []
        for (update_org, vehicle), points in updates.items():
            if update_org != org:
                continue
            inside = sorted(p for p in points if start <= p[0] <= finish)
            if not inside:
                continue
            total = 0.0
            for (t1, lat1, lng1), (t2, lat2, lng2) in zip(inside, inside[1:], strict=False):
                if in_break(vehicle, t1) or in_break(vehicle, t2):
                    continue
                total += haversine_km(lat1, lng1, lat2, lng2)
            distances.append(total)
        if distances:
            answer[period] = (len(distances), sum(distances) / len(distances))
    return answer


def pairs_touched(all_lines: list[bytes], late_lines: list[bytes]) -> tuple[set, set]:
    """(pairs that must be recomputed, pairs that may be) when ``late_lines`` arrive last.

    Must: (period, vehicle) for every late update inside a period of its organization.
    May also: every pair of a period with a late create/delete, and every pair of a vehicle
    with a late break event (its updates' break flags can change).
    """
    periods: dict[str, tuple[str, float, float]] = {}
    located: list[tuple[str, str, float]] = []
    for event in _valid_events(all_lines):
        data = event["data"]
        if event["on"] == "operating_period":
            periods[data["id"]] = (
                event["organization_id"],
                _ts(data["start"]),
                _ts(data["finish"]),
            )
        elif event["event"] == "update" and isinstance(data.get("location"), dict):
            when = _ts(data["location"].get("at"))
            if when is not None:
                located.append((event["organization_id"], data["id"], when))

    def inside(org: str, vehicle: str, when: float) -> set:
        return {
            (pid, vehicle)
            for pid, (porg, start, finish) in periods.items()
            if porg == org and start <= when <= finish
        }

    must: set = set()
    changed_periods: set = set()
    rebroken: set = set()
    for event in _valid_events(late_lines):
        data = event["data"]
        if event["on"] == "operating_period":
            changed_periods.add(data["id"])
        elif event["event"] in ("break_start", "break_end"):
            rebroken.add(data["id"])
        elif event["event"] == "update" and isinstance(data.get("location"), dict):
            when = _ts(data["location"].get("at"))
            if when is not None:
                must |= inside(event["organization_id"], data["id"], when)
    may = set(must)
    for org, vehicle, when in located:
        for pair in inside(org, vehicle, when):
            if pair[0] in changed_periods or vehicle in rebroken:
                may.add(pair)
    return must, may
