"""The GitHub REST client against a small aiohttp server (loopback, tiny waits, < 60 s)."""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from pydantic import SecretStr

from plugins.handlers.github import errors
from plugins.handlers.github.auth import AppAuth, TokenAuth
from plugins.handlers.github.client import GitHubClient
from plugins.handlers.github.ratelimit import RetryPolicy
from plugins.handlers.github.scope import Scope
from plugins.handlers.github.settings import GitHubSettings

pytestmark = pytest.mark.timeout(60)

PAT = "ghp_TESTTOKENshouldNEVERbeLOGGED0001"
JIT = "eyJKSVQtQ09ORklHLXNlY3JldC1uZXZlci1sb2dnZWQifQ=="
FAST = RetryPolicy(
    max_attempts=4, backoff_base=0.01, backoff_cap=0.05, secondary_min_wait=0.05, reset_margin=0.05
)
REPO = Scope.repository("acme", "app")
ORG = Scope.organization("acme")

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@dataclass
class Seen:
    method: str
    path: str
    query: dict[str, str]
    authorization: str | None
    body: Any


@dataclass
class FakeAPI:
    """Routes by (method, path); each route is a handler or a list of canned answers served in turn."""

    routes: dict[tuple[str, str], Handler | list[web.Response]] = field(default_factory=dict)
    seen: list[Seen] = field(default_factory=list)
    url: str = ""

    def answer(self, method: str, path: str, *answers: web.Response) -> None:
        self.routes[(method, path)] = list(answers)

    def count(self, method: str, path: str) -> int:
        return sum(1 for s in self.seen if (s.method, s.path) == (method, path))

    async def dispatch(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        body = json.loads(raw) if raw else None
        self.seen.append(
            Seen(
                request.method, request.path, dict(request.query), request.headers.get("Authorization"), body
            )
        )
        route = self.routes.get((request.method, request.path))
        if route is None:
            return web.json_response({"message": "Not Found"}, status=404)
        if callable(route):
            return await route(request)
        return route.pop(0) if len(route) > 1 else _copy(route[0])


def _copy(response: web.Response) -> web.Response:
    assert response.body is None or isinstance(response.body, bytes)
    return web.Response(body=response.body, status=response.status, headers=dict(response.headers))


def reply(status: int = 200, body: Any = None, **headers: str) -> web.Response:
    text = json.dumps(body if body is not None else {})
    return web.Response(text=text, status=status, content_type="application/json", headers=headers)


@pytest.fixture
async def api() -> AsyncIterator[FakeAPI]:
    fake = FakeAPI()
    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", fake.dispatch)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    fake.url = f"http://{host}:{port}"
    try:
        yield fake
    finally:
        await runner.cleanup()


@pytest.fixture
async def gh(api: FakeAPI) -> AsyncIterator[GitHubClient]:
    async with GitHubClient(
        auth=TokenAuth(SecretStr(PAT)), api_url=api.url, policy=FAST, timeout=5
    ) as client:
        yield client


def runner_json(i: int) -> dict[str, Any]:
    return {
        "id": i,
        "name": f"r{i}",
        "os": "macos",
        "status": "online",
        "busy": False,
        "labels": [{"name": "x"}],
    }


# ---- pagination ------------------------------------------------------------------------------


async def test_list_runners_walks_every_page_with_the_token(api: FakeAPI, gh: GitHubClient) -> None:
    runners = [runner_json(i) for i in range(1, 251)]

    async def pages(request: web.Request) -> web.Response:
        page, per = int(request.query.get("page", "1")), int(request.query["per_page"])
        chunk = runners[(page - 1) * per : page * per]
        headers = {}
        if page * per < len(runners):
            headers["Link"] = (
                f'<{api.url}/orgs/acme/actions/runners?per_page={per}&page={page + 1}>; rel="next"'
            )
        return reply(200, {"total_count": len(runners), "runners": chunk}, **headers)

    api.routes[("GET", "/orgs/acme/actions/runners")] = pages
    found = await gh.list_runners(ORG)
    assert [r.id for r in found] == list(range(1, 251))
    assert api.count("GET", "/orgs/acme/actions/runners") == 3
    assert {s.authorization for s in api.seen} == {f"Bearer {PAT}"}


async def test_a_next_link_to_another_host_is_followed_on_our_host_only(api: FakeAPI) -> None:
    async def pages(request: web.Request) -> web.Response:
        if request.query.get("page") == "2":
            return reply(200, {"total_count": 2, "runners": [runner_json(2)]})
        link = '<https://evil.example/api/v3/repos/acme/app/actions/runners?page=2>; rel="next"'
        return reply(200, {"total_count": 2, "runners": [runner_json(1)]}, Link=link)

    api.routes[("GET", "/api/v3/repos/acme/app/actions/runners")] = pages
    async with GitHubClient(auth=TokenAuth(SecretStr(PAT)), api_url=f"{api.url}/api/v3", policy=FAST) as gh:
        assert [r.id for r in await gh.list_runners(REPO)] == [1, 2]
    assert [s.query.get("page") for s in api.seen] == [None, "2"]


async def test_find_runner_matches_the_exact_name(api: FakeAPI, gh: GitHubClient) -> None:
    api.answer(
        "GET",
        "/repos/acme/app/actions/runners",
        reply(
            200,
            {
                "total_count": 2,
                "runners": [runner_json(1) | {"name": "vm-10"}, runner_json(2) | {"name": "vm-1"}],
            },
        ),
    )
    runner = await gh.find_runner(REPO, "vm-1")
    assert runner is not None and runner.id == 2
    assert api.seen[0].query["name"] == "vm-1"
    assert await gh.find_runner(REPO, "vm-2") is None


async def test_hook_deliveries_follow_the_cursor_and_stop_at_since(api: FakeAPI, gh: GitHubClient) -> None:
    now = datetime(2026, 1, 2, tzinfo=UTC)
    all_deliveries = [
        {
            "id": 1000 - i,
            "guid": f"g{i}",
            "delivered_at": (now - timedelta(hours=i)).isoformat().replace("+00:00", "Z"),
            "redelivery": False,
            "duration": 0.1,
            "status": "OK",
            "status_code": 200,
            "event": "workflow_job",
            "action": "queued",
            "installation_id": None,
            "repository_id": 9,
        }
        for i in range(0, 500)
    ]

    async def pages(request: web.Request) -> web.Response:
        start = int(request.query.get("cursor", "0"))
        per = int(request.query["per_page"])
        chunk = all_deliveries[start : start + per]
        link = (
            f'<{api.url}/repos/acme/app/hooks/7/deliveries?per_page={per}&cursor={start + per}>; rel="next"'
        )
        return reply(200, chunk, Link=link)

    api.routes[("GET", "/repos/acme/app/hooks/7/deliveries")] = pages
    found = await gh.list_hook_deliveries(REPO, 7, since=now - timedelta(hours=150, minutes=30))
    assert [d.guid for d in found] == [f"g{i}" for i in range(151)]
    assert api.count("GET", "/repos/acme/app/hooks/7/deliveries") == 2  # the third page is never fetched


async def test_enterprise_hooks_have_no_deliveries_api(gh: GitHubClient) -> None:
    with pytest.raises(errors.UnsupportedScope):
        await gh.list_hook_deliveries(Scope.for_enterprise("e"), 1, since=datetime.now(UTC))


# ---- App auth --------------------------------------------------------------------------------


def _key_pair() -> tuple[str, rsa.RSAPublicKey]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    return pem, key.public_key()


@dataclass
class AppServer:
    """The App endpoints: installation lookup and token minting (JWT checked with the public key)."""

    pem: str
    public_key: rsa.RSAPublicKey
    clock: list[float]
    lifetime: float = 3600
    minted: list[str] = field(default_factory=list)
    revoked: set[str] = field(default_factory=set)
    reject_all: bool = False

    def check_jwt(self, request: web.Request) -> web.Response | None:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        try:
            claims = jwt.decode(
                token,
                self.public_key,
                algorithms=["RS256"],
                options={"verify_exp": False, "verify_iat": False},
            )
        except jwt.InvalidTokenError:
            return reply(401, {"message": "A JSON web token could not be decoded"})
        assert claims["iss"] == "12345"
        assert claims["exp"] - claims["iat"] <= 600
        assert claims["iat"] <= self.clock[0] - 59
        return None

    async def installation(self, request: web.Request) -> web.Response:
        return self.check_jwt(request) or reply(200, {"id": 77, "account": {"login": "acme"}})

    async def mint(self, request: web.Request) -> web.Response:
        if failure := self.check_jwt(request):
            return failure
        token = f"ghs_installation{len(self.minted) + 1:04d}"
        self.minted.append(token)
        expires = (
            datetime.fromtimestamp(self.clock[0] + self.lifetime, UTC).isoformat().replace("+00:00", "Z")
        )
        return reply(201, {"token": token, "expires_at": expires})

    async def job(self, request: web.Request) -> web.Response:
        token = request.headers.get("Authorization", "").removeprefix("Bearer ")
        if self.reject_all or token not in self.minted or token in self.revoked:
            return reply(401, {"message": "Bad credentials"})
        return reply(200, {"id": 5, "run_id": 6, "status": "queued", "labels": ["a"]})


@pytest.fixture
def app_server(api: FakeAPI) -> AppServer:
    pem, public = _key_pair()
    server = AppServer(pem, public, clock=[time.time()])
    api.routes[("GET", "/repos/acme/app/installation")] = server.installation
    api.routes[("POST", "/app/installations/77/access_tokens")] = server.mint
    api.routes[("GET", "/repos/acme/app/actions/jobs/5")] = server.job
    return server


async def test_app_token_is_minted_once_cached_and_refreshed_before_expiry(
    api: FakeAPI, app_server: AppServer
) -> None:
    auth = AppAuth(
        app_id=12345, private_key=SecretStr(app_server.pem), scope=REPO, clock=lambda: app_server.clock[0]
    )
    async with GitHubClient(auth=auth, api_url=api.url, policy=FAST) as gh:
        for _ in range(3):
            assert (await gh.get_job("acme", "app", 5)).status == "queued"
        assert app_server.minted == ["ghs_installation0001"]
        assert auth.installation_id == 77
        assert api.count("GET", "/repos/acme/app/installation") == 1
        app_server.clock[0] += 3600 - 299  # inside the 5-minute refresh margin
        await gh.get_job("acme", "app", 5)
        assert app_server.minted == ["ghs_installation0001", "ghs_installation0002"]
        assert api.count("GET", "/repos/acme/app/installation") == 1  # the id is remembered
        job_calls = [s for s in api.seen if s.path.endswith("/jobs/5")]
        assert [s.authorization for s in job_calls] == ["Bearer ghs_installation0001"] * 3 + [
            "Bearer ghs_installation0002"
        ]


async def test_a_revoked_app_token_is_refreshed_once_on_401(api: FakeAPI, app_server: AppServer) -> None:
    auth = AppAuth(app_id=12345, private_key=SecretStr(app_server.pem), installation_id=77)
    async with GitHubClient(auth=auth, api_url=api.url, policy=FAST) as gh:
        await gh.get_job("acme", "app", 5)
        app_server.revoked.add("ghs_installation0001")
        assert (await gh.get_job("acme", "app", 5)).id == 5
        assert len(app_server.minted) == 2
        app_server.reject_all = True
        with pytest.raises(errors.AuthError, match=r"GET /repos/acme/app/actions/jobs/5 -> 401"):
            await gh.get_job("acme", "app", 5)  # one refresh only: a second 401 is final
        assert len(app_server.minted) == 3


async def test_app_settings_build_an_app_client(api: FakeAPI, app_server: AppServer) -> None:
    settings = GitHubSettings(
        api_url=api.url,
        app_id=12345,
        app_private_key=SecretStr(app_server.pem),
        owner="acme",
        repo="app",
        backoff_base_seconds=0.01,
    )
    async with GitHubClient.from_settings(settings) as gh:
        await gh.get_job("acme", "app", 5)
    assert app_server.minted == ["ghs_installation0001"]


async def test_a_bad_app_key_is_a_clear_auth_error(api: FakeAPI, app_server: AppServer) -> None:
    other_pem, _ = _key_pair()
    auth = AppAuth(app_id=12345, private_key=SecretStr(other_pem), installation_id=77)
    async with GitHubClient(auth=auth, api_url=api.url, policy=FAST) as gh:
        with pytest.raises(errors.AuthError, match=r"App's JWT \(check app_id and the private key\)"):
            await gh.get_job("acme", "app", 5)


# ---- rate limits and retries -----------------------------------------------------------------


async def test_primary_rate_limit_waits_until_reset_then_retries(api: FakeAPI, gh: GitHubClient) -> None:
    reset = int(time.time()) + 1
    api.answer(
        "GET",
        "/repos/acme/app/actions/runs/6",
        reply(
            403,
            {"message": "API rate limit exceeded"},
            **{"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
        ),
        reply(200, {"id": 6, "status": "completed"}),
    )
    run = await gh.get_run("acme", "app", 6)
    assert run.status == "completed"
    assert time.time() >= reset
    assert api.count("GET", "/repos/acme/app/actions/runs/6") == 2


async def test_secondary_rate_limit_honours_retry_after(api: FakeAPI, gh: GitHubClient) -> None:
    api.answer(
        "GET",
        "/repos/acme/app/actions/runs/6",
        reply(429, {"message": "slow down"}, **{"retry-after": "1"}),
        reply(200, {"id": 6}),
    )
    started = time.monotonic()
    await gh.get_run("acme", "app", 6)
    assert time.monotonic() - started >= 0.95
    assert api.count("GET", "/repos/acme/app/actions/runs/6") == 2


async def test_secondary_rate_limit_message_without_headers_backs_off(api: FakeAPI, gh: GitHubClient) -> None:
    api.answer(
        "POST",
        "/repos/acme/app/actions/runs/6/cancel",
        reply(403, {"message": "You have exceeded a secondary rate limit. Please wait."}),
        reply(403, {"message": "You have exceeded a secondary rate limit. Please wait."}),
        reply(202, {}),
    )
    assert await gh.cancel_run("acme", "app", 6) is True
    assert api.count("POST", "/repos/acme/app/actions/runs/6/cancel") == 3


async def test_a_persisting_rate_limit_ends_in_rate_limited(api: FakeAPI, gh: GitHubClient) -> None:
    api.answer("GET", "/repos/acme/app/actions/runs/6", reply(429, {"message": "slow down"}))
    with pytest.raises(errors.RateLimited, match=r"GET /repos/acme/app/actions/runs/6 -> 429"):
        await gh.get_run("acme", "app", 6)
    assert api.count("GET", "/repos/acme/app/actions/runs/6") == FAST.max_rate_limit_waits + 1


async def test_server_errors_are_retried_with_backoff_then_reported(api: FakeAPI, gh: GitHubClient) -> None:
    api.answer(
        "POST",
        "/repos/acme/app/actions/runners/generate-jitconfig",
        reply(502, {"message": "Bad gateway"}),
        reply(500, {"message": "boom"}),
        reply(201, {"runner": runner_json(31) | {"name": "vm-1"}, "encoded_jit_config": JIT}),
    )
    jit = await gh.generate_jitconfig(REPO, "vm-1", ["anka-template:x", "self-hosted"], runner_group_id=3)
    assert (jit.runner_id, jit.runner_name, jit.encoded_jit_config.get_secret_value()) == (31, "vm-1", JIT)
    assert JIT not in repr(jit) and JIT not in str(jit)
    assert api.seen[-1].body == {
        "name": "vm-1",
        "runner_group_id": 3,
        "labels": ["anka-template:x", "self-hosted"],
        "work_folder": "_work",
    }
    api.answer("GET", "/repos/acme/app/actions/runs/6", reply(503, {"message": "unavailable"}))
    with pytest.raises(errors.ServerError, match=r"GET /repos/acme/app/actions/runs/6 -> 503: unavailable"):
        await gh.get_run("acme", "app", 6)
    assert api.count("GET", "/repos/acme/app/actions/runs/6") == FAST.max_attempts


async def test_a_successful_request_is_never_repeated_even_on_an_exhausted_window(
    api: FakeAPI, gh: GitHubClient
) -> None:
    reset = int(time.time()) + 1
    limits = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)}
    api.answer("POST", "/repos/acme/app/actions/runs/6/cancel", reply(202, {}, **limits))
    api.answer("GET", "/repos/acme/app/actions/runs/6", reply(200, {"id": 6}))
    assert await gh.cancel_run("acme", "app", 6)
    assert api.count("POST", "/repos/acme/app/actions/runs/6/cancel") == 1
    await gh.get_run("acme", "app", 6)  # held back until the window resets, not sent early
    assert time.time() >= reset
    assert api.count("POST", "/repos/acme/app/actions/runs/6/cancel") == 1


