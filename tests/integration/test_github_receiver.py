"""The GitHub webhook receiver in-process against the emulated Kubernetes API (loopback, < 60 s)."""

from __future__ import annotations

import asyncio
import itertools
import json
import os
import pathlib
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiohttp import web
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

import anklet.crd
from anklet.dev.kube_emulator import KubeApiServer
from controller.kube import KubeError
from plugins.handlers.github.constants import (
    ANNOTATION_CONCLUSION,
    ANNOTATION_DELIVERY,
    ANNOTATION_RUNNER,
    ANNOTATION_STATUS,
)
from plugins.handlers.github.settings import GitHubSettings
from plugins.receivers.github.config import ReceiverConfig, ReceiverSettings
from plugins.receivers.github.events import sign
from plugins.receivers.github.kube import AnkaJobStore
from plugins.receivers.github.plugin import PLUGIN
from plugins.receivers.github.receiver import ReceiverApp
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(60)

SECRET = "webhook-s3cret"
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"
ANKAJOBS = "anklet.dev/v1alpha1/ankajobs"
ACTIONS = ("queued", "waiting", "in_progress", "completed")


def payload(
    action: str,
    job_id: int,
    *,
    labels: list[str] | None = None,
    run_attempt: int = 1,
    runner: str | None = "anklet-vm-1",
    conclusion: str = "success",
) -> dict[str, Any]:
    started = action in ("in_progress", "completed")
    return {
        "action": action,
        "workflow_job": {
            "id": job_id,
            "run_id": 9000 + job_id,
            "run_attempt": run_attempt,
            "run_url": "https://api.github.com/repos/acme/app/actions/runs/1",
            "node_id": "CR_x",
            "head_sha": "abc",
            "url": f"https://api.github.com/repos/acme/app/actions/jobs/{job_id}",
            "html_url": f"https://github.com/acme/app/actions/runs/1/job/{job_id}",
            "status": action,
            "conclusion": conclusion if action == "completed" else None,
            "started_at": "2026-01-01T00:00:00Z",
            "completed_at": None,
            "name": "build",
            "steps": [],
            "check_run_url": "https://api.github.com/x",
            "labels": labels
            if labels is not None
            else [f"anka-template:{TEMPLATE}", "anka-template-tag:2c4r"],
            "runner_id": 3 if started else None,
            "runner_name": runner if started else None,
            "runner_group_id": None,
            "runner_group_name": None,
            "workflow_name": "CI",
            "head_branch": "main",
            "created_at": "2026-01-01T00:00:00Z",
        },
        "repository": {"id": 9, "name": "app", "full_name": "acme/app", "owner": {"login": "acme", "id": 1}},
        "sender": {"login": "octocat", "id": 2},
    }


async def post(
    http: httpx.AsyncClient,
    body: bytes | dict[str, Any],
    *,
    event: str = "workflow_job",
    delivery: str | None = None,
    secret: str | None = SECRET,
    path: str = "/webhooks/github",
    extra: dict[str, str] | None = None,
) -> httpx.Response:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {
        "Content-Type": "application/json",
        "X-GitHub-Event": event,
        "X-GitHub-Delivery": delivery or str(uuid.uuid4()),
        "X-GitHub-Hook-ID": "7",
        "User-Agent": "GitHub-Hookshot/test",
    }
    if secret is not None:
        headers["X-Hub-Signature-256"] = sign(secret.encode(), raw)
    return await http.post(path, content=raw, headers=headers | (extra or {}))


def config(kubeconfig: pathlib.Path, **github: Any) -> ReceiverConfig:
    receiver = ReceiverSettings(host="127.0.0.1", port=0, kubeconfig=str(kubeconfig), namespace="default")
    return ReceiverConfig(
        receiver=receiver, github=GitHubSettings(webhook_secret=SecretStr(SECRET), **github)
    )


@pytest.fixture
async def kube(tmp_path: pathlib.Path) -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer() as server:
        server.install_crd(anklet.crd.build_crd())
        server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server
        assert server.failures == []


@pytest.fixture
def kubeconfig(kube: KubeApiServer, tmp_path: pathlib.Path) -> pathlib.Path:
    return tmp_path / "kubeconfig"


@pytest.fixture
async def receiver(kubeconfig: pathlib.Path) -> AsyncIterator[ReceiverApp]:
    async with PLUGIN.app(config(kubeconfig)) as app:
        yield app


@pytest.fixture
async def http(receiver: ReceiverApp) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=receiver.url, timeout=30) as client:
        yield client


def ankajob(kube: KubeApiServer, job_id: int, attempt: int = 1) -> dict[str, Any] | None:
    return kube.get_object(ANKAJOBS, "default", f"gh-{job_id}-{attempt}")


