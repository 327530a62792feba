"""The emulated API server over HTTP: watch streams, Status bodies, discovery and OpenAPI.

These are the wire-level contracts kubectl and kopf rely on, checked with a plain HTTP client so a
failure points at the protocol rather than at a client's interpretation of it.
"""

from __future__ import annotations

import asyncio
import json
import pathlib
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
import yaml

from anklet.dev.kube_emulator import KubeApiServer

CRD = yaml.safe_load((pathlib.Path(__file__).parents[2] / "crds" / "ankajob.yaml").read_text())
JOBS_URL = "/apis/anklet.dev/v1alpha1/namespaces/default/ankajobs"
MERGE = {"Content-Type": "application/merge-patch+json"}
JSON_PATCH = {"Content-Type": "application/json-patch+json"}

pytestmark = pytest.mark.timeout(30)


def job(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {
        "apiVersion": "anklet.dev/v1alpha1",
        "kind": "AnkaJob",
        "metadata": {"name": name, "labels": labels or {}},
        "spec": {"template": "macos-14", "handler": "script"},
    }


@pytest.fixture
async def server() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer(history_size=5) as server:
        server.install_crd(CRD)
        yield server


@pytest.fixture
async def http(server: KubeApiServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession(server.url, timeout=aiohttp.ClientTimeout(total=10)) as session:
        yield session


async def call(http: aiohttp.ClientSession, method: str, path: str, **kwargs: Any) -> tuple[int, Any]:
    async with http.request(method, path, **kwargs) as response:
        return response.status, await response.json()


async def watch(http: aiohttp.ClientSession, path: str, **params: str) -> list[dict[str, Any]]:
    """All events of a watch that the server ends itself (timeoutSeconds or an ERROR)."""
    async with http.get(path, params={"watch": "true", **params}) as response:
        assert response.status == 200 and response.content_type == "application/json"
        return [json.loads(line) async for line in response.content if line.strip()]


def summary(events: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return [(e["type"], e["object"]["metadata"].get("name", "")) for e in events]


async def test_watch_resumes_after_a_resource_version(http: aiohttp.ClientSession) -> None:
    _, first = await call(http, "POST", JOBS_URL, json=job("a"))
    await call(http, "POST", JOBS_URL, json=job("b"))
    stream = asyncio.create_task(
        watch(http, JOBS_URL, resourceVersion=first["metadata"]["resourceVersion"], timeoutSeconds="1")
    )
    await call(http, "POST", JOBS_URL, json=job("c"))
    assert summary(await stream) == [("ADDED", "b"), ("ADDED", "c")]
    everything = await watch(http, JOBS_URL, resourceVersion="0", timeoutSeconds="0.2")
    assert summary(everything) == [("ADDED", "a"), ("ADDED", "b"), ("ADDED", "c")]
    rvs = [int(e["object"]["metadata"]["resourceVersion"]) for e in everything]
    assert rvs == sorted(rvs)


async def test_watch_selectors_retype_events(http: aiohttp.ClientSession, server: KubeApiServer) -> None:
    _, listing = await call(http, "GET", JOBS_URL)
    assert listing["kind"] == "AnkaJobList" and listing["metadata"]["resourceVersion"].isdigit()
    since = listing["metadata"]["resourceVersion"]
    by_label = asyncio.create_task(
        watch(http, JOBS_URL, resourceVersion=since, labelSelector="team in (ci)", timeoutSeconds="1")
    )
    by_name = asyncio.create_task(
        watch(http, JOBS_URL, resourceVersion=since, fieldSelector="metadata.name=y", timeoutSeconds="1")
    )
    async with asyncio.timeout(5):
        while server.active_watches("anklet.dev/v1alpha1/ankajobs") < 2:
            await asyncio.sleep(0.01)
    await call(http, "POST", JOBS_URL, json=job("x", {"team": "ci"}))
    await call(http, "PATCH", f"{JOBS_URL}/x", json={"metadata": {"labels": {"team": "web"}}}, headers=MERGE)
    await call(http, "PATCH", f"{JOBS_URL}/x", json={"metadata": {"labels": {"team": "ci"}}}, headers=MERGE)
    await call(http, "POST", JOBS_URL, json=job("y", {"team": "web"}))
    assert summary(await by_label) == [("ADDED", "x"), ("DELETED", "x"), ("ADDED", "x")]
    assert summary(await by_name) == [("ADDED", "y")]
    status, bad = await call(http, "GET", JOBS_URL, params={"labelSelector": "team in (ci"})
    assert status == 400 and bad["reason"] == "BadRequest"


async def test_watch_bookmarks_and_initial_events(http: aiohttp.ClientSession, server: KubeApiServer) -> None:
    await call(http, "POST", JOBS_URL, json=job("a"))
    server.emulator.bookmark_interval = 0.2
    events = await watch(
        http, JOBS_URL, resourceVersion=str(server.store.rv), allowWatchBookmarks="true", timeoutSeconds="1"
    )
    assert len(events) >= 3 and {e["type"] for e in events} == {"BOOKMARK"}
    assert events[-1]["object"] == {
        "kind": "AnkaJob",
        "apiVersion": "anklet.dev/v1alpha1",
        "metadata": {"resourceVersion": str(server.store.rv)},
    }
    initial = await watch(
        http,
        JOBS_URL,
        sendInitialEvents="true",
        resourceVersionMatch="NotOlderThan",
        allowWatchBookmarks="true",
        timeoutSeconds="0.1",
    )
    assert [e["type"] for e in initial][:2] == ["ADDED", "BOOKMARK"]
    assert initial[1]["object"]["metadata"]["annotations"] == {"k8s.io/initial-events-end": "true"}


async def test_watch_from_a_compacted_resource_version_is_gone(http: aiohttp.ClientSession) -> None:
    for name in "abcdef":  # more writes than the history keeps (5)
        await call(http, "POST", JOBS_URL, json=job(name))
    events = await watch(http, JOBS_URL, resourceVersion="1")
    assert [(e["type"], e["object"]["code"], e["object"]["reason"]) for e in events] == [
        ("ERROR", 410, "Expired")
    ]


async def test_errors_are_kubernetes_statuses(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", f"{JOBS_URL}/absent")
    assert (status, body["kind"], body["reason"]) == (404, "Status", "NotFound")
    assert body["message"] == 'ankajobs.anklet.dev "absent" not found'
    assert body["details"] == {"name": "absent", "group": "anklet.dev", "kind": "ankajobs"}
    status, created = await call(http, "POST", JOBS_URL, json=job("a"))
    assert status == 201
    status, body = await call(http, "POST", JOBS_URL, json=job("a"))
    assert (status, body["reason"]) == (409, "AlreadyExists")

    rv = created["metadata"]["resourceVersion"]
    test = [{"op": "test", "path": "/metadata/resourceVersion", "value": "1"}]
    status, body = await call(http, "PATCH", f"{JOBS_URL}/a", json=test, headers=JSON_PATCH)
    assert (status, body["reason"]) == (422, "Invalid")
    await call(http, "PATCH", f"{JOBS_URL}/a", json={"spec": {"tag": "v2"}}, headers=MERGE)
    status, body = await call(
        http, "PATCH", f"{JOBS_URL}/a", json={"metadata": {"resourceVersion": rv}}, headers=MERGE
    )
    assert (status, body["reason"]) == (409, "Conflict")
    status, body = await call(
        http, "PATCH", f"{JOBS_URL}/a", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert status == 415
    protobuf = {
        "Content-Type": "application/vnd.kubernetes.protobuf"
    }  # what `kubectl create namespace` sends
    status, body = await call(http, "POST", "/api/v1/namespaces", data=b"k8s\x00", headers=protobuf)
    assert (status, body["reason"]) == (415, "UnsupportedMediaType") and "apply -f" in body["message"]
    status, body = await call(http, "GET", "/apis/anklet.dev/v1alpha1/namespaces/default/nothings")
    assert (status, body["reason"]) == (404, "NotFound")

    status, body = await call(http, "POST", JOBS_URL, params={"dryRun": "All"}, json=job("dry"))
    assert status == 400 and "dryRun" in body["message"]  # refused rather than persisted
    status, body = await call(http, "GET", "/apis/")
    assert status == 200 and body["kind"] == "APIGroupList"
    status, body = await call(http, "POST", "/apis", json={})
    assert (status, body["reason"]) == (405, "MethodNotAllowed")

    status, body = await call(http, "DELETE", f"{JOBS_URL}/a")
    assert (status, body["kind"], body["status"]) == (200, "Status", "Success")


async def test_put_replaces_object_and_status(http: aiohttp.ClientSession) -> None:
    _, created = await call(http, "POST", JOBS_URL, json=job("a"))
    created["status"] = {"phase": "Running"}
    status, replaced = await call(http, "PUT", f"{JOBS_URL}/a/status", json=created)
    assert status == 200 and replaced["status"]["phase"] == "Running"
    replaced["spec"]["tag"] = "v2"
    status, again = await call(http, "PUT", f"{JOBS_URL}/a", json=replaced)
    assert status == 200 and again["spec"]["tag"] == "v2" and again["metadata"]["generation"] == 2


async def test_cluster_scoped_namespaces_and_events(http: aiohttp.ClientSession) -> None:
    status, namespaces = await call(http, "GET", "/api/v1/namespaces")
    assert status == 200 and [n["metadata"]["name"] for n in namespaces["items"]] == ["default"]
    status, namespace = await call(http, "POST", "/api/v1/namespaces", json={"metadata": {"name": "ci"}})
    assert status == 201 and namespace["status"] == {"phase": "Active"}
    status, fetched = await call(http, "GET", "/api/v1/namespaces/ci")
    assert status == 200 and fetched["metadata"]["uid"] == namespace["metadata"]["uid"]
    as_yaml = {"Content-Type": "application/yaml"}
    status, _ = await call(http, "POST", "/api/v1/namespaces", data=b"metadata: {name: ops}", headers=as_yaml)
    assert status == 201
    event = {"metadata": {"generateName": "kopf-event-"}, "involvedObject": {"name": "x"}, "reason": "Tested"}
    status, posted = await call(http, "POST", "/api/v1/namespaces/ci/events", json=event)
    assert status == 201 and posted["metadata"]["name"].startswith("kopf-event-")
    status, body = await call(http, "POST", "/api/v1/namespaces/nowhere/events", json=event)
    assert (status, body["message"]) == (404, 'namespaces "nowhere" not found')


async def test_discovery_and_openapi(http: aiohttp.ClientSession) -> None:
    _, version = await call(http, "GET", "/version")
    assert version["gitVersion"].startswith("v1.32.")
    _, groups = await call(http, "GET", "/apis")
    assert {"anklet.dev", "apiextensions.k8s.io", "kopf.dev"} <= {g["name"] for g in groups["groups"]}
    _, core = await call(http, "GET", "/api/v1")
    assert {"namespaces", "namespaces/status", "events"} <= {r["name"] for r in core["resources"]}

    _, root = await call(http, "GET", "/openapi/v3")
    url = root["paths"]["apis/anklet.dev/v1alpha1"]["serverRelativeURL"]
    _, document = await call(http, "GET", url)
    schema = document["components"]["schemas"]["dev.anklet.v1alpha1.AnkaJob"]
    assert schema["x-kubernetes-group-version-kind"] == [
        {"group": "anklet.dev", "version": "v1alpha1", "kind": "AnkaJob"}
    ]
    operation = document["paths"]["/apis/anklet.dev/v1alpha1/namespaces/{namespace}/ankajobs/{name}"]["patch"]
    assert "fieldValidation" in {p["name"] for p in operation["parameters"]}
    assert "application/strategic-merge-patch+json" not in operation["requestBody"]["content"]
    status, _ = await call(http, "GET", "/openapi/v2")
    assert status == 404


async def test_other_paths_still_reach_kmock(http: aiohttp.ClientSession, server: KubeApiServer) -> None:
    server.emulator["get /custom"] << {"served": "by kmock"}
    assert await call(http, "GET", "/custom") == (200, {"served": "by kmock"})