async def test_a_post_whose_answer_was_lost_is_not_sent_again(api: FakeAPI) -> None:
    async def slow(request: web.Request) -> web.Response:
        await asyncio.sleep(1.0)
        return reply(202, {})

    api.routes[("POST", "/repos/acme/app/actions/runs/6/cancel")] = slow
    api.routes[("GET", "/repos/acme/app/actions/runs/6")] = slow
    async with GitHubClient(auth=TokenAuth(SecretStr(PAT)), api_url=api.url, policy=FAST, timeout=0.3) as gh:
        with pytest.raises(errors.ServerError, match="network error: ReadTimeout"):
            await gh.cancel_run("acme", "app", 6)
        assert api.count("POST", "/repos/acme/app/actions/runs/6/cancel") == 1
        with pytest.raises(errors.ServerError):
            await gh.get_run("acme", "app", 6)
        assert api.count("GET", "/repos/acme/app/actions/runs/6") == FAST.max_attempts  # reads may repeat


async def test_connection_refused_is_retried_then_reported() -> None:
    async with GitHubClient(auth=None, api_url="http://127.0.0.1:9", policy=FAST, timeout=1) as gh:
        with pytest.raises(
            errors.ServerError, match=r"POST /repos/acme/app/actions/runs/1/cancel: network error"
        ):
            await gh.cancel_run("acme", "app", 1)