def annotations_of(kube: KubeApiServer, job_id: int) -> dict[str, str]:
    obj = ankajob(kube, job_id)
    assert obj is not None, f"no AnkaJob for job {job_id}"
    return dict(obj["metadata"].get("annotations") or {})


# ---- refusals --------------------------------------------------------------------------------


async def test_missing_or_wrong_signature_is_401(kube: KubeApiServer, http: httpx.AsyncClient) -> None:
    missing = await post(http, payload("queued", 1), secret=None)
    wrong = await post(http, payload("queued", 1), secret="not-the-secret")
    assert (missing.status_code, missing.json()["message"]) == (401, "missing signature")
    assert (wrong.status_code, wrong.json()["message"]) == (401, "bad signature")
    assert kube.list_objects(ANKAJOBS) == []


async def test_malformed_or_unsupported_bodies_are_400(kube: KubeApiServer, http: httpx.AsyncClient) -> None:
    not_json = await post(http, b"{not json")
    incomplete = payload("queued", 1)
    del incomplete["workflow_job"]["run_id"]
    invalid = await post(http, incomplete)
    push = await post(http, {"ref": "refs/heads/main"}, event="push")
    no_event = await post(http, payload("queued", 1), event="")
    assert [r.status_code for r in (not_json, invalid, push, no_event)] == [400, 400, 400, 400]
    assert "run_id" in invalid.json()["message"]
    assert kube.list_objects(ANKAJOBS) == []


async def test_oversized_bodies_are_413_by_length_and_while_reading(http: httpx.AsyncClient) -> None:
    big = b"x" * (25 * 1024 * 1024 + 1)
    declared = await post(http, big)
    assert declared.status_code == 413

    async def stream() -> AsyncIterator[bytes]:  # chunked: no Content-Length to check up front
        for _ in range(27):
            yield b"y" * (1024 * 1024)

    chunked = await http.post(
        "/webhooks/github",
        content=stream(),
        headers={"X-GitHub-Event": "workflow_job", "X-Hub-Signature-256": "sha256=00"},
    )
    assert chunked.status_code == 413


async def test_ping_is_200(http: httpx.AsyncClient) -> None:
    response = await post(http, {"zen": "Keep it logically awesome.", "hook_id": 7}, event="ping")
    assert response.status_code == 200 and response.json()["message"] == "pong"


async def test_jobs_without_an_anka_template_label_are_acknowledged_and_ignored(
    kube: KubeApiServer, http: httpx.AsyncClient
) -> None:
    for labels in (["ubuntu-latest"], ["anka-template-tag:2c4r"], ["self-hosted", "macOS"]):
        response = await post(http, payload("queued", 2, labels=labels))
        assert (response.status_code, response.json()["result"]) == (200, "ignored")
    unknown_action = await post(http, payload("requested", 2))
    assert (unknown_action.status_code, unknown_action.json()["result"]) == (200, "ignored")
    assert kube.list_objects(ANKAJOBS) == []


# ---- storing ---------------------------------------------------------------------------------


async def test_queued_creates_the_ankajob(kube: KubeApiServer, http: httpx.AsyncClient) -> None:
    response = await post(
        http, payload("queued", 4242, run_attempt=2), delivery="d-1", path="/jobs/v1/receiver"
    )
    assert response.status_code == 200
    assert response.json() == {"result": "created", "ankajob": "gh-4242-2"}
    obj = ankajob(kube, 4242, attempt=2)
    assert obj is not None
    assert obj["metadata"]["labels"] == {
        "anklet.dev/github-job-id": "4242",
        "anklet.dev/github-run-id": "13242",
        "anklet.dev/github-repository": "acme.app",
    }
    assert obj["metadata"]["annotations"] == {ANNOTATION_STATUS: "queued", ANNOTATION_DELIVERY: "d-1"}
    assert obj["spec"] == {
        "template": TEMPLATE,
        "tag": "2c4r",
        "handler": "github",
        "github": {
            "owner": "acme",
            "repo": "app",
            "jobId": 4242,
            "runId": 13242,
            "runAttempt": 2,
            "labels": [f"anka-template:{TEMPLATE}", "anka-template-tag:2c4r"],
            "htmlUrl": "https://github.com/acme/app/actions/runs/1/job/4242",
            "workflowName": "CI",
            "jobName": "build",
        },
        "priority": 0,  # defaults the API server applies from the CRD schema
        "backoffLimit": 2,
        "cancel": False,
    }
    assert "status" not in obj  # status belongs to the controller


