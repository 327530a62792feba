"""Stopping tasks for real, on Python 3.11 too.

On 3.11, `asyncio.wait_for` can swallow a cancellation that arrives just as the awaited
future completes (python/cpython#86296, fixed in 3.12 by `asyncio.timeout`); the reconciler and
the agent loops use `wait_for` in `while True` loops, so under load a single `cancel()` can be
lost and the task keeps running. A simulator that starts thousands of such loops must not hang
on shutdown, so it cancels again until the task is done (a bounded number of times).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable


async def cancel_all(
    tasks: Iterable[asyncio.Task[object]], *, attempts: int = 100, interval: float = 0.05
) -> list[str]:
    """Cancel `tasks` and wait until each is done; returns the names of any still running."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(attempts):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=interval)
    return sorted(t.get_name() for t in pending)
