"""Deliveries of the one configured webhook, at repository and organization scope.

The fake has a single hook (``hook_id``) that receives every repository's events; the repo
endpoint shows the deliveries of that repository, the org endpoint those of the org's
repositories, and both show pings. Listing is newest first with GitHub's cursor pagination
(``Link: <...&cursor=v1_N>; rel="next"``), which a redelivery scan pages through.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from anklet.dev.fake_github.context import check_access, context, scope_of
from anklet.dev.fake_github.errors import ApiError, int_param, iso, link_header, not_found, page_params
from anklet.dev.fake_github.state import Scope
from anklet.dev.fake_github.webhooks import Delivery

CURSOR_PREFIX = "v1_"


def summary(d: Delivery) -> dict[str, Any]:
    return {
        "id": d.id,
        "guid": d.message.guid,
        "delivered_at": iso(d.delivered_at),
        "redelivery": d.redelivery,
        "duration": d.duration,
        "status": d.status,
        "status_code": d.status_code,
        "event": d.message.event,
        "action": d.message.action,
        "installation_id": d.message.installation_id,
        "repository_id": d.message.repository_id,
        "throttled_at": None,
    }


def detail(d: Delivery) -> dict[str, Any]:
    return {
        **summary(d),
        "url": d.url,
        "request": {"headers": dict(d.request_headers), "payload": d.message.payload},
        "response": {"headers": dict(d.response_headers), "payload": d.response_body},
    }


def _visible(scope: Scope, d: Delivery) -> bool:
    if d.message.repository is None:
        return True  # pings belong to the hook, whatever the scope
    if scope.kind == "repo":
        return d.message.repository.lower() == scope.name.lower()
    return (d.message.owner or "").lower() == scope.name.lower()


def _scoped(request: web.Request) -> list[Delivery]:
    ctx = context(request)
    scope = scope_of(request)
    check_access(request, scope)
    if int_param(request, "hook_id") != ctx.hook_id:
        raise not_found()
    found = [d for d in ctx.sender.deliveries if _visible(scope, d)]
    return sorted(found, key=lambda d: d.id, reverse=True)


def _delivery(request: web.Request) -> Delivery:
    wanted = int_param(request, "delivery_id")
    found = next((d for d in _scoped(request) if d.id == wanted), None)
    if found is None:
        raise not_found()
    return found


async def list_deliveries(request: web.Request) -> web.Response:
    per_page, _ = page_params(request)
    deliveries = _scoped(request)
    status = request.query.get("status")
    if status == "success":
        deliveries = [d for d in deliveries if d.success]
    elif status == "failure":
        deliveries = [d for d in deliveries if not d.success]
    elif status is not None:
        raise ApiError(422, "Invalid request.\n\nstatus must be one of: success, failure.")
    cursor = request.query.get("cursor")
    if cursor:
        if not cursor.startswith(CURSOR_PREFIX) or not cursor[len(CURSOR_PREFIX) :].isdigit():
            raise ApiError(400, "Bad Request")
        start = int(cursor[len(CURSOR_PREFIX) :])
        deliveries = [d for d in deliveries if d.id <= start]
    page, rest = deliveries[:per_page], deliveries[per_page:]
    headers = {}
    if rest:
        query = {"per_page": str(per_page), "cursor": f"{CURSOR_PREFIX}{rest[0].id}"}
        if status:
            query["status"] = status
        headers["Link"] = link_header(request.url.with_query(None), {"next": query})
    return web.json_response([summary(d) for d in page], headers=headers)


async def get_delivery(request: web.Request) -> web.Response:
    return web.json_response(detail(_delivery(request)))


async def redeliver(request: web.Request) -> web.Response:
    delivery = _delivery(request)
    context(request).sender.redeliver(delivery)
    return web.json_response({}, status=202)


def add_routes(app: web.Application) -> None:
    for prefix in ("/repos/{owner}/{repo}", "/orgs/{org}"):
        base = f"{prefix}/hooks/{{hook_id}}/deliveries"
        app.router.add_get(base, list_deliveries)
        app.router.add_get(f"{base}/{{delivery_id}}", get_delivery)
        app.router.add_post(f"{base}/{{delivery_id}}/attempts", redeliver)
