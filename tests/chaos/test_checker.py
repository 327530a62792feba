"""The checker itself, on the live stack: break every invariant on purpose and see each reported.

A chaos suite whose checker cannot fail proves nothing, so this scenario plays the bug: with one
agent frozen (it would clean up), it plants VMs no job owns (one attempt's VM on two hosts, more
VMs than slots), reservations beyond a host's slots, a key outside the schema, and rewrites a
finished job's status backwards without a reason; then the monitor must name all five.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess

import pytest

from anklet import keys, models
from anklet.dev.invariants import INVARIANTS, Target
from tests.chaos.harness import TEMPLATE, Chaos

GHOSTS = ["anklet-vm-ghost1-a1", "anklet-vm-ghost2-a1", "anklet-vm-ghost3-a1"]


def anka(chaos: Chaos, host: str, *args: str) -> None:
    env = {**os.environ, "ANKA_SIM_HOME": str(chaos.home(host))}
    binary = str(chaos.stack.dir / "bin" / "anka")
    subprocess.run([binary, "-j", *args], env=env, check=True, capture_output=True, timeout=30)


@pytest.mark.timeout(60)
async def test_the_checker_reports_each_invariant_broken_on_purpose(chaos: Chaos) -> None:
    assert Target.from_file(chaos.stack.dir / "endpoints.json") == chaos.monitor.target
    frozen = chaos.stack._child("mac-2").process.pid
    os.kill(frozen, signal.SIGSTOP)
    try:
        for name in GHOSTS:  # 3 VMs for 2 slots, owned by no job (invariants 3 and 4)
            await asyncio.to_thread(anka, chaos, "mac-2", "clone", "--tag", "2c4r", TEMPLATE, name)
        # The same attempt's VM on a second host (2); mac-1's agent deletes it after its grace.
        await asyncio.to_thread(anka, chaos, "mac-1", "clone", "--tag", "2c4r", TEMPLATE, GHOSTS[0])
        ghost = {"uid": "ghost", "attempt": 1, "cpu": 4, "memory_mib": 8192}
        for i in range(3):  # the ledger over the host's slots, CPU and memory (3), unowned (4)
            await chaos.redis.hset(
                keys.host_alloc("mac-2"), f"ghost{i}", json.dumps({**ghost, "uid": f"ghost{i}"})
            )
        await chaos.redis.set("anklet:stray", "1")  # outside the key schema (4)
        await chaos.create("rogue", handler="nosuch")  # fails at once: unknown handler
        await chaos.wait_phase("rogue", "Failed")
        path = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/default/{models.PLURAL}/rogue/status"
        response = await chaos.http.patch(
            path,
            json={"status": {"phase": "Running", "reason": None}},  # terminal undone (1), no reason (5)
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()
        await asyncio.sleep(1.0)  # a few samples
        report = await chaos.monitor.quiesce(timeout=2.0)
    finally:
        os.kill(frozen, signal.SIGCONT)
        await chaos.redis.delete("anklet:stray")
        await chaos.redis.delete(keys.host_alloc("mac-2"))
    chaos.report = report
    chaos.note("planted: unowned VMs (one attempt on 2 hosts, 3 for 2 slots), 3 ghost reservations, "
               "a stray key, a finished job's status rewritten backwards without a reason")  # fmt: skip
    print(f"\ninvariant report (violations expected): {report}")
    found = report.by_invariant()
    assert all(found[n] for n in INVARIANTS), {n: len(v) for n, v in found.items()}
    assert not report.ok
    details = "\n".join(str(v) for v in report.violations)
    for expected in (
        f"{GHOSTS[0]}: 2 VMs for one attempt at once",
        "mac-2: 3 Anklet VMs exist for 2 VM slots",
        "mac-2: 3 reservations for 2 VM slots",
        "reserved CPU 12 > 8",
        f"mac-2/{GHOSTS[1]}: VM (stopped) without a live job attempt",
        "mac-2/ghost0: reservation of attempt 1 without a live job",
        "anklet:stray: key outside the Anklet key schema",
        "default/rogue: left terminal phase Failed for Running",
        "default/rogue: Failed → Running",
    ):
        assert expected in details, f"{expected!r} not in:\n{details}"
