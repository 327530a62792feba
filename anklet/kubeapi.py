"""The thin, synchronous Kubernetes API layer of the people-facing commands (hosts, status, jobs,
explain): one httpx client, list/get with clear errors, and a watch follower.

The commands are short-lived and print as they go, so a blocking client is the simple fit; the
controller keeps its own async client (`controller.kube`). Credentials: `--kubeconfig`, else
$KUBECONFIG, else the in-cluster service account, else `~/.kube/config` (the loaders of the
official client do the parsing, so exec plugins, client certificates and tokens all work).

`follow` is a Kubernetes watch done right for a person at a terminal: it resumes from the last
resourceVersion it saw (bookmarks included) when the server ends a watch window, re-lists on 410
Gone and hands the caller the fresh listing to diff, and reconnects a few times after a dropped
connection before giving up with an error. It ends at its deadline or when the caller stops
iterating (Ctrl-C).
"""

from __future__ import annotations

import json
import logging
import os
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from anklet import models

log = logging.getLogger("anklet.kubeapi")

HOSTS_PATH = f"/apis/{models.GROUP}/{models.VERSION}/{models.HOST_PLURAL}"
SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")
WATCH_WINDOW = 300  # seconds the server keeps one watch open before we resume
MAX_RECONNECTS = 5  # dropped connections in a row before a watch gives up


class ApiError(RuntimeError):
    """A request failed or no cluster is configured; the message is meant for the user."""


def kubeconfig_path(kubeconfig: str | None, env: Mapping[str, str] = os.environ) -> str | None:
    """`--kubeconfig`, else $KUBECONFIG (may list several files), else None (in-cluster, then
    ~/.kube/config)."""
    return kubeconfig or env.get("KUBECONFIG") or None


def client(kubeconfig: str | None) -> httpx.Client:
    """An httpx client for the API server, authenticated as the kubeconfig or pod says."""
    from controller.kube import load_connection

    try:
        conn = load_connection(kubeconfig_path(kubeconfig))
    except Exception as exc:  # the official loaders raise ConfigException, OSError, yaml errors…
        tried = "--kubeconfig, $KUBECONFIG, in-cluster, ~/.kube/config"
        raise ApiError(f"no usable Kubernetes configuration ({tried}): {exc}") from exc
    headers = {"Accept": "application/json"}
    if conn.token:
        headers["Authorization"] = f"Bearer {conn.token}"
    verify: bool | str = (not conn.insecure) and (conn.ca_path or True)
    cert = (conn.cert_path, conn.key_path) if conn.cert_path and conn.key_path else None
    return httpx.Client(base_url=conn.server, headers=headers, verify=verify, cert=cert, timeout=30.0)


def default_namespace(kubeconfig: str | None, env: Mapping[str, str] = os.environ) -> str:
    """The namespace kubectl would use: the current context's, the pod's own, or `default`."""
    path = kubeconfig_path(kubeconfig, env)
    if path is None and env.get("KUBERNETES_SERVICE_HOST"):
        try:
            return SERVICE_ACCOUNT_NAMESPACE.read_text().strip() or "default"
        except OSError:
            return "default"
    from kubernetes import config as kconfig

    try:
        _, current = kconfig.list_kube_config_contexts(config_file=path)  # type: ignore[no-untyped-call]
    except Exception:  # no kubeconfig: client() reports that with the full story
        return "default"
    namespace = ((current or {}).get("context") or {}).get("namespace")
    return str(namespace) if namespace else "default"


