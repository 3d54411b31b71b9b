"""The one transfer module: Arrow tables into PostgreSQL by binary COPY, vectorised.

Building COPY rows in Python (one ``write_row`` per row) costs about a microsecond per value;
instead the PostgreSQL binary COPY format is assembled column by column with numpy, so a
million rows are encoded in well under a second and memory stays bounded by ``chunk_rows``.

Format (PostgreSQL docs, "COPY … BINARY"): an 11-byte signature, a 32-bit flags field and a
32-bit header-extension length; each tuple is a 16-bit field count followed, per field, by a
32-bit length (-1 for NULL) and the value in the type's send format; a 16-bit -1 ends the
stream. All integers are big-endian.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
DEFAULT_CHUNK_ROWS = 65_536


ALIASES = {"double precision": "float8", "integer": "int4", "bigint": "int8", "boolean": "bool"}


def _be(values: np.ndarray, dtype: str) -> np.ndarray:
    """Big-endian bytes of each value, one row per value."""
    return np.ascontiguousarray(values.astype(dtype)).view(np.uint8).reshape(len(values), -1)


def _binary(offsets: np.ndarray, data: np.ndarray, n: int) -> pa.Array:
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def _fixed_width(values: np.ndarray, valid: np.ndarray | None, dtype: str) -> pa.Array:
    """Fields of a fixed-width type: a 4-byte length (or -1 for NULL) and the value."""
    payload = _be(values, dtype)
    n, width = payload.shape
    matrix = np.empty((n, 4 + width), dtype=np.uint8)
    matrix[:, :4] = _be(np.array([width]), ">i4")
    matrix[:, 4:] = payload
    if valid is None:
        return _binary(np.arange(0, n * (4 + width) + 1, 4 + width), matrix.reshape(-1), n)
    matrix[~valid, :4] = 0xFF  # length -1
    keep = np.ones((n, 4 + width), dtype=bool)
    keep[~valid, 4:] = False
    sizes = np.where(valid, 4 + width, 4)
    return _binary(np.concatenate(([0], np.cumsum(sizes))), matrix[keep], n)


_NULL_FIELD = b"\xff\xff\xff\xff"


def _fields(column: pa.Array, pg_type: str) -> pa.Array:
    """One COPY field per row (length prefix + send-format value) as an Arrow binary array."""
    pg_type = ALIASES.get(pg_type, pg_type)
    n = len(column)
    valid = None if column.null_count == 0 else column.is_valid().to_numpy(zero_copy_only=False)
    if pg_type in ("text", "jsonb"):
        text = column.cast(pa.binary())
        lengths = pc.binary_length(text).fill_null(0).to_numpy().astype(np.int64)
        if pg_type == "jsonb":  # jsonb send format: a version byte (1) before the text
            prefix = np.empty((n, 5), dtype=np.uint8)
            prefix[:, :4] = _be(lengths + 1, ">i4")
            prefix[:, 4] = 1
        else:
            prefix = _be(lengths, ">i4")
        width = prefix.shape[1]
        heads = _binary(np.arange(0, n * width + 1, width), prefix.reshape(-1), n)
        joined = pc.binary_join_element_wise(heads, text, b"")
        return pc.fill_null(joined, _NULL_FIELD) if valid is not None else joined
    if pg_type == "timestamptz":
        us = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).fill_null(0).to_numpy()
        return _fixed_width(us - PG_EPOCH_US, valid, ">i8")
    if pg_type == "float8":
        return _fixed_width(column.fill_null(0).to_numpy(), valid, ">f8")
    if pg_type == "int8":
        return _fixed_width(column.cast(pa.int64()).fill_null(0).to_numpy(), valid, ">i8")
    if pg_type == "int4":
        return _fixed_width(column.cast(pa.int32()).fill_null(0).to_numpy(), valid, ">i4")
    if pg_type == "bool":
        values = column.fill_null(False).to_numpy(zero_copy_only=False)
        return _fixed_width(values, valid, "u1")
    raise ValueError(f"no binary COPY encoder for {pg_type}")


def encode_rows(table: pa.Table, pg_types: Sequence[str]) -> bytes:
    """The tuples of ``table`` in binary COPY format (no signature, no trailer).

    Each column becomes an Arrow binary array of ready-made fields; Arrow's element-wise
    join then lays the fields of each row side by side in C++, and the joined array's data
    buffer is exactly the COPY body.
    """
    n = table.num_rows
    if n == 0:
        return b""
    count = _be(np.array([len(pg_types)]), ">i2").reshape(-1)
    heads = _binary(np.arange(0, 2 * n + 1, 2), np.tile(count, n), n)
    fields = [_fields(table.column(i).combine_chunks(), t) for i, t in enumerate(pg_types)]
    rows = pc.binary_join_element_wise(heads, *fields, b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset : rows.offset + n + 1]
    return rows.buffers()[2].to_pybytes()[offsets[0] : offsets[-1]]


def iter_copy_chunks(
    batches: Iterator[pa.Table] | Sequence[pa.Table],
    pg_types: Sequence[str],
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
) -> Iterator[bytes]:
    yield SIGNATURE
    for table in batches:
        for start in range(0, table.num_rows, chunk_rows):
            yield encode_rows(table.slice(start, chunk_rows), pg_types)
    yield TRAILER


def copy_arrow(
    conn: psycopg.Connection,
    schema: str,
    table: str,
    columns: Sequence[str],
    pg_types: Sequence[str],
    data: pa.Table | Sequence[pa.Table],
) -> int:
    """COPY ``data`` (columns in the given order) into ``schema.table``; returns rows written.

    Runs inside the caller's transaction, so the caller decides what commits together.
    """
    tables = [data] if isinstance(data, pa.Table) else list(data)
    statement = sql.SQL("copy {}.{} ({}) from stdin (format binary)").format(
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
    )
    selected = [t.select(list(columns)) for t in tables]
    with conn.cursor() as cur, cur.copy(statement) as copy:
        for chunk in iter_copy_chunks(selected, pg_types):
            copy.write(chunk)
    return sum(t.num_rows for t in tables)
