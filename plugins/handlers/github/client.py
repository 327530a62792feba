"""Async GitHub REST client for the calls Anklet makes (runners, jobs, runs, hook deliveries).

One `_request` loop applies `ratelimit`'s pure decisions: it waits out primary and secondary
rate limits, backs off on 5xx and network errors within a bound, refreshes an App token once
on a 401, and never sends a request again once it got a successful answer. Responses are
parsed into the models of `schemas`; failures raise the classes of `errors`, which name the
method, path and status but never a header, token or JIT config.

    async with GitHubClient.from_settings(GitHubSettings()) as gh:
        runners = await gh.list_runners(Scope.organization("acme"))
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import urlsplit

import httpx
from pydantic import BaseModel, SecretStr, ValidationError

from plugins.handlers.github import errors, ratelimit
from plugins.handlers.github.auth import AppAuth, Auth, TokenAuth
from plugins.handlers.github.ratelimit import NetworkFailure, Reason, RetryPolicy
from plugins.handlers.github.schemas import (
    HookDelivery,
    HookDeliveryDetail,
    Installation,
    InstallationToken,
    JitConfig,
    JitConfigResponse,
    Runner,
    RunnerList,
    WorkflowJob,
    WorkflowRun,
)
from plugins.handlers.github.scope import Scope, ScopeKind
from plugins.handlers.github.settings import DEFAULT_API_URL, GitHubSettings

log = logging.getLogger("anklet.github")

M = TypeVar("M", bound=BaseModel)
API_VERSION = "2022-11-28"
PER_PAGE = 100
MAX_PAGES = 1000  # a runaway Link chain must not loop forever
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)
_ERRORS: dict[Reason, type[errors.GitHubError]] = {
    Reason.UNAUTHORIZED: errors.AuthError,
    Reason.FORBIDDEN: errors.Forbidden,
    Reason.NOT_FOUND: errors.NotFound,
    Reason.CONFLICT: errors.Conflict,
    Reason.UNPROCESSABLE: errors.Unprocessable,
    Reason.SERVER_ERROR: errors.ServerError,
}


def _github_message(response: httpx.Response) -> str:
    """GitHub's `message` field (or a short body excerpt) for an error, on one line."""
    try:
        body = response.json()
        message = str(body.get("message", "")) if isinstance(body, dict) else ""
    except (json.JSONDecodeError, UnicodeDecodeError):
        message = ""
    text = message or response.text[:200] or response.reason_phrase
    return " ".join(text.split())[:300]


