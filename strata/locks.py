"""One run at a time: a PostgreSQL advisory lock held for the whole run."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

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
            yield
        finally:
            conn.execute("select pg_advisory_unlock(%s)", (RUN_LOCK_KEY,))