async def test_duplicate_and_redelivered_events_create_nothing_new(
    kube: KubeApiServer, http: httpx.AsyncClient
) -> None:
    first = await post(http, payload("queued", 5), delivery="same")
    rv = ankajob(kube, 5)["metadata"]["resourceVersion"]  # type: ignore[index]
    again = await post(http, payload("queued", 5), delivery="same")  # GitHub's redelivery keeps the guid
    other = await post(http, payload("queued", 5), delivery="another")  # the same event on a second hook
    assert [r.json()["result"] for r in (first, again, other)] == ["created", "duplicate", "duplicate"]
    assert len(kube.list_objects(ANKAJOBS)) == 1
    assert ankajob(kube, 5)["metadata"]["resourceVersion"] == rv  # type: ignore[index]


async def test_all_24_orderings_end_with_the_right_annotations(
    kube: KubeApiServer, http: httpx.AsyncClient
) -> None:
    orders = list(itertools.permutations(ACTIONS))
    assert len(orders) == 24
    for n, order in enumerate(orders):
        job_id = 1000 + n
        results = []
        for action in order:
            response = await post(http, payload(action, job_id))
            assert response.status_code == 200
            results.append(response.json()["result"])
        assert results[0] == "created"
        assert annotations_of(kube, job_id) | {ANNOTATION_DELIVERY: "x"} == {
            ANNOTATION_STATUS: "completed",
            ANNOTATION_CONCLUSION: "success",
            ANNOTATION_RUNNER: "anklet-vm-1",
            ANNOTATION_DELIVERY: "x",
        }, order
        # everything after `completed` changed nothing
        assert all(r in ("stale", "duplicate") for r in results[order.index("completed") + 1 :]), (
            order,
            results,
        )


async def test_concurrent_deliveries_for_one_job_converge(
    kube: KubeApiServer, http: httpx.AsyncClient
) -> None:
    for job_id in range(2000, 2006):
        responses = await asyncio.gather(*(post(http, payload(action, job_id)) for action in ACTIONS * 2))
        assert {r.status_code for r in responses} == {200}
        assert annotations_of(kube, job_id)[ANNOTATION_STATUS] == "completed"


class FlakyStore(AnkaJobStore):
    """The real store, except that the next `failures` creates fail like an API outage."""

    def __init__(self, inner: AnkaJobStore, failures: int) -> None:
        super().__init__(inner._http)
        self.failures = failures

    async def create(self, namespace: str, body: dict[str, Any]) -> bool:
        if self.failures > 0:
            self.failures -= 1
            raise KubeError(503, "etcd unavailable")
        return await super().create(namespace, body)


async def test_an_api_failure_is_5xx_and_the_redelivery_then_succeeds(
    kube: KubeApiServer, kubeconfig: pathlib.Path
) -> None:
    store = FlakyStore(AnkaJobStore.from_environment(str(kubeconfig)), failures=1)
    try:
        async with (
            ReceiverApp(config(kubeconfig), store=store) as app,
            httpx.AsyncClient(base_url=app.url) as http,
        ):
            failed = await post(http, payload("queued", 6), delivery="g-6")
            assert failed.status_code == 503 and failed.json()["result"] == "error"
            assert ankajob(kube, 6) is None
            retried = await post(http, payload("queued", 6), delivery="g-6")  # not remembered as done
            assert (retried.status_code, retried.json()["result"]) == (200, "created")
    finally:
        await store.aclose()


async def test_an_unreachable_api_is_503(kubeconfig: pathlib.Path) -> None:
    dead = AnkaJobStore(httpx.AsyncClient(base_url="http://127.0.0.1:9", timeout=2))
    try:
        async with (
            ReceiverApp(config(kubeconfig), store=dead) as app,
            httpx.AsyncClient(base_url=app.url) as http,
        ):
            response = await post(http, payload("completed", 7))
            assert response.status_code == 503
            metrics = (await http.get("/metrics")).text
            assert "anklet_receiver_kube_errors_total 1.0" in metrics
    finally:
        await dead.aclose()


# ---- metrics ---------------------------------------------------------------------------------


async def test_metrics_are_valid_exposition_without_ids(http: httpx.AsyncClient) -> None:
    await post(http, payload("queued", 8))
    await post(http, payload("queued", 8))
    await post(http, payload("queued", 8), secret="wrong")
    await post(http, {"x": 1}, event="pull_request")
    assert (await http.get("/healthz")).text == "ok\n"
    response = await http.get("/metrics")
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(response.text)}
    webhooks = {
        (s.labels["event"], s.labels["action"], s.labels["result"]): s.value
        for s in families["anklet_receiver_webhooks"].samples
        if s.name.endswith("_total")
    }
    assert webhooks == {
        ("workflow_job", "queued", "created"): 1.0,
        ("workflow_job", "queued", "duplicate"): 1.0,
        ("unknown", "none", "unauthorized"): 1.0,
        ("other", "none", "unsupported"): 1.0,
    }
    assert "anklet_receiver_webhook_duration_seconds" in families
    assert "gh-8-1" not in response.text and "acme" not in response.text


