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
from psycopg import sql

SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + b"\x00\x00\x00\x00" + b"\x00\x00\x00\x00"
TRAILER = b"\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01 in microseconds since 1970-01-01
DEFAULT_CHUNK_ROWS = 65_536


def _fixed(values: np.ndarray, dtype: str) -> np.ndarray:
    return np.ascontiguousarray(values.astype(dtype)).view(np.uint8).reshape(len(values), -1)


ALIASES = {"double precision": "float8", "integer": "int4", "bigint": "int8", "boolean": "bool"}


def _column_payload(column: pa.Array, pg_type: str) -> tuple[np.ndarray, np.ndarray]:
    """(lengths with -1 for NULL, payload bytes of the non-null values in row order)."""
    pg_type = ALIASES.get(pg_type, pg_type)
    n = len(column)
    valid = (
        np.ones(n, dtype=bool)
        if column.null_count == 0
        else column.is_valid().to_numpy(zero_copy_only=False)
    )
    if pg_type in ("text", "jsonb"):
        column = (
            column.cast(pa.large_string()) if not pa.types.is_large_string(column.type) else column
        )
        offsets = np.frombuffer(column.buffers()[1], dtype=np.int64)[
            column.offset : column.offset + n + 1
        ]
        data = (
            np.frombuffer(column.buffers()[2], dtype=np.uint8)
            if column.buffers()[2]
            else np.zeros(0, np.uint8)
        )
        lengths = np.diff(offsets).astype(np.int64)
        lengths[~valid] = 0
        payload = data[offsets[0] : offsets[-1]]
        if column.null_count:  # null slots may still own bytes in theory; keep only valid ones
            keep = np.repeat(valid, np.diff(offsets))
            payload = payload[keep]
        if pg_type == "jsonb":
            # jsonb send format: a version byte (1) before the text
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            payload = np.insert(payload, starts[valid], 1)
            lengths = lengths + valid
        out_lengths = np.where(valid, lengths, -1).astype(np.int64)
        return out_lengths, payload
    if pg_type == "timestamptz":
        us = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
        raw = us.fill_null(0).to_numpy() - PG_EPOCH_US
        rows = _fixed(raw, ">i8")
    elif pg_type == "float8":
        rows = _fixed(column.fill_null(0).to_numpy(), ">f8")
    elif pg_type == "int8":
        rows = _fixed(column.cast(pa.int64()).fill_null(0).to_numpy(), ">i8")
    elif pg_type == "int4":
        rows = _fixed(column.cast(pa.int32()).fill_null(0).to_numpy(), ">i4")
    elif pg_type == "bool":
        rows = _fixed(column.fill_null(False).to_numpy(zero_copy_only=False), "u1")
    else:
        raise ValueError(f"no binary COPY encoder for {pg_type}")
    width = rows.shape[1]
    lengths = np.where(valid, width, -1).astype(np.int64)
    return lengths, rows[valid].reshape(-1)


def encode_rows(table: pa.Table, pg_types: Sequence[str]) -> bytes:
    """The tuples of ``table`` in binary COPY format (no signature, no trailer)."""
    n = table.num_rows
    if n == 0:
        return b""
    columns = [_column_payload(table.column(i).combine_chunks(), t) for i, t in enumerate(pg_types)]
    row_sizes = np.full(n, 2, dtype=np.int64)
    for lengths, _ in columns:
        row_sizes += 4 + np.maximum(lengths, 0)
    row_starts = np.concatenate(([0], np.cumsum(row_sizes)[:-1]))
    out = np.empty(int(row_sizes.sum()), dtype=np.uint8)
    field_count = np.array([len(pg_types)], dtype=">i2").view(np.uint8)
    out[row_starts[:, None] + np.arange(2)] = field_count
    pos = row_starts + 2
    four = np.arange(4)
    for lengths, payload in columns:
        out[pos[:, None] + four] = _fixed(lengths, ">i4")
        sizes = np.maximum(lengths, 0)
        if payload.size:
            starts = pos + 4
            # destination index of every payload byte: its row's start plus its offset in the row
            within = np.arange(payload.size) - np.repeat(np.cumsum(sizes) - sizes, sizes)
            out[np.repeat(starts, sizes) + within] = payload
        pos = pos + 4 + sizes
    return out.tobytes()


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
