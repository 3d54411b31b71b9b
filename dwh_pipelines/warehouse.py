"""The one runner for the warehouse hops (staging, semantic, dwh): transfer, build, gate, publish.

A layer is a folder (``L2_staging_layer`` …) holding ``layer.yaml`` (its database, the layer it
reads and the inputs it streams) and one folder per table (``table.yaml`` + ``transform.sql``).
For every run:

1. **transfer** — the rows the upstream layer published since this layer's watermark (and, for
   keyed inputs, the full history of the keys they touch) stream by binary COPY from the
   upstream database into ``dev.in_*`` tables of this layer's database;
2. **build** — each table's ``transform.sql`` (a plain ``SELECT`` over ``dev.in_*``, ``prod.*``
   and ``dev.next_*``) fills ``dev.<table>`` with the rows that change: the candidate;
3. **gate** — every check (derived from the declarations, plus the declared ones) runs on the
   candidate; results go to ``audit.dq_results``; one failing ``fail`` check stops the run with
   its name and count, and prod is not touched. Each candidate is committed as soon as it is
   built, and a table's checks start on a second connection once every candidate they read
   is built, beside the next builds;
4. **publish** — in ONE transaction: per table, prod rows matching the candidate on
   ``merge_on`` are replaced by the candidate's rows (stamped with the publish sequence
   ``_seq``), and the upstream batches are recorded in ``audit.batches``.

A crash anywhere before the publish commit leaves prod and the ledger as they were; the rerun
rebuilds dev from scratch. ``dev.next_<table>`` is a view of what prod will hold after the
publish (prod rows not replaced, plus the candidate), for transforms that need the whole table.

``--full-refresh`` builds the candidate from everything upstream with prod read as empty (the
transforms' ``prod.<t>`` become ``dev.void_<t>``, empty twins), then swaps prod wholesale in the
publish transaction.
"""

from __future__ import annotations

import graphlib
import heapq
import re
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import psycopg
import yaml
from psycopg import sql
from psycopg.types.json import Jsonb

from strata.audit import audited_step, last_full_refresh, record_full_refresh
from strata.db import connect
from strata.errors import ConfigError, StrataError
from strata.faults import checkpoint
from strata.locks import Deadline, waiting_at_most
from strata.profiling import publish_metrics, sql_metrics
from strata.runlog import RunLog
from strata.settings import Settings
from strata.tables import (
    Check,
    TableSpec,
    column_differences,
    declared_columns,
    load_table,
    table_columns,
)
from strata.transfer import copy_between

ROOT = Path(__file__).parent
LAYER_FOLDERS = ("L2_staging_layer", "L3_semantic_layer", "L4_dwh_layer")
PRESENTATION_FOLDER = "L5_presentation_layer"
PRESENTATION_DATABASE = "dwh_db"
SEQ = "_seq"  # publish sequence stamped on prod rows: the next layer's watermark column
# merge: published, prod rows matching the candidate on merge_on are replaced;
# ephemeral: a working table of the build, kept in dev only
WRITE_MODES = ("merge", "ephemeral")
PROD_COLUMNS = ((SEQ, "bigint not null"),)  # prod's columns beyond the declared ones
CHECK_SAMPLE = 5

WAREHOUSE_DDL = """
do $$ begin  -- ALTER only when needed: it waits for every reader of the ledger
  if not exists (select from pg_attribute where attrelid = 'audit.batches'::regclass
                 and attname = 'source_seq' and not attisdropped) then
    alter table audit.batches add column source_seq bigint;
  end if;
end $$;
create sequence if not exists audit.publish_seq;
create table if not exists audit.dq_results (
    run_id uuid not null,
    layer text not null,
    table_name text not null,
    check_name text not null,
    severity text not null,
    status text not null check (status in ('pass', 'fail', 'warn')),
    offending_rows bigint not null,
    sample jsonb,
    description text,
    checked_at timestamptz not null default now(),
    primary key (run_id, layer, table_name, check_name)
);
create table if not exists dev.reprocess_batches (batch_id text primary key);
"""

# One definition of the shared SQL functions, created in every warehouse database.
FUNCTIONS_SQL = """
create or replace function public.strata_sk(key text) returns bigint
language sql immutable parallel safe strict
return ('x' || substr(md5(key), 1, 16))::bit(64)::bigint;
comment on function public.strata_sk(text) is
  'Deterministic surrogate key: the first 64 bits of md5(business key). Same key, same sk,
   whatever the order or the split into runs in which the rows arrived.';
create or replace function public.haversine_km(
    lat1 double precision, lng1 double precision, lat2 double precision, lng2 double precision
) returns double precision
language sql immutable parallel safe strict
return 2 * 6371.0 * asin(sqrt(
    power(sin((radians(lat2) - radians(lat1)) / 2), 2)
    + cos(radians(lat1)) * cos(radians(lat2)) * power(sin((radians(lng2) - radians(lng1)) / 2), 2)
));
comment on function public.haversine_km(double precision, double precision, double precision,
  double precision) is 'Great-circle distance in km on a sphere of mean Earth radius 6371.0 km.';
"""


