"""``FakeGitHub``: the aiohttp server, its middleware (auth, rate limits, faults) and lifecycle.

Use it as an async context manager (tests) or ``start()``/``close()`` (the dev stack). All state
lives on the server's event loop; the read helpers (``job``, ``runners``, ``deliveries``) are for
code running on that same loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterable
from http import HTTPStatus
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from anklet.dev.fake_github import (
    releases,
    routes_actions,
    routes_app,
    routes_hooks,
    routes_runners,
    routes_sim,
    runner_protocol,
    shapes,
)
from anklet.dev.fake_github.auth import Auth, Bucket, Principal
from anklet.dev.fake_github.context import CONTEXT, PRINCIPAL, Context
from anklet.dev.fake_github.errors import (
    RATE_LIMIT_DOCS,
    SECONDARY_DOCS,
    ApiError,
    error_response,
)
from anklet.dev.fake_github.faults import FailRule, Faults, RateLimitHit
from anklet.dev.fake_github.state import Job
from anklet.dev.fake_github.webhooks import Outgoing, WebhookSender
from anklet.dev.fake_github.world import World

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
_APP_PATHS = re.compile(routes_app.APP_PATH_PATTERN)
_OPTIONAL_AUTH = ("/rate_limit",)


def _rate_headers(bucket: Bucket, *, exhausted_until: float | None = None) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(bucket.limit),
        "x-ratelimit-remaining": "0" if exhausted_until is not None else str(bucket.remaining),
        "x-ratelimit-used": str(bucket.limit if exhausted_until is not None else bucket.used),
        "x-ratelimit-reset": str(math.ceil(exhausted_until if exhausted_until is not None else bucket.reset)),
        "x-ratelimit-resource": "core",
    }


def _rate_limited(hit: RateLimitHit, bucket: Bucket, now: float) -> web.Response:
    if hit.kind == "primary":
        return error_response(
            hit.status,
            "API rate limit exceeded for user ID 9000000.",
            documentation_url=RATE_LIMIT_DOCS,
            headers=_rate_headers(bucket, exhausted_until=hit.until),
        )
    headers = {**_rate_headers(bucket), "retry-after": str(hit.retry_after(now))}
    return error_response(
        hit.status,
        "You have exceeded a secondary rate limit. Please wait a few minutes before you try again. "
        "If you reach out to GitHub Support for help, please include the request ID "
        "0000:0000:0000000:0000000:00000000.",
        documentation_url=SECONDARY_DOCS,
        headers=headers,
    )


def _fault_response(rule: FailRule) -> web.Response:
    if rule.body is None:
        try:
            message = HTTPStatus(rule.status).phrase
        except ValueError:
            message = "Server Error"
        return error_response(rule.status, message, headers=rule.headers)
    if isinstance(rule.body, str | bytes):
        return web.Response(status=rule.status, body=rule.body, headers=rule.headers)
    return web.json_response(rule.body, status=rule.status, headers=rule.headers)


def _authenticate(ctx: Context, request: web.Request) -> Principal:
    header = request.headers.get("Authorization")
    if _APP_PATHS.match(request.path):
        return ctx.auth.authenticate_app(header)
    return ctx.auth.authenticate(header, optional=request.path in _OPTIONAL_AUTH)


@web.middleware
async def github_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Per request: authenticate, count against the rate limit, apply faults, then handle.
    Rejections happen before the handler runs, so a rejected call changes nothing."""
    ctx = request.app[CONTEXT]
    now = time.time()
    simulated = request.path.startswith("/_sim/")
    # Until a credential checks out, the caller counts as anonymous (GitHub sends the anonymous
    # bucket's headers with a 401).
    bucket = None if simulated else ctx.auth.bucket(Principal(kind="anonymous", key="anonymous"), now)
    response: web.StreamResponse
    try:
        if not simulated:
            who = _authenticate(ctx, request)
            PRINCIPAL.set(who)
            bucket = ctx.auth.bucket(who, now)
            if request.path not in _OPTIONAL_AUTH:
                hit = ctx.faults.take_rate_limit(now)
                if hit is not None:
                    return _rate_limited(hit, bucket, now)
                if bucket.remaining <= 0:
                    return _rate_limited(RateLimitHit("primary", bucket.reset, 403), bucket, now)
                bucket.used += 1
        rule = ctx.faults.take_fail(request.method, request.path)
        if rule is not None and not rule.effect:
            response = _fault_response(rule)
        else:
            response = await handler(request)
            if rule is not None:
                response = _fault_response(rule)
    except ApiError as exc:
        response = exc.response()
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = error_response(exc.status, "Not Found" if exc.status == 404 else exc.reason)
    if bucket is not None:
        for key, value in _rate_headers(bucket).items():
            response.headers.setdefault(key, value)
    return response