# ---- redelivery ------------------------------------------------------------------------------


@dataclass
class FakeHooks:
    """GitHub's hook-deliveries and jobs endpoints; a redelivery really re-sends the payload."""

    receiver_url: str = ""
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    payloads: dict[int, dict[str, Any]] = field(default_factory=dict)
    job_status: dict[int, str] = field(default_factory=dict)
    redelivered: list[int] = field(default_factory=list)
    listing_allowed: asyncio.Event = field(default_factory=asyncio.Event)
    detail_reads: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def add(
        self, id_: int, body: dict[str, Any], *, code: int, hours_ago: float, guid: str | None = None
    ) -> None:
        delivered = datetime.now(UTC) - timedelta(hours=hours_ago)
        self.deliveries.append(
            {
                "id": id_,
                "guid": guid or f"guid-{id_}",
                "delivered_at": delivered.isoformat().replace("+00:00", "Z"),
                "redelivery": guid is not None,
                "duration": 0.1,
                "status": "OK" if code < 300 else "Service Unavailable",
                "status_code": code,
                "event": "workflow_job" if "workflow_job" in body else "ping",
                "action": body.get("action"),
                "installation_id": None,
                "repository_id": 9,
            }
        )
        self.payloads[id_] = body

    async def list(self, request: web.Request) -> web.Response:
        await self.listing_allowed.wait()
        newest_first = sorted(self.deliveries, key=lambda d: d["delivered_at"], reverse=True)
        start, per = int(request.query.get("cursor", "0")), int(request.query["per_page"])
        headers = {}
        if start + per < len(newest_first):
            headers["Link"] = f'<{request.url.with_query(per_page=per, cursor=start + per)}>; rel="next"'
        return web.json_response(newest_first[start : start + per], headers=headers)

    async def detail(self, request: web.Request) -> web.Response:
        self.detail_reads += 1
        id_ = int(request.match_info["id"])
        summary = next(d for d in self.deliveries if d["id"] == id_)
        return web.json_response(
            summary
            | {
                "url": "x",
                "request": {"headers": {}, "payload": self.payloads[id_]},
                "response": {"headers": {}, "payload": ""},
            }
        )

    async def attempts(self, request: web.Request) -> web.Response:
        id_ = int(request.match_info["id"])
        self.redelivered.append(id_)
        guid = next(d["guid"] for d in self.deliveries if d["id"] == id_)
        self.tasks.append(asyncio.create_task(self._send(self.payloads[id_], guid)))
        return web.json_response({}, status=202)

    async def _send(self, body: dict[str, Any], guid: str) -> None:
        async with httpx.AsyncClient(base_url=self.receiver_url) as http:
            await post(http, body, delivery=guid)

    async def job(self, request: web.Request) -> web.Response:
        id_ = int(request.match_info["id"])
        return web.json_response(
            {"id": id_, "run_id": 1, "status": self.job_status.get(id_, "queued"), "labels": []}
        )


async def serve_fake(hooks: FakeHooks) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/repos/acme/app/hooks/7/deliveries", hooks.list)
    app.router.add_get("/repos/acme/app/hooks/7/deliveries/{id}", hooks.detail)
    app.router.add_post("/repos/acme/app/hooks/7/deliveries/{id}/attempts", hooks.attempts)
    app.router.add_get("/repos/acme/app/actions/jobs/{id}", hooks.job)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    host, port = runner.addresses[0][:2]
    return runner, f"http://{host}:{port}"


