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
    return spec


_KNOWN = {
    "name", "description", "grain", "keys", "columns", "write_mode",
    "timestamp_columns", "distinct_keys", "merge_on", "prune", "indexes", "checks",
}  # fmt: skip
