"""The control plane under chaos: the controller restarted mid-flight, Redis restarted and frozen.

The controller's state lives in AnkaJob status and Redis; a new process must pick up where the
old one stopped, without placing a job twice or losing a host's report. Redis runs with an
append-only file, as in production; a frozen Redis (SIGSTOP) is the "unreachable for a while"
case: connections hang instead of being refused.
"""

from __future__ import annotations

import asyncio
import signal

import pytest

from tests.chaos.harness import Chaos
from tests.waiting import eventually

TERMINAL = ("Succeeded", "Failed", "Cancelled")


async def first_in(chaos: Chaos, names: list[str], *phases: str, timeout: float = 60) -> str:
    async def probe() -> str | None:
        for name in names:
            status = await chaos.status(name)
            if status.get("phase") in phases:
                return name
        return None

    return await eventually(probe, timeout)


@pytest.mark.timeout(120)
async def test_controller_killed_while_scheduling_and_while_mirroring(chaos: Chaos) -> None:
    """Six jobs for four VM slots: SIGKILL the controller as the first placement lands (others
    are being reserved), and again while hosts report progress and results (status mirroring)."""
    names = [f"burst-{i}" for i in range(6)]
    for name in names:
        await chaos.create(name, "sleep 2; echo done")
    await first_in(chaos, names, "Scheduled", "Provisioning", "Running")
    await chaos.crash_and_restart("controller", down=0.5)
    chaos.note("SIGKILL controller during scheduling")
    await first_in(chaos, names, "Running")
    await chaos.crash_and_restart("controller", down=2.0)
    chaos.note("SIGKILL controller during status mirroring (hosts finish jobs meanwhile)")
    for name in names:
        status = await chaos.wait_phase(name, *TERMINAL, timeout=90)
        assert status["phase"] == "Succeeded", (name, status)
    await chaos.verdict()


@pytest.mark.timeout(180)
async def test_redis_crashed_and_frozen_mid_flight(chaos: Chaos) -> None:
    """Redis (append-only file, fsync every second) SIGKILLed while jobs run and started again
    on the same port 2 s later; then frozen with SIGSTOP for 30 s while others finish and new
    ones wait to be placed (connections hang instead of being refused)."""
    server = chaos.stack.redis
    assert server is not None and server.process is not None
    first = [f"before-{i}" for i in range(3)]
    for name in first:
        await chaos.create(name, "sleep 2; echo done")
    await first_in(chaos, first, "Running")
    server.process.kill()
    await asyncio.to_thread(server.process.wait, 10)
    chaos.note("redis-server SIGKILLed mid-job (AOF, fsync every second)")
    await asyncio.sleep(2.0)
    await asyncio.to_thread(server.start)
    chaos.note("restarted on the same port 2 s later")
    second = [f"after-{i}" for i in range(3)]
    for name in second:
        await chaos.create(name, "sleep 1; echo done")
    await first_in(chaos, second, "Provisioning", "Running")
    assert server.process is not None
    server.process.send_signal(signal.SIGSTOP)
    chaos.note("redis-server frozen (SIGSTOP) 30 s")
    try:
        await asyncio.sleep(30.0)
    finally:
        server.process.send_signal(signal.SIGCONT)
    for name in first + second:
        status = await chaos.wait_phase(name, *TERMINAL, timeout=90)
        assert status["phase"] == "Succeeded", (name, status)
    await chaos.verdict()


@pytest.mark.timeout(120)
async def test_redis_loses_all_its_data_mid_flight(chaos: Chaos) -> None:
    """Every Redis key gone at once (a server without persistence restarted, or a failover to a
    replica that had not synced) while jobs run and others wait: the AnkaJobs are the truth;
    hosts re-register, lost attempts are retried, nothing ends Cancelled that nobody cancelled."""
    names = [f"flushed-{i}" for i in range(6)]
    for name in names:
        await chaos.create(name, "sleep 2; echo done")
    await first_in(chaos, names, "Running")
    await chaos.redis.flushall()
    chaos.note("FLUSHALL: every Redis key lost while 4 jobs run and 2 wait")
    for name in names:
        status = await chaos.wait_phase(name, *TERMINAL, timeout=90)
        assert status["phase"] == "Succeeded", (name, status)
    await chaos.verdict()
