"""The Redis protocol against a real redis-server: atomic reservations, leases, release, cancel."""

from __future__ import annotations

import asyncio

import redis.asyncio as aioredis

from anklet import keys
from anklet.redis_protocol import ControllerProtocol, HostProtocol, connect
from anklet.wire import DesiredVM, HostInfo, Observation, ObservedPhase, Workload


def desired(uid: str, *, cpu: int = 2, mem: int = 4096, attempt: int = 1) -> DesiredVM:
    return DesiredVM(
        uid=uid,
        namespace="default",
        name=uid,
        attempt=attempt,
        vm_name=f"anklet-vm-{uid}-a{attempt}",
        template="t",
        cpu=cpu,
        memory_mib=mem,
        handler="script",
        workload=Workload(script="true"),
    )


async def register(client: aioredis.Redis, name: str, **info: object) -> HostProtocol:
    host = HostProtocol(client, name)
    await host.register(HostInfo(name=name, cpu=8, memory_mib=16384, vm_slots=2, **info))  # type: ignore[arg-type]
    return host


async def test_concurrent_reservations_never_exceed_the_vm_limit(
    redis_client: aioredis.Redis, redis_server: object
) -> None:
    await register(redis_client, "mac-1")
    # Separate connections race like separate controller replicas would.
    clients = [connect(redis_server.url) for _ in range(8)]  # type: ignore[attr-defined]
    try:
        results = await asyncio.gather(
            *(
                ControllerProtocol(c).reserve("mac-1", desired(f"j{i}", cpu=1, mem=1))
                for i, c in enumerate(clients)
            )
        )
    finally:
        await asyncio.gather(*(c.aclose() for c in clients))
    assert sorted(results).count("OK") == 2
    assert set(results) == {"OK", "no_vm_slot"}
    assert await redis_client.hlen(keys.host_alloc("mac-1")) == 2  # type: ignore[misc]
    assert await redis_client.hlen(keys.host_desired("mac-1")) == 2  # type: ignore[misc]


async def test_cpu_and_memory_limits_unless_overcommit(redis_client: aioredis.Redis) -> None:
    await register(redis_client, "mac-1")
    await register(redis_client, "mac-2", overcommit=True)
    ctl = ControllerProtocol(redis_client)
    assert await ctl.reserve("mac-1", desired("a", cpu=6, mem=14336)) == "OK"
    assert await ctl.reserve("mac-1", desired("b", cpu=6, mem=1024)) == "insufficient_cpu"
    assert await ctl.reserve("mac-1", desired("c", cpu=1, mem=4096)) == "insufficient_memory"
    assert await ctl.reserve("mac-2", desired("d", cpu=6, mem=14336)) == "OK"
    assert await ctl.reserve("mac-2", desired("e", cpu=6, mem=14336)) == "OK"


async def test_reserve_is_idempotent_per_attempt_and_needs_a_live_lease(redis_client: aioredis.Redis) -> None:
    await register(redis_client, "mac-1")
    ctl = ControllerProtocol(redis_client)
    assert await ctl.reserve("mac-1", desired("a")) == "OK"
    assert await ctl.reserve("mac-1", desired("a")) == "OK"
    assert await ctl.reserve("mac-1", desired("a", attempt=2)) == "already_reserved"
    await redis_client.delete(keys.host_lease("mac-1"))
    assert await ctl.reserve("mac-1", desired("b")) == "host_not_ready"
    assert await ctl.reserve("nowhere", desired("b")) == "host_not_ready"


async def test_release_frees_only_the_named_attempt(redis_client: aioredis.Redis) -> None:
    host = await register(redis_client, "mac-1")
    ctl = ControllerProtocol(redis_client)
    assert await ctl.reserve("mac-1", desired("a", attempt=2)) == "OK"
    await ctl.release("mac-1", "a", 1)  # a stale release
    assert "a" in await host.desired()
    await host.report(
        Observation(uid="a", attempt=2, host="mac-1", phase=ObservedPhase.SUCCEEDED, vm_name="v")
    )
    await ctl.release("mac-1", "a", 2)
    assert await host.desired() == {} and await host.observed() == {}
    [snapshot] = await ctl.snapshot()
    assert snapshot.reservations == () and snapshot.ready


async def test_cancel_marks_desired_and_wakes_the_host(redis_client: aioredis.Redis) -> None:
    host = await register(redis_client, "mac-1")
    ctl = ControllerProtocol(redis_client)
    assert not await ctl.cancel("mac-1", "a")
    await ctl.reserve("mac-1", desired("a"))
    await redis_client.delete(keys.host_inbox("mac-1"))
    assert await ctl.cancel("mac-1", "a")
    assert (await host.desired())["a"].cancel
    assert await host.wait_for_wakeup(1.0)
    assert not await host.wait_for_wakeup(0.05)


async def test_observations_flow_as_events(redis_client: aioredis.Redis) -> None:
    host = await register(redis_client, "mac-1")
    ctl = ControllerProtocol(redis_client)
    last = await ctl.latest_event_id()
    await host.report(Observation(uid="a", attempt=1, host="mac-1", phase=ObservedPhase.RUNNING, vm_name="v"))
    last, events = await ctl.read_events(last, block_ms=1000)
    assert events == [{"kind": "observed", "host": "mac-1", "uid": "a"}]
    got = await ctl.observation("mac-1", "a")
    assert got is not None and got.phase == ObservedPhase.RUNNING
    _, none = await ctl.read_events(last, block_ms=10)
    assert none == []


def test_host_keys_share_one_hash_tag() -> None:
    tagged = {
        k("mac-1").split("{")[1].split("}")[0]
        for k in (
            keys.host_info,
            keys.host_lease,
            keys.host_alloc,
            keys.host_desired,
            keys.host_observed,
            keys.host_inbox,
        )
    }
    assert tagged == {"h:mac-1"}
