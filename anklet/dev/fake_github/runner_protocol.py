"""The private protocol between the fake and its runner stand-in (``runner.py``).

Deliberately small, and not GitHub's (the real runner talks to the Actions broker):

- ``POST /_sim/runner/{id}/session`` ``{"version"}``: the runner is online.
- ``GET /_sim/runner/{id}/job?wait=S``: long-poll for the assigned job (``{"job": null}`` on timeout).
  GitHub only hands jobs to listening runners, so assignment happens only during this poll.
- ``POST /_sim/runner/{id}/heartbeat?wait=S`` ``{"job_id", "step"}``: progress, and a long-poll that
  returns early with ``{"cancel": true}`` when the job is cancelled. Doubles as the runner's sleep.
- ``POST /_sim/runner/{id}/complete`` ``{"job_id", "conclusion"}``: the job is over; the ephemeral
  runner is then removed, so its JIT config is spent.

Every call carries ``Authorization: Bearer <token from the JIT config>``. A runner that stops
calling while it holds a job is failed only after the lost-runner timeout (``world.sweep``).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
from typing import Any

from aiohttp import web

from anklet.dev.fake_github.context import Context, context
from anklet.dev.fake_github.errors import ApiError, int_param, json_body
from anklet.dev.fake_github.state import CONCLUSIONS, Job, Runner

MAX_WAIT = 50.0
GONE = "Runner not found: it was removed (a JIT config registers a runner for one job only)"


def _runner(request: web.Request) -> tuple[Context, Runner]:
    ctx = context(request)
    runner = ctx.world.runners.get(int_param(request, "runner_id"))
    if runner is None:
        raise ApiError(404, GONE)
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.encode(), runner.token.encode()):
        raise ApiError(401, "Bad credentials: the JIT config's token does not match this runner")
    return ctx, runner


def _wait(request: web.Request) -> float:
    try:
        return max(0.0, min(float(request.query.get("wait", "0")), MAX_WAIT))
    except ValueError as exc:
        raise ApiError(422, "'wait' must be a number of seconds") from exc


async def _sleep_until_woken(ctx: Context, runner: Runner, deadline: float) -> bool:
    """Wait for the runner's wake event until ``deadline``; False when time is up."""
    loop = asyncio.get_running_loop()
    remaining = deadline - loop.time()
    if remaining <= 0 or ctx.closing:
        return False
    runner.wake.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(runner.wake.wait(), remaining)
    return True


def job_for_runner(job: Job) -> dict[str, Any]:
    return {
        "id": job.id,
        "run_id": job.run_id,
        "name": job.name,
        "workflow_name": job.workflow_name,
        "repository": job.repo.full_name,
        "labels": job.labels,
        "steps": job.step_names,
        "run_seconds": job.run_seconds,
        "conclusion": job.planned_conclusion,
    }


async def open_session(request: web.Request) -> web.Response:
    ctx, runner = _runner(request)
    body = await json_body(request, required=False)
    if runner.job_id is not None or runner.lost:
        raise ApiError(409, "This runner already took a job; a JIT config runs one job only")
    if runner.polls > 0:
        raise ApiError(409, "A session for this runner already exists (the JIT config is in use elsewhere)")
    version = body.get("version")
    ctx.world.open_session(runner, version=version if isinstance(version, str) else None)
    return web.json_response({"runner_id": runner.id, "name": runner.name, "labels": runner.labels})


async def poll_job(request: web.Request) -> web.Response:
    ctx, runner = _runner(request)
    if not runner.connected:
        raise ApiError(409, "No session: open one first")
    deadline = asyncio.get_running_loop().time() + _wait(request)
    runner.polls += 1
    ctx.world.touch(runner)
    try:
        ctx.world.assign()
        while True:
            if runner.removed:
                raise ApiError(404, GONE)
            if runner.job_id is not None:
                return web.json_response({"job": job_for_runner(ctx.world.jobs[runner.job_id])})
            if not await _sleep_until_woken(ctx, runner, deadline):
                return web.json_response({"job": None})
    finally:
        runner.polls -= 1
        ctx.world.touch(runner)


def _own_job(ctx: Context, runner: Runner, body: dict[str, Any]) -> Job:
    job = ctx.world.jobs.get(body.get("job_id", 0)) if isinstance(body.get("job_id"), int) else None
    if job is None or job.runner_id != runner.id:
        raise ApiError(404, "This runner was not assigned that job")
    return job


async def heartbeat(request: web.Request) -> web.Response:
    ctx, runner = _runner(request)
    body = await json_body(request)
    job = _own_job(ctx, runner, body)
    step = body.get("step")
    if isinstance(step, int):
        ctx.world.step(job, step)
    deadline = asyncio.get_running_loop().time() + _wait(request)
    runner.polls += 1
    ctx.world.touch(runner)
    try:
        while not (job.cancel_requested or job.done or runner.removed):
            if not await _sleep_until_woken(ctx, runner, deadline):
                break
    finally:
        runner.polls -= 1
        ctx.world.touch(runner)
    return web.json_response({"cancel": job.cancel_requested or job.done, "status": job.status})


async def complete(request: web.Request) -> web.Response:
    ctx, runner = _runner(request)
    body = await json_body(request)
    job = _own_job(ctx, runner, body)
    conclusion = body.get("conclusion")
    if conclusion not in CONCLUSIONS:
        raise ApiError(422, f"'conclusion' must be one of {', '.join(CONCLUSIONS)}")
    ctx.world.complete(runner, job, str(conclusion))
    return web.json_response({"conclusion": job.conclusion})


def add_routes(app: web.Application) -> None:
    base = "/_sim/runner/{runner_id}"
    app.router.add_post(f"{base}/session", open_session)
    app.router.add_get(f"{base}/job", poll_job)
    app.router.add_post(f"{base}/heartbeat", heartbeat)
    app.router.add_post(f"{base}/complete", complete)
