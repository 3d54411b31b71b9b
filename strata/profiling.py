"""Profiling metrics at every hop: one accumulator, fed batch by batch, bounded in memory.

For each hop it measures rows in, out and rejected, nulls per column, distinct counts of the
declared keys, min/max of the declared timestamp columns, and flags sensitive columns. The
metrics go to ``audit.profile_metrics`` of the database the hop wrote and to the run log.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Iterator

import psycopg
import pyarrow as pa
import pyarrow.compute as pc
from psycopg import sql

from strata.audit import Metric, StepStats, write_metrics
from strata.runlog import RunLog
from strata.tables import TableSpec


class Profiler:
    """Accumulates metrics over the Arrow batches of one hop."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.rows_in = 0
        self.rows_out = 0
        self.rows_rejected = 0
        self.nulls = {c: 0 for c in spec.column_names}
        self.distinct: dict[str, set] = {c: set() for c in spec.distinct_keys}
        self.low: dict[str, object] = {}
        self.high: dict[str, object] = {}

    def add(self, table: pa.Table, *, rows_in: int | None = None, rejected: int = 0) -> None:
        self.rows_in += table.num_rows + rejected if rows_in is None else rows_in
        self.rows_out += table.num_rows
        self.rows_rejected += rejected
        if table.num_rows == 0:
            return
        for name in self.nulls:
            if name in table.column_names:
                self.nulls[name] += table[name].null_count
        for name, seen in self.distinct.items():
            seen.update(pc.unique(table[name]).to_pylist())
        for name in self.spec.timestamp_columns:
            bounds = pc.min_max(table[name])
            low, high = bounds["min"].as_py(), bounds["max"].as_py()
            if low is not None and (name not in self.low or low < self.low[name]):
                self.low[name] = low
            if high is not None and (name not in self.high or high > self.high[name]):
                self.high[name] = high

    def time_range(self, column: str) -> tuple[object | None, object | None]:
        return self.low.get(column), self.high.get(column)

    def metrics(self) -> Iterator[Metric]:
        yield Metric("*", "rows_in", self.rows_in)
        yield Metric("*", "rows_out", self.rows_out)
        yield Metric("*", "rows_rejected", self.rows_rejected)
        for name, count in self.nulls.items():
            yield Metric(name, "null_count", count)
        for name, seen in self.distinct.items():
            yield Metric(name, "distinct_count", len(seen - {None}))
        for name in self.spec.timestamp_columns:
            if name in self.low:
                yield Metric(name, "min", value_text=self.low[name].isoformat())  # type: ignore[attr-defined]
                yield Metric(name, "max", value_text=self.high[name].isoformat())  # type: ignore[attr-defined]
        for name, tag in self.spec.sensitive_columns.items():
            yield Metric(name, "sensitive", 1, value_text=tag)

    def publish(
        self,
        conn: psycopg.Connection,
        *,
        run_id: uuid.UUID,
        layer: str,
        target: str,
        stats: StepStats,
        log: RunLog,
        time_column: str = "at",
    ) -> None:
        """Store the metrics in ``audit.profile_metrics``, widen the step's data range, log."""
        publish_metrics(
            conn, run_id=run_id, layer=layer, target=target, metrics=self.metrics(), log=log
        )
        stats.widen(*self.time_range(time_column))  # type: ignore[arg-type]


def sql_metrics(
    conn: psycopg.Connection, schema: str, spec: TableSpec, *, rows_in: int | None = None
) -> list[Metric]:
    """The same metrics as :class:`Profiler`, measured in one scan of a table in the database
    (the warehouse hops never bring their rows into Python)."""
    table = sql.SQL(".").join([sql.Identifier(schema), sql.Identifier(spec.name)])
    exprs: list[sql.Composable] = [sql.SQL("count(*)")]
    names: list[tuple[str, str]] = []
    for c in spec.columns:
        exprs.append(sql.SQL("count(*) - count({})").format(sql.Identifier(c.name)))
        names.append((c.name, "null_count"))
    for column in spec.timestamp_columns:
        for fn in ("min", "max"):
            exprs.append(
                sql.SQL("to_char({}({}), 'YYYY-MM-DD\"T\"HH24:MI:SS.USOF')").format(
                    sql.SQL(fn), sql.Identifier(column)
                )
            )
            names.append((column, fn))
    row = conn.execute(
        sql.SQL("select {} from {}").format(sql.SQL(", ").join(exprs), table)
    ).fetchone()
    rows = int(row[0])
    metrics = [
        Metric("*", "rows_in", rows if rows_in is None else rows_in),
        Metric("*", "rows_out", rows),
    ]
    for key in spec.distinct_keys:
        # a hashed DISTINCT, not count(distinct …), which sorts every row (measured on 1M
        # rows, two keys: 0.28 s vs 1.9 s)
        (distinct,) = conn.execute(
            sql.SQL(
                "select count(*) from (select distinct {k} from {t} where {k} is not null) d"
            ).format(k=sql.Identifier(key), t=table)
        ).fetchone()
        metrics.append(Metric(key, "distinct_count", int(distinct)))
    for (column, metric), value in zip(names, row[1:], strict=True):
        if metric in ("min", "max"):
            if value is not None:
                metrics.append(Metric(column, metric, value_text=value))
        else:
            metrics.append(Metric(column, metric, value))
    metrics += [Metric(n, "sensitive", 1, value_text=t) for n, t in spec.sensitive_columns.items()]
    return metrics


def publish_metrics(
    conn: psycopg.Connection,
    *,
    run_id: uuid.UUID,
    layer: str,
    target: str,
    metrics: Iterable[Metric],
    log: RunLog,
) -> None:
    """The one way metrics are kept: ``audit.profile_metrics`` of the database, and the run log."""
    metrics = list(metrics)
    write_metrics(conn, run_id=run_id, layer=layer, target=target, metrics=metrics)
    conn.commit()
    log.event(
        f"{layer}.profile",
        target=target,
        **{f"{m.column_name}.{m.metric}": m.value_text or m.value for m in metrics},
    )