class Clock:
    """Seconds spent per named piece of a layer's run (for the audit, the log and the bench)."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = {}
        self._last = time.monotonic()

    def lap(self, name: str) -> None:
        now = time.monotonic()
        self.seconds[name] = round(self.seconds.get(name, 0.0) + now - self._last, 3)
        self._last = now


class GateFailed(StrataError):
    """A blocking check failed: nothing was published."""


@dataclass(frozen=True)
class Input:
    """A ``dev.<name>`` table filled from an upstream table each run."""

    name: str
    source: str  # an upstream table name (its prod), or raw.events
    columns: tuple[str, ...]
    where: str | None = None  # an extra filter on the upstream rows
    keys_from: str | None = None  # keyed input: SQL on this database giving the key values…
    key_column: str | None = None  # …matched against this upstream column (no watermark)
    # (name, type, SQL expression over the upstream columns): evaluated by the UPSTREAM server
    # while it streams the rows, so that work runs on its core beside this database's COPY
    computed: tuple[tuple[str, str, str], ...] = ()


@dataclass(frozen=True)
class Upstream:
    layer: str
    database: str
    schema: str
    seq_column: str
    tables: dict[str, TableSpec]


@dataclass(frozen=True)
class Layer:
    name: str
    database: str
    folder: Path
    upstream: Upstream
    inputs: tuple[Input, ...]
    tables: tuple[TableSpec, ...]  # in dependency order
    description: str = ""

    def table(self, name: str) -> TableSpec:
        for spec in self.tables:
            if spec.name == name:
                return spec
        raise KeyError(name)

    def transform(self, spec: TableSpec) -> str:
        return (self.folder / spec.name / "transform.sql").read_text(encoding="utf-8")


@dataclass
class CheckResult:
    table: str
    name: str
    severity: str
    offending: int
    sample: list
    description: str = ""

    @property
    def status(self) -> str:
        if not self.offending:
            return "pass"
        return "fail" if self.severity == "fail" else "warn"


@dataclass
class LayerResult:
    layer: str
    batches: int = 0
    rows_in: int = 0
    rows_out: dict[str, int] = field(default_factory=dict)
    checks: list[CheckResult] = field(default_factory=list)
    watermark: tuple[int, int] = (0, 0)
    details: dict = field(default_factory=dict)
    full_refresh: bool = False


# ---------------------------------------------------------------- declarations


def _raw_upstream() -> Upstream:
    from datalake_pipelines.L1_raw_layer.ingest import EVENTS

    return Upstream("raw", "raw_db", "raw", "load_seq", {"events": EVENTS})


@cache
def layers() -> tuple[Layer, ...]:
    """Every warehouse layer, read from its folder; errors name the file."""
    found: list[Layer] = []
    upstream = _raw_upstream()
    for folder_name in LAYER_FOLDERS:
        layer = _load_layer(ROOT / folder_name, upstream)
        found.append(layer)
        upstream = Upstream(
            layer.name, layer.database, "prod", SEQ, {t.name: t for t in layer.tables}
        )
    return tuple(found)


def layer_named(name: str) -> Layer:
    for layer in layers():
        if layer.name == name:
            return layer
    raise ConfigError(f"unknown layer {name!r}; expected one of {[x.name for x in layers()]}")


def _load_layer(folder: Path, upstream: Upstream) -> Layer:
    path = folder / "layer.yaml"
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
        specs = {p.parent.name: load_table(p) for p in sorted(folder.glob("*/table.yaml"))}
        inputs = tuple(
            Input(
                name=i["name"],
                source=i["source"],
                columns=tuple(i.get("columns") or ()),
                where=i.get("where"),
                keys_from=i.get("keys_from"),
                key_column=i.get("key_column"),
                computed=tuple(
                    (name, c["type"], c["sql"]) for name, c in (i.get("computed") or {}).items()
                ),
            )
            for i in raw.get("inputs", ())
        )
    except (OSError, yaml.YAMLError, KeyError, TypeError) as exc:
        raise ConfigError(f"{path}: invalid layer declaration: {exc}") from exc
    for i in inputs:
        source = i.source.split(".")[-1]
        if source not in upstream.tables:
            raise ConfigError(f"{path}: input {i.name} reads unknown table {i.source}")
        unknown = set(i.columns) - set(upstream.tables[source].column_names)
        if unknown:
            raise ConfigError(f"{path}: input {i.name} names unknown columns {sorted(unknown)}")
        clash = {name for name, _, _ in i.computed} & set(upstream.tables[source].column_names)
        if clash:
            raise ConfigError(f"{path}: input {i.name} computes upstream columns {sorted(clash)}")
        if bool(i.keys_from) != bool(i.key_column):
            raise ConfigError(f"{path}: input {i.name} needs both keys_from and key_column")
    for name, spec in specs.items():
        if name != spec.name:
            raise ConfigError(f"{spec.path}: folder {name} declares table {spec.name}")
        if spec.write_mode not in WRITE_MODES:
            raise ConfigError(
                f"{spec.path}: write_mode {spec.write_mode!r}; a warehouse table is"
                f" {' or '.join(WRITE_MODES)}"
            )
        if published(spec) and not spec.merge_on:
            raise ConfigError(f"{spec.path}: a merge table needs keys (or merge_on)")
        if not (folder / name / "transform.sql").is_file():
            raise ConfigError(f"{folder / name}: no transform.sql")
    return Layer(
        name=raw["layer"],
        database=raw["database"],
        folder=folder,
        upstream=upstream,
        inputs=inputs,
        tables=_dependency_order(folder, specs),
        description=raw.get("description", ""),
    )


def _candidates_read(text: str, tables: Iterable[str]) -> set[str]:
    """Which of ``tables`` the SQL reads as ``dev.<t>`` or ``dev.next_<t>``."""
    return set(re.findall(r"\bdev\.(?:next_)?(\w+)", text)) & set(tables)


def _dependency_order(folder: Path, specs: dict[str, TableSpec]) -> tuple[TableSpec, ...]:
    """Dependencies are read from the SQL: a transform naming ``dev.<t>`` or ``dev.next_<t>``
    of another table in the layer runs after it. Where that leaves the order free, a table
    also comes after the candidates its checks read (so they can start as soon as it is built,
    beside the next builds), tables that others wait for come first, and then the ones they
    release (so the last build is not the one with heavy checks left to run alone)."""
    needs: dict[str, set[str]] = {}
    for name in specs:
        text = (folder / name / "transform.sql").read_text(encoding="utf-8")
        needs[name] = _candidates_read(text, specs) - {name}
    try:
        tuple(graphlib.TopologicalSorter(needs).static_order())
    except graphlib.CycleError as exc:
        raise ConfigError(f"{folder}: tables depend on each other in a cycle: {exc}") from exc
    wanted = {
        name: needs[name]
        | (_candidates_read(" ".join(c.sql for c in _checks_of(spec)), specs) - {name})
        for name, spec in specs.items()
    }
    try:
        tuple(graphlib.TopologicalSorter(wanted).static_order())
    except graphlib.CycleError:
        wanted = needs  # checks reading each other's tables: the transforms decide alone
    waiting: dict[str, set[str]] = {name: set() for name in specs}  # who waits for a table
    for name, before in wanted.items():
        for other in before:
            waiting[other].add(name)

    def dependents(name: str, seen: set[str]) -> set[str]:
        for other in waiting[name] - seen:
            seen.add(other)
            dependents(other, seen)
        return seen

    weight = {name: len(dependents(name, set())) for name in specs}
    left = {name: set(before) for name, before in wanted.items()}
    ready = [(-weight[n], 0, n) for n in specs if not left[n]]
    heapq.heapify(ready)
    order: list[str] = []
    while ready:
        _, _, name = heapq.heappop(ready)
        order.append(name)
        for other in sorted(waiting[name]):
            left[other].discard(name)
            if not left[other]:
                heapq.heappush(ready, (-weight[other], -len(order), other))
    return tuple(specs[name] for name in order)


def _input_spec(layer: Layer, item: Input) -> TableSpec:
    return layer.upstream.tables[item.source.split(".")[-1]]


def _input_columns(layer: Layer, item: Input) -> list[str]:
    """The upstream columns an input copies (its computed columns come after them)."""
    return list(item.columns) or _input_spec(layer, item).column_names


def _input_ddl(layer: Layer, item: Input) -> list[tuple[str, str]]:
    """(column, type) of ``dev.<input>``, in COPY order."""
    columns = _input_columns(layer, item)
    found = [(c.name, c.pg_type) for c in _input_spec(layer, item).columns if c.name in columns]
    return found + [(name, pg_type) for name, pg_type, _ in item.computed]


# ---------------------------------------------------------------- DDL


def published(spec: TableSpec) -> bool:
    """``write_mode: ephemeral`` tables are working tables of the build, kept in dev only."""
    return spec.write_mode != "ephemeral"


def _ident(*parts: str) -> sql.Composable:
    return sql.SQL(".").join(map(sql.Identifier, parts))


def _cols(names: Sequence[str]) -> sql.Composable:
    return sql.SQL(", ").join(map(sql.Identifier, names))


def _replace_if_changed(
    conn: psycopg.Connection, schema: str, name: str, declared: dict[str, tuple[str, bool]]
) -> None:
    """A dev working table (refilled every run) whose declaration changed is dropped, with
    Strata's dev views on it; the caller creates it again."""
    if column_differences(table_columns(conn, schema, name), declared):
        _drop_table(conn, schema, name)


def _ours() -> tuple[str, ...]:
    """Schemas whose views Strata re-creates itself: ``dev.next_*``, the reporting views and
    governance's coarse views."""
    from governance.model import load_declaration

    return ("dev", "reporting", load_declaration().coarse_schema)


