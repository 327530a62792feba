"""Running independent per-job steps a few at a time."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Iterable


async def bounded(steps: Iterable[Awaitable[None]], limit: int = 32) -> None:
    """Await `steps` (a lazy iterable, one job each) with at most `limit` in flight.

    After a failure no new step starts, but the ones in flight finish (a job reserved in this
    pass still gets its status written); then the first error is raised, as a serial loop would."""
    pending = iter(steps)
    failures: list[Exception] = []

    async def worker() -> None:
        while not failures:
            step = next(pending, None)
            if step is None:
                return
            try:
                await step
            except Exception as exc:
                failures.append(exc)

    await asyncio.gather(*(worker() for _ in range(limit)))
    if failures:
        raise failures[0]
