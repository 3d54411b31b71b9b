"""The parser: fast path and reference parser agree line for line; every line is accounted for."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from datalake_pipelines.L1_raw_layer.parse import parse_object, parse_object_python
from datalake_pipelines.source_simulator import SimulationConfig, simulate
from strata.objectstore import LocalStore

UPDATE = (
    '{"event": "update", "on": "vehicle", "at": "2019-06-01T18:17:10.101Z", "data": {"id": '
    '"v1", "location": {"lat": 52.45, "lng": 13.46, "at": "2019-06-01T18:17:10.001Z"}}, '
    '"organization_id": "org-1"}'
)


def _line(**changes: object) -> bytes:
    event = json.loads(UPDATE)
    for path, value in changes.items():
        node = event
        *parents, leaf = path.split("__")
        for parent in parents:
            node = node[parent]
        if value is ...:
            del node[leaf]
        else:
            node[leaf] = value
    return json.dumps(event).encode()


def _same(data: bytes):  # type: ignore[no-untyped-def]
    fast, reference = parse_object(data), parse_object_python(data)
    fast.table.validate(full=True)  # e.g. every string is valid UTF-8
    assert fast.table.equals(reference.table)
    assert fast.quarantined == reference.quarantined
    assert fast.drift_fields == reference.drift_fields
    assert fast.lines == reference.lines == fast.accepted + len(fast.quarantined)
    return fast


@pytest.mark.parametrize(
    ("line", "reason"),
    [
        (b'{"event": "update", "on": "veh', "malformed_json"),
        (b"[1, 2]", "not_an_object"),
        (b"   ", "blank_line"),
        (b'{"event": "update", "on": "vehicle"}', "missing_required_field"),
        (_line(event="teleport"), "unknown_event_type"),
        (_line(on="scooter"), "unknown_event_type"),
        (_line(at="2019-06-01T18:17:10.101"), "timestamp_without_zone"),
        (_line(at="yesterday"), "invalid_timestamp"),
        (_line(at="2019-13-01T00:00:00Z"), "invalid_timestamp"),
        (_line(data__location__lat=91.0), "out_of_range_coordinate"),
        (_line(data__location__lng=-180.5), "out_of_range_coordinate"),
        (_line(data__location__lat="52.4"), "invalid_type"),
        (_line(data__id=...), "missing_required_field"),
        (_line(organization_id=...), "missing_required_field"),
        (_line(organization_id=""), "invalid_type"),
        (_line(data__location__at="2019-06-01 18:17"), "timestamp_without_zone"),
        ('{"event": "update", "on": "v\u00e9"}'.encode("latin-1"), "invalid_utf8"),
        # no year 0 in ISO-8601 as Python and PostgreSQL read it; nor beyond 9999 once in UTC
        (_line(at="0000-01-01T00:00:00Z"), "invalid_timestamp"),
        (_line(at="9999-12-31T23:30:00-01:00"), "invalid_timestamp"),
        (_line(data__location__at="0001-01-01T00:30:00+01:00"), "invalid_timestamp"),
        # U+0000 (written \u0000): PostgreSQL text cannot store it, in a field or in `extra`
        (_line(data__id="v\x00x"), "nul_character"),
        (_line(note="a\x00b"), "nul_character"),
        # deeper than a reader goes: refused, not a crash of the whole object
        (UPDATE[:-1].encode() + b', "deep": ' + b"[" * 1000 + b"]" * 1000 + b"}", "malformed_json"),
    ],
)
def test_each_bad_line_is_quarantined_with_its_reason(line: bytes, reason: str) -> None:
    data = UPDATE.encode() + b"\n" + line + b"\n" + UPDATE.encode() + b"\n"
    parsed = _same(data)
    assert parsed.accepted == 2
    assert [(q.line_number, q.reason) for q in parsed.quarantined] == [(2, reason)]
    assert parsed.quarantined[0].raw_line == line.decode("utf-8", "backslashreplace")


@pytest.mark.parametrize(
    "line",
    [
        _line(data__location=None),
        _line(data__location=...),
        _line(data__location__lat=None, data__location__lng=None),
        _line(at="2019-06-01T20:17:10.101+02:00"),
        _line(data__location__lat=52),
        _line(data__id="v\\u0000"),  # a backslash, then "u0000": no U+0000
        _line(at="9999-12-31T23:59:59.999999Z", data__location__at="0001-01-01T00:00:00Z"),
    ],
)
def test_lines_the_contract_allows_are_accepted(line: bytes) -> None:
    parsed = _same(UPDATE.encode() + b"\n" + line + b"\r\n")
    assert parsed.accepted == 2 and parsed.quarantined == []


def test_unknown_fields_are_kept_as_schema_drift() -> None:
    line = _line(source="app", data__battery_level=0.5, data__location__accuracy=3)
    parsed = _same(line + b"\n" + UPDATE.encode() + b"\n")
    assert parsed.accepted == 2
    extra = parsed.table["extra"].to_pylist()
    assert json.loads(extra[0]) == {
        "source": "app",
        "data.battery_level": 0.5,
        "data.location.accuracy": 3,
    }
    assert extra[1] is None
    assert parsed.drift_fields == {
        "source": 1,
        "data.battery_level": 1,
        "data.location.accuracy": 1,
    }


def test_unknown_fields_are_kept_null_or_not_with_numbers_as_written() -> None:
    """Whether a line goes the fast way or the reference way, ``extra`` is the same: a field
    given as null is kept (absent ones are not), and numbers keep their digits."""
    lines = [
        _line(note=None),
        UPDATE.encode(),
        _line(note="x", data__location__acc=None),
        UPDATE.replace(
            '"org-1"', '"org-1", "order": 123456789012345678901234567890, "r": 1.50'
        ).encode(),
        UPDATE.replace('"org-1"', '"org-1", "batt\\u0065ry": null').encode(),  # an escaped key
    ]
    parsed = _same(b"\n".join(lines) + b"\n")
    assert parsed.accepted == 5
    assert parsed.table["extra"].to_pylist() == [
        '{"note":null}',
        None,
        '{"data.location.acc":null,"note":"x"}',
        '{"order":123456789012345678901234567890,"r":1.50}',
        '{"battery":null}',
    ]
    assert parsed.drift_fields == {
        "note": 2,
        "data.location.acc": 1,
        "order": 1,
        "r": 1,
        "battery": 1,
    }
    # the same lines, each alone in its object: the same rows
    for line, extra in zip(lines, parsed.table["extra"].to_pylist(), strict=True):
        assert _same(line + b"\n").table["extra"].to_pylist() == [extra]


def test_empty_truncated_and_non_utf8_objects() -> None:
    assert _same(b"").lines == 0
    truncated = _same(UPDATE.encode() + b"\n" + UPDATE.encode()[:40])
    assert [(q.line_number, q.reason) for q in truncated.quarantined] == [(2, "truncated_line")]
    complete_without_newline = _same(UPDATE.encode() + b"\n" + UPDATE.encode())
    assert complete_without_newline.accepted == 2
    latin1 = _same("é".encode("latin-1") * 3 + b"\n" + UPDATE.encode() + b"\n")
    assert [q.reason for q in latin1.quarantined] == ["invalid_utf8"]
    # lines ended by CR alone are one line to a JSON-lines reader: the reason says why
    cr_only = _same(UPDATE.encode() + b"\r" + UPDATE.encode() + b"\r")
    assert [q.reason for q in cr_only.quarantined] == ["truncated_line"]
    assert "carriage return (CR): lines must end with LF or CRLF" in cr_only.quarantined[0].detail


def test_invalid_utf8_inside_a_string_is_quarantined() -> None:
    # the line is a well-formed object but for one latin-1 byte in a string value: the C++
    # reader alone would pass it through, and PostgreSQL would refuse the batch later
    latin1_id = UPDATE.replace('"v1"', '"v\u00e9"').encode("latin-1")
    parsed = _same(UPDATE.encode() + b"\n" + latin1_id + b"\n" + UPDATE.encode() + b"\n")
    assert [(q.line_number, q.reason) for q in parsed.quarantined] == [(2, "invalid_utf8")]
    assert parsed.accepted == 2
    # valid UTF-8 beyond ASCII is accepted as it is
    utf8_id = UPDATE.replace('"v1"', '"v\u00e9"').encode()
    parsed = _same(UPDATE.encode() + b"\n" + utf8_id + b"\n")
    assert parsed.quarantined == []
    assert parsed.table["entity_id"].to_pylist() == ["v1", "v\u00e9"]


def test_timestamps_are_exact_to_the_microsecond() -> None:
    parsed = _same(_line(at="2019-06-01T18:17:10.123456Z") + b"\n")
    assert parsed.table["at"][0].as_py().isoformat() == "2019-06-01T18:17:10.123456+00:00"
    assert parsed.table["location_at"][0].as_py().isoformat() == "2019-06-01T18:17:10.001000+00:00"


def test_fast_path_equals_reference_on_a_simulated_fleet(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "src")
    simulate(SimulationConfig(vehicles=12, minutes=20, defects=True), store, tmp_path)
    for info in store.list():
        _same(store.get(info.key))


def _no_fallback(data: bytes):  # type: ignore[no-untyped-def]
    raise AssertionError("the object was read line by line in Python")


def test_lines_that_cannot_be_objects_do_not_send_the_object_line_by_line() -> None:
    bad = [
        b'{"event": "update", "on": "veh',  # cut off
        b"",  # blank
        b"   ",  # blank
        '{"event": "update", "on": "v\u00e9"}'.encode("latin-1"),  # not UTF-8
        b"[1, 2]",
    ]
    body = [UPDATE.encode()] * 3
    for line in bad:
        body += [line, _line(at="yesterday"), UPDATE.encode()]
    data = b"\r\n".join(body) + b"\r\n" + UPDATE.encode()[:40]  # and a truncated last line
    fast = parse_object(data, fallback=_no_fallback)
    reference = parse_object_python(data)
    assert fast.table.equals(reference.table)
    assert fast.quarantined == reference.quarantined
    assert [q.reason for q in fast.quarantined] == [
        "malformed_json", "invalid_timestamp", "blank_line", "invalid_timestamp", "blank_line",
        "invalid_timestamp", "invalid_utf8", "invalid_timestamp", "not_an_object",
        "invalid_timestamp", "truncated_line",
    ]  # fmt: skip
    assert fast.accepted == 3 + len(bad)


def test_an_object_lookalike_that_is_not_json_is_still_quarantined() -> None:
    data = UPDATE.encode() + b'\n{"event": }\n' + UPDATE.encode() + b"\n"
    parsed = _same(data)
    assert [(q.line_number, q.reason) for q in parsed.quarantined] == [(2, "malformed_json")]