async def test_the_redelivery_scan_requests_exactly_the_missing_events(
    kube: KubeApiServer, kubeconfig: pathlib.Path
) -> None:
    hooks = FakeHooks()
    ubuntu = ["ubuntu-latest"]
    hooks.add(1, payload("queued", 301), code=502, hours_ago=1)  # absent, still queued: redeliver
    hooks.add(2, payload("queued", 302), code=500, hours_ago=1)  # stored meanwhile (see below): skip
    hooks.add(3, payload("in_progress", 303), code=200, hours_ago=2)
    hooks.add(4, payload("completed", 303), code=503, hours_ago=1)  # stored only in_progress: redeliver
    hooks.add(5, payload("queued", 304), code=502, hours_ago=3)  # absent, finished on GitHub: skip
    hooks.job_status[304] = "completed"
    hooks.add(6, payload("queued", 305), code=502, hours_ago=4)  # later redelivered with success: skip
    hooks.add(7, payload("queued", 305), code=200, hours_ago=3.5, guid="guid-6")
    hooks.add(8, payload("queued", 306, labels=ubuntu), code=502, hours_ago=1)  # not ours: skip
    hooks.add(9, {"zen": "hi", "hook_id": 7}, code=500, hours_ago=1)  # a ping: skip
    hooks.add(10, payload("queued", 307), code=502, hours_ago=30)  # outside the 24 h window: skip
    hooks.add(11, payload("in_progress", 308), code=502, hours_ago=2)  # superseded by 12
    hooks.add(12, payload("completed", 308), code=502, hours_ago=1)  # stored queued: redeliver
    for n in range(150):  # enough successes to need a second page
        hooks.add(100 + n, payload("queued", 5000 + n, labels=ubuntu), code=200, hours_ago=0.5)
    runner, fake_url = await serve_fake(hooks)
    settings = {
        "api_url": fake_url,
        "token": SecretStr("ghp_test"),
        "owner": "acme",
        "repo": "app",
        "hook_id": 7,
        "redelivery_interval_seconds": 3600,
        "backoff_base_seconds": 0.01,
    }
    try:
        async with (
            ReceiverApp(config(kubeconfig, **settings)) as app,
            httpx.AsyncClient(base_url=app.url) as http,
        ):
            hooks.receiver_url = app.url
            # the scan is blocked on the deliveries list, yet the receiver serves
            assert (await http.get("/healthz", timeout=2)).status_code == 200
            for job_id, action in ((302, "queued"), (303, "in_progress"), (308, "queued")):
                assert (await post(http, payload(action, job_id))).status_code == 200
            hooks.listing_allowed.set()
            await eventually(lambda: _scanned(http), timeout=20)
            await asyncio.gather(*hooks.tasks)
            assert sorted(hooks.redelivered) == [1, 4, 12]
            assert annotations_of(kube, 301)[ANNOTATION_STATUS] == "queued"
            assert annotations_of(kube, 303)[ANNOTATION_STATUS] == "completed"
            assert annotations_of(kube, 308)[ANNOTATION_STATUS] == "completed"
            for absent in (304, 305, 306, 307):
                assert ankajob(kube, absent) is None
            # a second scan finds the effects stored and reuses the payloads it already read
            reads = hooks.detail_reads
            assert app.scanner is not None
            report = await app.scanner.scan_once()
            assert (report.redelivered, sorted(hooks.redelivered)) == (0, [1, 4, 12])
            assert hooks.detail_reads == reads
    finally:
        await runner.cleanup()


async def _scanned(http: httpx.AsyncClient) -> bool:
    text = (await http.get("/metrics")).text
    return 'anklet_receiver_redelivery_scans_total{result="ok"} 1.0' in text


# ---- CLI -------------------------------------------------------------------------------------


async def test_cli_serves_until_sigterm_and_exits_0(kube: KubeApiServer, kubeconfig: pathlib.Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANKLET_")}
    env |= {"ANKLET_GITHUB_WEBHOOK_SECRET": SECRET, "KUBECONFIG": str(kubeconfig)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "anklet.cli",
        "receiver",
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        env=env,
        stderr=asyncio.subprocess.PIPE,
    )
    assert proc.stderr is not None
    try:
        url = await asyncio.wait_for(_listening_url(proc.stderr.readline), timeout=30)
        async with httpx.AsyncClient(base_url=url) as http:
            assert (await http.get("/healthz")).status_code == 200
            assert (await post(http, payload("queued", 77))).json()["result"] == "created"
        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=20) == 0
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert ankajob(kube, 77) is not None


async def _listening_url(readline: Callable[[], Awaitable[bytes]]) -> str:
    while line := (await readline()).decode():
        if "receiver listening on " in line:
            return line.split("receiver listening on ", 1)[1].split()[0]
    raise AssertionError("the receiver exited before listening")


async def test_cli_without_a_webhook_secret_exits_2_with_one_line(tmp_path: pathlib.Path) -> None:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANKLET_")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "anklet.cli", "receiver", env=env, stderr=asyncio.subprocess.PIPE
    )
    _, err = await asyncio.wait_for(proc.communicate(), timeout=30)
    lines = [line for line in err.decode().splitlines() if line.strip()]
    assert proc.returncode == 2
    assert len(lines) == 1 and "ANKLET_GITHUB_WEBHOOK_SECRET is required" in lines[0]