def _readers(conn: psycopg.Connection, schema: str, table: str) -> list[tuple[str, str, str]]:
    """(schema, name, relkind) of every view reading ``schema.table``, directly or through
    other views; those reading others come first (the order they can be dropped in)."""
    rows = conn.execute(
        "with recursive readers(oid, depth) as ("
        "  select r.ev_class, 1 from pg_depend as d join pg_rewrite as r on r.oid = d.objid"
        "  where d.classid = 'pg_rewrite'::regclass and d.refclassid = 'pg_class'::regclass"
        "    and d.refobjid = %(table)s::regclass and r.ev_class <> d.refobjid"
        "  union all"
        "  select r.ev_class, readers.depth + 1 from readers"
        "  join pg_depend as d on d.refobjid = readers.oid"
        "    and d.refclassid = 'pg_class'::regclass and d.classid = 'pg_rewrite'::regclass"
        "  join pg_rewrite as r on r.oid = d.objid"
        "  where r.ev_class <> readers.oid and readers.depth < 64"
        ") select n.nspname::text, c.relname::text, c.relkind::text from readers"
        " join pg_class as c on c.oid = readers.oid"
        " join pg_namespace as n on n.oid = c.relnamespace"
        " group by 1, 2, 3 order by max(readers.depth) desc, 1, 2",
        {"table": f'"{schema}"."{table}"'},
    ).fetchall()
    return [(nsp, name, kind) for nsp, name, kind in rows]


def _views_of_others(conn: psycopg.Connection, table: str) -> list[str]:
    """Views reading ``prod.<table>`` that Strata does not re-create itself (checked before a
    run re-creates the table, so that the run stops early, naming them)."""
    ours = _ours()
    return [f"{n}.{v}" for n, v, _ in _readers(conn, "prod", table) if n not in ours]


def _drop_table(conn: psycopg.Connection, schema: str, table: str) -> None:
    """Drop a table to create it again as declared: first Strata's own views on it, then the
    table, never with CASCADE — whatever else depends on it (a person's view or function, a
    foreign key from their table) makes PostgreSQL refuse, and the error names it."""
    ours = _ours()
    qualified = f'"{schema}"."{table}"'
    if others := [
        what
        for (what,) in conn.execute(
            "select format('index %%s', indexrelid::regclass) from pg_index"
            " where indrelid = %(t)s::regclass and not (indexrelid::regclass::text"
            r"   ~ ('^(' || %(s)s || '\.)?' || %(n)s || '(_.*_idx|_pkey)$'))"
            " union all select format('trigger %%s', tgname) from pg_trigger"
            " where tgrelid = %(t)s::regclass and not tgisinternal"
            " union all select format('policy %%s', polname) from pg_policy"
            " where polrelid = %(t)s::regclass"
            " union all select format('publication %%s', p.pubname) from pg_publication_rel as r"
            " join pg_publication as p on p.oid = r.prpubid where r.prrelid = %(t)s::regclass",
            {"t": qualified, "s": schema, "n": table},
        )
    ]:
        raise ConfigError(
            f"{schema}.{table} must be created again as now declared, but it carries objects"
            f" that are not Strata's and would go with it: {', '.join(others)}. Strata drops"
            " only its own; save and drop those, then run again."
        )
    try:
        for nsp, name, kind in _readers(conn, schema, table):
            if nsp in ours:
                what = "materialized view" if kind == "m" else "view"
                conn.execute(sql.SQL(f"drop {what} if exists {{}}").format(_ident(nsp, name)))
        conn.execute(sql.SQL("drop table {}").format(_ident(schema, table)))
    except psycopg.errors.DependentObjectsStillExist as exc:
        raise ConfigError(
            f"{schema}.{table} must be created again as now declared, but objects that are"
            f" not Strata's depend on it: {(exc.diag.message_detail or str(exc)).strip()}."
            " Strata drops only its own; save and drop those, then run again."
        ) from exc


def _create_prod(conn: psycopg.Connection, spec: TableSpec) -> None:
    """``prod.<table>`` as declared, with its comments and indexes (if it does not exist)."""
    conn.execute(spec.create_sql("prod", PROD_COLUMNS))
    for statement in spec.comment_sql("prod"):
        conn.execute(statement)
    for index in ((SEQ,), *spec.indexes):
        conn.execute(
            sql.SQL("create index if not exists {} on {} ({})").format(
                sql.Identifier(f"{spec.name}_{'_'.join(index)}_idx"),
                _ident("prod", spec.name),
                _cols(index),
            )
        )


def ensure_layer(conn: psycopg.Connection, layer: Layer, *, full_refresh: bool = False) -> set[str]:
    """Dev and prod tables, their indexes and views, the audit additions. Idempotent.

    A declaration may change. Dev tables follow it at once (they are refilled every run); so
    does an empty prod table. A prod table with rows that no longer matches its declaration
    stops the run with the differences, unless this is a full refresh: then the returned
    tables are dropped and created as declared in the publish transaction."""
    conn.execute(WAREHOUSE_DDL)
    conn.execute(FUNCTIONS_SQL)
    for item in layer.inputs:
        ddl = _input_ddl(layer, item)
        declared = declared_columns(conn, [(name, pg_type, False) for name, pg_type in ddl])
        _replace_if_changed(conn, "dev", item.name, declared)
        conn.execute(
            sql.SQL("create unlogged table if not exists {} ({})").format(
                _ident("dev", item.name),
                sql.SQL(", ").join(
                    sql.SQL("{} {}").format(sql.Identifier(name), sql.SQL(pg_type))  # type: ignore[arg-type]
                    for name, pg_type in ddl
                ),
            )
        )
    rebuild: set[str] = set()
    stale: list[str] = []
    recreated = False
    for spec in layer.tables:
        declared = declared_columns(conn, [(c.name, c.pg_type, False) for c in spec.columns])
        _replace_if_changed(conn, "dev", spec.name, declared)
        conn.execute(spec.create_sql("dev", primary_key=False, not_null=False, unlogged=True))
        if not published(spec):
            continue
        _replace_if_changed(conn, "dev", f"void_{spec.name}", declared)
        conn.execute(
            spec.create_sql("dev", primary_key=False, not_null=False, name=f"void_{spec.name}")
        )
        if changes := spec.differences(conn, "prod", PROD_COLUMNS):
            empty = _is_empty(conn, _ident("prod", spec.name))
            if (empty or full_refresh) and (readers := _views_of_others(conn, spec.name)):
                conn.rollback()  # stop before the run's work, not at its publish
                raise ConfigError(
                    f"{layer.name}: {layer.database}.prod.{spec.name} must be created again as"
                    f" {spec.path} now declares it ({'; '.join(changes)}), and views that are"
                    f" not Strata's read it: {', '.join(readers)}. Strata drops only its own"
                    " views; save and drop these, then run again."
                )
            if empty:  # nothing to keep: created again below
                _drop_foreign_keys(conn, layer, {spec.name})
                _drop_table(conn, "prod", spec.name)
                recreated = True
            else:
                rebuild.add(spec.name)
                stale.append(
                    f"{layer.database}.prod.{spec.name} no longer matches its declaration"
                    f" {spec.path}: {'; '.join(changes)}."
                )
                continue
        _create_prod(conn, spec)
    if stale and not full_refresh:
        conn.rollback()
        raise ConfigError(
            f"{layer.name}: {' '.join(stale)} Prod was not changed. `strata run --full-refresh`"
            " rebuilds such tables as declared (in the publish transaction, from everything"
            " upstream); or restore the declarations."
        )
    _drop_foreign_keys(conn, layer, undeclared_only=True)
    _add_foreign_keys(conn, layer, skip=rebuild)
    if recreated and layer.database == PRESENTATION_DATABASE:
        _create_presentation(conn)  # dropped with the tables they read: back before the commit
    conn.commit()
    return rebuild


