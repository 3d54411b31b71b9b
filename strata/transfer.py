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
RELAY_BYTES = 1 << 20


ALIASES = {"double precision": "float8", "integer": "int4", "bigint": "int8", "boolean": "bool"}


def _be(values: np.ndarray, dtype: str) -> np.ndarray:
    """Big-endian bytes of each value, one row per value."""
    return np.ascontiguousarray(values.astype(dtype)).view(np.uint8).reshape(len(values), -1)


def _binary(offsets: np.ndarray, data: np.ndarray, n: int) -> pa.Array:
    return pa.Array.from_buffers(
        pa.binary(), n, [None, pa.py_buffer(offsets.astype(np.int32)), pa.py_buffer(data)]
    )


def _fixed_payload(column: pa.Array, pg_type: str) -> tuple[np.ndarray, np.ndarray | None]:
    """(n × width big-endian value bytes, valid mask or None when there is no NULL)."""
    valid = None if column.null_count == 0 else column.is_valid().to_numpy(zero_copy_only=False)
    if pg_type == "timestamptz":
        us = column.cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).fill_null(0).to_numpy()
        return _be(us - PG_EPOCH_US, ">i8"), valid
    if pg_type == "float8":
        return _be(column.fill_null(0).to_numpy(), ">f8"), valid
    if pg_type == "int8":
        return _be(column.cast(pa.int64()).fill_null(0).to_numpy(), ">i8"), valid
    if pg_type == "int4":
        return _be(column.cast(pa.int32()).fill_null(0).to_numpy(), ">i4"), valid
    if pg_type == "bool":
        return _be(column.fill_null(False).to_numpy(zero_copy_only=False), "u1"), valid
    raise ValueError(f"no binary COPY encoder for {pg_type}")


def _fixed_fields(columns: list[tuple[np.ndarray, np.ndarray | None]]) -> pa.Array:
    """Consecutive fixed-width fields of every row as one binary array (one cell per row)."""
    n = len(columns[0][0])
    widths = [4 + payload.shape[1] for payload, _ in columns]
    matrix = np.empty((n, sum(widths)), dtype=np.uint8)
    keep = None
    at = 0
    for (payload, valid), width in zip(columns, widths, strict=True):
        matrix[:, at : at + 4] = _be(np.array([width - 4]), ">i4")
        matrix[:, at + 4 : at + width] = payload
        if valid is not None:
            if keep is None:
                keep = np.ones(matrix.shape, dtype=bool)
            matrix[~valid, at : at + 4] = 0xFF  # length -1: NULL, no value bytes follow
            keep[~valid, at + 4 : at + width] = False
        at += width
    if keep is None:
        return _binary(np.arange(0, n * at + 1, at), matrix.reshape(-1), n)
    sizes = keep.sum(axis=1)
    return _binary(np.concatenate(([0], np.cumsum(sizes))), matrix[keep], n)


def _text_fields(column: pa.Array, jsonb: bool) -> tuple[pa.Array, pa.Array]:
    """(length prefixes, values) of a text or jsonb column; NULL is a -1 prefix and no value."""
    n = len(column)
    text = column.cast(pa.binary())
    lengths = pc.binary_length(text).fill_null(0).to_numpy().astype(np.int64)
    width = 5 if jsonb else 4
    prefix = np.empty((n, width), dtype=np.uint8)
    prefix[:, :4] = _be(lengths + (1 if jsonb else 0), ">i4")
    if jsonb:  # jsonb send format: a version byte (1) before the text
        prefix[:, 4] = 1
    if text.null_count:
        invalid = ~text.is_valid().to_numpy(zero_copy_only=False)
        prefix[invalid, :4] = 0xFF
        if jsonb:
            keep = np.ones(prefix.shape, dtype=bool)
            keep[invalid, 4] = False
            sizes = keep.sum(axis=1)
            heads = _binary(np.concatenate(([0], np.cumsum(sizes))), prefix[keep], n)
            return heads, text
    return _binary(np.arange(0, n * width + 1, width), prefix.reshape(-1), n), text


