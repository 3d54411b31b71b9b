"""ydata-profiling reports (minimal mode) of each layer's main table, on a bounded sample.

Bounded in time whatever the table size: the sample is read with ``TABLESAMPLE SYSTEM`` at a
percentage computed from the planner's row estimate, so PostgreSQL reads about
``2 × SAMPLE_ROWS`` rows' worth of pages (never the whole table), shuffles them and keeps
``SAMPLE_ROWS``; the profile then runs in minimal mode on those rows only. A sample is
deterministic (``REPEATABLE``) so two reports of the same data are the same.

Sensitive columns (``sensitivity`` in the table declaration) are flagged in the report — in
the dataset description and in each column's description — and precise geolocation is
coarsened to 2 decimals (about 1 km) in the sample, because the report shows sample rows and
extreme values to whoever opens it.
"""

from __future__ import annotations

import html
import json
import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from psycopg import sql

from strata.db import connect
from strata.errors import NotReady
from strata.settings import Settings
from strata.tables import TableSpec

SAMPLE_ROWS = 10_000
STATEMENT_TIMEOUT_MS = 60_000
COARSEN_DECIMALS = {"precise_geolocation": 2}
# ydata-profiling otherwise sends a usage ping to packages.ydata.ai (without a timeout) on
# every report: reports must work offline and must not talk to third parties
os.environ.setdefault("YDATA_PROFILING_NO_ANALYTICS", "1")


@dataclass(frozen=True)
class MainTable:
    layer: str
    database: str
    schema: str
    spec: TableSpec

    @property
    def qualified(self) -> str:
        return f"{self.database}.{self.schema}.{self.spec.name}"


def main_tables() -> list[MainTable]:
    """The table each layer is about: the events (raw, staging), the vehicle locations
    (semantic) and the location-update fact (dwh)."""
    from datalake_pipelines.L1_raw_layer.ingest import EVENTS
    from dwh_pipelines.warehouse import layer_named

    main = {"staging": "stg_events", "semantic": "mdm_vehicle_locations"}
    main["dwh"] = "fct_vehicle_location_updates"
    found = [MainTable("raw", "raw_db", "raw", EVENTS)]
    for name, table in main.items():
        layer = layer_named(name)
        found.append(MainTable(name, layer.database, "prod", layer.table(table)))
    return found


def sample(settings: Settings, table: MainTable, rows: int = SAMPLE_ROWS) -> pd.DataFrame:
    """At most ``rows`` rows of the declared columns, read from a bounded share of the pages."""
    relation = sql.Identifier(table.schema, table.spec.name)
    columns = sql.SQL(", ").join(sql.Identifier(c) for c in table.spec.column_names)
    with connect(settings, table.database, autocommit=True) as conn:
        conn.execute(f"set statement_timeout = {STATEMENT_TIMEOUT_MS}")
        name = f"{table.schema}.{table.spec.name}"
        found = conn.execute(
            "select reltuples from pg_class where oid = to_regclass(%s)", (name,)
        ).fetchone()
        if found is None:
            raise NotReady(f"{table.qualified} does not exist; run the pipeline first")
        estimate = found[0]
        if estimate < 0:  # never analyzed: ANALYZE reads a bounded sample itself
            conn.execute(sql.SQL("analyze {}").format(relation))
            estimate = conn.execute(
                "select reltuples from pg_class where oid = to_regclass(%s)", (name,)
            ).fetchone()[0]
        percent = min(100.0, 100.0 * 2 * rows / max(estimate, 1.0))
        cur = conn.execute(
            sql.SQL(
                "select {cols} from (select {cols} from {rel} tablesample system ({pct})"
                " repeatable (7)) as s order by md5(s::text) limit {n}"
            ).format(
                cols=columns,
                rel=relation,
                pct=sql.Literal(percent),
                n=sql.Literal(rows),
            )
        )
        frame = pd.DataFrame(cur.fetchall(), columns=[d.name for d in cur.description or ()])
    return _prepared(frame, table.spec)