def _next_views(conn: psycopg.Connection, layer: Layer, prod_of: Callable[[str], str]) -> None:
    """``dev.next_<t>``: prod after the publish — prod rows the candidate does not replace,
    then the candidate."""
    for spec in filter(published, layer.tables):
        match = sql.SQL(" and ").join(
            sql.SQL("d.{0} = p.{0}").format(sql.Identifier(c)) for c in spec.merge_on
        )
        view = _ident("dev", f"next_{spec.name}")
        body = sql.SQL(
            "view {view} as select {cols} from {prod} as p"
            " where not exists (select 1 from {dev} as d where {match})"
            " union all select {cols} from {dev}"
        ).format(
            view=view,
            cols=_cols(spec.column_names),
            prod=sql.SQL(prod_of(spec.name)),
            dev=_ident("dev", spec.name),
            match=match,
        )
        try:
            with conn.transaction():
                conn.execute(sql.SQL("create or replace {}").format(body))
        except psycopg.errors.InvalidTableDefinition:  # its columns changed: a new view
            conn.execute(sql.SQL("drop view {}").format(view))
            conn.execute(sql.SQL("create {}").format(body))


# ---------------------------------------------------------------- checks


def derived_checks(spec: TableSpec) -> list[Check]:
    """Checks that follow from the declaration: key unique and not null, not-null columns,
    accepted values, ranges and references (foreign keys)."""
    table = f"dev.{spec.name}"
    keys = ", ".join(f'"{k}"' for k in spec.keys)

    def row_check(name: str, condition: str, shown: str, description: str) -> Check:
        return Check(
            name,
            f"select {keys}, {shown} from {table} where {condition}",
            description=description,
            condition=condition,
        )

    checks = [
        Check(
            "unique_key",
            f"select {keys}, count(*) as copies from {table} group by {keys} having count(*) > 1",
            description=f"({keys}) identifies one row",
        )
    ]
    required = [c.name for c in spec.columns if not c.nullable]
    if required:
        which = ", ".join(f"case when \"{c}\" is null then '{c}' end" for c in required)
        checks.append(
            row_check(
                "not_null",
                " or ".join(f'"{c}" is null' for c in required),
                f"array_remove(array[{which}], null) as null_columns",
                "required columns: " + ", ".join(required),
            )
        )
    for c in spec.columns:
        if c.accepted_values is not None:
            values = ", ".join("'" + v.replace("'", "''") + "'" for v in c.accepted_values)
            checks.append(
                row_check(
                    f"accepted_values_{c.name}",
                    f'"{c.name}" not in ({values})',
                    f'"{c.name}"',
                    f"{c.name} in ({values})",
                )
            )
        if c.range is not None:
            low, high = c.range
            checks.append(
                row_check(
                    f"range_{c.name}",
                    f'"{c.name}" < {low} or "{c.name}" > {high}',
                    f'"{c.name}"',
                    f"{low} <= {c.name} <= {high}",
                )
            )
        if c.references is not None:
            ref_table, ref_column = c.references.split(".")
            checks.append(
                Check(
                    f"references_{c.name}",
                    f'select {keys}, t."{c.name}" from {table} as t where t."{c.name}" is not null'
                    f" and not exists (select 1 from dev.next_{ref_table} as r"
                    f' where r."{ref_column}" = t."{c.name}")',
                    description=f"{c.name} -> {c.references}",
                )
            )
    return checks


def _run_row_checks(
    conn: psycopg.Connection, spec: TableSpec, checks: list[Check]
) -> list[CheckResult]:
    """Row-level checks of one table in ONE scan; samples only for those that find rows."""
    if not checks:
        return []
    counts = conn.execute(
        sql.SQL("select {} from {}").format(
            sql.SQL(", ").join(
                sql.SQL("count(*) filter (where {})").format(sql.SQL(c.condition)) for c in checks  # type: ignore[arg-type]
            ),
            _ident("dev", spec.name),
        )
    ).fetchone()
    results = []
    for check, count in zip(checks, counts, strict=True):
        sample: list = []
        if count:
            (sample,) = conn.execute(
                sql.SQL(
                    "select coalesce(jsonb_agg(to_jsonb(o)), '[]') from ({} limit {}) as o"
                ).format(
                    sql.SQL(check.sql), sql.Literal(CHECK_SAMPLE)
                )  # type: ignore[arg-type]
            ).fetchone()
        results.append(
            CheckResult(spec.name, check.name, check.severity, count, sample, check.description)
        )
    return results


def _run_check(conn: psycopg.Connection, spec: TableSpec, check: Check, text: str) -> CheckResult:
    query = sql.SQL(
        "with offending as ({}) select count(*),"
        " (select jsonb_agg(to_jsonb(o)) from (select * from offending limit {}) as o)"
        " from offending"
    ).format(sql.SQL(text), sql.Literal(CHECK_SAMPLE))
    try:
        count, sample = conn.execute(query).fetchone()
    except psycopg.Error as exc:
        raise StrataError(
            f"check {spec.name}.{check.name} ({spec.path}) is not valid SQL: {exc}"
        ) from exc
    return CheckResult(
        spec.name, check.name, check.severity, count, sample or [], check.description
    )


# ---------------------------------------------------------------- the run


def _watermark(conn: psycopg.Connection, layer: Layer) -> int:
    (value,) = conn.execute(
        "select coalesce(max(source_seq), 0) from audit.batches where layer = %s", (layer.name,)
    ).fetchone()
    return int(value)


def _unfinished_full_refresh(
    conn: psycopg.Connection, up: psycopg.Connection, layer: Layer
) -> str | None:
    """Why this layer must run as a full refresh though not asked to: the layer upstream
    published a full refresh (which may have removed rows: a rejected batch) that this one has
    not followed — the run that did it was killed or stopped before reaching it. None if not."""
    upstream = last_full_refresh(up, layer.upstream.layer)
    up.commit()
    if upstream is None:
        return None
    mine = last_full_refresh(conn, layer.name)
    try:
        watermark = _watermark(conn, layer)
    except psycopg.errors.UndefinedColumn:  # a layer that never ran
        watermark = 0
    conn.rollback()
    if upstream[0] <= max(watermark, (mine[1] or 0) if mine else 0):
        return None
    return (
        f"{layer.upstream.layer} published a full refresh (at {upstream[0]}) that {layer.name}"
        " has not followed yet; this run follows it"
    )


def _upstream_batches(
    up: psycopg.Connection, layer: Layer, low: int
) -> tuple[list[tuple[str, str | None, int, int]], list[str]]:
    """(batches published upstream after ``low`` in order, ids of batches set aside)."""
    rejected: list[str] = []
    if layer.upstream.layer == "raw":
        up.execute(REJECTED_DDL)
        rejected = [r[0] for r in up.execute("select batch_id from audit.rejected_batches")]
    rows = up.execute(
        "select batch_id, source_key, rows, load_seq from audit.batches"
        " where layer = %s and load_seq > %s and not (batch_id = any(%s)) order by load_seq",
        (layer.upstream.layer, low, rejected),
    ).fetchall()
    up.commit()
    return rows, rejected


