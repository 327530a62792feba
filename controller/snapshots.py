"""The hosts as Redis showed them a moment ago, so that back-to-back passes do not each re-read
every host.

Reading the fleet is one pipeline of three commands per host (registration, lease, allocations)
plus parsing them: about 70 ms at 1,000 Macs on a small machine. The reconciler used to do that
at least once per pass, and twice when host events also made it mirror the AnkaHosts, so a
burst of jobs that arrives over a second paid it once per batch, and dispatch latency had a
floor of one fleet read however few jobs a pass placed.

The cache is safe because it is only an input to the pure placement: every reservation is still
checked atomically in Redis, so a stale view can only cause a refused reservation (retried on
the next pass), never an overbooking. It stays close to Redis anyway:

- reservations this controller made are applied to the cached view at once (what the Lua
  script wrote is known exactly), so consecutive passes do not plan on capacity already taken;
- anything else that changes capacity (a release, a host event, a refused reservation, a
  deleted job, an AnkaHost spec) goes through `Reconciler.capacity_changed`, which invalidates;
- and no view is older than `max_age`, which bounds how late a lease expiry (which sends no
  event) or another replica's reservation is seen.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import replace

from anklet.redis_protocol import HostSnapshot
from anklet.wire import Reservation


class SnapshotCache:
    def __init__(
        self,
        read: Callable[[], Awaitable[list[HostSnapshot]]],
        *,
        max_age: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read = read
        self.max_age = max_age
        self._clock = clock
        self._hosts: dict[str, HostSnapshot] | None = None
        self._at = 0.0
        self._generation = 0  # bumped by every change, so a read that raced one is not kept
        self.reads = 0

    async def get(self) -> list[HostSnapshot]:
        """Every registered host: the cached view when fresh and valid, else a new read."""
        if self._hosts is not None and self._clock() - self._at <= self.max_age:
            return list(self._hosts.values())
        started, generation = self._clock(), self._generation
        snapshot = await self._read()
        self.reads += 1
        if generation == self._generation:
            self._hosts, self._at = {s.info.name: s for s in snapshot}, started
        return snapshot

    def invalidate(self) -> None:
        """Capacity changed in a way only Redis knows: the next `get` reads again."""
        self._hosts = None
        self._generation += 1

    def reserved(self, host: str, reservation: Reservation) -> None:
        """This controller's reservation succeeded: hold it in the cached view too."""
        self._generation += 1
        if self._hosts is None or host not in self._hosts:
            return
        snap = self._hosts[host]
        kept = tuple(r for r in snap.reservations if r.uid != reservation.uid)
        self._hosts[host] = replace(snap, reservations=(*kept, reservation))
