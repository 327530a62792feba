"""Observations the agent owes the controller, kept locally until Redis has them.

Workers hand every observation to the reporter and move on; a flusher writes the newest one
per job to Redis and keeps retrying through an outage, so nothing a host learned is lost while
Redis is away, and the controller sees the latest state as soon as it is back.
"""

from __future__ import annotations

import asyncio
import itertools
import logging

from redis.exceptions import RedisError

from anklet.backoff import Backoff
from anklet.redis_protocol import HostProtocol
from anklet.wire import Observation

log = logging.getLogger("anklet.agent")


class Reporter:
    def __init__(self, proto: HostProtocol) -> None:
        self.proto = proto
        self.latest: dict[str, Observation] = {}
        self._unsent: dict[str, Observation] = {}
        self._seq = itertools.count(1)
        self._wake = asyncio.Event()
        self._flushed = asyncio.Event()

    def put(self, obs: Observation) -> Observation:
        obs = obs.model_copy(update={"seq": next(self._seq)})
        self.latest[obs.uid] = obs
        self._unsent[obs.uid] = obs
        self._flushed.clear()
        self._wake.set()
        return obs

    def seed(self, observed: dict[str, Observation]) -> None:
        """Adopt what Redis holds (after a restart) unless we already know newer."""
        for uid, obs in observed.items():
            if uid not in self._unsent:
                self.latest[uid] = obs

    def drop(self, uid: str) -> None:
        self.latest.pop(uid, None)
        self._unsent.pop(uid, None)

    @property
    def idle(self) -> bool:
        return not self._unsent

    async def wait_flushed(self, timeout: float) -> bool:
        if not self._unsent:
            return True
        try:
            await asyncio.wait_for(self._flushed.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def run(self) -> None:
        backoff = Backoff(log, "reporting to redis")
        while True:
            await self._wake.wait()
            self._wake.clear()
            while self._unsent:
                uid, obs = next(iter(self._unsent.items()))
                try:
                    await self.proto.report(obs)
                except (RedisError, OSError) as exc:
                    await backoff.failed(exc)
                    continue
                backoff.succeeded()
                if self._unsent.get(uid) is obs:
                    del self._unsent[uid]
            self._flushed.set()