REJECTED_DDL = """
create table if not exists audit.rejected_batches (
    batch_id text primary key,
    reason text not null,
    rejected_at timestamptz not null default now()
)
"""


def _check_reprocess(raw: psycopg.Connection, batch_ids: Sequence[str]) -> None:
    """``--reprocess`` ids must be raw batches that are not set aside (on raw_db)."""
    known = {
        r[0]
        for r in raw.execute(
            "select batch_id from audit.batches where layer = 'raw' and batch_id = any(%s)",
            (list(batch_ids),),
        )
    }
    if missing := sorted(set(batch_ids) - known):
        raise ConfigError(f"--reprocess: no raw batch {', '.join(missing)}; nothing was run")
    if raw.execute("select to_regclass('audit.rejected_batches')").fetchone()[0]:
        if rejected := raw.execute(
            "select batch_id, reason from audit.rejected_batches where batch_id = any(%s)"
            " order by 1",
            (list(batch_ids),),
        ).fetchall():
            raise ConfigError(
                "--reprocess: "
                + "; ".join(f"batch {b} is rejected ({why})" for b, why in rejected)
                + ". A rejected batch is skipped by every layer; nothing was run"
            )
    raw.commit()


def check_reprocess(settings: Settings, batch_ids: Sequence[str]) -> None:
    """Before a run changes anything: the ``--reprocess`` ids can be reprocessed."""
    with connect(settings, "raw_db") as raw:
        _check_reprocess(raw, batch_ids)


def reject_batch(settings: Settings, batch_id: str, reason: str) -> str | None:
    """Set a raw batch aside: the warehouse layers skip it from now on (it stays in raw).
    Returns the reason it was set aside with before, if it already was."""
    with connect(settings, "raw_db") as conn:
        conn.execute(REJECTED_DDL)
        known = conn.execute(
            "select 1 from audit.batches where layer = 'raw' and batch_id = %s", (batch_id,)
        ).fetchone()
        if not known:
            raise StrataError(f"no raw batch {batch_id!r} (see raw_db audit.batches)")
        earlier = conn.execute(
            "select reason from audit.rejected_batches where batch_id = %s", (batch_id,)
        ).fetchone()
        conn.execute(
            "insert into audit.rejected_batches (batch_id, reason) values (%s, %s)"
            " on conflict (batch_id) do update set reason = excluded.reason",
            (batch_id, reason),
        )
        conn.commit()
    return earlier[0] if earlier else None


def _transfer(
    conn: psycopg.Connection,
    up: psycopg.Connection,
    layer: Layer,
    low: int,
    high: int,
    rejected: list[str],
    reprocess: list[str],
    clock: Clock,
) -> dict[str, int]:
    counts: dict[str, int] = {}
    seq = sql.Identifier(layer.upstream.seq_column)
    for item in layer.inputs:
        columns = _input_columns(layer, item)
        source = _ident(layer.upstream.schema, item.source.split(".")[-1])
        conn.execute(sql.SQL("truncate {}").format(_ident("dev", item.name)))
        params: list[object]
        if item.keys_from:
            keys = [r[0] for r in conn.execute(sql.SQL(item.keys_from))]  # type: ignore[arg-type]
            where = sql.SQL("{} = any(%s) and {} <= %s").format(
                sql.Identifier(item.key_column), seq  # type: ignore[arg-type]
            )
            params = [keys, high]
        else:
            where = sql.SQL("({seq} > %s and {seq} <= %s)").format(seq=seq)
            params = [low, high]
            if layer.upstream.layer == "raw":
                if reprocess:  # an OR would keep the BRIN index on load_seq from being used
                    where = sql.SQL("({} or batch_id = any(%s))").format(where)
                    params.append(reprocess)
                where = sql.SQL("{} and not (batch_id = any(%s))").format(where)
                params.append(rejected)
        if item.where:
            where = sql.SQL("{} and ({})").format(where, sql.SQL(item.where))
        selected = [sql.Identifier(c) for c in columns] + [
            sql.SQL("({})::{} as {}").format(sql.SQL(expr), sql.SQL(pg_type), sql.Identifier(name))  # type: ignore[arg-type]
            for name, pg_type, expr in item.computed
        ]
        query = sql.SQL("select {} from {} where {}").format(
            sql.SQL(", ").join(selected), source, where
        )
        try:
            # truncated above in this same transaction: the rows can be written frozen
            counts[item.name] = copy_between(
                up,
                query,
                conn,
                "dev",
                item.name,
                columns + [name for name, _, _ in item.computed],
                params,
                freeze=True,
            )
        except psycopg.Error as exc:
            raise StrataError(
                f"{layer.name}: streaming input {item.name} from {layer.upstream.database}"
                f" failed ({layer.folder / 'layer.yaml'}): {str(exc).strip()}"
            ) from exc
        conn.execute(sql.SQL("analyze {}").format(_ident("dev", item.name)))
        clock.lap(f"transfer.{item.name}")
    up.commit()
    return counts


def _published(full_refresh: bool) -> Callable[[str], str]:
    return (lambda t: f"dev.void_{t}") if full_refresh else (lambda t: f"prod.{t}")


def _sql_for_run(text: str, full_refresh: bool) -> str:
    """In a full refresh the transforms read prod as empty: ``prod.t`` becomes ``dev.void_t``."""
    return re.sub(r"\bprod\.(\w+)", r"dev.void_\1", text) if full_refresh else text


def _build(
    conn: psycopg.Connection,
    layer: Layer,
    full_refresh: bool,
    clock: Clock,
    on_built: Callable[[str], None] = lambda name: None,
) -> dict[str, int]:
    """Each candidate in dependency order, committed one by one (dev is rebuilt from scratch
    by any rerun) so that its checks can start on another connection while the next builds."""
    built: dict[str, int] = {}
    for spec in layer.tables:
        target = _ident("dev", spec.name)
        conn.execute(sql.SQL("truncate {}").format(target))
        text = _sql_for_run(layer.transform(spec), full_refresh)
        try:
            cur = conn.execute(
                sql.SQL("insert into {} ({}) {}").format(
                    target, _cols(spec.column_names), sql.SQL(text)  # type: ignore[arg-type]
                )
            )
        except psycopg.Error as exc:
            raise StrataError(
                f"{layer.name}: building {spec.name} failed ({layer.folder / spec.name}"
                f"/transform.sql): {str(exc).strip()}"
            ) from exc
        built[spec.name] = cur.rowcount
        conn.execute(sql.SQL("analyze {}").format(target))
        conn.commit()
        clock.lap(f"build.{spec.name}")
        on_built(spec.name)
    return built


def _checks_of(spec: TableSpec) -> list[Check]:
    return [*derived_checks(spec), *spec.checks]


