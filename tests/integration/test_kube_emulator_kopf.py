"""The real kopf operator framework against the emulated API server, in-process.

What matters is what broke kopf on plain kmock: cluster-scoped paths, resourceVersion-aware watches
(else on.create runs twice), 422 on a failed JSON-patch `test` (kopf's finalizer patch), status
subresource patches, and events with `generateName` (else "Failed to post an event").
"""

from __future__ import annotations

import asyncio
import collections
import logging
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import kopf
import pytest
import yaml

from anklet.dev.kube_emulator import KubeApiServer

CRD_PATH = pathlib.Path(__file__).parents[2] / "crds" / "ankajob.yaml"
JOBS = "anklet.dev/v1alpha1/ankajobs"
JOBS_URL = "/apis/anklet.dev/v1alpha1/namespaces/default/ankajobs"
FINALIZER = "kopf.zalando.org/KopfFinalizerMarker"

pytestmark = pytest.mark.timeout(60)


def job(name: str) -> dict[str, Any]:
    return {
        "apiVersion": "anklet.dev/v1alpha1",
        "kind": "AnkaJob",
        "metadata": {"name": name},
        "spec": {"template": "macos-14", "handler": "script", "script": {"run": "true"}},
    }


@pytest.fixture
async def server() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer() as server:
        server.install_crd(yaml.safe_load(CRD_PATH.read_text()))
        yield server


@pytest.fixture
async def http(server: KubeApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.url, timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def until(condition: Any, timeout: float = 15.0) -> None:
    """Bounded poll of a synchronous condition (for states kopf reaches via several requests)."""
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.05)


async def test_kopf_handlers_run_once_per_change(
    server: KubeApiServer, http: aiohttp.ClientSession, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    registry = kopf.OperatorRegistry()
    calls: dict[str, list[str]] = collections.defaultdict(list)
    seen = {kind: asyncio.Event() for kind in ("create", "update", "delete")}

    @kopf.on.login(registry=registry)
    def login(**_: Any) -> kopf.ConnectionInfo:
        return kopf.ConnectionInfo(server=server.url, default_namespace="default")

    @kopf.on.create("anklet.dev", "v1alpha1", "ankajobs", registry=registry)
    def on_create(body: kopf.Body, patch: kopf.Patch, **_: Any) -> None:
        calls["create"].append(body["metadata"]["name"])
        patch.status["phase"] = "Scheduled"
        kopf.info(body, reason="Accepted", message="scheduling")
        if len(calls["create"]) == 2:
            seen["create"].set()

    @kopf.on.update("anklet.dev", "v1alpha1", "ankajobs", field="spec", registry=registry)
    def on_update(body: kopf.Body, **_: Any) -> None:
        calls["update"].append(body["metadata"]["name"])
        seen["update"].set()

    @kopf.on.delete("anklet.dev", "v1alpha1", "ankajobs", registry=registry)
    def on_delete(body: kopf.Body, **_: Any) -> None:
        calls["delete"].append(body["metadata"]["name"])
        seen["delete"].set()

    # One object exists before the operator starts (the initial listing), one is created after.
    async with http.post(JOBS_URL, json=job("early")) as response:
        assert response.status == 201
    settings = kopf.OperatorSettings()
    settings.watching.server_timeout = 5  # exercises reconnects with the last resourceVersion
    settings.posting.level = logging.INFO
    stop, ready = asyncio.Event(), asyncio.Event()
    operator = asyncio.create_task(
        kopf.operator(
            registry=registry,
            settings=settings,
            standalone=True,
            namespaces=["default"],
            stop_flag=stop,
            ready_flag=ready,
        )
    )
    try:
        await asyncio.wait_for(ready.wait(), 15)
        async with http.post(JOBS_URL, json=job("late")) as response:
            assert response.status == 201
        await asyncio.wait_for(seen["create"].wait(), 15)

        def handled(name: str) -> bool:
            obj = server.get_object(JOBS, "default", name) or {}
            return (
                FINALIZER in obj.get("metadata", {}).get("finalizers", [])
                and obj.get("status", {}).get("phase") == "Scheduled"
            )

        await until(lambda: handled("early") and handled("late"))
        late = server.get_object(JOBS, "default", "late")
        assert late is not None
        assert late["metadata"]["generation"] == 1  # finalizer, annotations, status: not spec changes

        merge = {"Content-Type": "application/merge-patch+json"}
        async with http.patch(f"{JOBS_URL}/late", json={"spec": {"tag": "v2"}}, headers=merge) as response:
            assert response.status == 200
        await asyncio.wait_for(seen["update"].wait(), 15)

        async with http.delete(f"{JOBS_URL}/late") as response:
            assert response.status == 200
            assert (await response.json())["metadata"]["deletionTimestamp"]
        await asyncio.wait_for(seen["delete"].wait(), 15)
        await until(lambda: server.get_object(JOBS, "default", "late") is None)

        selector = "involvedObject.kind=AnkaJob,involvedObject.name=early"
        async with http.get(
            "/api/v1/namespaces/default/events", params={"fieldSelector": selector}
        ) as response:
            events = (await response.json())["items"]
        assert {"Accepted"} <= {event["reason"] for event in events}
        assert {event["involvedObject"]["name"] for event in events} == {"early"}
    finally:
        stop.set()
        await asyncio.wait_for(operator, 20)

    assert sorted(calls["create"]) == ["early", "late"]
    assert calls["update"] == ["late"]
    assert calls["delete"] == ["late"]
    assert server.failures == []
    problems = [
        r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING and r.name.startswith("kopf")
    ]
    assert not [p for p in problems if "Failed to post" in p or "APIServerError" in p or "500" in p], problems