# ---- final errors ----------------------------------------------------------------------------


async def test_409_on_generate_jitconfig_is_runner_name_exists(api: FakeAPI, gh: GitHubClient) -> None:
    api.answer(
        "POST",
        "/orgs/acme/actions/runners/generate-jitconfig",
        reply(409, {"message": "Already exists - A runner with the name vm-1 already exists."}),
    )
    with pytest.raises(errors.RunnerNameExists) as caught:
        await gh.generate_jitconfig(ORG, "vm-1", ["l"])
    assert (caught.value.method, caught.value.path, caught.value.status) == (
        "POST",
        "/orgs/acme/actions/runners/generate-jitconfig",
        409,
    )
    assert api.count("POST", "/orgs/acme/actions/runners/generate-jitconfig") == 1


async def test_not_found_auth_conflict_and_busy_runner(api: FakeAPI, gh: GitHubClient) -> None:
    api.answer("GET", "/repos/acme/app/actions/jobs/1", reply(404, {"message": "Not Found"}))
    with pytest.raises(errors.NotFound, match=r"GET /repos/acme/app/actions/jobs/1 -> 404: Not Found"):
        await gh.get_job("acme", "app", 1)
    api.answer("GET", "/repos/acme/app/actions/jobs/2", reply(401, {"message": "Bad credentials"}))
    with pytest.raises(errors.AuthError, match="GitHub rejected the credentials: Bad credentials"):
        await gh.get_job("acme", "app", 2)
    api.answer("POST", "/repos/acme/app/actions/runs/3/cancel", reply(409, {"message": "Cannot cancel"}))
    assert await gh.cancel_run("acme", "app", 3) is False
    api.answer("DELETE", "/repos/acme/app/actions/runners/4", reply(404, {"message": "Not Found"}))
    assert await gh.delete_runner(REPO, 4) is False
    api.answer("DELETE", "/repos/acme/app/actions/runners/5", web.Response(status=204))
    assert await gh.delete_runner(REPO, 5) is True
    api.answer(
        "DELETE",
        "/repos/acme/app/actions/runners/6",
        reply(
            422, {"message": 'Bad request - Runner "vm" is still running a job"', "documentation_url": "x"}
        ),
    )
    with pytest.raises(errors.RunnerBusy):
        await gh.delete_runner(REPO, 6)
    api.answer(
        "GET",
        "/repos/acme/app/actions/jobs/3",
        reply(403, {"message": "Resource not accessible by integration"}),
    )
    with pytest.raises(errors.Forbidden, match="lacks a permission"):
        await gh.get_job("acme", "app", 3)
    for path in ("/repos/acme/app/actions/jobs/1", "/repos/acme/app/actions/jobs/2"):
        assert api.count("GET", path) == 1  # final errors are not retried