class _Gate:
    """A table's checks run on a second connection as soon as every candidate they read is
    built: beside the next builds, which use one core (an ``INSERT … SELECT`` never runs in
    parallel). Results come back in declaration order, whatever order they finished in."""

    def __init__(self, settings: Settings, layer: Layer, full_refresh: bool) -> None:
        self.layer = layer
        self.full_refresh = full_refresh
        names = [t.name for t in layer.tables]
        self.reads = {
            spec.name: {spec.name}
            | _candidates_read(" ".join(c.sql for c in _checks_of(spec)), names)
            for spec in layer.tables
        }
        self.built: set[str] = set()
        self.futures: dict[str, Future[tuple[list[CheckResult], float]]] = {}
        self.conn = connect(settings, layer.database)
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"{layer.name}-gate")

    def __enter__(self) -> _Gate:
        return self

    def __exit__(self, *exc: object) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)
        self.conn.close()

    def candidate_built(self, name: str) -> None:
        self.built.add(name)
        for spec in self.layer.tables:
            if spec.name not in self.futures and self.reads[spec.name] <= self.built:
                self.futures[spec.name] = self.pool.submit(self._check, spec)

    def _check(self, spec: TableSpec) -> tuple[list[CheckResult], float]:
        began = time.monotonic()
        checks = _checks_of(spec)
        try:
            results = _run_row_checks(self.conn, spec, [c for c in checks if c.condition])
            for check in checks:
                if not check.condition:
                    text = _sql_for_run(check.sql, self.full_refresh)
                    results.append(_run_check(self.conn, spec, check, text))
        except Exception:
            self.conn.rollback()  # the next table's checks start clean; this error is raised
            raise
        self.conn.commit()
        return results, time.monotonic() - began

    def results(self, clock: Clock) -> list[CheckResult]:
        found: list[CheckResult] = []
        seconds: dict[str, float] = {}
        for spec in self.layer.tables:
            results, took = self.futures[spec.name].result()
            found += results
            seconds[f"checks.{spec.name}"] = round(took, 3)
        clock.lap("checks.wait")  # what the checks added after the last build
        clock.seconds.update(seconds)  # their own durations, beside the builds
        return found


def _record_checks(
    conn: psycopg.Connection, layer: Layer, run_id: uuid.UUID, results: list[CheckResult]
) -> None:
    with conn.cursor() as cur:
        cur.executemany(
            "insert into audit.dq_results (run_id, layer, table_name, check_name, severity,"
            " status, offending_rows, sample, description) values (%s,%s,%s,%s,%s,%s,%s,%s,%s)"
            " on conflict (run_id, layer, table_name, check_name) do update set"
            " status = excluded.status, offending_rows = excluded.offending_rows,"
            " sample = excluded.sample, checked_at = now()",
            [
                (
                    run_id,
                    layer.name,
                    r.table,
                    r.name,
                    r.severity,
                    r.status,
                    r.offending,
                    Jsonb(r.sample),
                    r.description,
                )
                for r in results
            ],
        )


BULK_MIN_ROWS = 50_000
BULK_SHARE = 0.2


def _is_bulk(conn: psycopg.Connection, spec: TableSpec, rows: int, full_refresh: bool) -> bool:
    """A candidate that is large beside prod (a first load, a full refresh) is published with
    prod's indexes dropped and rebuilt afterwards: measured 3.2 s insert + 4.2 s index builds
    instead of 19 s maintaining four indexes row by row for a million fact rows."""
    if full_refresh:
        return True
    (estimate,) = conn.execute(
        "select greatest(reltuples, 0) from pg_class where oid = %s::regclass",
        (f"prod.{spec.name}",),
    ).fetchone()
    return rows >= max(BULK_MIN_ROWS, BULK_SHARE * estimate)


def _is_empty(conn: psycopg.Connection, table: sql.Composable) -> bool:
    (empty,) = conn.execute(
        sql.SQL("select not exists (select 1 from {})").format(table)
    ).fetchone()
    return bool(empty)


def _foreign_keys(layer: Layer) -> list[tuple[TableSpec, str, str, str]]:
    """(table, column, referenced table, referenced column) for every ``references``."""
    found = []
    for spec in filter(published, layer.tables):
        for c in spec.columns:
            if c.references:
                ref_table, ref_column = c.references.split(".")
                found.append((spec, c.name, ref_table, ref_column))
    return found


def _fk_name(spec: TableSpec, column: str) -> str:
    return f"{spec.name}_{column}_fkey"


def _add_foreign_keys(conn: psycopg.Connection, layer: Layer, skip: Iterable[str] = ()) -> None:
    """Real foreign keys in prod, deferred to commit: a publish replaces dimension rows and the
    facts that point at them in one transaction. ``skip``: tables not yet as declared."""
    for spec, column, ref_table, ref_column in _foreign_keys(layer):
        if {spec.name, ref_table} & set(skip):
            continue
        exists = conn.execute(
            "select 1 from pg_constraint where conname = %s and conrelid = %s::regclass",
            (_fk_name(spec, column), f"prod.{spec.name}"),
        ).fetchone()
        if not exists:
            conn.execute(
                sql.SQL(
                    "alter table {} add constraint {} foreign key ({}) references {} ({})"
                    " deferrable initially deferred"
                ).format(
                    _ident("prod", spec.name),
                    sql.Identifier(_fk_name(spec, column)),
                    sql.Identifier(column),
                    _ident("prod", ref_table),
                    sql.Identifier(ref_column),
                )
            )


def _drop_foreign_keys(
    conn: psycopg.Connection,
    layer: Layer,
    tables: Iterable[str] | None = None,
    *,
    undeclared_only: bool = False,
) -> None:
    """Drop foreign keys of the layer's prod tables: all of them (a bulk publish adds the
    declared ones again), those on or to ``tables``, or those no longer declared."""
    declared = {_fk_name(spec, column) for spec, column, _, _ in _foreign_keys(layer)}
    wanted = None if tables is None else set(tables)
    for table, name, referenced in conn.execute(
        "select t.relname::text, c.conname::text, f.relname::text from pg_constraint as c"
        " join pg_class as t on t.oid = c.conrelid"
        " join pg_namespace as n on n.oid = t.relnamespace"
        " join pg_class as f on f.oid = c.confrelid"
        " where c.contype = 'f' and n.nspname = 'prod' and t.relname = any(%s)",
        ([spec.name for spec in filter(published, layer.tables)],),
    ).fetchall():
        if wanted is not None and not {table, referenced} & wanted:
            continue
        if undeclared_only and name in declared:
            continue
        conn.execute(
            sql.SQL("alter table {} drop constraint {}").format(
                _ident("prod", table), sql.Identifier(name)
            )
        )


def _drop_indexes(conn: psycopg.Connection, spec: TableSpec) -> list[str]:
    """Drop prod's indexes (the primary key too); returns the statements that recreate them."""
    recreate: list[str] = []
    for name, definition in conn.execute(
        "select conname, pg_get_constraintdef(oid) from pg_constraint"
        " where conrelid = %s::regclass and contype = 'p'",
        (f"prod.{spec.name}",),
    ).fetchall():
        conn.execute(
            sql.SQL("alter table {} drop constraint {}").format(
                _ident("prod", spec.name), sql.Identifier(name)
            )
        )
        recreate.append(f'alter table prod."{spec.name}" add constraint "{name}" {definition}')
    for name, definition in conn.execute(
        "select indexname, indexdef from pg_indexes where schemaname = 'prod' and tablename = %s",
        (spec.name,),
    ).fetchall():
        conn.execute(sql.SQL("drop index {}").format(_ident("prod", name)))
        recreate.append(definition)
    return recreate