def _prepared(frame: pd.DataFrame, spec: TableSpec) -> pd.DataFrame:
    """Types ydata-profiling handles and that say what they are: naive UTC timestamps, JSON and
    surrogate keys as text, coarse geolocation."""
    for column in spec.columns:
        values = frame[column.name]
        if column.type == "timestamptz":
            frame[column.name] = pd.to_datetime(values, utc=True).dt.tz_localize(None)
        elif column.type == "json":
            frame[column.name] = values.map(
                lambda v: None if v is None else json.dumps(v, sort_keys=True)
            )
        if column.name.endswith("_sk"):  # a hashed surrogate key: an identifier, not a number
            frame[column.name] = values.map(lambda v: None if v is None else str(v))
        if column.sensitivity in COARSEN_DECIMALS:  # numbers rounded; anything else withheld
            frame[column.name] = (
                pd.to_numeric(values).round(COARSEN_DECIMALS[column.sensitivity])
                if column.type in ("float8", "float4", "numeric")
                else None
            )
    return frame


def descriptions(spec: TableSpec) -> dict[str, str]:
    """Column descriptions for the report, sensitive columns flagged first."""
    found = {}
    for column in spec.columns:
        text = column.description or ""
        if column.sensitivity:
            coarse = COARSEN_DECIMALS.get(column.sensitivity)
            note = f" Coarsened to {coarse} decimals in this sample." if coarse is not None else ""
            text = f"SENSITIVE ({column.sensitivity}).{note} {text}".strip()
        found[column.name] = text
    return found


def write_profile(frame: pd.DataFrame, table: MainTable, path: Path) -> Path:
    """A minimal ydata-profiling report of ``frame`` written to ``path`` (HTML, offline)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # "use fg-data-profiling": known
        from ydata_profiling import ProfileReport

    sensitive = table.spec.sensitive_columns
    flagged = (
        "Sensitive columns: "
        + ", ".join(f"{c} ({tag})" for c, tag in sorted(sensitive.items()))
        + "."
        if sensitive
        else "No sensitive columns."
    )
    report = ProfileReport(
        frame,
        minimal=True,
        progress_bar=False,
        title=f"Profile of {table.qualified} ({table.layer} layer)",
        dataset={
            "description": f"{table.spec.description.strip()} Grain: {table.spec.grain}."
            f" A deterministic sample of {len(frame):,} rows. {flagged}",
        },
        variables={"descriptions": descriptions(table.spec)},
        # minimal mode still draws word clouds and length histograms of free-text columns
        # (ids, keys): two thirds of the time, for pictures of random strings
        vars={"text": {"length": False, "words": False, "characters": False}},
    )
    _write(path, report.to_html())
    return path


_EMPTY = (
    '<!doctype html><html><head><meta charset="utf-8"><title>{table}: empty</title></head>'
    "<body><h1>{table}</h1><p>The table is empty: nothing to profile yet.</p></body></html>"
)


def _write(path: Path, text: str) -> None:
    """Write-then-rename: a browser never opens half a report."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)


def profile_all(settings: Settings, folder: Path, rows: int = SAMPLE_ROWS) -> list[dict[str, Any]]:
    """One profile per layer's main table, written into ``folder``; what was profiled."""
    written = []
    for table in main_tables():
        frame = sample(settings, table, rows)
        path = folder / f"profile_{table.layer}_{table.spec.name}.html"
        if frame.empty:  # ydata-profiling refuses an empty frame; say so instead
            _write(path, _EMPTY.format(table=html.escape(table.qualified)))
        else:
            write_profile(frame, table, path)
        written.append(
            {
                "path": path,
                "layer": table.layer,
                "table": table.qualified,
                "rows": len(frame),
                "sensitive": table.spec.sensitive_columns,
            }
        )
    return written
