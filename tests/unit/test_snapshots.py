"""SnapshotCache: which reads it makes, and that what it returns is what Redis would say."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

from anklet.redis_protocol import HostSnapshot
from anklet.wire import HostInfo, Reservation
from controller.snapshots import SnapshotCache


def mac(name: str) -> HostSnapshot:
    return HostSnapshot(info=HostInfo(name=name, cpu=8, memory_mib=16384), ready=True, reservations=())


class FakeFleet:
    """Plays Redis: the hosts as they are now, and a log of what was read."""

    def __init__(self, *names: str) -> None:
        self.hosts = {n: mac(n) for n in names}
        self.reads: list[Sequence[str] | None] = []
        self.during_read: Callable[[], None] | None = None

    async def read(self, names: Sequence[str] | None) -> list[HostSnapshot]:
        self.reads.append(None if names is None else list(names))
        if self.during_read is not None:
            hook, self.during_read = self.during_read, None
            hook()
        wanted = sorted(self.hosts) if names is None else names
        return [self.hosts[n] for n in wanted if n in self.hosts]

    def reserve(self, host: str, uid: str) -> Reservation:
        r = Reservation(uid=uid, attempt=1, cpu=2, memory_mib=4096)
        snap = self.hosts[host]
        self.hosts[host] = HostSnapshot(snap.info, snap.ready, reservations=(*snap.reservations, r))
        return r


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def names(snapshot: list[HostSnapshot]) -> list[str]:
    return sorted(s.info.name for s in snapshot)


def held(snapshot: list[HostSnapshot], host: str) -> list[str]:
    return [r.uid for s in snapshot if s.info.name == host for r in s.reservations]


def test_back_to_back_gets_read_the_fleet_once_and_max_age_bounds_the_view() -> None:
    fleet, clock = FakeFleet("a", "b"), Clock()
    cache = SnapshotCache(fleet.read, max_age=1.0, clock=clock)
    assert names(asyncio.run(cache.get())) == ["a", "b"]
    asyncio.run(cache.get())
    assert fleet.reads == [None]
    clock.now += 1.5
    fleet.reserve("a", "x")  # another replica's reservation, with no event
    assert held(asyncio.run(cache.get()), "a") == ["x"]
    assert fleet.reads == [None, None]


def test_a_change_on_one_host_rereads_only_that_host() -> None:
    fleet = FakeFleet("a", "b", "c")
    cache = SnapshotCache(fleet.read, clock=Clock())

    async def scenario() -> list[HostSnapshot]:
        await cache.get()
        fleet.reserve("b", "x")
        cache.invalidate("b")
        return await cache.get()

    snapshot = asyncio.run(scenario())
    assert fleet.reads == [None, ["b"]]
    assert names(snapshot) == ["a", "b", "c"]
    assert held(snapshot, "b") == ["x"]
    assert (cache.reads, cache.partial_reads) == (1, 1)


def test_new_and_deregistered_hosts_appear_and_vanish_on_a_partial_read() -> None:
    fleet = FakeFleet("a", "b")
    cache = SnapshotCache(fleet.read, clock=Clock())

    async def scenario() -> list[HostSnapshot]:
        await cache.get()
        fleet.hosts["c"] = mac("c")
        del fleet.hosts["a"]
        cache.invalidate("c")
        cache.invalidate("a")
        return await cache.get()

    assert names(asyncio.run(scenario())) == ["b", "c"]


def test_invalidating_everything_during_a_partial_read_falls_back_to_a_full_read() -> None:
    fleet = FakeFleet("a", "b")
    cache = SnapshotCache(fleet.read, clock=Clock())

    async def scenario() -> list[HostSnapshot]:
        await cache.get()
        cache.invalidate("a")
        fleet.during_read = cache.invalidate
        return await cache.get()

    snapshot = asyncio.run(scenario())
    assert names(snapshot) == ["a", "b"], "never a view with only the re-read hosts"
    assert fleet.reads == [None, ["a"], None]


def test_a_change_racing_a_partial_read_is_read_again_next_time() -> None:
    fleet = FakeFleet("a", "b")
    cache = SnapshotCache(fleet.read, clock=Clock())

    async def scenario() -> None:
        await cache.get()
        cache.invalidate("a")
        fleet.during_read = lambda: cache.invalidate("a")
        await cache.get()
        await cache.get()

    asyncio.run(scenario())
    assert fleet.reads == [None, ["a"], ["a"]]


def test_own_reservations_show_in_the_cached_view_without_a_read() -> None:
    fleet = FakeFleet("a", "b")
    cache = SnapshotCache(fleet.read, clock=Clock())

    async def scenario() -> list[HostSnapshot]:
        await cache.get()
        cache.reserved("a", fleet.reserve("a", "x"))
        return await cache.get()

    assert held(asyncio.run(scenario()), "a") == ["x"]
    assert fleet.reads == [None]


def test_a_second_reader_waits_for_the_hosts_the_first_is_reading() -> None:
    """The race that left freed slots unused until the next resync: a reader took the marked
    hosts and was still reading them when a second reader got the old cached view."""
    fleet = FakeFleet("a", "b")
    cache = SnapshotCache(fleet.read, clock=Clock())
    release = asyncio.Event()

    async def slow_read(names: Sequence[str] | None) -> list[HostSnapshot]:
        if names is not None:
            await release.wait()
        return await FakeFleet.read(fleet, names)

    async def scenario() -> list[HostSnapshot]:
        await cache.get()
        cache._read = slow_read
        fleet.reserve("a", "x")  # stands in for a release: capacity moved on "a"
        cache.invalidate("a")
        first = asyncio.create_task(cache.get())
        await asyncio.sleep(0)  # the first reader has taken "a" off the stale set and is reading
        second = asyncio.create_task(cache.get())
        await asyncio.sleep(0)
        release.set()
        await first
        return await second

    assert held(asyncio.run(scenario()), "a") == ["x"]
