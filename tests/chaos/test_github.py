"""GitHub under chaos: webhooks lost, doubled, reordered and redelivered, the receiver down, the
REST API failing and rate limiting, a runner that never gets its job, and jobs cancelled at
every stage. Each GitHub job carries a label of its own, so exactly its own runner may take it
(GitHub would otherwise hand a runner any queued job with matching labels)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from plugins.handlers.github.constants import ankajob_name
from tests.chaos.harness import SMALL_LABELS, Chaos
from tests.waiting import eventually

TERMINAL = ("Succeeded", "Failed", "Cancelled")


async def queue(chaos: Chaos, tag: str, *, run_seconds: float = 1, **extra: Any) -> int:
    return await chaos.github_job(labels=[*SMALL_LABELS, f"chaos-{tag}"], run_seconds=run_seconds, **extra)


async def github_done(chaos: Chaos, job_id: int, timeout: float = 60) -> dict[str, Any]:
    async def probe() -> dict[str, Any] | None:
        state = await chaos.github_state(job_id)
        return state if state["status"] == "completed" else None

    return await eventually(probe, timeout)


async def ends(chaos: Chaos, job_id: int, *, phase: str, github: str, timeout: float = 60) -> dict[str, Any]:
    """The GitHub job's one AnkaJob ends in ``phase`` and GitHub shows the conclusion ``github``."""
    name = ankajob_name(job_id, 1)
    await chaos.wait_object(name, timeout)
    status = await chaos.wait_phase(name, *TERMINAL, timeout=timeout)
    assert status["phase"] == phase, (name, status)
    assert (await github_done(chaos, job_id, timeout))["conclusion"] == github, job_id
    return status


@pytest.mark.timeout(120)
async def test_webhooks_duplicated_reordered_dropped_and_the_receiver_down(chaos: Chaos) -> None:
    await chaos.github_fault("duplicate_webhooks", count=4)
    await chaos.github_fault("reorder_webhooks", count=2)
    await chaos.github_fault("drop_webhooks", action="queued", count=1)
    await chaos.github_fault("drop_webhooks", action="completed", count=1)
    chaos.note("4 webhooks delivered twice; 2 reordered; a queued and a completed webhook dropped")
    jobs = [await queue(chaos, f"w{i}") for i in range(3)]
    await chaos.wait_object(ankajob_name(jobs[-1], 1))
    assert await chaos.kill("receiver") != 0
    chaos.note("receiver SIGKILLed for 4 s while 2 jobs are queued (deliveries fail, then redelivered)")
    jobs += [await queue(chaos, f"w{i}") for i in range(3, 5)]
    await asyncio.sleep(4)
    await chaos.restart("receiver")
    for job_id in jobs:
        status = await ends(chaos, job_id, phase="Succeeded", github="success", timeout=90)
        assert status["attempts"] == 1, (job_id, status)
    listing = await chaos.http.get("/apis/anklet.dev/v1alpha1/ankajobs")
    assert len(listing.json()["items"]) == len(jobs), "one AnkaJob per GitHub job, duplicates or not"
    await chaos.verdict(timeout=60)


@pytest.mark.timeout(120)
async def test_github_api_errors_rate_limits_jit_conflict_and_an_idle_runner(chaos: Chaos) -> None:
    await chaos.github_fault("fail", path_regex="generate-jitconfig", status=502, count=2)
    await chaos.github_fault("fail", path_regex="generate-jitconfig", status=502, count=1, effect=True)
    chaos.note("JIT config: 2 × 502, then a 502 after the runner was created (the retry gets 409)")
    await chaos.github_fault("fail", method="GET", path_regex="/actions/(jobs|runners)", status=500, count=4)
    chaos.note("jobs/runners API: 4 × 500")
    await chaos.github_fault("rate_limit", kind="primary", count=1, reset_in=1)
    await chaos.github_fault("rate_limit", kind="secondary", count=1, reset_in=1)
    chaos.note("a primary and a secondary rate limit (1 s each)")
    await chaos.github_fault("runner_never_takes_job", count=1)
    chaos.note("one runner never gets its job")
    jobs = [await queue(chaos, f"api{i}") for i in range(4)]
    attempts = []
    for job_id in jobs:
        status = await ends(chaos, job_id, phase="Succeeded", github="success", timeout=100)
        attempts.append(status["attempts"])
    assert sorted(attempts)[-1] == 2, f"the idle runner's job was retried in a new VM: {attempts}"
    await chaos.verdict(timeout=60)


