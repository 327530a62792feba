"""The fake GitHub against GitHub's own descriptions and rules (loopback only, < 60 s).

REST responses and webhook payloads are validated against ../shared/reference/github/*.json
when that directory is present; the runner stand-in runs as a real subprocess, extracted from
the tarball the fake serves, as it would inside a VM.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import json
import os
import signal
import sys
import tarfile
import time
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jsonschema  # type: ignore[import-untyped]
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from anklet.dev.fake_github import RUNNER_VERSION, FakeGitHub
from anklet.dev.fake_github.runner import JIT_ENV
from tests.waiting import eventually

SECRET = "it's-a-secret"
TOKEN = "ghp_dev_token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
REFERENCE = Path(__file__).resolve().parents[2].parent / "shared" / "reference" / "github"
JIT = "/repos/o/r/actions/runners/generate-jitconfig"
RUNNER_SOURCE = (
    Path(__file__).resolve().parents[2] / "anklet" / "dev" / "fake_github" / "runner.py"
).read_bytes()


# --- schema checks ----------------------------------------------------------------------------


def _openapi30_to_jsonschema(node: Any) -> Any:
    """OpenAPI 3.0 ``nullable`` → JSON Schema ``null`` types (the REST description is 3.0)."""
    if isinstance(node, list):
        return [_openapi30_to_jsonschema(x) for x in node]
    if not isinstance(node, dict):
        return node
    out = {k: _openapi30_to_jsonschema(v) for k, v in node.items() if k not in ("nullable", "example")}
    if node.get("nullable"):
        if "type" in out:
            out["type"] = [out["type"], "null"]
            if "enum" in out and None not in out["enum"]:
                out["enum"] = [*out["enum"], None]
        else:
            out = {"anyOf": [out, {"type": "null"}]}
    return out


def _load(name: str) -> dict[str, Any] | None:
    path = REFERENCE / name
    return json.loads(path.read_text()) if path.exists() else None


REST = _load("rest-actions-openapi.json")
HOOKS = _load("webhooks-workflow-job-openapi.json")
HOOK_SCHEMAS = {
    "queued": "webhook-workflow-job-queued",
    "in_progress": "webhook-workflow-job-in-progress",
    "completed": "webhook-workflow-job-completed",
}


def assert_rest_shape(path: str, method: str, status: int, body: Any) -> None:
    if REST is None:
        return
    schema = REST["paths"][path][method]["responses"][str(status)]["content"]["application/json"]["schema"]
    errors = list(jsonschema.Draft202012Validator(_openapi30_to_jsonschema(schema)).iter_errors(body))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]]


def assert_webhook_shape(payload: dict[str, Any]) -> None:
    if HOOKS is None:
        return
    schema = {
        "$ref": f"#/components/schemas/{HOOK_SCHEMAS[payload['action']]}",
        "components": HOOKS["components"],
    }
    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(payload))
    assert not errors, [f"{list(e.path)}: {e.message[:200]}" for e in errors[:5]]


# --- fixtures ---------------------------------------------------------------------------------


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes

    @property
    def payload(self) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self.body)
        return data

    @property
    def action(self) -> str | None:
        return self.payload.get("action")

    @property
    def job_id(self) -> int:
        return int(self.payload["workflow_job"]["id"])


@dataclass
class Sink:
    """A webhook receiver: records every request; answers ``statuses.pop(0)`` or 200."""

    url: str = ""
    received: list[Received] = field(default_factory=list)
    statuses: list[int] = field(default_factory=list)

    def for_job(self, job_id: int) -> list[Received]:
        return [r for r in self.received if r.payload.get("workflow_job", {}).get("id") == job_id]

    def actions(self, job_id: int) -> list[str | None]:
        return [r.action for r in self.for_job(job_id)]


@pytest.fixture
async def sink() -> AsyncIterator[Sink]:
    state = Sink()

    async def receive(request: web.Request) -> web.Response:
        state.received.append(Received(dict(request.headers), await request.read()))
        return web.Response(status=state.statuses.pop(0) if state.statuses else 200, text="ok")

    app = web.Application()
    app.router.add_post("/hook", receive)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    state.url = f"http://127.0.0.1:{runner.addresses[0][1]}/hook"
    try:
        yield state
    finally:
        await runner.cleanup()


@pytest.fixture
async def fake(sink: Sink) -> AsyncIterator[FakeGitHub]:
    async with FakeGitHub(webhook_url=sink.url, webhook_secret=SECRET, lost_runner_timeout=1.0) as server:
        yield server


@pytest.fixture
async def client(fake: FakeGitHub) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=fake.url, headers=AUTH, timeout=10) as http:
        yield http


@dataclass
class Runners:
    """Runner stand-ins as subprocesses, from the served tarball; killed at teardown."""

    directory: Path
    procs: list[asyncio.subprocess.Process] = field(default_factory=list)

    async def start(self, jit_config: str, *, idle_timeout: float = 20.0) -> asyncio.subprocess.Process:
        env = {**os.environ, JIT_ENV: jit_config, "ANKLET_FAKE_RUNNER_IDLE_TIMEOUT": str(idle_timeout)}
        proc = await asyncio.create_subprocess_exec(
            "bash",
            str(self.directory / "run.sh"),
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self.procs.append(proc)
        return proc


async def finish(proc: asyncio.subprocess.Process, timeout: float = 15.0) -> tuple[int, str]:
    out, _ = await asyncio.wait_for(proc.communicate(), timeout)
    assert proc.returncode is not None
    return proc.returncode, out.decode()


async def install_runner(client: httpx.AsyncClient, directory: Path) -> None:
    """What the in-VM install script does: fetch the latest asset, verify it, extract it."""
    latest = (await client.get("/_sim/releases/latest")).json()
    asset = next(
        a for a in latest["assets"] if a["name"] == f"actions-runner-osx-arm64-{latest['version']}.tar.gz"
    )
    data = (await client.get(asset["url"])).content
    assert hashlib.sha256(data).hexdigest() == asset["sha256"]
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(directory, filter="data")


@pytest.fixture
async def runners(client: httpx.AsyncClient, tmp_path: Path) -> AsyncIterator[Runners]:
    directory = tmp_path / "actions-runner"
    directory.mkdir()
    await install_runner(client, directory)
    pool = Runners(directory)
    try:
        yield pool
    finally:
        for proc in pool.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def register(
    client: httpx.AsyncClient, name: str, labels: list[str], prefix: str = "/repos/o/r"
) -> dict[str, Any]:
    response = await client.post(
        f"{prefix}/actions/runners/generate-jitconfig",
        json={"name": name, "runner_group_id": 1, "labels": labels},
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


async def new_job(client: httpx.AsyncClient, **fields: Any) -> dict[str, Any]:
    body = {"owner": "o", "repo": "r", "labels": ["anka-template:t1"], **fields}
    response = await client.post("/_sim/workflow_jobs", json=body)
    assert response.status_code == 201, response.text
    job: dict[str, Any] = response.json()
    return job


async def until(condition: Callable[[], object], timeout: float = 10.0) -> None:
    async def probe() -> bool:
        return bool(condition())

    await eventually(probe, timeout)


def job_status(fake: FakeGitHub, job_id: int) -> str:
    job = fake.job(job_id)
    assert job is not None
    return f"{job['status']}/{job['conclusion']}"


# --- runners and JIT configs ------------------------------------------------------------------


async def test_jit_config_registration_and_conflict(fake: FakeGitHub, client: httpx.AsyncClient) -> None:
    body = await register(client, "anklet-vm-1", ["anka-template:t1", "Big"])
    assert_rest_shape("/repos/{owner}/{repo}/actions/runners/generate-jitconfig", "post", 201, body)
    runner = body["runner"]
    assert runner["status"] == "offline" and runner["busy"] is False
    assert [label["name"] for label in runner["labels"]] == ["self-hosted", "anka-template:t1", "Big"]
    config = json.loads(base64.b64decode(body["encoded_jit_config"]))
    assert config["runner_id"] == runner["id"] and config["runner_name"] == "anklet-vm-1"
    assert config["url"] == fake.url and len(config["token"]) >= 20

    again = await client.post(JIT, json={"name": "anklet-vm-1", "runner_group_id": 1, "labels": ["x"]})
    assert again.status_code == 409
    assert "already exists" in again.json()["message"] and again.json()["documentation_url"]
    # Names are unique per scope: the same name at org scope is another runner.
    await register(client, "anklet-vm-1", ["x"], prefix="/orgs/o")

    missing = await client.post(JIT, json={"name": "n", "runner_group_id": 1})
    assert missing.status_code == 422 and "labels" in missing.json()["message"]
    empty = await client.post(JIT, json={"name": "n", "runner_group_id": 1, "labels": []})
    assert empty.status_code == 422
    assert (await client.post(JIT, content=b"{not json")).status_code == 400

    anonymous = await client.post(JIT, json={}, headers={"Authorization": ""})
    assert anonymous.status_code == 401 and anonymous.json()["message"] == "Requires authentication"
    wrong = await client.get("/repos/o/r/actions/runners", headers={"Authorization": "token nope"})
    assert wrong.status_code == 401 and wrong.json()["message"] == "Bad credentials"
    ok = await client.get("/repos/o/r/actions/runners", headers={"Authorization": f"token {TOKEN}"})
    assert ok.status_code == 200
    for header in ("x-ratelimit-limit", "x-ratelimit-remaining", "x-ratelimit-used", "x-ratelimit-reset"):
        assert header in ok.headers and header in wrong.headers
    assert ok.headers["x-ratelimit-resource"] == "core"


async def test_runner_listing_pagination_get_and_delete(client: httpx.AsyncClient) -> None:
    ids = [(await register(client, f"vm-{i}", ["x"]))["runner"]["id"] for i in range(5)]
    await register(client, "elsewhere", ["x"], prefix="/repos/o/other")
    enterprise = await register(client, "vm-0", ["x"], prefix="/enterprises/acme")
    listed = (await client.get("/enterprises/acme/actions/runners")).json()
    assert [r["id"] for r in listed["runners"]] == [enterprise["runner"]["id"]]

    seen: list[int] = []
    url: str | None = "/repos/o/r/actions/runners?per_page=2"
    while url:
        page = await client.get(url)
        assert page.status_code == 200 and page.json()["total_count"] == 5
        assert_rest_shape("/repos/{owner}/{repo}/actions/runners", "get", 200, page.json())
        seen += [r["id"] for r in page.json()["runners"]]
        url = page.links.get("next", {}).get("url")
        if url:
            assert 'rel="last"' in page.headers["Link"]
    assert seen == ids

    named = (await client.get("/repos/o/r/actions/runners", params={"name": "vm-3"})).json()
    assert named["total_count"] == 1 and named["runners"][0]["id"] == ids[3]

    one = await client.get(f"/repos/o/r/actions/runners/{ids[0]}")
    assert one.status_code == 200 and one.json()["name"] == "vm-0"
    assert (await client.get(f"/orgs/o/actions/runners/{ids[0]}")).status_code == 404  # other scope
    assert (await client.delete(f"/repos/o/r/actions/runners/{ids[0]}")).status_code == 204
    gone = await client.get(f"/repos/o/r/actions/runners/{ids[0]}")
    assert gone.status_code == 404 and gone.json()["message"] == "Not Found"


# --- the job lifecycle ------------------------------------------------------------------------


def assert_signed(received: Received) -> None:
    expected = "sha256=" + hmac.new(SECRET.encode(), received.body, hashlib.sha256).hexdigest()
    assert hmac.compare_digest(received.headers["X-Hub-Signature-256"], expected)
    assert received.headers["X-GitHub-Event"] == "workflow_job"
    assert received.headers["X-GitHub-Hook-ID"] == "1"
    assert received.headers["User-Agent"].startswith("GitHub-Hookshot/")
    assert received.headers["Content-Type"] == "application/json"
    assert len(received.headers["X-GitHub-Delivery"]) == 36


async def test_job_lifecycle_with_runner_stand_in(
    fake: FakeGitHub, client: httpx.AsyncClient, sink: Sink, runners: Runners
) -> None:
    labels = ["self-hosted", "anka-template:t1", "anka-template-tag:vanilla"]
    job = await new_job(client, labels=labels, run_seconds=0.4, steps=["checkout", "build"], name="build")
    assert job["status"] == "queued" and job["id"] > 2**32
    registered = await register(client, "anklet-vm-abc", labels)
    proc = await runners.start(registered["encoded_jit_config"])
    code, output = await finish(proc)
    assert code == 0, output
    assert "Running job: build" in output and "checkout" in output
    assert output.rstrip().endswith("Job build completed with result: Succeeded")

    await until(lambda: len(sink.for_job(job["id"])) == 3)
    assert sink.actions(job["id"]) == ["queued", "in_progress", "completed"]
    for received in sink.for_job(job["id"]):
        assert_signed(received)
        assert_webhook_shape(received.payload)
        payload = received.payload
        assert payload["repository"]["full_name"] == "o/r" and payload["repository"]["owner"]["login"] == "o"
        assert payload["workflow_job"]["labels"] == labels
        assert (
            payload["workflow_job"]["run_id"] == job["run_id"] and payload["workflow_job"]["run_attempt"] == 1
        )
    queued, started, completed = (r.payload["workflow_job"] for r in sink.for_job(job["id"]))
    assert queued["runner_name"] is None and queued["steps"] == []
    assert started["status"] == "in_progress" and started["runner_name"] == "anklet-vm-abc"
    assert started["runner_id"] == registered["runner"]["id"] and started["runner_group_name"] == "Default"
    assert completed["conclusion"] == "success" and completed["completed_at"]
    assert [s["name"] for s in completed["steps"]] == ["Set up job", "checkout", "build", "Complete job"]
    guids = {r.headers["X-GitHub-Delivery"] for r in sink.for_job(job["id"])}
    assert len(guids) == 3

    rest = await client.get(f"/repos/o/r/actions/jobs/{job['id']}")
    assert_rest_shape("/repos/{owner}/{repo}/actions/jobs/{job_id}", "get", 200, rest.json())
    assert rest.json()["status"] == "completed" and rest.json()["runner_name"] == "anklet-vm-abc"
    assert (await client.get(f"/repos/o/other/actions/jobs/{job['id']}")).status_code == 404
    run = await client.get(f"/repos/o/r/actions/runs/{job['run_id']}")
    assert_rest_shape("/repos/{owner}/{repo}/actions/runs/{run_id}", "get", 200, run.json())
    assert run.json()["status"] == "completed" and run.json()["conclusion"] == "success"
    # Ephemeral: the runner is gone, and its JIT config is spent.
    assert fake.runners() == []
    code, output = await finish(await runners.start(registered["encoded_jit_config"]))
    assert code == 1 and "not registered" in output


async def test_failed_job_and_label_superset_assignment(
    fake: FakeGitHub, client: httpx.AsyncClient, runners: Runners
) -> None:
    small = await register(client, "small", ["anka-template:t1"])
    small_proc = await runners.start(small["encoded_jit_config"], idle_timeout=1.5)
    await until(lambda: any(r["status"] == "online" for r in fake.runners()))
    job = await new_job(client, labels=["anka-template:t1", "big"], run_seconds=0.2, conclusion="failure")
    code, output = await finish(small_proc)
    assert code == 2, output  # never got the job: exits after its idle timeout
    assert job_status(fake, job["id"]) == "queued/None"

    # An org runner covers the org's repositories; labels match case-insensitively.
    big = await register(client, "big", ["ANKA-TEMPLATE:T1", "Big", "extra"], prefix="/orgs/o")
    code, output = await finish(await runners.start(big["encoded_jit_config"]))
    assert code == 0 and output.rstrip().endswith("completed with result: Failed")
    finished = fake.job(job["id"])
    assert finished is not None and finished["runner_name"] == "big" and finished["conclusion"] == "failure"
    assert any(s["conclusion"] == "failure" for s in finished["steps"])


async def test_runner_never_takes_job_fault(
    fake: FakeGitHub, client: httpx.AsyncClient, runners: Runners
) -> None:
    fake.faults.runner_never_takes_job()
    job = await new_job(client)
    registered = await register(client, "starved", ["anka-template:t1"])
    code, output = await finish(await runners.start(registered["encoded_jit_config"], idle_timeout=1.0))
    assert code == 2 and "No job was assigned" in output
    assert job_status(fake, job["id"]) == "queued/None"


async def test_bad_jit_config_exits_non_zero(runners: Runners) -> None:
    code, output = await finish(await runners.start("bm90IGpzb24="))
    assert code == 1 and "invalid JIT config" in output
    config = runners.directory / "config.sh"
    proc = await asyncio.create_subprocess_exec(
        "bash", str(config), stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    code, output = await finish(proc)
    assert code == 1 and "use the JIT config" in output


# --- cancellation -----------------------------------------------------------------------------


async def test_cancel_queued_job(fake: FakeGitHub, client: httpx.AsyncClient, sink: Sink) -> None:
    job = await new_job(client)
    cancelled = await client.post(f"/_sim/workflow_jobs/{job['id']}/cancel")
    assert cancelled.status_code == 202
    assert (await client.get(f"/_sim/workflow_jobs/{job['id']}")).json()["conclusion"] == "cancelled"
    assert (await client.post(f"/_sim/workflow_jobs/{job['id']}/cancel")).status_code == 409
    await fake.webhooks_idle()
    assert sink.actions(job["id"]) == ["queued", "completed"]
    completed = sink.for_job(job["id"])[1].payload
    assert_webhook_shape(completed)
    assert completed["workflow_job"]["conclusion"] == "cancelled"


async def test_cancel_in_progress_job_and_busy_runner(
    fake: FakeGitHub, client: httpx.AsyncClient, sink: Sink, runners: Runners
) -> None:
    job = await new_job(client, run_seconds=30)
    registered = await register(client, "busy", ["anka-template:t1"])
    proc = await runners.start(registered["encoded_jit_config"])
    await until(lambda: "in_progress" in sink.actions(job["id"]))

    listed = (await client.get("/repos/o/r/actions/runners")).json()["runners"][0]
    assert listed["status"] == "online" and listed["busy"] is True
    refused = await client.delete(f"/repos/o/r/actions/runners/{registered['runner']['id']}")
    assert refused.status_code == 422
    assert "is currently running a job and cannot be deleted" in refused.json()["message"]

    started = time.monotonic()
    assert (await client.post(f"/_sim/workflow_jobs/{job['id']}/cancel")).status_code == 202
    code, output = await finish(proc)
    assert code == 0 and output.rstrip().endswith("completed with result: Canceled")
    assert time.monotonic() - started < 5
    await fake.webhooks_idle()
    assert sink.actions(job["id"]) == ["queued", "in_progress", "completed"]
    assert sink.for_job(job["id"])[-1].payload["workflow_job"]["conclusion"] == "cancelled"


async def test_run_cancel_affects_only_that_run(fake: FakeGitHub, client: httpx.AsyncClient) -> None:
    first = await new_job(client)
    sibling = await new_job(client, run_id=first["run_id"], name="test")
    other = await new_job(client)
    assert sibling["run_id"] == first["run_id"] != other["run_id"]

    response = await client.post(f"/repos/o/r/actions/runs/{first['run_id']}/cancel")
    assert response.status_code == 202
    assert job_status(fake, first["id"]) == job_status(fake, sibling["id"]) == "completed/cancelled"
    assert job_status(fake, other["id"]) == "queued/None"
    run = (await client.get(f"/repos/o/r/actions/runs/{first['run_id']}")).json()
    assert (run["status"], run["conclusion"]) == ("completed", "cancelled")
    again = await client.post(f"/repos/o/r/actions/runs/{first['run_id']}/cancel")
    assert again.status_code == 409 and again.json()["message"]
    assert (await client.post(f"/repos/o/other/actions/runs/{other['run_id']}/cancel")).status_code == 404


async def test_lost_runner_fails_job_only_after_timeout(
    fake: FakeGitHub, client: httpx.AsyncClient, runners: Runners
) -> None:
    job = await new_job(client, run_seconds=30)
    registered = await register(client, "doomed", ["anka-template:t1"])
    proc = await runners.start(registered["encoded_jit_config"])
    await until(lambda: job_status(fake, job["id"]) == "in_progress/None")
    proc.kill()
    await proc.wait()
    await asyncio.sleep(0.3)
    assert job_status(fake, job["id"]) == "in_progress/None"  # not auto-completed
    await until(lambda: job_status(fake, job["id"]) == "completed/failure", timeout=5)
    [runner] = fake.runners()
    assert runner["status"] == "offline" and runner["busy"] is False
    assert (await client.delete(f"/repos/o/r/actions/runners/{runner['id']}")).status_code == 204


# --- hook deliveries --------------------------------------------------------------------------


async def test_hook_deliveries_list_detail_and_redelivery(
    fake: FakeGitHub, client: httpx.AsyncClient, sink: Sink
) -> None:
    sink.statuses = [500]
    failed_job = await new_job(client)
    await fake.webhooks_idle()
    jobs = [await new_job(client) for _ in range(2)]
    await new_job(client, repo="other")
    await fake.webhooks_idle()

    pages: list[list[dict[str, Any]]] = []
    url: str | None = "/repos/o/r/hooks/1/deliveries?per_page=2"
    while url:
        page = await client.get(url)
        assert page.status_code == 200
        assert_rest_shape("/repos/{owner}/{repo}/hooks/{hook_id}/deliveries", "get", 200, page.json())
        pages.append(page.json())
        url = page.links.get("next", {}).get("url")
        assert url is None or "cursor=" in url
    listed = [d for page in pages for d in page]
    assert [len(p) for p in pages] == [2, 1]
    assert [d["id"] for d in listed] == sorted((d["id"] for d in listed), reverse=True)  # newest first
    assert listed[-1]["status_code"] == 500 and listed[0]["status_code"] == 200
    assert all(d["event"] == "workflow_job" and d["action"] == "queued" for d in listed)
    assert len((await client.get("/orgs/o/hooks/1/deliveries")).json()) == 4
    assert len((await client.get("/repos/o/other/hooks/1/deliveries")).json()) == 1
    assert (await client.get("/repos/o/r/hooks/999/deliveries")).status_code == 404
    failures = (await client.get("/repos/o/r/hooks/1/deliveries", params={"status": "failure"})).json()
    assert [d["id"] for d in failures] == [listed[-1]["id"]]

    detail = (await client.get(f"/repos/o/r/hooks/1/deliveries/{listed[-1]['id']}")).json()
    assert_rest_shape("/repos/{owner}/{repo}/hooks/{hook_id}/deliveries/{delivery_id}", "get", 200, detail)
    assert detail["request"]["payload"]["workflow_job"]["id"] == failed_job["id"]
    assert detail["request"]["headers"]["X-GitHub-Event"] == "workflow_job"
    assert detail["response"]["payload"] == "ok" and detail["redelivery"] is False

    attempt = await client.post(f"/repos/o/r/hooks/1/deliveries/{detail['id']}/attempts")
    assert attempt.status_code == 202
    await fake.webhooks_idle()
    newest = (await client.get("/repos/o/r/hooks/1/deliveries")).json()[0]
    assert newest["redelivery"] is True and newest["guid"] == detail["guid"] and newest["id"] > detail["id"]
    assert newest["status_code"] == 200
    resent = sink.for_job(failed_job["id"])
    assert [r.headers["X-GitHub-Delivery"] for r in resent] == [detail["guid"]] * 2
    assert resent[0].body == resent[1].body
    assert {j["id"] for j in jobs} <= {r.job_id for r in sink.received}


async def test_set_webhook_and_ping(fake: FakeGitHub, client: httpx.AsyncClient, sink: Sink) -> None:
    moved = await client.post("/_sim/webhook", json={"url": None, "secret": ""})
    assert moved.status_code == 200
    unreachable = await new_job(client)
    await fake.webhooks_idle()
    assert sink.for_job(unreachable["id"]) == []
    assert fake.deliveries()[-1]["status_code"] == 0  # recorded as failed, so it can be redelivered

    fake.set_webhook(sink.url, "new-secret", ping=True)
    await fake.webhooks_idle()
    ping = sink.received[-1]
    assert ping.headers["X-GitHub-Event"] == "ping" and ping.payload["hook_id"] == 1
    expected = "sha256=" + hmac.new(b"new-secret", ping.body, hashlib.sha256).hexdigest()
    assert ping.headers["X-Hub-Signature-256"] == expected
    newest = (await client.get("/repos/o/r/hooks/1/deliveries")).json()[0]
    assert newest["event"] == "ping" and newest["action"] is None


# --- GitHub App -------------------------------------------------------------------------------


def _key() -> tuple[rsa.RSAPrivateKey, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    public = key.public_key().public_bytes(
        serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
    )
    return key, public.decode()


def app_jwt(
    key: rsa.RSAPrivateKey, iss: str = "4242", *, exp_in: float = 540, iat_offset: float = -60
) -> str:
    now = int(time.time())
    claims = {"iat": now + int(iat_offset), "exp": now + int(exp_in), "iss": iss}
    return jwt.encode(claims, key, algorithm="RS256")


async def test_app_installation_token_flow(sink: Sink) -> None:
    key, public_pem = _key()
    other_key, _ = _key()
    async with (
        FakeGitHub(
            webhook_url=sink.url,
            webhook_secret=SECRET,
            app_id=4242,
            app_public_key_pem=public_pem,
            installation_token_ttl=1.5,
        ) as fake,
        httpx.AsyncClient(base_url=fake.url, timeout=10) as http,
    ):
        app = {"Authorization": f"Bearer {app_jwt(key)}"}
        org = await http.get("/orgs/o/installation", headers=app)
        assert org.status_code == 200
        assert_rest_shape("/orgs/{org}/installation", "get", 200, org.json())
        installation_id = org.json()["id"]
        assert org.json()["app_id"] == 4242 and org.json()["account"]["login"] == "o"
        assert (await http.get("/repos/o/r/installation", headers=app)).json()["id"] == installation_id
        listed = await http.get("/app/installations", headers=app)
        assert_rest_shape("/app/installations", "get", 200, listed.json())
        assert [i["id"] for i in listed.json()] == [installation_id]

        for bad in (
            app_jwt(other_key),  # wrong key
            app_jwt(key, iss="1"),  # another App
            app_jwt(key, exp_in=1200),  # more than 10 minutes ahead
            app_jwt(key, exp_in=-10, iat_offset=-300),  # expired
            jwt.encode(
                {"iat": int(time.time()), "exp": int(time.time()) + 60, "iss": "4242"},
                "s" * 32,
                algorithm="HS256",
            ),
            TOKEN,  # a PAT is not a JWT
        ):
            refused = await http.post(
                f"/app/installations/{installation_id}/access_tokens",
                headers={"Authorization": f"Bearer {bad}"},
            )
            assert refused.status_code == 401, bad
            assert refused.json()["message"] and refused.json()["documentation_url"]
        assert (await http.get("/repos/o/r/actions/runners", headers=app)).status_code == 401

        issued = await http.post(f"/app/installations/{installation_id}/access_tokens", headers=app)
        assert issued.status_code == 201
        assert_rest_shape("/app/installations/{installation_id}/access_tokens", "post", 201, issued.json())
        token = issued.json()["token"]
        assert token.startswith("ghs_") and issued.json()["expires_at"].endswith("Z")
        installation = {"Authorization": f"token {token}"}
        assert (await http.get("/repos/o/r/actions/runners", headers=installation)).status_code == 200
        assert (await http.get("/repos/elsewhere/r/actions/runners", headers=installation)).status_code == 404
        assert (await http.get("/enterprises/e/actions/runners", headers=installation)).status_code == 403

        job = fake.create_workflow_job("o", "r", ["x"])
        await fake.webhooks_idle()
        assert sink.for_job(job["id"])[0].payload["installation"]["id"] == installation_id

        await asyncio.sleep(1.6)
        expired = await http.get("/repos/o/r/actions/runners", headers=installation)
        assert expired.status_code == 401 and expired.json()["message"] == "Bad credentials"


# --- faults -----------------------------------------------------------------------------------


async def test_primary_rate_limit_has_no_effect_until_reset(
    fake: FakeGitHub, client: httpx.AsyncClient
) -> None:
    fake.faults.rate_limit("primary", reset_in=1.0)
    body = {"name": "vm", "runner_group_id": 1, "labels": ["x"]}
    limited = await client.post(JIT, json=body)
    assert limited.status_code == 403
    assert "rate limit exceeded" in limited.json()["message"]
    assert limited.headers["x-ratelimit-remaining"] == "0"
    reset = int(limited.headers["x-ratelimit-reset"])
    assert time.time() < reset <= time.time() + 2
    assert (await client.post(JIT, json=body)).status_code == 403  # still inside the window
    assert (await client.get("/rate_limit")).status_code == 200  # /rate_limit is never limited
    assert fake.runners() == []  # rejected calls changed nothing
    await asyncio.sleep(max(0.0, reset - time.time()) + 0.05)
    assert (await client.post(JIT, json=body)).status_code == 201
    assert len(fake.runners()) == 1


async def test_secondary_rate_limit_and_natural_exhaustion(
    fake: FakeGitHub, client: httpx.AsyncClient
) -> None:
    fake.faults.rate_limit("secondary", reset_in=1.0, status=429)
    limited = await client.get("/repos/o/r/actions/runners")
    assert limited.status_code == 429 and limited.headers["retry-after"] == "1"
    assert "secondary rate limit" in limited.json()["message"]
    assert int(limited.headers["x-ratelimit-remaining"]) > 0
    await asyncio.sleep(1.05)
    assert (await client.get("/repos/o/r/actions/runners")).status_code == 200

    async with (
        FakeGitHub(rate_limit=2) as small,
        httpx.AsyncClient(base_url=small.url, headers=AUTH) as http,
    ):
        remaining = [
            (await http.get("/repos/o/r/actions/runners")).headers["x-ratelimit-remaining"] for _ in "ab"
        ]
        assert remaining == ["1", "0"]
        exhausted = await http.get("/repos/o/r/actions/runners")
        assert exhausted.status_code == 403 and exhausted.headers["x-ratelimit-remaining"] == "0"
        usage = (await http.get("/rate_limit")).json()
        assert usage["resources"]["core"]["remaining"] == 0 and usage["rate"]["used"] == 2
        assert_rest_shape("/rate_limit", "get", 200, usage)


async def test_server_error_faults(fake: FakeGitHub, client: httpx.AsyncClient) -> None:
    body = {"name": "vm", "runner_group_id": 1, "labels": ["x"]}
    fake.faults.fail("POST", r"/generate-jitconfig$", status=502)
    failed = await client.post(JIT, json=body)
    assert failed.status_code == 502 and failed.json()["message"] == "Bad Gateway"
    assert fake.runners() == []
    assert (await client.post(JIT, json=body)).status_code == 201

    # effect=True: the call took effect but its answer was lost; a blind retry then conflicts.
    fake.faults.fail("POST", r"/generate-jitconfig$", status=502, effect=True)
    body["name"] = "vm-2"
    assert (await client.post(JIT, json=body)).status_code == 502
    assert (await client.post(JIT, json=body)).status_code == 409

    spec = {"fault": "fail", "method": "GET", "path_regex": "/actions/runners$", "status": 503, "count": 2}
    assert (await client.post("/_sim/faults", json=spec)).status_code == 200
    codes = [(await client.get("/repos/o/r/actions/runners")).status_code for _ in range(3)]
    assert codes == [503, 503, 200]
    assert (await client.post("/_sim/faults", json={"fault": "nonsense"})).status_code == 422


async def test_webhook_faults(fake: FakeGitHub, client: httpx.AsyncClient, sink: Sink) -> None:
    fake.faults.drop_webhooks(action="queued")
    dropped = await new_job(client)
    await fake.webhooks_idle()
    assert sink.for_job(dropped["id"]) == []
    [record] = [
        d for d in fake.deliveries() if d["request"]["payload"]["workflow_job"]["id"] == dropped["id"]
    ]
    assert record["status_code"] == 502 and record["redelivery"] is False

    # Out of process, as the e2e tests do ("kind" is an alias of "fault").
    assert (await client.post("/_sim/faults", json={"kind": "duplicate_webhooks"})).status_code == 200
    duplicated = await new_job(client)
    await fake.webhooks_idle()
    copies = sink.for_job(duplicated["id"])
    assert (
        len(copies) == 2 and copies[0].headers["X-GitHub-Delivery"] == copies[1].headers["X-GitHub-Delivery"]
    )

    fake.faults.reorder_webhooks()
    reordered = await new_job(client)
    await client.post(f"/_sim/workflow_jobs/{reordered['id']}/cancel")
    await fake.webhooks_idle()
    assert sink.actions(reordered["id"]) == ["completed", "queued"]

    fake.faults.delay_webhooks(2.0)
    started = time.monotonic()
    delayed = await new_job(client)
    assert time.monotonic() - started < 1.5  # sending never blocks the API
    assert sink.for_job(delayed["id"]) == []
    await until(lambda: sink.for_job(delayed["id"]), timeout=6)
    assert time.monotonic() - started >= 2.0


# --- the runner release -----------------------------------------------------------------------


async def test_release_tarball_and_checksum(client: httpx.AsyncClient, tmp_path: Path) -> None:
    latest = (await client.get("/_sim/releases/latest")).json()
    assert latest["version"] == RUNNER_VERSION
    names = {a["name"] for a in latest["assets"]}
    assert names == {f"actions-runner-osx-{arch}-{RUNNER_VERSION}.tar.gz" for arch in ("arm64", "x64")}
    for asset in latest["assets"]:
        data = (await client.get(asset["url"])).content
        assert hashlib.sha256(data).hexdigest() == asset["sha256"] and len(data) == asset["size"]
        assert f"-->{asset['sha256']}<!--" in latest["body"]  # GitHub's release-notes markers
        sidecar = (await client.get(asset["sha256_url"])).text
        assert sidecar == f"{asset['sha256']}  {asset['name']}\n"
        assert (await client.get(asset["url"])).content == data  # deterministic
        with tarfile.open(fileobj=io.BytesIO(data)) as tar:
            members = {m.name: m for m in tar.getmembers()}
            assert set(members) == {"run.sh", "config.sh", "runner.py", ".runner-version"}
            assert members["run.sh"].mode & 0o111 and members["config.sh"].mode & 0o111
            version = tar.extractfile(".runner-version")
            runner_py = tar.extractfile("runner.py")
            assert version is not None and runner_py is not None
            assert version.read().decode().strip() == RUNNER_VERSION
            assert runner_py.read() == RUNNER_SOURCE
    missing = await client.get("/_sim/releases/actions-runner-osx-arm64-1.0.0.tar.gz")
    assert missing.status_code == 404


# --- the command line -------------------------------------------------------------------------


@pytest.fixture
def secret_file(tmp_path: Path) -> Iterator[Path]:
    path = tmp_path / "secret"
    path.write_text(SECRET + "\n")
    yield path


async def test_cli_serves_until_sigterm(secret_file: Path) -> None:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anklet.dev.fake_github",
        "--port",
        "0",
        "--webhook-url",
        "http://127.0.0.1:9/hook",
        "--webhook-secret-file",
        str(secret_file),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = (await asyncio.wait_for(proc.stdout.readline(), 15)).decode().strip()
        assert url.startswith("http://127.0.0.1:")
        async with httpx.AsyncClient(base_url=url, headers=AUTH) as http:
            assert (await http.get("/rate_limit")).status_code == 200
            job = (
                await http.post("/_sim/workflow_jobs", json={"owner": "o", "repo": "r", "labels": ["x"]})
            ).json()
            assert (await http.get(f"/repos/o/r/actions/jobs/{job['id']}")).json()["status"] == "queued"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), 10) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
