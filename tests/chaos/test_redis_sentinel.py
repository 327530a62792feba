"""Redis high availability under chaos: the primary dies and the Sentinels promote its replica.

Production runs Redis as a primary with replicas and Sentinels, and every process connects with
a ``redis+sentinel://`` URL. Replication is asynchronous: the newest writes may be lost with the
primary. The controller keeps every job's truth in its AnkaJob and treats Redis as rebuildable
(a lost reservation is re-placed, a host re-registers), so a failover may cost a job an attempt
but never loses or doubles one.
"""

from __future__ import annotations

import asyncio

import pytest

from anklet.dev.redis_server import RedisUnavailable
from tests.chaos.harness import Chaos
from tests.chaos.test_control_plane import TERMINAL, first_in
from tests.waiting import eventually


@pytest.mark.timeout(150)
async def test_redis_primary_killed_and_the_sentinels_fail_over(chaos_sentinel: Chaos) -> None:
    """SIGKILL the primary while jobs run and others wait; new jobs arrive during the failover;
    the old primary comes back as a replica of the new one."""
    chaos = chaos_sentinel
    group = chaos.stack.sentinels
    assert group is not None
    first = [f"before-{i}" for i in range(3)]
    for name in first:
        await chaos.create(name, "sleep 2; echo done")
    await first_in(chaos, first, "Running")
    old = group.primary()
    assert old.process is not None
    old.process.kill()
    await asyncio.to_thread(old.process.wait, 10)
    chaos.note("primary SIGKILLed mid-job (1 replica, 3 Sentinels, AOF)")
    second = [f"during-{i}" for i in range(3)]
    for name in second:
        await chaos.create(name, "sleep 1; echo done")

    async def promoted() -> int | None:
        try:
            port = (await asyncio.to_thread(group.primary)).port
        except RedisUnavailable:
            return None
        return port if port != old.port else None

    await eventually(promoted, 30)
    chaos.note("Sentinels promoted the replica")
    await asyncio.to_thread(group.revive)
    chaos.note("old primary restarted as a replica")
    for name in first + second:
        status = await chaos.wait_phase(name, *TERMINAL, timeout=90)
        assert status["phase"] == "Succeeded", (name, status)
    await chaos.verdict()
