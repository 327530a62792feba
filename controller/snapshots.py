"""The hosts as Redis showed them a moment ago, so that back-to-back passes do not each re-read
every host.

Reading the fleet is one pipeline of three commands per host (registration, lease, allocations)
plus parsing them: tens of milliseconds at 1,000 Macs on a small machine. Paid once per pass, a
steady stream of jobs would pay it for every few jobs, and dispatch latency would have a floor
of one fleet read however few jobs a pass placed.

The cache is safe because it is only an input to the pure placement: every reservation is still
checked atomically in Redis, so a stale view can only cause a refused reservation (retried on
the next pass), never an overbooking. It stays close to Redis anyway:

- reservations this controller made are applied to the cached view at once (what the Lua
  script wrote is known exactly), so consecutive passes do not plan on capacity already taken;
- a change on one host (a release there, that host's event) marks only that host, and the next
  `get` re-reads just the marked hosts; a change whose host is unknown (a refused reservation,
  a deleted job, an AnkaHost spec) invalidates everything;
- and no view is older than `max_age`, which bounds how late a lease expiry (which sends no
  event) or another replica's reservation is seen. Five seconds: a host is declared lost only
  after `host_lost_seconds` (30) anyway, and with a shorter age a pass that takes longer than
  the age (a deep backlog on a busy machine) would read the whole fleet every time, which makes
  the next pass slower still.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from anklet.redis_protocol import HostSnapshot
from anklet.wire import Reservation

Reader = Callable[[Sequence[str] | None], Awaitable[list[HostSnapshot]]]


class SnapshotCache:
    def __init__(
        self, read: Reader, *, max_age: float = 5.0, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self._read = read
        self.max_age = max_age
        self._clock = clock
        self._hosts: dict[str, HostSnapshot] | None = None
        self._stale: set[str] = set()  # hosts to read again before the view is used
        self._at = 0.0
        self._generation = 0  # bumped by every change, so a read that raced one is not kept
        self.reads = 0  # full fleet reads
        self.partial_reads = 0  # reads of only the marked hosts
        self._lock = asyncio.Lock()

    async def get(self) -> list[HostSnapshot]:
        """Every registered host: the cached view when fresh, with marked hosts read again.

        One caller at a time: a second caller must not be handed the cached view while the first
        is still reading the hosts it took off the stale set (it would plan on capacity that was
        already released, and nothing would tell it to plan again)."""
        async with self._lock:
            return await self._get()

    async def _get(self) -> list[HostSnapshot]:
        if self._hosts is None or self._clock() - self._at > self.max_age:
            started, generation = self._clock(), self._generation
            snapshot = await self._read(None)
            self.reads += 1
            if generation == self._generation:
                self._hosts, self._at, self._stale = {s.info.name: s for s in snapshot}, started, set()
            return snapshot
        if self._stale:
            names, self._stale = sorted(self._stale), set()
            generation = self._generation
            fresh = {s.info.name: s for s in await self._read(names)}
            self.partial_reads += 1
            if self._hosts is None:  # everything was invalidated meanwhile
                return await self._get()
            hosts = self._hosts
            if generation != self._generation:
                self._stale.update(names)  # raced a change: use this read, but read them again next time
                hosts = dict(hosts)
            for name in names:
                if name in fresh:
                    hosts[name] = fresh[name]
                else:
                    hosts.pop(name, None)  # deregistered
            return list(hosts.values())
        return list(self._hosts.values())

    def invalidate(self, host: str | None = None) -> None:
        """Capacity changed in a way only Redis knows: on `host`, or anywhere when None."""
        self._generation += 1
        if host is None:
            self._hosts = None
            self._stale.clear()
        elif self._hosts is not None:
            self._stale.add(host)

    def reserved(self, host: str, reservation: Reservation) -> None:
        """This controller's reservation succeeded: hold it in the cached view too."""
        self._generation += 1
        if self._hosts is None or host not in self._hosts:
            return
        snap = self._hosts[host]
        kept = tuple(r for r in snap.reservations if r.uid != reservation.uid)
        self._hosts[host] = replace(snap, reservations=(*kept, reservation))