class FakeGitHub:
    """A GitHub stand-in on ``127.0.0.1``: REST API, signed webhooks, JIT runners, faults."""

    def __init__(
        self,
        *,
        webhook_url: str | None = None,
        webhook_secret: str = "",
        host: str = "127.0.0.1",
        port: int = 0,
        tokens: Iterable[str] = ("ghp_dev_token",),
        app_id: int | None = None,
        app_public_key_pem: str | None = None,
        hook_id: int = 1,
        runner_release: bool = True,
        app_installed_on: Iterable[str] | None = None,
        installation_token_ttl: float = 3600.0,
        heartbeat_timeout: float = 30.0,
        lost_runner_timeout: float = 120.0,
        webhook_timeout: float = 10.0,
        reorder_hold: float = 5.0,
        rate_limit: int = 5000,
    ) -> None:
        self.host, self._port = host, port
        self.faults = Faults()
        self._world = World(
            faults=self.faults,
            heartbeat_timeout=heartbeat_timeout,
            lost_runner_timeout=lost_runner_timeout,
            installed_on=app_installed_on,
        )
        self._ctx = Context(
            world=self._world,
            auth=Auth(
                tokens=tokens,
                app_id=app_id,
                app_public_key_pem=app_public_key_pem,
                installation_token_ttl=installation_token_ttl,
                rate_limit=rate_limit,
            ),
            faults=self.faults,
            sender=WebhookSender(
                hook_id=hook_id,
                faults=self.faults,
                url=webhook_url,
                secret=webhook_secret,
                timeout=webhook_timeout,
                reorder_hold=reorder_hold,
            ),
            hook_id=hook_id,
            runner_release=runner_release,
        )
        self._world.on_job_event = self._job_event
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None

    # --- lifecycle -----------------------------------------------------------------------------

    @property
    def url(self) -> str:
        """The API base URL clients use instead of https://api.github.com."""
        if not self._ctx.base_url:
            raise RuntimeError("FakeGitHub is not started")
        return self._ctx.base_url

    def build_app(self) -> web.Application:
        app = web.Application(middlewares=[github_middleware], client_max_size=4 * 1024 * 1024)
        app[CONTEXT] = self._ctx
        for module in (routes_runners, routes_actions, routes_hooks, routes_app, routes_sim, runner_protocol):
            module.add_routes(app)
        if self._ctx.runner_release:
            releases.add_routes(app)
        return app

    async def start(self) -> Self:
        self._runner = web.AppRunner(
            # handler_cancellation: a runner process that dies mid long-poll drops its connection,
            # and GitHub notices that at once; without it the poll would keep the runner "online".
            self.build_app(),
            access_log=None,
            shutdown_timeout=1.0,
            handler_cancellation=True,
        )
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port)
        await site.start()
        port = self._runner.addresses[0][1]
        self._ctx.base_url = f"http://{self.host}:{port}"
        interval = max(0.05, min(1.0, self._world.lost_runner_timeout / 4))
        self._sweeper = asyncio.create_task(self._sweep(interval))
        return self

    async def close(self) -> None:
        self._ctx.closing = True
        for runner in self._world.runners.values():
            runner.wake.set()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self._ctx.sender.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def _sweep(self, interval: float) -> None:
        while True:
            await asyncio.sleep(interval)
            self._world.sweep()

    # --- webhooks ------------------------------------------------------------------------------

    def _job_event(self, action: str, job: Job) -> None:
        world, auth = self._world, self._ctx.auth
        owner = world.account(job.repo.owner)
        inst = world.installation_for(owner.login) if auth.app_id is not None else None
        payload = shapes.workflow_job_event(self._ctx.base_url, action, job, owner, inst)
        self._ctx.sender.emit(
            Outgoing(
                event="workflow_job",
                action=action,
                payload=payload,
                key=f"job:{job.id}",
                repository_id=job.repo.id,
                repository=job.repo.full_name,
                owner=job.repo.owner,
                installation_id=inst.id if inst else None,
                target_id=job.repo.id,
            )
        )

    def set_webhook(self, url: str | None, secret: str, *, ping: bool = False) -> None:
        """Point the hook at ``url``, signing with ``secret``; ``ping=True`` sends GitHub's ``ping``
        event as GitHub does when a hook is created."""
        self._ctx.sender.configure(url, secret)
        if ping and url:
            payload = shapes.ping_event(self.url, self._ctx.hook_id, url, time.time())
            self._ctx.sender.emit(Outgoing(event="ping", action=None, payload=payload, key="ping"))

    async def webhooks_idle(self, timeout: float = 30.0) -> None:
        """Wait until every queued webhook has been attempted."""
        await self._ctx.sender.idle(timeout)

    # --- the control API, in process -----------------------------------------------------------

    def create_workflow_job(
        self,
        owner: str,
        repo: str,
        labels: list[str],
        *,
        run_seconds: float = 1.0,
        conclusion: str = "success",
        steps: list[str] | None = None,
        name: str = "build",
        workflow_name: str = "CI",
        run_id: int | None = None,
    ) -> dict[str, Any]:
        """Same as ``POST /_sim/workflow_jobs`` (raises ``ApiError`` on invalid input)."""
        body: dict[str, Any] = {
            "owner": owner,
            "repo": repo,
            "labels": labels,
            "run_seconds": run_seconds,
            "conclusion": conclusion,
            "steps": steps,
            "name": name,
            "workflow_name": workflow_name,
            "run_id": run_id,
        }
        return shapes.job(self.url, routes_sim.create_job_from(self._world, body))

    def cancel_workflow_job(self, job_id: int) -> bool:
        """Same as ``POST /_sim/workflow_jobs/{id}/cancel``; False if unknown or already completed."""
        job = self._world.jobs.get(job_id)
        return job is not None and self._world.cancel_job(job)

    # --- read access ---------------------------------------------------------------------------

    def job(self, job_id: int) -> dict[str, Any] | None:
        job = self._world.jobs.get(job_id)
        return None if job is None else shapes.job(self.url, job)

    def run(self, run_id: int) -> dict[str, Any] | None:
        run = self._world.runs.get(run_id)
        return None if run is None else routes_actions.run_body(self.url, self._world, run)

    def runners(self) -> list[dict[str, Any]]:
        """Every registered runner, all scopes, as the REST API shows them."""
        return [
            shapes.runner(r, online=self._world.runner_online(r))
            for r in sorted(self._world.runners.values(), key=lambda r: r.id)
        ]

    def deliveries(self) -> list[dict[str, Any]]:
        """Every delivery attempt, oldest first, with request headers/payload and response."""
        deliveries = sorted(self._ctx.sender.deliveries, key=lambda d: d.id)
        return copy.deepcopy([routes_hooks.detail(d) for d in deliveries])