async def test_a_malformed_success_is_a_bad_response_without_quoting_it(
    api: FakeAPI, gh: GitHubClient
) -> None:
    api.answer(
        "POST",
        "/repos/acme/app/actions/runners/generate-jitconfig",
        reply(201, {"runner": {"id": "not-a-number"}, "encoded_jit_config": JIT}),
    )
    with pytest.raises(errors.BadResponse) as caught:
        await gh.generate_jitconfig(REPO, "vm-1", ["l"])
    assert JIT not in str(caught.value) and "runner" in str(caught.value)


# ---- secrets never logged --------------------------------------------------------------------


async def test_no_token_jwt_or_jit_config_reaches_the_logs(
    api: FakeAPI, app_server: AppServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    api.answer(
        "POST",
        "/repos/acme/app/actions/runners/generate-jitconfig",
        reply(500, {"message": "boom"}),
        reply(201, {"runner": runner_json(1), "encoded_jit_config": JIT}),
    )
    api.answer(
        "GET",
        "/repos/acme/app/actions/runs/6",
        reply(429, {"message": "x"}, **{"retry-after": "0"}),
        reply(200, {"id": 6}),
    )
    async with GitHubClient(auth=TokenAuth(SecretStr(PAT)), api_url=api.url, policy=FAST) as gh:
        jit = await gh.generate_jitconfig(REPO, "r1", ["l"])
        logging.getLogger("test").info("got %s", jit)
        await gh.get_run("acme", "app", 6)
        api.answer("GET", "/repos/acme/app/actions/jobs/9", reply(401, {"message": "Bad credentials"}))
        with pytest.raises(errors.AuthError) as caught:
            await gh.get_job("acme", "app", 9)
        assert PAT not in str(caught.value)
    auth = AppAuth(app_id=12345, private_key=SecretStr(app_server.pem), scope=REPO)
    async with GitHubClient(auth=auth, api_url=api.url, policy=FAST) as gh:
        await gh.get_job("acme", "app", 5)
        app_server.revoked.add(app_server.minted[0])
        await gh.get_job("acme", "app", 5)
    assert caplog.records, "expected retry and refresh log lines"
    logged = "\n".join(record.getMessage() for record in caplog.records)
    jwt_seen = [s.authorization for s in api.seen if s.path.endswith(("/installation", "/access_tokens"))]
    for secret in [PAT, JIT, "Authorization", *app_server.minted, *(j or "" for j in jwt_seen)]:
        assert secret not in logged
    assert "ghs_" not in logged and "Bearer" not in logged
    assert app_server.pem.splitlines()[1] not in logged
    assert PAT not in repr(TokenAuth(SecretStr(PAT))) and "PRIVATE" not in repr(auth)
