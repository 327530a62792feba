"""What every route module needs: the shared state of one fake, stored on the aiohttp app."""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass

from aiohttp import web

from anklet.dev.fake_github.auth import Auth, Principal
from anklet.dev.fake_github.errors import ApiError, not_found
from anklet.dev.fake_github.faults import Faults
from anklet.dev.fake_github.state import Scope
from anklet.dev.fake_github.webhooks import WebhookSender
from anklet.dev.fake_github.world import World


@dataclass
class Context:
    world: World
    auth: Auth
    faults: Faults
    sender: WebhookSender
    hook_id: int
    runner_release: bool
    base_url: str = ""
    #: Set when the server shuts down, so open long-polls answer at once.
    closing: bool = False


CONTEXT = web.AppKey("anklet_fake_github", Context)
#: Who is calling, set by the middleware for the handler (same task, so a ContextVar carries it).
PRINCIPAL: ContextVar[Principal | None] = ContextVar("anklet_fake_github_principal", default=None)


def context(request: web.Request) -> Context:
    return request.app[CONTEXT]


def principal(request: web.Request) -> Principal:
    return PRINCIPAL.get() or Principal(kind="anonymous", key="anonymous")


def scope_of(request: web.Request) -> Scope:
    """The runner scope a ``/repos``, ``/orgs`` or ``/enterprises`` path addresses."""
    info = request.match_info
    if "enterprise" in info:
        return Scope("enterprise", info["enterprise"])
    if "org" in info:
        return Scope("org", info["org"])
    return Scope("repo", f"{info['owner']}/{info['repo']}")


def check_access(request: web.Request, scope: Scope) -> None:
    """Installation tokens reach only their own account (404 elsewhere, as GitHub hides what a
    token cannot see) and never enterprise endpoints (GitHub's 403 for integrations)."""
    who = principal(request)
    if who.kind != "installation" or who.installation is None:
        return
    if scope.kind == "enterprise":
        raise ApiError(403, "Resource not accessible by integration")
    owner = scope.name.split("/", 1)[0]
    if owner.lower() != who.installation.account.login.lower():
        raise not_found()