class GitHubClient:
    """Typed calls over one httpx.AsyncClient; use as an async context manager or call aclose()."""

    def __init__(
        self,
        *,
        auth: Auth | None,
        api_url: str = DEFAULT_API_URL,
        policy: RetryPolicy = ratelimit.DEFAULT_POLICY,
        timeout: float = 30.0,
        transport: httpx.AsyncBaseTransport | None = None,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        user_agent: str = "anklet",
    ) -> None:
        self._auth = auth
        self._policy = policy
        self._clock = clock
        self._sleep = sleep
        self._base_path = urlsplit(api_url).path.rstrip("/")
        self._paused_until = 0.0
        self._http = httpx.AsyncClient(
            base_url=api_url.rstrip("/"),
            timeout=timeout,
            transport=transport,
            follow_redirects=False,
            headers={
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": API_VERSION,
                "User-Agent": user_agent,
            },
        )

    @classmethod
    def from_settings(cls, settings: GitHubSettings, **kwargs: Any) -> GitHubClient:
        """A client with the settings' credentials (App wins over a token, as in the Go version)."""
        auth: Auth | None = None
        key = settings.private_key()
        if settings.app_id is not None and key is not None:
            auth = AppAuth(
                app_id=settings.app_id,
                private_key=key,
                installation_id=settings.installation_id,
                scope=settings.scope(),
            )
        elif settings.token is not None:
            auth = TokenAuth(settings.token)
        kwargs.setdefault("policy", settings.retry_policy())
        kwargs.setdefault("timeout", settings.timeout_seconds)
        return cls(auth=auth, api_url=settings.api_url, **kwargs)

    async def __aenter__(self) -> GitHubClient:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    # ---- runners -------------------------------------------------------------------------

    async def generate_jitconfig(
        self,
        scope: Scope,
        name: str,
        labels: list[str],
        runner_group_id: int = 1,
        work_folder: str = "_work",
    ) -> JitConfig:
        """Register a just-in-time runner; RunnerNameExists (409) means an earlier attempt won."""
        if not 1 <= len(labels) <= 100:
            raise ValueError(f"a runner needs 1 to 100 labels, got {len(labels)}")
        path = f"{scope.prefix}/actions/runners/generate-jitconfig"
        body = {
            "name": name,
            "runner_group_id": runner_group_id,
            "labels": labels,
            "work_folder": work_folder,
        }
        try:
            response = await self._request("POST", path, json_body=body)
        except errors.Conflict as exc:
            raise errors.RunnerNameExists(exc.method, exc.path, exc.status, exc.detail) from None
        parsed = self._parse(JitConfigResponse, response, "POST", path)
        return JitConfig(parsed.runner.id, parsed.runner.name, parsed.encoded_jit_config)

    async def list_runners(self, scope: Scope, *, name: str | None = None) -> list[Runner]:
        """Every runner of the scope, across all pages (optionally GitHub's filter by name)."""
        path = f"{scope.prefix}/actions/runners"
        params: dict[str, Any] = {"per_page": PER_PAGE} | ({"name": name} if name else {})
        runners: list[Runner] = []
        async for response in self._pages(path, params):
            runners.extend(self._parse(RunnerList, response, "GET", path).runners)
        return runners

    async def find_runner(self, scope: Scope, name: str) -> Runner | None:
        """The runner with exactly this name, or None."""
        return next((r for r in await self.list_runners(scope, name=name) if r.name == name), None)

    async def delete_runner(self, scope: Scope, runner_id: int) -> bool:
        """Remove a runner; False when it was already gone, RunnerBusy while it runs a job."""
        path = f"{scope.prefix}/actions/runners/{runner_id}"
        try:
            await self._request("DELETE", path)
        except errors.NotFound:
            return False
        except errors.Unprocessable as exc:
            if "running a job" in exc.detail.lower() or "busy" in exc.detail.lower():
                raise errors.RunnerBusy(exc.method, exc.path, exc.status, exc.detail) from None
            raise
        return True

    # ---- jobs and runs -------------------------------------------------------------------

    async def get_job(self, owner: str, repo: str, job_id: int) -> WorkflowJob:
        path = f"{Scope.repository(owner, repo).prefix}/actions/jobs/{job_id}"
        return self._parse(WorkflowJob, await self._request("GET", path), "GET", path)

    async def get_run(self, owner: str, repo: str, run_id: int) -> WorkflowRun:
        path = f"{Scope.repository(owner, repo).prefix}/actions/runs/{run_id}"
        return self._parse(WorkflowRun, await self._request("GET", path), "GET", path)

    async def cancel_run(self, owner: str, repo: str, run_id: int) -> bool:
        """Ask GitHub to cancel a run: True when accepted, False on 409 (no longer cancellable)."""
        path = f"{Scope.repository(owner, repo).prefix}/actions/runs/{run_id}/cancel"
        try:
            await self._request("POST", path)
        except errors.Conflict:
            return False
        return True

    # ---- webhook deliveries --------------------------------------------------------------

    def _hook_path(self, scope: Scope, hook_id: int) -> str:
        if scope.kind is ScopeKind.ENTERPRISE:
            raise errors.UnsupportedScope("GitHub has no API for enterprise webhook deliveries")
        return f"{scope.prefix}/hooks/{hook_id}/deliveries"

    async def list_hook_deliveries(self, scope: Scope, hook_id: int, since: datetime) -> list[HookDelivery]:
        """Deliveries newest first, back to `since` (the pages are walked only that far)."""
        path = self._hook_path(scope, hook_id)
        found: list[HookDelivery] = []
        async for response in self._pages(path, {"per_page": PER_PAGE}):
            page = self._parse_list(HookDelivery, response, "GET", path)
            for delivery in page:
                if delivery.delivered_at < since:
                    return found
                found.append(delivery)
        return found

    async def get_delivery(self, scope: Scope, hook_id: int, delivery_id: int) -> HookDeliveryDetail:
        path = f"{self._hook_path(scope, hook_id)}/{delivery_id}"
        return self._parse(HookDeliveryDetail, await self._request("GET", path), "GET", path)

    async def redeliver(self, scope: Scope, hook_id: int, delivery_id: int) -> None:
        """Ask GitHub to send a delivery again (it answers 202 and delivers asynchronously)."""
        await self._request("POST", f"{self._hook_path(scope, hook_id)}/{delivery_id}/attempts")

    # ---- App token exchange (auth.TokenExchange) -----------------------------------------

    async def find_installation(self, scope: Scope, app_jwt: SecretStr) -> int:
        path = f"{scope.prefix}/installation"
        response = await self._request(
            "GET", path, authorization=SecretStr(f"Bearer {app_jwt.get_secret_value()}")
        )
        return self._parse(Installation, response, "GET", path).id

    async def create_installation_token(
        self, installation_id: int, app_jwt: SecretStr
    ) -> tuple[SecretStr, float]:
        path = f"/app/installations/{installation_id}/access_tokens"
        response = await self._request(
            "POST", path, authorization=SecretStr(f"Bearer {app_jwt.get_secret_value()}")
        )
        token = self._parse(InstallationToken, response, "POST", path)
        return token.token, token.expires_at.timestamp()

    # ---- the request loop ----------------------------------------------------------------

    async def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        authorization: SecretStr | None = None,
    ) -> httpx.Response:
        """Send one logical request, retrying only attempts that got an error (or no answer)."""
        failures = rate_waits = 0
        refreshed = False
        shown = urlsplit(path).path
        while True:
            await self._wait_for_pause()
            headers: dict[str, str] = {}
            credential = authorization
            if credential is None and self._auth is not None:
                credential = await self._auth.authorization(self)
            if credential is not None:
                headers["Authorization"] = credential.get_secret_value()
            try:
                response = await self._http.request(
                    method, path, params=params, json=json_body, headers=headers
                )
            except httpx.TransportError as exc:
                failures += 1
                kind = NetworkFailure.NOT_SENT if isinstance(exc, _NOT_SENT) else NetworkFailure.MAYBE_SENT
                decision = ratelimit.classify_network_failure(
                    kind, method, attempt=failures, policy=self._policy
                )
                if not decision.retry:
                    raise errors.ServerError(
                        method, shown, None, f"network error: {type(exc).__name__}"
                    ) from exc
                log.warning(
                    "GitHub %s %s: %s; retry %d in %.1f s",
                    method,
                    shown,
                    type(exc).__name__,
                    failures,
                    decision.delay,
                )
                await self._sleep(decision.delay)
                continue
            decision = ratelimit.classify(
                response.status_code,
                response.headers,
                response.text if response.status_code >= 400 else "",
                attempt=failures + 1,
                rate_limit_waits=rate_waits,
                now=self._clock(),
                policy=self._policy,
            )
            if decision.reason is Reason.OK:
                self._note_exhaustion(response)
                return response
            if (
                decision.reason is Reason.UNAUTHORIZED
                and authorization is None
                and self._auth is not None
                and not refreshed
                and self._auth.invalidate()
            ):
                refreshed = True  # a revoked or early-expired App token: mint one more, once
                log.warning("GitHub %s %s: 401 with a cached App token; refreshing it once", method, shown)
                continue
            if decision.reason in (Reason.PRIMARY_RATE_LIMIT, Reason.SECONDARY_RATE_LIMIT):
                if not decision.retry:
                    raise errors.RateLimited(
                        method, shown, response.status_code, decision.reason.value, retry_in=decision.delay
                    )
                rate_waits += 1
                if decision.reason is Reason.PRIMARY_RATE_LIMIT:
                    self._paused_until = max(self._paused_until, self._clock() + decision.delay)
                log.warning(
                    "GitHub %s on %s %s; waiting %.1f s before retrying",
                    decision.reason.value.replace("_", " "),
                    method,
                    shown,
                    decision.delay,
                )
                await self._sleep(decision.delay)
                continue
            if decision.retry:
                failures += 1
                log.warning(
                    "GitHub %s %s answered %d; retry %d in %.1f s",
                    method,
                    shown,
                    response.status_code,
                    failures,
                    decision.delay,
                )
                await self._sleep(decision.delay)
                continue
            raise self._error(decision.reason, method, shown, response, app_call=authorization is not None)

    def _error(
        self, reason: Reason, method: str, path: str, response: httpx.Response, *, app_call: bool
    ) -> errors.GitHubError:
        message = _github_message(response)
        if reason is Reason.UNAUTHORIZED:
            what = "the App's JWT (check app_id and the private key)" if app_call else "the credentials"
            message = f"GitHub rejected {what}: {message}"
        elif reason is Reason.FORBIDDEN:
            message = f"{message} (the token or App lacks a permission this call needs)"
        cls = _ERRORS.get(reason, errors.GitHubError)
        return cls(method, path, response.status_code, message)

    async def _wait_for_pause(self) -> None:
        """While a primary rate limit is exhausted, every request waits for its reset."""
        delay = min(self._paused_until - self._clock(), self._policy.max_wait)
        if delay > 0:
            log.info("GitHub rate limit exhausted; holding requests for %.1f s", delay)
            await self._sleep(delay)

    def _note_exhaustion(self, response: httpx.Response) -> None:
        reset = ratelimit.exhausted_reset(response.headers)
        if reset is not None:
            self._paused_until = max(self._paused_until, reset + self._policy.reset_margin)

    async def _pages(self, path: str, params: dict[str, Any]) -> AsyncIterator[httpx.Response]:
        """Follow `Link: <…>; rel="next"` (page or cursor pagination) from the first page on.

        Only the link's path and query are used, against our own base URL, so a link can never
        send our credentials to another host.
        """
        target: str = path
        query: dict[str, Any] | None = params
        for _ in range(MAX_PAGES):
            response = await self._request("GET", target, params=query)
            yield response
            link = response.links.get("next", {}).get("url")
            if not link:
                return
            parts = urlsplit(link)
            next_path = parts.path
            if self._base_path and next_path.startswith(self._base_path + "/"):
                next_path = next_path[len(self._base_path) :]
            target, query = (f"{next_path}?{parts.query}" if parts.query else next_path), None
        raise errors.BadResponse("GET", path, None, f"more than {MAX_PAGES} pages")

    @staticmethod
    def _parse(model: type[M], response: httpx.Response, method: str, path: str) -> M:
        try:
            return model.model_validate(response.json())
        except (ValidationError, json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise errors.BadResponse(method, urlsplit(path).path, response.status_code, _short(exc)) from None

    @staticmethod
    def _parse_list(model: type[M], response: httpx.Response, method: str, path: str) -> list[M]:
        try:
            body = response.json()
            if not isinstance(body, list):
                raise ValueError("expected a JSON array")
            return [model.model_validate(item) for item in body]
        except (ValidationError, ValueError, UnicodeDecodeError) as exc:
            raise errors.BadResponse(method, urlsplit(path).path, response.status_code, _short(exc)) from None


def _short(exc: Exception) -> str:
    """An error summary that never quotes the response (it may hold a token or a JIT config)."""
    if isinstance(exc, ValidationError):
        problems = exc.errors(include_input=False, include_url=False)
        return "; ".join(f"{'.'.join(map(str, p['loc'])) or 'body'}: {p['msg']}" for p in problems)[:300]
    return type(exc).__name__
