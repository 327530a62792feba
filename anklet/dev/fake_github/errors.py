"""GitHub's error bodies and the small HTTP helpers every route module shares.

GitHub answers errors with ``{"message", "documentation_url", "status"}`` (the ``status`` string
is what newer API versions add); clients match on ``message`` text (e.g. go-github users grep for
"is currently running a job"), so the wording here follows GitHub's where it is known.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from aiohttp import web
from yarl import URL

DOCS = "https://docs.github.com/rest"
RATE_LIMIT_DOCS = "https://docs.github.com/rest/overview/rate-limits-for-the-rest-api"
SECONDARY_DOCS = (
    "https://docs.github.com/free-pro-team@latest/rest/overview/rate-limits-for-the-rest-api"
    "#about-secondary-rate-limits"
)
MAX_PER_PAGE = 100


class ApiError(Exception):
    """Raised by handlers; the middleware turns it into GitHub's error response."""

    def __init__(
        self,
        status: int,
        message: str,
        *,
        documentation_url: str = DOCS,
        errors: list[Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.documentation_url = documentation_url
        self.errors = errors
        self.headers = dict(headers or {})

    def response(self) -> web.Response:
        return error_response(
            self.status,
            self.message,
            documentation_url=self.documentation_url,
            errors=self.errors,
            headers=self.headers,
        )


def error_response(
    status: int,
    message: str,
    *,
    documentation_url: str = DOCS,
    errors: list[Any] | None = None,
    headers: Mapping[str, str] | None = None,
) -> web.Response:
    body: dict[str, Any] = {"message": message, "documentation_url": documentation_url, "status": str(status)}
    if errors is not None:
        body["errors"] = errors
    return web.json_response(body, status=status, headers=dict(headers or {}))


def not_found() -> ApiError:
    return ApiError(404, "Not Found")


def validation_failed(detail: str) -> ApiError:
    """422 as GitHub's JSON-schema validator words it (``Invalid request.\\n\\n<detail>``)."""
    return ApiError(422, f"Invalid request.\n\n{detail}", errors=[detail])


async def json_body(request: web.Request, *, required: bool = True) -> dict[str, Any]:
    """The request's JSON object; GitHub answers unparseable bodies with 400 "Problems parsing JSON"."""
    raw = await request.read()
    if not raw.strip():
        if required:
            raise ApiError(400, "Problems parsing JSON")
        return {}
    try:
        data = json.loads(raw)
    except ValueError as exc:
        raise ApiError(400, "Problems parsing JSON") from exc
    if not isinstance(data, dict):
        raise ApiError(400, "Problems parsing JSON")
    return data


def int_param(request: web.Request, name: str) -> int:
    """A numeric path parameter; GitHub answers 404 for ids that are not numbers."""
    try:
        return int(request.match_info[name])
    except ValueError as exc:
        raise not_found() from exc


def page_params(request: web.Request) -> tuple[int, int]:
    """``per_page`` (default 30, capped at 100 as GitHub does) and ``page`` (1-based)."""
    try:
        per_page = int(request.query.get("per_page", "30"))
        page = int(request.query.get("page", "1"))
    except ValueError as exc:
        raise validation_failed("per_page and page must be integers") from exc
    return max(1, min(per_page, MAX_PER_PAGE)), max(1, page)


def link_header(url: URL, rels: Mapping[str, Mapping[str, str]]) -> str:
    """RFC 8288 ``Link`` value as GitHub writes it: ``<url>; rel="next", <url>; rel="last"``."""
    parts = [f'<{url.update_query(dict(query))}>; rel="{rel}"' for rel, query in rels.items()]
    return ", ".join(parts)


def page_links(url: URL, *, page: int, per_page: int, total: int) -> str | None:
    """GitHub's page-number pagination links (prev/next/first/last), or None for a single page."""
    last = max(1, -(-total // per_page))
    if last == 1 and page == 1:
        return None
    rels: dict[str, dict[str, str]] = {}
    if page > 1:
        rels["prev"] = {"per_page": str(per_page), "page": str(min(page - 1, last))}
    if page < last:
        rels["next"] = {"per_page": str(per_page), "page": str(page + 1)}
        rels["last"] = {"per_page": str(per_page), "page": str(last)}
    if page > 1:
        rels["first"] = {"per_page": str(per_page), "page": "1"}
    return link_header(url, rels) if rels else None


def iso(ts: float | None) -> str | None:
    """GitHub's timestamp format: UTC, seconds, ``Z``."""
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
