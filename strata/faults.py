"""Crash points for the crash-safety tests: ``STRATA_FAULT=<point>[:<n>]`` SIGKILLs the process
the n-th time (default first) execution passes ``checkpoint(<point>)``.

The hook costs one dictionary lookup when unset; it exists so that tests can prove that a
kill at any step followed by a rerun gives exactly the result of one clean run.
"""

from __future__ import annotations

import os
import signal

_hits: dict[str, int] = {}


def checkpoint(point: str) -> None:
    wanted = os.environ.get("STRATA_FAULT")
    if not wanted:
        return
    name, _, nth = wanted.partition(":")
    if name != point:
        return
    _hits[point] = _hits.get(point, 0) + 1
    if _hits[point] == int(nth or 1):
        os.kill(os.getpid(), signal.SIGKILL)