def check(response: httpx.Response, what: str) -> dict[str, Any]:
    """The JSON body of a successful response; ApiError saying what failed otherwise."""
    if response.status_code == 404:
        raise ApiError(f"{what}: not found")
    if response.status_code >= 400:
        raise ApiError(f"{what}: the API answered {response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def request(http: httpx.Client, method: str, path: str, what: str, **kwargs: Any) -> dict[str, Any]:
    try:
        response = http.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ApiError(f"{what}: cannot reach the API server at {http.base_url}: {exc}") from exc
    return check(response, what)


def jobs_path(namespace: str | None) -> str:
    """AnkaJobs of one namespace, or of all of them (None)."""
    base = f"/apis/{models.GROUP}/{models.VERSION}"
    return f"{base}/namespaces/{namespace}/{models.PLURAL}" if namespace else f"{base}/{models.PLURAL}"


def events_path(namespace: str) -> str:
    return f"/api/v1/namespaces/{namespace}/events"


def list_objects(
    http: httpx.Client, path: str, what: str, params: Mapping[str, str] | None = None
) -> tuple[list[dict[str, Any]], str]:
    """All items of a list (following `continue` pages) and the list's resourceVersion."""
    items: list[dict[str, Any]] = []
    query = {"limit": "500", **(params or {})}
    for _ in range(10_000):  # bounded: 5 million objects
        body = request(http, "GET", path, what, params=query)
        items += body.get("items") or []
        token = (body.get("metadata") or {}).get("continue")
        if not token:
            return items, str((body.get("metadata") or {}).get("resourceVersion") or "")
        query = {**query, "continue": token}
    raise ApiError(f"{what}: the list never ended")


def job_events(http: httpx.Client, namespace: str, name: str) -> list[dict[str, Any]]:
    """core/v1 Events whose involvedObject is the AnkaJob `namespace/name` (any uid: the caller
    keeps those of the current object)."""
    selector = f"involvedObject.name={name},involvedObject.namespace={namespace}"
    items, _ = list_objects(
        http, events_path(namespace), f"listing events of {namespace}/{name}", {"fieldSelector": selector}
    )
    return items


@dataclass(frozen=True)
class Change:
    """One step of a watch: ADDED / MODIFIED / DELETED with the object, or RELISTED with the whole
    listing after the watch expired (410), so the caller can diff what it missed."""

    type: str
    object: dict[str, Any] = field(default_factory=dict)
    items: list[dict[str, Any]] = field(default_factory=list)


def follow(
    http: httpx.Client,
    path: str,
    what: str,
    *,
    resource_version: str,
    params: Mapping[str, str] | None = None,
    deadline: float | None = None,
    clock: Callable[[], float] = time.monotonic,
    window: int = WATCH_WINDOW,
) -> Iterator[Change]:
    """Changes to the objects at `path` after `resource_version`, until `deadline` (clock time) or
    the caller stops. `params` narrows the watch and the re-list alike (e.g. a fieldSelector)."""
    rv, failures = resource_version, 0
    while True:
        remaining = None if deadline is None else deadline - clock()
        if remaining is not None and remaining <= 0:
            return
        seconds = window if remaining is None else max(1, min(window, int(remaining + 0.999)))
        query = {
            **(params or {}),
            "watch": "true",
            "allowWatchBookmarks": "true",
            "resourceVersion": rv,
            "timeoutSeconds": str(seconds),
        }
        expired = False
        try:
            with http.stream(
                "GET", path, params=query, timeout=httpx.Timeout(30.0, read=seconds + 30.0)
            ) as response:
                if response.status_code == 410:
                    expired = True
                elif response.status_code >= 400:
                    response.read()
                    check(response, what)
                else:
                    for line in response.iter_lines():
                        if not line.strip():
                            continue
                        failures = 0
                        event = json.loads(line)
                        kind, obj = event.get("type"), event.get("object") or {}
                        if kind == "ERROR":
                            if obj.get("code") == 410:
                                expired = True
                                break
                            raise ApiError(f"{what}: the watch failed: {obj.get('message') or obj}")
                        rv = str((obj.get("metadata") or {}).get("resourceVersion") or rv)
                        if kind in ("ADDED", "MODIFIED", "DELETED"):
                            yield Change(type=str(kind), object=obj)
                        if deadline is not None and clock() >= deadline:
                            return
        except httpx.TransportError as exc:
            failures += 1
            if failures > MAX_RECONNECTS:
                raise ApiError(f"{what}: lost the watch {failures} times in a row: {exc}") from exc
            log.warning("%s: the watch dropped (%s); reconnecting", what, exc)
            time.sleep(min(5.0, 0.2 * 2 ** (failures - 1)))  # back off between reconnects, bounded
            continue
        if expired:
            items, rv = list_objects(http, path, what, params)
            yield Change(type="RELISTED", items=items)
