"""SIGKILL the host agent in the middle of each stage of a job attempt, then start it again.

The agent's children (`anka` calls) outlive it, as they would on a Mac, so the restarted agent
meets a pull, clone, start, workload or delete that is still running or has just finished behind
its back. Whatever it finds, every job must finish, once, with its VM gone and nothing leaked.
"""

from __future__ import annotations

import asyncio

import pytest

from tests.chaos.harness import OTHER_TEMPLATE, TEMPLATE, Chaos

# stage → (the anka verb to catch in flight, a slow fault that widens that window, the job)
STAGES = {
    "pull": ("pull", {"command": "registry pull", "factor": 6}, {"template": OTHER_TEMPLATE}),
    "clone": ("clone", {"command": "clone", "factor": 150}, {}),
    "start": ("start", {"command": "start", "factor": 15}, {}),
    "run": ("run", None, {"script": "sleep 2; echo done"}),
    "delete": ("delete", {"command": "delete", "factor": 75}, {}),
}


@pytest.mark.timeout(90)
@pytest.mark.parametrize("stage", list(STAGES))
async def test_agent_sigkill_mid_stage(chaos: Chaos, stage: str) -> None:
    verb, slow, job = STAGES[stage]
    if slow is not None:
        chaos.fault_everywhere(effect="slow", count=1, **slow)
        chaos.note(f"slow {slow['command']} ×{slow['factor']}")
    chaos.note(f"SIGKILL agent during {stage}, restart")
    await chaos.create("victim", job.get("script", "echo ok"), template=job.get("template", TEMPLATE))
    await chaos.create("bystander", "sleep 1; echo fine")
    match = OTHER_TEMPLATE if stage == "pull" else "anklet-vm-"
    host = await chaos.wait_call(verb, match=match, also="bash" if stage == "run" else None)
    await chaos.crash_and_restart(host)
    for name in ("victim", "bystander"):
        status = await chaos.wait_phase(name, "Succeeded", "Failed", "Cancelled", timeout=60)
        assert status["phase"] == "Succeeded", (name, status)
    await chaos.verdict()


@pytest.mark.timeout(90)
async def test_agent_down_while_the_workload_finishes(chaos: Chaos) -> None:
    """The workload's supervisor outlives the agent and records the exit status, so the restarted
    agent reports it: the attempt succeeds once, in its first VM, and is never run again."""
    chaos.note("SIGKILL agent during run; it stays down 3 s while the 1 s workload completes")
    # The workload ignores SIGPIPE, as a job writing to a log would: its reader (the agent) is gone.
    await chaos.create("victim", "trap '' PIPE; sleep 1; echo done; exit 0")
    host = await chaos.wait_call("run", also="bash")
    await asyncio.sleep(0.3)  # the agent has handed the script to `anka run`
    await chaos.crash_and_restart(host, down=3.0)
    status = await chaos.wait_phase("victim", "Succeeded", "Failed", "Cancelled", timeout=60)
    assert status["phase"] == "Succeeded", status
    assert (status.get("attempts"), status.get("exitCode")) == (1, 0), status
    assert "done" in (status.get("output") or ""), "the output tail survived the agent too"
    await chaos.verdict()
