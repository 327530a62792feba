"""A faithful in-process stand-in for the Kubernetes side of the controller.

The controller talks to Kubernetes in two directions: kopf's watches feed every ADDED /
MODIFIED / DELETED event into `Reconciler.observe()` (AnkaJobs) and `observe_host()`
(AnkaHosts), and the reconciler writes through `controller.kube.KubeClient` (merge-patches of
`.status` that return the updated object, AnkaHost creation, Events, deletes). This module plays
the API server and the watches in memory, so a benchmark can run tens of thousands of AnkaJobs
without measuring an HTTP server and kopf instead of the scheduler.

The reconciler still uses the real `KubeClient`: only its httpx transport is replaced
(`httpx.MockTransport`), so the client's request building and JSON (de)serialisation stay in
the controller's measured CPU, and any method the client gains keeps working as long as its
route is served here (an unserved route answers 404 and is counted in `unrouted`).

- `create` stores an object with a uid, a creationTimestamp (second resolution, as the API
  server gives it) and a resourceVersion from one increasing counter, then delivers ADDED and,
  like kopf adding its finalizer on first sight, one MODIFIED;
- a status merge-patch bumps the resourceVersion, answers with the whole object and delivers
  the MODIFIED event afterwards (the reconciler sees its own writes echo back, as through kopf);
- a delete sets deletionTimestamp while the finalizer is held, waits (as the operator's
  `teardown` handler does) until the reconciler says the job settled, then delivers DELETED.

Not modelled: network latency, kopf's own per-event bookkeeping, optimistic-concurrency
conflicts (the reconciler sends no resourceVersion preconditions), schema validation.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import re
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import httpx

from anklet import models
from controller.kube import KubeClient
from controller.reconciler import Reconciler

FINALIZER = "anklet.dev/vm-teardown"
_API = f"/apis/{models.GROUP}/{models.VERSION}"
_JOB = re.compile(rf"^{_API}/namespaces/(?P<ns>[^/]+)/{models.PLURAL}/(?P<name>[^/]+)(?P<status>/status)?$")
_HOST = re.compile(rf"^{_API}/{models.HOST_PLURAL}(?:/(?P<name>[^/]+)(?P<status>/status)?)?$")
_EVENTS = re.compile(r"^/api/v1/namespaces/[^/]+/events$")

Key = tuple[str, str, str]  # kind, namespace, name


def merge_patch(target: Mapping[str, Any], patch: Mapping[str, Any]) -> dict[str, Any]:
    """RFC 7386 merge patch as a new dict (the input is never mutated: old versions stay intact)."""
    result = dict(target)
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        elif isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merge_patch(result[key], value)
        else:
            result[key] = value
    return result


def _rfc3339(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class KubeStandIn:
    """AnkaJobs and AnkaHosts in a dict, served to a real `KubeClient`, watched by a `Reconciler`.

    Records per AnkaJob uid when it was created and when its status first said Scheduled (the
    benchmark's scheduling latency), and the CPU the stand-in itself spent (what an API server
    would have spent instead of the controller's process).
    """

    def __init__(self, *, clock: Callable[[], float] = time.time) -> None:
        self.clock = clock
        self.objects: dict[Key, dict[str, Any]] = {}
        self.created_at: dict[str, float] = {}
        self.scheduled_at: dict[str, float] = {}
        self.status_writes = 0
        self.host_writes = 0
        self.events: Counter[str] = Counter()
        self.unrouted: Counter[str] = Counter()
        self.cpu_seconds = 0.0
        self.last_write = 0.0
        self._rv = itertools.count(1)
        self._reconciler: Reconciler | None = None
        self._deleting: set[asyncio.Task[None]] = set()
        self.client = KubeClient(
            httpx.AsyncClient(transport=httpx.MockTransport(self._handle), base_url="http://kube.invalid")
        )

    def attach(self, reconciler: Reconciler) -> None:
        """Deliver every watch event to the reconciler, as the operator's kopf handlers do."""
        self._reconciler = reconciler

    async def aclose(self) -> None:
        for task in list(self._deleting):
            task.cancel()
        await asyncio.gather(*self._deleting, return_exceptions=True)
        await self.client.aclose()

    # ----- objects ------------------------------------------------------------------------------
    def jobs(self) -> list[dict[str, Any]]:
        return [body for (kind, _, _), body in self.objects.items() if kind == models.KIND]

    def get(self, name: str, *, namespace: str = "default") -> dict[str, Any] | None:
        return self.objects.get((models.KIND, namespace, name))

    def create(self, name: str, spec: Mapping[str, Any], *, namespace: str = "default") -> dict[str, Any]:
        """Create an AnkaJob (as `kubectl apply` would); returns the stored object."""
        started = time.thread_time()
        now = self.clock()
        uid = str(uuidlib.uuid4())
        key = (models.KIND, namespace, name)
        body = self._store(
            key,
            {
                "apiVersion": models.API_VERSION,
                "kind": models.KIND,
                "metadata": {
                    "name": name,
                    "namespace": namespace,
                    "uid": uid,
                    "generation": 1,
                    "creationTimestamp": _rfc3339(now),
                },
                "spec": dict(spec),
            },
        )
        self.created_at[uid] = now
        self._deliver(body)
        # kopf adds its finalizer on first sight: one more write and one more watch event.
        self._deliver(self._store(key, merge_patch(body, {"metadata": {"finalizers": [FINALIZER]}})))
        self.cpu_seconds += time.thread_time() - started
        return body

    def patch_spec(self, name: str, spec: Mapping[str, Any], *, namespace: str = "default") -> None:
        """A user's merge patch of `.spec` (e.g. `{"cancel": true}`); bumps the generation."""
        key = (models.KIND, namespace, name)
        old = self.objects[key]
        metadata = {**old["metadata"], "generation": int(old["metadata"].get("generation", 1)) + 1}
        self._deliver(self._store(key, merge_patch({**old, "metadata": metadata}, {"spec": spec})))

    def delete(self, name: str, *, namespace: str = "default") -> bool:
        """Delete an AnkaJob; with the finalizer held, this only starts the teardown."""
        key = (models.KIND, namespace, name)
        old = self.objects.get(key)
        if old is None:
            return False
        if old["metadata"].get("deletionTimestamp"):
            return True
        patch = {"metadata": {"deletionTimestamp": _rfc3339(self.clock())}}
        body = self._store(key, merge_patch(old, patch))
        self._deliver(body)
        task = asyncio.get_running_loop().create_task(self._finalize(key, body["metadata"]["uid"]))
        self._deleting.add(task)
        task.add_done_callback(self._deleting.discard)
        return True

    # ----- internals ----------------------------------------------------------------------------
    def _store(self, key: Key, body: dict[str, Any]) -> dict[str, Any]:
        body = {**body, "metadata": {**body["metadata"], "resourceVersion": str(next(self._rv))}}
        self.objects[key] = body
        return body

    def _deliver(self, body: dict[str, Any], *, deleted: bool = False) -> None:
        if self._reconciler is not None:
            asyncio.get_running_loop().call_soon(self._observe, body, deleted)

    def _observe(self, body: dict[str, Any], deleted: bool) -> None:
        if self._reconciler is None:
            return
        if body.get("kind") == models.HOST_KIND:
            self._reconciler.observe_host(body, deleted=deleted)
        else:
            self._reconciler.observe(body, deleted=deleted)

    async def _finalize(self, key: Key, uid: str) -> None:
        """The operator's `teardown` handler: hold the finalizer until the job settled (bounded)."""
        if self._reconciler is not None:
            for _ in range(30):
                if await self._reconciler.wait_settled(uid, timeout=20.0):
                    break
        body = self.objects.pop(key, None)
        if body is not None:
            with contextlib.suppress(RuntimeError):
                self._deliver(body, deleted=True)

    # ----- the API server -----------------------------------------------------------------------
    def _handle(self, request: httpx.Request) -> httpx.Response:
        started = time.thread_time()
        try:
            return self._route(request)
        finally:
            self.cpu_seconds += time.thread_time() - started

    def _route(self, request: httpx.Request) -> httpx.Response:
        path, method = request.url.path, request.method
        payload: dict[str, Any] = json.loads(request.content) if request.content else {}
        if method == "POST" and _EVENTS.match(path):
            self.events[str(payload.get("reason"))] += 1
            return httpx.Response(201, json={})
        if (match := _JOB.match(path)) is not None:
            key = (models.KIND, match["ns"], match["name"])
            if method == "PATCH" and match["status"]:
                return self._patch_status(key, payload)
            if method == "DELETE" and not match["status"]:
                found = self.delete(match["name"], namespace=match["ns"])
                return httpx.Response(200 if found else 404, json={})
        if (match := _HOST.match(path)) is not None:
            if method == "POST" and match["name"] is None:
                return self._create_host(payload)
            if method == "PATCH" and match["status"]:
                return self._patch_status((models.HOST_KIND, "", match["name"]), payload)
        self.unrouted[f"{method} {path}"] += 1
        return httpx.Response(404, json={"reason": "NotFound"})

    def _patch_status(self, key: Key, payload: Mapping[str, Any]) -> httpx.Response:
        old = self.objects.get(key)
        if old is None:
            return httpx.Response(404, json={"reason": "NotFound"})
        status: Mapping[str, Any] = payload.get("status") or {}
        body = self._store(key, merge_patch(old, {"status": status}))
        self.last_write = now = self.clock()
        if key[0] == models.HOST_KIND:
            self.host_writes += 1
        else:
            self.status_writes += 1
            uid = body["metadata"]["uid"]
            if status.get("phase") == models.Phase.SCHEDULED.value and uid not in self.scheduled_at:
                self.scheduled_at[uid] = now
        self._deliver(body)
        return httpx.Response(200, json=body)

    def _create_host(self, payload: Mapping[str, Any]) -> httpx.Response:
        name = str(payload["metadata"]["name"])
        key = (models.HOST_KIND, "", name)
        if key in self.objects:
            return httpx.Response(409, json={"reason": "AlreadyExists"})
        meta = {
            **payload["metadata"],
            "uid": str(uuidlib.uuid4()),
            "creationTimestamp": _rfc3339(self.clock()),
        }
        body = self._store(key, {**payload, "metadata": meta})
        self.host_writes += 1
        self._deliver(body)
        return httpx.Response(201, json=body)
