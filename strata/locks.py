"""One run at a time: a PostgreSQL advisory lock held for the whole run. And no run that
hangs on another session's open transaction: ``waiting_at_most``."""

from __future__ import annotations

import time
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import psycopg
from psycopg import sql

from strata.audit import close_abandoned_steps
from strata.db import connect
from strata.errors import StrataError
from strata.settings import Settings

RUN_LOCK_KEY = 0x5354_5241_5441  # "STRATA"


@contextmanager
def run_lock(settings: Settings) -> Iterator[None]:
    """Held on a dedicated raw_db session; released when it ends, even if the process dies."""
    with connect(settings, "raw_db", autocommit=True) as conn:
        (got,) = conn.execute("select pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,)).fetchone()
        if not got:
            raise StrataError("another strata run holds the run lock; wait for it to finish")
        try:
            close_abandoned_steps(settings)  # no other run can be at work now
            yield
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (RUN_LOCK_KEY,))


class Deadline:
    """What is left of ``STRATA_LOCK_TIMEOUT_S`` for the block of ``waiting_at_most``."""

    def __init__(self, conn: psycopg.Connection, seconds: float) -> None:
        self.conn = conn
        self.ends = time.monotonic() + seconds
        self._limit()

    def _limit(self, at_least_ms: int = 1) -> None:
        """The next statement waits for any one lock at most the time left (``at_least_ms``
        once none is: with 1, a lock not free at once then fails at once)."""
        left_ms = max(at_least_ms, int((self.ends - time.monotonic()) * 1000))
        self.conn.execute(
            sql.SQL("set local lock_timeout = {}").format(sql.Literal(f"{left_ms}ms"))
        )

    def lock(self, tables: Iterable[str], schema: str) -> None:
        """Take ``schema``'s ``tables`` alone now, in name order, all within the time left —
        so that the block's statements do not each wait the whole timeout in turn."""
        for table in sorted(set(tables)):
            self._limit()
            self.conn.execute(
                sql.SQL("lock table {} in access exclusive mode").format(
                    sql.Identifier(schema, table)
                )
            )
        # the block's other statements rarely wait (a view being dropped, say): the time
        # left, but not so little that a moment's wait fails the publish
        self._limit(at_least_ms=1000)


@contextmanager
def waiting_at_most(
    conn: psycopg.Connection, settings: Settings, schema: str, what: str
) -> Iterator[Deadline]:
    """Statements of the block that need tables alone (dropping indexes, truncating) wait for
    other sessions' open transactions at most ``STRATA_LOCK_TIMEOUT_S``: per lock, and in all
    for the tables taken with the yielded ``Deadline.lock``. Then the caller's transaction is
    rolled back and the error names the sessions holding locks on ``schema`` — and readers
    never queue behind a waiting run for longer. A reader that asks for those tables while
    the block holds some of them (a deadlock) stops the block the same way."""
    try:
        yield Deadline(conn, settings.lock_timeout_s)
        conn.execute("set local lock_timeout to default")
    except (psycopg.errors.LockNotAvailable, psycopg.errors.DeadlockDetected) as exc:
        conn.rollback()
        why = (
            f"waited {settings.lock_timeout_s:g} s (STRATA_LOCK_TIMEOUT_S) for other sessions to"
            f" let go of {conn.info.dbname}.{schema}"
            if isinstance(exc, psycopg.errors.LockNotAvailable)
            else f"met another session asking for the tables of {conn.info.dbname}.{schema} it"
            " held (a deadlock, which PostgreSQL ended)"
        )
        raise StrataError(
            f"{what} {why}; nothing was published. Holding locks there now:"
            f" {lock_holders(conn, schema) or 'none any more'}. Run again once they end."
        ) from exc


def lock_holders(conn: psycopg.Connection, schema: str) -> str:
    """Other sessions holding locks on ``schema``'s tables in this database: pid, user, state
    and how long their transaction has been open (not their queries: the error goes to logs
    and e-mails)."""
    rows = conn.execute(
        "select distinct a.pid, a.usename::text, a.state,"
        " date_trunc('second', now() - a.xact_start)::text"
        " from pg_locks as l join pg_stat_activity as a on a.pid = l.pid"
        " join pg_class as c on c.oid = l.relation"
        " where l.database = (select oid from pg_database where datname = current_database())"
        " and c.relnamespace = to_regnamespace(%s) and l.granted"
        " and a.pid <> pg_backend_pid() order by 1",
        (schema,),
    ).fetchall()
    conn.rollback()
    return "; ".join(
        f"pid {pid} ({user}, "
        + (
            f"{state}, transaction open {age})"
            if state is not None  # the rest of pg_stat_activity needs pg_read_all_stats
            else "more with pg_read_all_stats)"
        )
        for pid, user, state, age in rows
    )