def _publish(
    conn: psycopg.Connection,
    layer: Layer,
    batches: list[tuple[str, str | None, int, int]],
    run_id: uuid.UUID,
    full_refresh: bool,
    built: dict[str, int],
    clock: Clock,
    deadline: Deadline,
    rebuild: Iterable[str] = (),
) -> int:
    """Candidate → prod and the batch ledger, in the caller's single transaction. ``rebuild``:
    prod tables whose declaration changed, dropped and created as declared first (their
    dependent views go with them: coarse views come back with the governance trigger, the
    reporting views with the presentation stage)."""
    (seq,) = conn.execute("select nextval('audit.publish_seq')").fetchone()
    tables = list(filter(published, layer.tables))
    bulk = {s.name for s in tables if _is_bulk(conn, s, built.get(s.name, 0), full_refresh)}
    if bulk or rebuild:
        # these tables alone, within the one lock timeout: the bulk ones, the rebuilt ones and
        # both ends of every foreign key, which is dropped now and re-added below
        ends = {t for spec, _, ref, _ in _foreign_keys(layer) for t in (spec.name, ref)}
        deadline.lock(bulk | set(rebuild) | ends, "prod")
        _drop_foreign_keys(conn, layer)  # re-added below, validated in one query each
    for name in sorted(rebuild):
        _drop_table(conn, "prod", name)
        _create_prod(conn, layer.table(name))
    for spec in tables:
        prod, dev = _ident("prod", spec.name), _ident("dev", spec.name)
        recreate = _drop_indexes(conn, spec) if spec.name in bulk else []
        if spec.name in bulk and _is_empty(conn, prod):
            # a first load: emptying the empty table gives it a new file in this transaction,
            # which PostgreSQL fills without WAL when wal_level is minimal (the embedded server)
            conn.execute(sql.SQL("truncate {}").format(prod))
        elif full_refresh:
            conn.execute(sql.SQL("delete from {}").format(prod))
        else:
            match = sql.SQL(" and ").join(
                sql.SQL("d.{0} = p.{0}").format(sql.Identifier(c)) for c in spec.merge_on
            )
            conn.execute(
                sql.SQL("delete from {} as p where exists (select 1 from {} as d where {})").format(
                    prod, dev, match
                )
            )
        conn.execute(
            sql.SQL("insert into {} ({}, {}) select {}, %s from {}").format(
                prod,
                _cols(spec.column_names),
                sql.Identifier(SEQ),
                _cols(spec.column_names),
                dev,
            ),
            (seq,),
        )
        if spec.prune:
            conn.execute(sql.SQL("delete from {} where {}").format(prod, sql.SQL(spec.prune)))
        for statement in recreate:
            conn.execute(statement)  # type: ignore[arg-type]
        if recreate:
            conn.execute(sql.SQL("analyze {}").format(prod))
        clock.lap(f"publish.{spec.name}")
    if bulk or rebuild:
        _add_foreign_keys(conn, layer)
        clock.lap("publish.foreign_keys")
    if rebuild and layer.database == PRESENTATION_DATABASE:
        _create_presentation(conn)  # dropped with the tables they read: back in this transaction
    if full_refresh:
        conn.execute("delete from audit.batches where layer = %s", (layer.name,))
    with conn.cursor() as cur:
        cur.executemany(
            "insert into audit.batches (layer, batch_id, source_key, rows, load_seq, source_seq,"
            " run_id) values (%s, %s, %s, %s, %s, %s, %s) on conflict (layer, batch_id) do update"
            " set load_seq = excluded.load_seq, source_seq = excluded.source_seq,"
            " run_id = excluded.run_id, applied_at = now()",
            [(layer.name, b, key, rows, seq, up_seq, run_id) for b, key, rows, up_seq in batches],
        )
    return int(seq)


def run_layer(
    settings: Settings,
    layer: Layer,
    run_id: uuid.UUID,
    log: RunLog,
    *,
    full_refresh: bool = False,
    reprocess: Sequence[str] = (),
) -> LayerResult:
    """Transfer, build, gate and publish one layer (see the module docstring)."""
    result = LayerResult(layer.name)
    prefix = layer.name
    with (
        audited_step(
            settings,
            layer.database,
            run_id=run_id,
            layer=layer.name,
            step="publish",
            target=f"{layer.database}.prod",
            load_type=(
                "full_refresh" if full_refresh else ("reprocess" if reprocess else "incremental")
            ),
        ) as stats,
        connect(settings, layer.database) as conn,
        connect(settings, layer.upstream.database) as up,
    ):
        if not full_refresh and (unfinished := _unfinished_full_refresh(conn, up, layer)):
            log.event(f"{prefix}.full_refresh", reason=unfinished)
            full_refresh = True
            stats.load_type = "full_refresh"
        result.full_refresh = full_refresh
        with waiting_at_most(conn, settings, "prod", f"{layer.name}: preparing its tables"):
            rebuild = ensure_layer(conn, layer, full_refresh=full_refresh)
        if rebuild:
            log.event(f"{prefix}.rebuild", tables=sorted(rebuild), reason="declaration changed")
        low = 0 if full_refresh else _watermark(conn, layer)
        stats.previous_watermark = f"{layer.upstream.layer} publish {low}"
        batches, rejected = _upstream_batches(up, layer, low)
        reprocess = list(reprocess)
        if reprocess and layer.upstream.layer == "raw":
            _check_reprocess(up, reprocess)
            batches += up.execute(
                "select batch_id, source_key, rows, load_seq from audit.batches"
                " where layer = 'raw' and batch_id = any(%s) and load_seq <= %s",
                (reprocess, low),
            ).fetchall()
            up.commit()
        high = max((b[3] for b in batches), default=low)
        result.watermark = (low, high)
        result.batches = len(batches)
        if not batches and not full_refresh:
            log.event(f"{prefix}.skip", reason="nothing new upstream", watermark=low)
            stats.details = {"batches": 0, "rejected_upstream": len(rejected)}
            conn.commit()
            return result
        conn.execute("truncate dev.reprocess_batches")
        if reprocess:
            with conn.cursor() as cur:
                cur.executemany(
                    "insert into dev.reprocess_batches values (%s)", [(b,) for b in reprocess]
                )
        # 1. transfer
        clock = Clock()
        inputs = _transfer(conn, up, layer, low, high, rejected, reprocess, clock)
        result.rows_in = sum(inputs.values())
        log.event(f"{prefix}.transfer", rows=inputs, watermark=[low, high])
        checkpoint(f"{prefix}.transfer")
        # 2. build, and 3. the gate's checks beside it
        _next_views(conn, layer, _published(full_refresh))
        conn.commit()  # the inputs and views, for the gate's connection
        with _Gate(settings, layer, full_refresh) as gate:
            result.rows_out = _build(conn, layer, full_refresh, clock, gate.candidate_built)
            log.event(f"{prefix}.build", rows=result.rows_out)
            checkpoint(f"{prefix}.build")
            result.checks = gate.results(clock)
        _record_checks(conn, layer, run_id, result.checks)
        conn.commit()  # the candidate and the check results stay for inspection
        failed = [r for r in result.checks if r.status == "fail"]
        warned = [r for r in result.checks if r.status == "warn"]
        log.event(
            f"{prefix}.gate",
            checks=len(result.checks),
            failed=[f"{r.table}.{r.name}={r.offending}" for r in failed],
            warned=[f"{r.table}.{r.name}={r.offending}" for r in warned],
        )
        if failed:
            first = failed[0]
            more = f" (and {len(failed) - 1} more failing checks)" if len(failed) > 1 else ""
            raise GateFailed(
                f"{layer.name} gate failed: check {first.table}.{first.name} found"
                f" {first.offending} offending rows{more}, e.g. {first.sample[:2]}; nothing was"
                f" published to {layer.database}.prod. The candidate is in {layer.database}.dev,"
                " the results in audit.dq_results; `strata reject-batch BATCH_ID` sets a bad"
                " batch aside."
            )
        # 4. publish (a bulk one needs its tables alone: it waits for readers at most so long)
        with waiting_at_most(conn, settings, "prod", f"{layer.name}: the publish") as deadline:
            seq = _publish(
                conn,
                layer,
                batches,
                run_id,
                full_refresh,
                result.rows_out,
                clock,
                deadline,
                rebuild,
            )
        if full_refresh:  # committed with it: the layers below follow it, or finish it
            upstream = last_full_refresh(up, layer.upstream.layer)
            up.commit()
            record_full_refresh(
                conn,
                layer=layer.name,
                seq=seq,
                upstream_seq=upstream[0] if upstream else None,
                run_id=run_id,
            )
        checkpoint(f"{prefix}.publish")
        conn.commit()
        clock.lap("publish.commit")
        result.details = {"publish_seq": seq, "inputs": inputs, "rebuilt": sorted(rebuild)}
        for spec in layer.tables:
            publish_metrics(
                conn,
                run_id=run_id,
                layer=layer.name,
                target=f"dev.{spec.name}",
                metrics=sql_metrics(conn, "dev", spec, rows_in=result.rows_in),
                log=log,
            )
        clock.lap("profile")
        result.details["seconds"] = clock.seconds
        log.event(f"{prefix}.timings", **clock.seconds)
        stats.rows_in = result.rows_in
        stats.rows_out = sum(result.rows_out.values())
        stats.details = {
            "batches": len(batches),
            "inputs": inputs,
            "candidate_rows": result.rows_out,
            "publish_seq": seq,
            "checks": {"run": len(result.checks), "warn": len(warned)},
            "rejected_upstream": len(rejected),
            "seconds": clock.seconds,
            "rebuilt": sorted(rebuild),
        }
        _after_publish(conn, layer, result, stats)
    return result


