"""Retry pacing for long-lived loops: exponential backoff with one log line per outage.

A Redis or API outage must neither spin a loop nor flood the log: the first failure logs an
error, repeats are silent (debug), and recovery logs once with the outage's length.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time


class Backoff:
    def __init__(
        self, log: logging.Logger, what: str, *, base: float = 0.2, cap: float = 10.0, jitter: float = 0.2
    ) -> None:
        self.log = log
        self.what = what
        self.base = base
        self.cap = cap
        self.jitter = jitter
        self.failures = 0
        self._since: float | None = None

    @property
    def failing(self) -> bool:
        return self.failures > 0

    def delay(self) -> float:
        raw: float = min(self.cap, self.base * 2.0 ** max(0, self.failures - 1))
        return raw * (1 + random.uniform(-self.jitter, self.jitter))

    async def failed(self, exc: BaseException) -> None:
        self.failures += 1
        if self.failures == 1:
            self._since = time.monotonic()
            self.log.error("%s: %s: %s; retrying with backoff", self.what, type(exc).__name__, exc)
        else:
            self.log.debug("%s still failing (%d): %s", self.what, self.failures, exc)
        await asyncio.sleep(self.delay())

    def succeeded(self) -> None:
        if self.failures and self._since is not None:
            self.log.warning(
                "%s: recovered after %.1f s (%d failed attempts)",
                self.what,
                time.monotonic() - self._since,
                self.failures,
            )
        self.failures = 0
        self._since = None
