"""Workflow jobs and runs: ``GET .../actions/jobs/{id}``, ``GET .../actions/runs/{id}`` and
``POST .../actions/runs/{id}/cancel`` (202; 409 once the run has completed)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from anklet.dev.fake_github import shapes
from anklet.dev.fake_github.context import check_access, context, scope_of
from anklet.dev.fake_github.errors import ApiError, int_param, not_found
from anklet.dev.fake_github.state import Job, Repository, Run
from anklet.dev.fake_github.world import World


def _same_repo(request: web.Request, repo: Repository) -> bool:
    wanted = f"{request.match_info['owner']}/{request.match_info['repo']}".lower()
    return repo.full_name.lower() == wanted


def _job(request: web.Request) -> Job:
    check_access(request, scope_of(request))
    job = context(request).world.jobs.get(int_param(request, "job_id"))
    if job is None or not _same_repo(request, job.repo):
        raise not_found()
    return job


def _run(request: web.Request) -> Run:
    check_access(request, scope_of(request))
    run = context(request).world.runs.get(int_param(request, "run_id"))
    if run is None or not _same_repo(request, run.repo):
        raise not_found()
    return run


async def get_job(request: web.Request) -> web.Response:
    return web.json_response(shapes.job(context(request).base_url, _job(request)))


def run_body(base_url: str, world: World, run: Run) -> dict[str, Any]:
    status, conclusion = world.run_status(run)
    return shapes.run(base_url, run, world.account(run.repo.owner), status, conclusion)


async def get_run(request: web.Request) -> web.Response:
    ctx = context(request)
    return web.json_response(run_body(ctx.base_url, ctx.world, _run(request)))


async def cancel_run(request: web.Request) -> web.Response:
    ctx = context(request)
    if not ctx.world.cancel_run(_run(request)):
        raise ApiError(409, "Cannot cancel a workflow run that is completed.")
    return web.json_response({}, status=202)


def add_routes(app: web.Application) -> None:
    base = "/repos/{owner}/{repo}/actions"
    app.router.add_get(f"{base}/jobs/{{job_id}}", get_job)
    app.router.add_get(f"{base}/runs/{{run_id}}", get_run)
    app.router.add_post(f"{base}/runs/{{run_id}}/cancel", cancel_run)
