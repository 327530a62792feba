"""Self-hosted runners at repository, organization and enterprise scope, JIT registration only.

``POST .../generate-jitconfig`` registers a runner and returns its encoded JIT config: base64
of JSON that the runner stand-in (``runner.py``) reads; it carries the runner's id and a random
secret the runner authenticates with, so only the holder of the config can run as that runner.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from aiohttp import web

from anklet.dev.fake_github import shapes
from anklet.dev.fake_github.context import check_access, context, scope_of
from anklet.dev.fake_github.errors import ApiError, int_param, json_body, not_found, page_links, page_params
from anklet.dev.fake_github.state import Runner
from anklet.dev.fake_github.world import Conflict, RunnerBusy

SCOPE_PREFIXES = ("/repos/{owner}/{repo}", "/orgs/{org}", "/enterprises/{enterprise}")


def encode_jit_config(runner: Runner, base_url: str) -> str:
    """The JIT config format the stand-in understands (see the package README)."""
    config = {
        "runner_id": runner.id,
        "runner_name": runner.name,
        "url": base_url,
        "token": runner.token,
        "labels": runner.labels,
        "work_folder": runner.work_folder,
        "runner_group_id": runner.group_id,
        "scope": f"{runner.scope.kind}:{runner.scope.name}",
    }
    return base64.b64encode(json.dumps(config, separators=(",", ":")).encode()).decode()


def _validate_jit_request(body: dict[str, Any]) -> tuple[str, int, list[str], str]:
    for key in ("name", "runner_group_id", "labels"):
        if key not in body:
            raise ApiError(422, f'Invalid request.\n\n"{key}" wasn\'t supplied.')
    name, group, labels = body["name"], body["runner_group_id"], body["labels"]
    work_folder = body.get("work_folder", "_work")
    if not isinstance(name, str) or not name.strip():
        raise ApiError(422, "Invalid request.\n\nFor 'properties/name', \"name\" is not a valid string.")
    if not isinstance(group, int) or isinstance(group, bool) or group < 1:
        raise ApiError(422, "Invalid request.\n\nFor 'properties/runner_group_id', it is not an integer.")
    if not isinstance(labels, list) or not all(isinstance(x, str) and x for x in labels):
        raise ApiError(422, "Invalid request.\n\nFor 'properties/labels', it is not an array of strings.")
    if not 1 <= len(labels) <= 100:
        raise ApiError(422, "Invalid request.\n\nFor 'properties/labels', it must have 1 to 100 items.")
    if not isinstance(work_folder, str):
        raise ApiError(422, "Invalid request.\n\nFor 'properties/work_folder', it is not a string.")
    return name, group, labels, work_folder


async def generate_jitconfig(request: web.Request) -> web.Response:
    ctx = context(request)
    scope = scope_of(request)
    check_access(request, scope)
    name, group, labels, work_folder = _validate_jit_request(await json_body(request))
    try:
        runner = ctx.world.register_runner(
            scope, name=name, labels=labels, group_id=group, work_folder=work_folder
        )
    except Conflict as exc:
        raise ApiError(409, str(exc)) from exc
    body = {
        "runner": shapes.runner(runner, online=False),
        "encoded_jit_config": encode_jit_config(runner, ctx.base_url),
    }
    return web.json_response(body, status=201)


async def list_runners(request: web.Request) -> web.Response:
    ctx = context(request)
    scope = scope_of(request)
    check_access(request, scope)
    per_page, page = page_params(request)
    runners = ctx.world.scope_runners(scope)
    if "name" in request.query:
        runners = [r for r in runners if r.name == request.query["name"]]
    chunk = runners[(page - 1) * per_page : page * per_page]
    body = {
        "total_count": len(runners),
        "runners": [shapes.runner(r, online=ctx.world.runner_online(r)) for r in chunk],
    }
    headers = {}
    link = page_links(request.url, page=page, per_page=per_page, total=len(runners))
    if link:
        headers["Link"] = link
    return web.json_response(body, headers=headers)


def _runner(request: web.Request) -> Runner:
    ctx = context(request)
    scope = scope_of(request)
    check_access(request, scope)
    runner = ctx.world.runner_in(scope, int_param(request, "runner_id"))
    if runner is None:
        raise not_found()
    return runner


async def get_runner(request: web.Request) -> web.Response:
    runner = _runner(request)
    return web.json_response(shapes.runner(runner, online=context(request).world.runner_online(runner)))


async def delete_runner(request: web.Request) -> web.Response:
    runner = _runner(request)
    try:
        context(request).world.delete_runner(runner)
    except RunnerBusy as exc:
        raise ApiError(422, str(exc)) from exc
    return web.Response(status=204)


def add_routes(app: web.Application) -> None:
    for prefix in SCOPE_PREFIXES:
        base = f"{prefix}/actions/runners"
        app.router.add_post(f"{base}/generate-jitconfig", generate_jitconfig)
        app.router.add_get(base, list_runners)
        app.router.add_get(f"{base}/{{runner_id}}", get_runner)
        app.router.add_delete(f"{base}/{{runner_id}}", delete_runner)