def _after_publish(conn: psycopg.Connection, layer: Layer, result: LayerResult, stats) -> None:  # type: ignore[no-untyped-def]
    """Layer-specific reconciliation figures, for the audit and the run summary."""
    if layer.name == "staging":
        reasons = dict(
            conn.execute("select reason, count(*) from dev.stg_events_removed group by reason")
        )
        removed = sum(reasons.values())
        stats.rows_rejected = removed
        stats.details["removed"] = reasons
        result.details["removed"] = reasons
    elif layer.name == "semantic":
        (no_location,) = conn.execute(
            "select count(*) from dev.in_events where event_name = 'update' and"
            " (location_at is null or location_lat is null or location_lng is null)"
        ).fetchone()
        stats.rows_rejected = no_location
        stats.details["removed"] = {"update_without_location": no_location}
        result.details["removed"] = {"update_without_location": no_location}
    conn.commit()


def layer_status(conn: psycopg.Connection, name: str) -> dict:
    """Rows per table and environment, the checks of the layer's latest gate, and prod tables
    that are not as declared (changed declarations) or not declared at all (removed ones)."""
    layer = layer_named(name)
    tables: dict[str, dict[str, int]] = {"dev": {}, "prod": {}}
    not_as_declared: dict[str, list[str]] = {}
    for spec in layer.tables:
        for env in ("dev", "prod") if published(spec) else ("dev",):
            if conn.execute("select to_regclass(%s)", (f"{env}.{spec.name}",)).fetchone()[0]:
                (rows,) = conn.execute(
                    sql.SQL("select count(*) from {}").format(_ident(env, spec.name))
                ).fetchone()
                tables[env][spec.name] = rows
        if published(spec) and (changes := spec.differences(conn, "prod", PROD_COLUMNS)):
            not_as_declared[spec.name] = changes
    declared = [spec.name for spec in layer.tables if published(spec)]
    not_declared = [
        table
        for (table,) in conn.execute(
            "select relname::text from pg_class where relnamespace = to_regnamespace('prod')"
            " and relkind in ('r', 'p') and relname <> all(%s) order by 1",
            (declared,),
        )
    ]
    checks: dict = {}
    if conn.execute("select to_regclass('audit.dq_results')").fetchone()[0]:
        latest = conn.execute(
            "select run_id, max(checked_at) from audit.dq_results where layer = %s"
            " group by run_id order by 2 desc limit 1",
            (name,),
        ).fetchone()
        if latest:
            by_status = dict(
                conn.execute(
                    "select status, count(*) from audit.dq_results"
                    " where layer = %s and run_id = %s group by status",
                    (name, latest[0]),
                ).fetchall()
            )
            failing = [
                f"{t}.{c} ({n})"
                for t, c, n in conn.execute(
                    "select table_name, check_name, offending_rows from audit.dq_results"
                    " where layer = %s and run_id = %s and status <> 'pass' order by 1, 2",
                    (name, latest[0]),
                )
            ]
            # a failed gate stays the latest until new data is checked: say when the layer
            # has run cleanly since (e.g. the bad batch rejected, nothing new to check)
            (clean_since,) = conn.execute(
                "select max(ended_at) from audit.etl_runs where layer = %s and step = 'publish'"
                " and status = 'success' and ended_at > %s",
                (name, latest[1]),
            ).fetchone()
            checks = {
                "run_id": str(latest[0]),
                "at": latest[1].isoformat(),
                "pass": by_status.get("pass", 0),
                "warn": by_status.get("warn", 0),
                "fail": by_status.get("fail", 0),
                "not_passing": failing,
                "clean_run_since": clean_since.isoformat() if clean_since else None,
            }
    conn.commit()
    return {
        "tables": tables,
        "checks": checks,
        "not_as_declared": not_as_declared,
        "not_declared": not_declared,
    }


def apply_presentation(settings: Settings, log: RunLog | None = None) -> list[str]:
    """(Re)create the ``dwh_db.reporting`` views, all in one transaction."""
    with connect(settings, PRESENTATION_DATABASE) as conn:
        names = _create_presentation(conn)
        conn.commit()
    if log:
        log.event("presentation.views", views=names)
    return names


def _create_presentation(conn: psycopg.Connection) -> list[str]:
    """The reporting views, dropped and created again in the caller's transaction."""
    names: list[str] = []
    for folder in sorted((ROOT / PRESENTATION_FOLDER).iterdir()):
        view_sql = folder / "view.sql"
        if not view_sql.is_file():
            continue
        meta = yaml.safe_load((folder / "view.yaml").read_text(encoding="utf-8"))
        view = _ident("reporting", meta["name"])
        conn.execute(sql.SQL("drop view if exists {}").format(view))
        try:
            conn.execute(
                sql.SQL("create view {} as {}").format(
                    view, sql.SQL(view_sql.read_text(encoding="utf-8"))  # type: ignore[arg-type]
                )
            )
        except psycopg.errors.LockNotAvailable:
            raise  # a reader's lock, not the file: the caller names who holds it
        except psycopg.Error as exc:
            raise StrataError(f"{view_sql}: {str(exc).strip()}") from exc
        conn.execute(
            sql.SQL("comment on view {} is {}").format(
                view, sql.Literal(meta.get("description", "").strip())
            )
        )
        names.append(meta["name"])
    return names
