"""Table declarations (``table.yaml``): one source of truth for schema, DDL, COPY and profiling.

A declaration names the table, its grain and keys, and its columns with a type, nullability,
an optional sensitivity tag and a description. Everything else — the arrow schema of the lake
files, ``CREATE TABLE``, the COPY column list, which columns profiling treats as timestamps,
keys or sensitive — is derived here, never written twice.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pyarrow as pa
import yaml
from psycopg import sql

from strata.errors import ConfigError

# declared type -> (arrow type, PostgreSQL type)
TYPES: dict[str, tuple[pa.DataType, str]] = {
    "text": (pa.string(), "text"),
    "int": (pa.int32(), "integer"),
    "bigint": (pa.int64(), "bigint"),
    "float8": (pa.float64(), "double precision"),
    "bool": (pa.bool_(), "boolean"),
    "timestamptz": (pa.timestamp("us", tz="UTC"), "timestamptz"),
    "json": (pa.string(), "jsonb"),
    "date": (pa.date32(), "date"),
}
SEVERITIES = ("fail", "warn")


@dataclass(frozen=True)
class Column:
    name: str
    type: str
    nullable: bool = True
    sensitivity: str | None = None
    description: str = ""
    accepted_values: tuple[str, ...] | None = None
    range: tuple[float, float] | None = None
    references: str | None = None  # "<table>.<column>" in the same layer: a foreign key
    # few distinct values per file: parquet dictionary-encodes it (the others are written
    # plain: hashing a unique id per row cost a third of the lake write, measured)
    repetitive: bool = False

    @property
    def arrow_field(self) -> pa.Field:
        metadata = {"description": self.description}
        if self.sensitivity:
            metadata["sensitivity"] = self.sensitivity
        return pa.field(self.name, TYPES[self.type][0], nullable=self.nullable, metadata=metadata)

    @property
    def pg_type(self) -> str:
        return TYPES[self.type][1]


@dataclass(frozen=True)
class Check:
    """A query returning the offending rows; ``fail`` blocks promotion, ``warn`` is recorded."""

    name: str
    sql: str
    severity: str = "fail"
    description: str = ""
    condition: str | None = None  # a row-level test: checks of one table share one scan


@dataclass(frozen=True)
class TableSpec:
    name: str
    description: str
    grain: str
    keys: tuple[str, ...]
    columns: tuple[Column, ...]
    write_mode: str = "append"
    timestamp_columns: tuple[str, ...] = ()
    distinct_keys: tuple[str, ...] = ()
    path: Path | None = None
    merge_on: tuple[str, ...] = ()  # promotion replaces prod rows matching dev rows on these
    prune: str | None = None  # rows meeting this condition are removed from prod on promotion
    indexes: tuple[tuple[str, ...], ...] = ()
    checks: tuple[Check, ...] = ()
    extra: dict = field(default_factory=dict)

    @property
    def column_names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def dictionary_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.repetitive]

    @property
    def sensitive_columns(self) -> dict[str, str]:
        return {c.name: c.sensitivity for c in self.columns if c.sensitivity}

    def arrow_schema(self) -> pa.Schema:
        return pa.schema(
            [c.arrow_field for c in self.columns],
            metadata={
                "strata.table": self.name,
                "strata.grain": self.grain,
                "strata.sensitive_columns": json.dumps(self.sensitive_columns),
            },
        )

    def create_sql(
        self,
        schema: str,
        extra_columns: tuple[tuple[str, str], ...] = (),
        *,
        primary_key: bool = True,
        not_null: bool = True,
        unlogged: bool = False,
        name: str | None = None,
    ) -> sql.Composed:
        """``CREATE TABLE IF NOT EXISTS``; dev candidates drop the constraints (``not_null``,
        ``primary_key``) so that checks can count offending rows instead of a load failing."""
        parts = [
            sql.SQL("{} {}{}").format(
                sql.Identifier(c.name),
                sql.SQL(c.pg_type),
                sql.SQL(" not null" if not_null and not c.nullable else ""),
            )
            for c in self.columns
        ]
        parts += [
            sql.SQL("{} {}").format(sql.Identifier(col), sql.SQL(ddl)) for col, ddl in extra_columns
        ]
        if self.keys and primary_key:
            parts.append(
                sql.SQL("primary key ({})").format(
                    sql.SQL(", ").join(map(sql.Identifier, self.keys))
                )
            )
        return sql.SQL("create {}table if not exists {}.{} ({})").format(
            sql.SQL("unlogged " if unlogged else ""),
            sql.Identifier(schema),
            sql.Identifier(name or self.name),
            sql.SQL(", ").join(parts),
        )

    def differences(
        self,
        conn: psycopg.Connection,
        schema: str,
        extra_columns: tuple[tuple[str, str], ...] = (),
        *,
        primary_key: bool = True,
    ) -> list[str]:
        """How ``schema.<table>`` in the database differs from what ``create_sql`` (same
        arguments) makes of this declaration: columns, types, nullability and the key, one
        phrase each. Empty when it matches, or does not exist."""
        actual = table_columns(conn, schema, self.name)
        if not actual:
            return []
        declared = declared_columns(
            conn,
            [(c.name, c.pg_type, not c.nullable) for c in self.columns]
            + [
                (name, ddl.split(" not null")[0], " not null" in ddl) for name, ddl in extra_columns
            ],
        )
        found = column_differences(actual, declared)
        (key,) = conn.execute(
            "select coalesce(array_agg(a.attname::text order by array_position(i.indkey::int2[], a.attnum)),"
            " '{}') from pg_index as i join pg_attribute as a on a.attrelid = i.indrelid"
            " and a.attnum = any(i.indkey) where i.indrelid = %s::regclass and i.indisprimary",
            (f'"{schema}"."{self.name}"',),
        ).fetchone()
        want = list(self.keys) if primary_key else []
        if key != want:
            found.append(f"the key is declared ({', '.join(want)}) but is ({', '.join(key)})")
        return found

    def comment_sql(self, schema: str) -> list[sql.Composed]:
        """Descriptions and sensitivity tags travel into the catalog (``\\d+`` shows them)."""
        statements = [
            sql.SQL("comment on table {}.{} is {}").format(
                sql.Identifier(schema),
                sql.Identifier(self.name),
                sql.Literal(self.description.strip()),
            )
        ]
        for c in self.columns:
            text = c.description + (f" [sensitivity: {c.sensitivity}]" if c.sensitivity else "")
            statements.append(
                sql.SQL("comment on column {}.{}.{} is {}").format(
                    sql.Identifier(schema),
                    sql.Identifier(self.name),
                    sql.Identifier(c.name),
                    sql.Literal(text),
                )
            )
        return statements


def table_columns(conn: psycopg.Connection, schema: str, name: str) -> dict[str, tuple[str, bool]]:
    """name → (type as the catalog spells it, not null) of a table; empty when it is missing.
    Sizes and precisions (``numeric(12,3)``) count where ``declared_columns`` can read them."""
    typmod = "a.atttypmod" if _reads_typmods(conn) else "null"
    rows = conn.execute(
        f"select a.attname::text, format_type(a.atttypid, {typmod}), a.attnotnull"
        " from pg_attribute as a where a.attrelid = to_regclass(%s) and a.attnum > 0"
        " and not a.attisdropped order by a.attnum",
        (f'"{schema}"."{name}"',),
    ).fetchall()
    return {column: (pg_type, not_null) for column, pg_type, not_null in rows}


def _reads_typmods(conn: psycopg.Connection) -> bool:
    """PostgreSQL 17 reads a declared type's size or precision (``to_regtypemod``); before
    it, both sides of the comparison leave them out."""
    return conn.info.server_version >= 170000


def declared_columns(
    conn: psycopg.Connection, columns: list[tuple[str, str, bool]]
) -> dict[str, tuple[str, bool]]:
    """(name, declared PostgreSQL type, not null) → the form ``table_columns`` reads back: the
    server spells the types (``timestamptz`` is ``timestamp with time zone``)."""
    typmod = "to_regtypemod(t)" if _reads_typmods(conn) else "null"
    spelled = dict(
        conn.execute(
            f"select t, format_type(to_regtype(t), {typmod}) from unnest(%s::text[]) as t",
            (sorted({pg_type for _, pg_type, _ in columns}),),
        ).fetchall()
    )
    return {name: (spelled[pg_type], not_null) for name, pg_type, not_null in columns}


def column_differences(
    actual: dict[str, tuple[str, bool]], declared: dict[str, tuple[str, bool]]
) -> list[str]:
    """How an existing table's columns differ from the declared ones, one phrase each (none
    when the table does not exist)."""
    if not actual:
        return []
    found = []
    for name, (pg_type, not_null) in declared.items():
        if name not in actual:
            found.append(f"column {name} is declared but missing")
        elif actual[name][0] != pg_type:
            found.append(f"column {name} is declared {pg_type} but is {actual[name][0]}")
        elif actual[name][1] != not_null:
            said = "not null" if not_null else "nullable"
            found.append(f"column {name} is declared {said} but is not")
    found += [f"column {name} is no longer declared" for name in actual if name not in declared]
    return found


def load_table(path: Path) -> TableSpec:
    """Read and check one ``table.yaml``; problems name the file."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as exc:
        raise ConfigError(f"{path}: cannot read table declaration: {exc}") from exc
    try:
        columns = tuple(
            Column(
                **{
                    **c,
                    **(
                        {"accepted_values": tuple(c["accepted_values"])}
                        if c.get("accepted_values") is not None
                        else {}
                    ),
                    **({"range": tuple(c["range"])} if c.get("range") is not None else {}),
                }
            )
            for c in raw["columns"]
        )
        checks = tuple(Check(**c) for c in raw.get("checks", ()))
        spec = TableSpec(
            name=raw["name"],
            description=raw.get("description", ""),
            grain=raw["grain"],
            keys=tuple(raw.get("keys", ())),
            columns=columns,
            write_mode=raw.get("write_mode", "append"),
            timestamp_columns=tuple(raw.get("timestamp_columns", ())),
            distinct_keys=tuple(raw.get("distinct_keys", ())),
            path=path,
            merge_on=tuple(raw.get("merge_on", raw.get("keys", ()))),
            prune=raw.get("prune"),
            indexes=tuple(tuple(i) for i in raw.get("indexes", ())),
            checks=checks,
            extra={k: v for k, v in raw.items() if k not in _KNOWN},
        )
    except (KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: invalid table declaration: {exc}") from exc
    names = spec.column_names
    unknown_types = [c.type for c in columns if c.type not in TYPES]
    referenced = (
        set(spec.keys)
        | set(spec.timestamp_columns)
        | set(spec.distinct_keys)
        | set(spec.merge_on)
        | {name for index in spec.indexes for name in index}
    )
    bad_severity = [c.name for c in spec.checks if c.severity not in SEVERITIES]
    if bad_severity:
        raise ConfigError(f"{path}: checks {bad_severity} need severity fail or warn")
    if unknown_types:
        raise ConfigError(f"{path}: unknown column types {unknown_types}")
    if len(set(names)) != len(names):
        raise ConfigError(f"{path}: duplicate column names")
    if not referenced <= set(names):
        raise ConfigError(
            f"{path}: keys/timestamps/indexes name unknown columns {referenced - set(names)}"
        )
    nullable_keys = [c.name for c in columns if c.name in spec.keys and c.nullable]
    if nullable_keys:
        raise ConfigError(f"{path}: key columns {nullable_keys} must be nullable: false")
    return spec


_KNOWN = {
    "name", "description", "grain", "keys", "columns", "write_mode",
    "timestamp_columns", "distinct_keys", "merge_on", "prune", "indexes", "checks",
}  # fmt: skip