@pytest.mark.timeout(150)
async def test_github_jobs_cancelled_at_every_stage(chaos: Chaos) -> None:
    # Before the AnkaJob exists: its queued webhook is lost, the job is cancelled, then redelivered.
    await chaos.github_fault("drop_webhooks", action="queued", count=1)
    queued = await queue(chaos, "c-queued")
    assert await chaos.github_cancel(queued) == 202
    async with chaos.held():  # no host takes anything: learn the uids, aim faults, cancel one
        pending = await queue(chaos, "c-pending")
        provisioning = await queue(chaos, "c-provisioning", run_seconds=30)
        running = await queue(chaos, "c-running", run_seconds=30)
        done = await queue(chaos, "c-done")
        for job_id in (pending, provisioning, running, done):
            await chaos.wait_object(ankajob_name(job_id, 1))
        uid = (await chaos.job(ankajob_name(provisioning, 1)) or {})["metadata"]["uid"]
        chaos.fault_everywhere(command="start", match=uid, effect="slow", factor=40, count=1)
        assert await chaos.github_cancel(pending) == 202
        await chaos.wait_phase(ankajob_name(pending, 1), *TERMINAL)
    chaos.note("cancelled on GitHub: while queued (webhook lost), Pending, Provisioning, Running, completed")
    await chaos.wait_phase(ankajob_name(provisioning, 1), "Provisioning")
    assert await chaos.github_cancel(provisioning) == 202

    async def in_progress() -> bool:
        return bool((await chaos.github_state(running))["status"] == "in_progress")

    await eventually(in_progress, 60)
    assert await chaos.github_cancel(running) == 202
    await ends(chaos, done, phase="Succeeded", github="success")
    assert await chaos.github_cancel(done) == 409
    for job_id in (queued, pending, provisioning, running):
        status = await ends(chaos, job_id, phase="Cancelled", github="cancelled")
        assert status["reason"] == "GitHubJobCancelled", (job_id, status)
    assert (await chaos.status(ankajob_name(pending, 1))).get("attempts", 0) == 0, "never placed"
    await chaos.verdict(timeout=60)


@pytest.mark.timeout(90)
async def test_a_rate_limited_github_does_not_stall_other_jobs(chaos: Chaos) -> None:
    await chaos.github_fault("drop_webhooks", action="in_progress", count=1)
    job_id = await queue(chaos, "hol", run_seconds=30)
    await chaos.wait_phase(ankajob_name(job_id, 1), "Running", timeout=60)
    # With its in_progress webhook lost, the job looks stuck: the handler asks the jobs API.
    await chaos.github_fault("rate_limit", kind="primary", count=1, reset_in=10)
    chaos.note("in_progress webhook lost, then a 10 s primary rate limit; a script job arrives meanwhile")
    log = chaos.stack.dir / "logs" / "controller.log"

    async def waiting_out_the_limit() -> bool:
        return "primary rate limit on GET" in log.read_text(errors="replace")

    await eventually(waiting_out_the_limit, 20)
    await chaos.create("bystander", "echo ok")
    try:
        await chaos.wait_phase("bystander", "Scheduled", "Provisioning", "Running", "Succeeded", timeout=3)
    finally:
        assert await chaos.github_cancel(job_id) == 202
        await chaos.wait_phase(ankajob_name(job_id, 1), *TERMINAL, timeout=60)
        await chaos.wait_phase("bystander", *TERMINAL, timeout=60)
        await chaos.verdict()
