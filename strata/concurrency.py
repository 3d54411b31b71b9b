"""Bounded, order-preserving concurrency for I/O-heavy steps (object fetches, parses)."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

In = TypeVar("In")
Out = TypeVar("Out")


def ordered_map(
    work: Callable[[In], Out], items: Iterable[In], *, in_flight: int, name: str
) -> Iterator[Out]:
    """``map`` on threads: results in input order, at most ``in_flight`` items in memory.

    The consumer's own work (a COPY, a commit) overlaps with the next items being prepared.
    An exception in ``work`` is raised to the consumer when its turn comes.
    """
    with ThreadPoolExecutor(max_workers=in_flight, thread_name_prefix=name) as pool:
        window: deque[Future[Out]] = deque()
        for item in items:
            window.append(pool.submit(work, item))
            if len(window) >= in_flight:
                yield window.popleft().result()
        while window:
            yield window.popleft().result()
