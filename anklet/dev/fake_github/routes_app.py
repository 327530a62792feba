"""GitHub App endpoints (JWT-authenticated), ``/rate_limit`` and ``/user``.

The App is "installed" on every account the fake has seen (or only on ``app_installed_on``);
``POST /app/installations/{id}/access_tokens`` issues ``ghs_`` tokens that expire after the
configured TTL, so a client's refresh logic is exercised for real.
"""

from __future__ import annotations

import time
from typing import Any

from aiohttp import web

from anklet.dev.fake_github import shapes
from anklet.dev.fake_github.context import context, principal
from anklet.dev.fake_github.errors import (
    ApiError,
    int_param,
    iso,
    json_body,
    not_found,
    page_links,
    page_params,
)
from anklet.dev.fake_github.state import Installation


def _app_id(request: web.Request) -> int:
    app_id = context(request).auth.app_id
    if app_id is None:  # unreachable: App auth already failed without an App
        raise not_found()
    return app_id


def _installation_response(request: web.Request, inst: Installation | None) -> web.Response:
    if inst is None:
        raise not_found()
    return web.json_response(shapes.installation(context(request).base_url, inst, _app_id(request)))


async def list_installations(request: web.Request) -> web.Response:
    ctx = context(request)
    per_page, page = page_params(request)
    items = sorted(ctx.world.installations.values(), key=lambda i: i.id)
    chunk = items[(page - 1) * per_page : page * per_page]
    headers = {}
    link = page_links(request.url, page=page, per_page=per_page, total=len(items))
    if link:
        headers["Link"] = link
    return web.json_response(
        [shapes.installation(ctx.base_url, i, _app_id(request)) for i in chunk], headers=headers
    )


async def org_installation(request: web.Request) -> web.Response:
    return _installation_response(request, context(request).world.installation_for(request.match_info["org"]))


async def repo_installation(request: web.Request) -> web.Response:
    return _installation_response(
        request, context(request).world.installation_for(request.match_info["owner"])
    )


async def enterprise_installation(request: web.Request) -> web.Response:
    world = context(request).world
    return _installation_response(
        request, world.installation_for(request.match_info["enterprise"], target_type="Enterprise")
    )


async def create_access_token(request: web.Request) -> web.Response:
    ctx = context(request)
    await json_body(request, required=False)
    inst = ctx.world.installation_by_id(int_param(request, "installation_id"))
    if inst is None:
        raise not_found()
    issued = ctx.auth.issue_installation_token(inst)
    body = {
        "token": issued.token,
        "expires_at": iso(issued.expires_at),
        "permissions": dict(shapes.APP_PERMISSIONS),
        "repository_selection": "all",
    }
    return web.json_response(body, status=201)


def _rate(limit: int, used: int, reset: float) -> dict[str, int]:
    return {"limit": limit, "used": used, "remaining": max(0, limit - used), "reset": int(reset)}


async def rate_limit(request: web.Request) -> web.Response:
    now = time.time()
    bucket = context(request).auth.bucket(principal(request), now)
    core = _rate(bucket.limit, bucket.used, bucket.reset)
    hour = now + 3600
    resources: dict[str, Any] = {
        "core": core,
        "search": _rate(30, 0, now + 60),
        "graphql": _rate(5000, 0, hour),
        "integration_manifest": _rate(5000, 0, hour),
        "code_search": _rate(10, 0, now + 60),
        "actions_runner_registration": _rate(10000, 0, hour),
        "source_import": _rate(100, 0, now + 60),
        "scim": _rate(15000, 0, hour),
        "dependency_snapshots": _rate(100, 0, now + 60),
    }
    return web.json_response({"resources": resources, "rate": core})


async def get_user(request: web.Request) -> web.Response:
    if principal(request).kind == "installation":
        raise ApiError(403, "Resource not accessible by integration")
    return web.json_response(
        {**shapes.simple_user(context(request).base_url, shapes.SENDER), "name": "Anklet Dev"}
    )


def add_routes(app: web.Application) -> None:
    app.router.add_get("/app/installations", list_installations)
    app.router.add_post("/app/installations/{installation_id}/access_tokens", create_access_token)
    app.router.add_get("/orgs/{org}/installation", org_installation)
    app.router.add_get("/repos/{owner}/{repo}/installation", repo_installation)
    app.router.add_get("/enterprises/{enterprise}/installation", enterprise_installation)
    app.router.add_get("/rate_limit", rate_limit)
    app.router.add_get("/user", get_user)


#: Paths that take an App JWT instead of a token.
APP_PATH_PATTERN = (
    r"^(/app(/.*)?|/orgs/[^/]+/installation|/repos/[^/]+/[^/]+/installation|/enterprises/[^/]+/installation)$"
)
