"""Binary COPY encoder: every declared type round-trips through a real PostgreSQL exactly."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa

from strata.db import connect
from strata.transfer import copy_arrow


def test_every_type_round_trips_with_nulls(services) -> None:  # type: ignore[no-untyped-def]
    ts = [
        datetime(2019, 6, 1, 18, 17, 10, 101000, tzinfo=UTC),
        None,
        datetime(1999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2030, 1, 1, tzinfo=UTC),
    ]
    table = pa.table(
        {
            "t": pa.array(["plain", None, "", "ünïcode ✓ 'quote' \\ tab\t"]),
            "i": pa.array([1, None, -2147483648, 2147483647], pa.int32()),
            "b": pa.array([1, 2, None, -(2**62)], pa.int64()),
            "f": pa.array([52.45, None, -0.0, 1e-300], pa.float64()),
            "o": pa.array([True, False, None, True]),
            "ts": pa.array(ts, pa.timestamp("us", tz="UTC")),
            "j": pa.array(['{"a": 1}', None, "[]", '{"k": "ü"}']),
        }
    )
    types = ["text", "integer", "bigint", "float8", "boolean", "timestamptz", "jsonb"]
    with connect(services, "raw_db") as conn:
        conn.execute(
            "create temp table copy_probe (id serial, t text, i integer, b bigint,"
            " f double precision, o boolean, ts timestamptz, j jsonb)"
        )
        for _ in range(2):  # two COPYs append; chunk boundaries do not matter
            assert (
                copy_arrow(
                    conn,
                    "pg_temp",
                    "copy_probe",
                    table.column_names,
                    types,
                    [table.slice(0, 3), table.slice(3)],
                )
                == 4
            )
        rows = conn.execute("select t, i, b, f, o, ts, j from copy_probe order by id").fetchall()
    expected = [
        ("plain", 1, 1, 52.45, True, ts[0], {"a": 1}),
        (None, None, 2, None, False, None, None),
        ("", -2147483648, None, -0.0, None, ts[2], []),
        ("ünïcode ✓ 'quote' \\ tab\t", 2147483647, -(2**62), 1e-300, True, ts[3], {"k": "ü"}),
    ]
    assert rows == expected * 2


def test_empty_table_writes_nothing(services) -> None:  # type: ignore[no-untyped-def]
    table = pa.table({"t": pa.array([], pa.string())})
    with connect(services, "raw_db") as conn:
        conn.execute("create temp table copy_empty (t text)")
        assert copy_arrow(conn, "pg_temp", "copy_empty", ["t"], ["text"], table) == 0
        assert conn.execute("select count(*) from copy_empty").fetchone() == (0,)


def test_copy_between_databases_streams_binary(services) -> None:  # type: ignore[no-untyped-def]
    from strata.transfer import copy_between

    with connect(services, "raw_db") as src, connect(services, "staging_db") as dst:
        src.execute(
            "create temp table src (id bigint, name text, at timestamptz, doc jsonb, f float8)"
        )
        src.execute(
            "insert into src select g, 'n' || g, timestamptz '2019-06-01 00:00Z' + g * interval"
            " '1 ms', jsonb_build_object('g', g), g / 3.0 from generate_series(1, 50000) g"
        )
        src.execute("insert into src values (0, null, null, null, null)")
        dst.execute(
            "create temp table dst (id bigint, name text, at timestamptz, doc jsonb, f float8)"
        )
        copied = copy_between(
            src,
            "select id, name, at, doc, f from src where id < %s",
            dst,
            "pg_temp",
            "dst",
            ["id", "name", "at", "doc", "f"],
            params=[40001],
        )
        assert copied == 40001
        expected = src.execute(
            "select md5(string_agg(s::text, '|' order by id)) from src s where id < 40001"
        ).fetchone()
        actual = dst.execute(
            "select md5(string_agg(d::text, '|' order by id)) from dst d"
        ).fetchone()
        assert actual == expected


def test_copy_between_can_write_rows_frozen(services) -> None:  # type: ignore[no-untyped-def]
    import psycopg
    import pytest

    from strata.transfer import copy_between

    with connect(services, "raw_db") as src, connect(services, "staging_db") as dst:
        src.execute("create temp table src (id bigint)")
        src.execute("insert into src select generate_series(1, 1000)")
        dst.execute("create temp table dst (id bigint)")
        dst.commit()
        dst.execute("truncate dst")  # FREEZE is allowed after a truncate in the same transaction
        copied = copy_between(src, "select id from src", dst, "pg_temp", "dst", ["id"], freeze=True)
        assert copied == 1000
        assert dst.execute("select count(*), sum(id) from dst").fetchone() == (1000, 500500)
        dst.commit()
        with pytest.raises(psycopg.Error, match="FREEZE"):  # and refused without one
            copy_between(src, "select id from src", dst, "pg_temp", "dst", ["id"], freeze=True)
