"""The control API (dev stack and tests; no auth): create and cancel workflow jobs, inject
faults, point the hook elsewhere, and read state from outside the process.

``POST /_sim/workflow_jobs`` plays "someone pushed a commit": a new run with one queued job and
its signed ``queued`` webhook; from there GitHub's own rules (``world.py``) drive the job.
"""

from __future__ import annotations

from re import error as re_error
from typing import Any

from aiohttp import web

from anklet.dev.fake_github import shapes
from anklet.dev.fake_github.context import context
from anklet.dev.fake_github.errors import ApiError, int_param, json_body, not_found
from anklet.dev.fake_github.routes_hooks import detail
from anklet.dev.fake_github.state import CONCLUSIONS, Job
from anklet.dev.fake_github.world import World

MAX_RUN_SECONDS = 24 * 3600.0


def _invalid(message: str) -> ApiError:
    return ApiError(422, message)


def _strings(body: dict[str, Any], key: str, *, required: bool) -> list[str]:
    value = body.get(key)
    if value is None and not required:
        return []
    if not isinstance(value, list) or not all(isinstance(x, str) and x for x in value):
        raise _invalid(f"{key!r} must be a list of non-empty strings")
    return list(value)


def _text(body: dict[str, Any], key: str, default: str) -> str:
    value = body.get(key, default)
    if not isinstance(value, str) or not value:
        raise _invalid(f"{key!r} must be a non-empty string")
    return value


def create_job_from(world: World, body: dict[str, Any]) -> Job:
    """Validate a control-API job request and create the job (shared with ``FakeGitHub``)."""
    owner, repo = _text(body, "owner", ""), _text(body, "repo", "")
    labels = _strings(body, "labels", required=True)
    if not labels:
        raise _invalid("'labels' must not be empty")
    run_seconds = body.get("run_seconds", 1)
    if not isinstance(run_seconds, int | float) or isinstance(run_seconds, bool):
        raise _invalid("'run_seconds' must be a number")
    if not 0 <= run_seconds <= MAX_RUN_SECONDS:
        raise _invalid(f"'run_seconds' must be between 0 and {MAX_RUN_SECONDS:g}")
    conclusion = _text(body, "conclusion", "success")
    if conclusion not in CONCLUSIONS:
        raise _invalid(f"'conclusion' must be one of {', '.join(CONCLUSIONS)}")
    run_id = body.get("run_id")
    if run_id is not None:
        run = world.runs.get(run_id) if isinstance(run_id, int) else None
        if run is None or run.repo.full_name.lower() != f"{owner}/{repo}".lower():
            raise _invalid("'run_id' must name an existing run of the same repository")
        if world.run_status(run)[0] == "completed":
            raise _invalid("'run_id' names a completed run")
    return world.create_job(
        world.repository(owner, repo),
        labels=labels,
        name=_text(body, "name", "build"),
        workflow_name=_text(body, "workflow_name", "CI"),
        run_seconds=float(run_seconds),
        conclusion=conclusion,
        steps=_strings(body, "steps", required=False),
        run_id=run_id,
    )


async def create_job(request: web.Request) -> web.Response:
    ctx = context(request)
    job = create_job_from(ctx.world, await json_body(request))
    return web.json_response(shapes.job(ctx.base_url, job), status=201)


def _job(request: web.Request) -> Job:
    job = context(request).world.jobs.get(int_param(request, "job_id"))
    if job is None:
        raise not_found()
    return job


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(shapes.job(context(request).base_url, _job(request)))


async def cancel_job(request: web.Request) -> web.Response:
    ctx = context(request)
    job = _job(request)
    if not ctx.world.cancel_job(job):
        raise ApiError(409, "Cannot cancel a job that is completed.")
    return web.json_response(shapes.job(ctx.base_url, job), status=202)


async def get_faults(request: web.Request) -> web.Response:
    return web.json_response(context(request).faults.snapshot())


async def post_faults(request: web.Request) -> web.Response:
    """One fault object, or a list of them (``{"fault": "clear"}`` clears)."""
    ctx = context(request)
    try:
        raw = await request.json()
    except ValueError as exc:
        raise ApiError(400, "Problems parsing JSON") from exc
    specs = raw if isinstance(raw, list) else [raw]
    for spec in specs:
        if not isinstance(spec, dict):
            raise _invalid("a fault is a JSON object")
        try:
            ctx.faults.apply(spec)
        except (ValueError, re_error) as exc:
            raise _invalid(str(exc)) from exc
    return web.json_response(ctx.faults.snapshot())


async def set_webhook(request: web.Request) -> web.Response:
    ctx = context(request)
    body = await json_body(request)
    url, secret = body.get("url"), body.get("secret", "")
    if url is not None and not isinstance(url, str):
        raise _invalid("'url' must be a string or null")
    if not isinstance(secret, str):
        raise _invalid("'secret' must be a string")
    ctx.sender.configure(url or None, secret)
    return web.json_response({"url": url, "hook_id": ctx.hook_id})


async def list_deliveries(request: web.Request) -> web.Response:
    deliveries = sorted(context(request).sender.deliveries, key=lambda d: d.id)
    return web.json_response([detail(d) for d in deliveries])


async def list_runners(request: web.Request) -> web.Response:
    world = context(request).world
    runners = sorted(world.runners.values(), key=lambda r: r.id)
    return web.json_response(
        [
            {
                **shapes.runner(r, online=world.runner_online(r)),
                "scope": {"kind": r.scope.kind, "name": r.scope.name},
            }
            for r in runners
        ]
    )


def add_routes(app: web.Application) -> None:
    app.router.add_post("/_sim/workflow_jobs", create_job)
    app.router.add_get("/_sim/workflow_jobs/{job_id}", get_job)
    app.router.add_post("/_sim/workflow_jobs/{job_id}/cancel", cancel_job)
    app.router.add_get("/_sim/faults", get_faults)
    app.router.add_post("/_sim/faults", post_faults)
    app.router.add_post("/_sim/webhook", set_webhook)
    app.router.add_get("/_sim/deliveries", list_deliveries)
    app.router.add_get("/_sim/runners", list_runners)