def encode_rows(table: pa.Table, pg_types: Sequence[str]) -> memoryview:
    """The tuples of ``table`` in binary COPY format (no signature, no trailer).

    Every row is a sequence of cells prepared column-wise with numpy — runs of fixed-width
    fields as one cell, a text field as a length-prefix cell plus its value — and one Arrow
    element-wise join lays the cells of each row side by side in C++. The joined array's
    data buffer is exactly the COPY body, handed out as a view (not copied).
    """
    n = table.num_rows
    if n == 0:
        return memoryview(b"")
    count = _be(np.array([len(pg_types)]), ">i2").reshape(-1)
    cells: list[pa.Array] = [_binary(np.arange(0, 2 * n + 1, 2), np.tile(count, n), n)]
    run: list[tuple[np.ndarray, np.ndarray | None]] = []
    for i, pg_type in enumerate(pg_types):
        pg_type = ALIASES.get(pg_type, pg_type)
        column = table.column(i).combine_chunks()
        if pg_type in ("text", "jsonb"):
            if run:
                cells.append(_fixed_fields(run))
                run = []
            cells.extend(_text_fields(column, pg_type == "jsonb"))
        else:
            run.append(_fixed_payload(column, pg_type))
    if run:
        cells.append(_fixed_fields(run))
    rows = pc.binary_join_element_wise(*cells, b"", null_handling="replace", null_replacement=b"")
    offsets = np.frombuffer(rows.buffers()[1], dtype=np.int32)[rows.offset : rows.offset + n + 1]
    return memoryview(rows.buffers()[2])[offsets[0] : offsets[-1]]


def iter_copy_chunks(
    tables: Sequence[pa.Table], pg_types: Sequence[str], chunk_rows: int = DEFAULT_CHUNK_ROWS
) -> Iterator[bytes | memoryview]:
    """Signature, tuples in chunks of ``chunk_rows`` (small tables are encoded together), trailer."""
    yield SIGNATURE
    if tables:
        combined = pa.concat_tables(tables)
        for start in range(0, combined.num_rows, chunk_rows):
            yield encode_rows(combined.slice(start, chunk_rows), pg_types)
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


def copy_between(
    source: psycopg.Connection,
    query: sql.Composable | str,
    target: psycopg.Connection,
    schema: str,
    table: str,
    columns: Sequence[str],
    params: Sequence[object] | None = None,
    *,
    freeze: bool = False,
) -> int:
    """Stream ``query``'s rows from one database into ``schema.table`` of another.

    ``COPY (query) TO STDOUT (FORMAT BINARY)`` on the source feeds ``COPY … FROM STDIN
    (FORMAT BINARY)`` on the target block by block: no rows are decoded in Python and memory
    stays at one block whatever the size. The query's columns must match ``columns`` in
    order and type. Runs in the callers' transactions; returns the rows the target took.

    ``freeze`` writes the rows already frozen (``COPY … FREEZE``): allowed only when the target
    was created or truncated in the same transaction, and it spares the first reader the
    hint-bit writes on every page (measured: a first scan of 1M fresh rows 0.97 s, 0.14 s
    once frozen).
    """
    select = sql.SQL(query) if isinstance(query, str) else query
    out = sql.SQL("copy ({}) to stdout (format binary)").format(select)
    into = sql.SQL("copy {}.{} ({}) from stdin (format binary{})").format(
        sql.Identifier(schema),
        sql.Identifier(table),
        sql.SQL(", ").join(map(sql.Identifier, columns)),
        sql.SQL(", freeze" if freeze else ""),
    )
    with source.cursor() as src, target.cursor() as dst:
        with src.copy(out, params) as reader, dst.copy(into) as writer:
            # the server sends one message per row: passing them on one by one costs a
            # Python call each (measured 4.2 s vs 2.6 s per million rows), so gather ~1 MiB
            pending = bytearray()
            for block in reader:
                pending += block
                if len(pending) >= RELAY_BYTES:
                    writer.write(pending)
                    pending = bytearray()
            if pending:
                writer.write(pending)
        return dst.rowcount
