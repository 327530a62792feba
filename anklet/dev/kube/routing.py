"""HTTP in front of the store: kube-apiserver's URL layout, verbs, content types and watch streams.

Built on kmock's `KubernetesEmulator` so kmock's server plumbing (and its DSL for ad-hoc reactions on
non-Kubernetes paths) stays available, but every Kubernetes path is served here instead of by kmock:
kmock 0.8 cannot parse `/api/v1/namespaces`, has no PUT, no resourceVersions, no Tables, no
selectors, and replays watches from scratch, all of which kubectl and kopf depend on.
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import traceback
from typing import Any

import aiohttp.web
import kmock
from multidict import CIMultiDict

from anklet.dev.kube import errors, openapi, patches
from anklet.dev.kube.audit import RequestRecorder
from anklet.dev.kube.resources import ResourceDef
from anklet.dev.kube.selectors import Selection
from anklet.dev.kube.store import Event, Store, bookmark
from anklet.dev.kube.table import build_table, wants_table

logger = logging.getLogger(__name__)

VERSION = {
    "major": "1",
    "minor": "32",
    "gitVersion": "v1.32.4",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2025-04-22T00:00:00Z",
    "goVersion": "go1.23.8",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_NAMESPACE_SUBRESOURCES = ("status", "finalize")
_OURS = ("", "api", "apis", "openapi", "version", "healthz", "livez", "readyz")  # first path segments


def _json(data: Any, status: int = 200, warnings: list[str] | None = None) -> aiohttp.web.Response:
    headers: CIMultiDict[str] = CIMultiDict()
    for warning in warnings or ():
        headers.add("Warning", f"299 - {json.dumps(warning)}")
    return aiohttp.web.json_response(data, status=status, headers=headers)


def split_path(parts: list[str]) -> tuple[str | None, str, str | None, str | None]:
    """(namespace, plural, name, subresource) of a path below the GroupVersion, as the apiserver's
    RequestInfo does: `namespaces/x/status` is the namespace x's status, not a resource "status"."""
    namespace = None
    if parts[0] == "namespaces" and len(parts) > 2 and parts[2] not in _NAMESPACE_SUBRESOURCES:
        namespace, parts = parts[1], parts[2:]
    name = parts[1] if len(parts) > 1 else None
    return namespace, parts[0], name, "/".join(parts[2:]) or None


class Emulator(kmock.KubernetesEmulator):
    """kube-apiserver semantics for kubectl and kopf; non-Kubernetes paths go to kmock as usual."""

    def __init__(self, store: Store) -> None:
        super().__init__()
        self.store = store
        self.bookmark_interval = 30.0  # seconds of silence before a BOOKMARK on watches that allow them
        self.failures: list[str] = []  # tracebacks of 500s, for tests to assert on
        self.recorder: RequestRecorder | None = None  # set to record who asks for what (RBAC tests)

    async def __call__(self, raw_request: aiohttp.web.BaseRequest) -> aiohttp.web.StreamResponse:
        if self.recorder is not None:
            headers = raw_request.headers
            self.recorder.record(
                raw_request.method, raw_request.path, raw_request.query, headers.get("Authorization")
            )
        parts = [part for part in raw_request.path.split("/") if part]
        if (parts[0] if parts else "") not in _OURS:
            return await super().__call__(raw_request)
        try:
            response = await self._serve(raw_request, parts)
        except errors.ApiError as exc:
            response = _json(exc.status(), exc.code)
        except Exception as exc:
            self.failures.append(traceback.format_exc())
            logger.exception("%s %s failed", raw_request.method, raw_request.path_qs)
            response = _json(errors.ApiError(500, "InternalError", repr(exc)).status(), 500)
        logger.debug("%s %s -> %s", raw_request.method, raw_request.path_qs, response.status)
        return response

    async def _serve(self, request: aiohttp.web.BaseRequest, parts: list[str]) -> aiohttp.web.StreamResponse:
        if len(parts) > 2 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) > 3 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        elif request.method != "GET":
            raise errors.method_not_allowed(request.method)
        else:
            return self._serve_document(parts, request.host)

        namespace, plural, name, subresource = split_path(rest)
        res = self.store.registry.find(group, version, plural)
        if res is None or (namespace is not None and not res.namespaced):
            raise errors.no_such_path()
        if subresource not in (None, *res.subresources) or (subresource and name is None):
            raise errors.no_such_path()
        if res.namespaced and name is not None and namespace is None:
            raise errors.no_such_path()
        if request.method != "GET" and request.query.get("dryRun"):
            raise errors.bad_request(
                "dryRun is not supported by the emulated API server"
            )  # rather than persist
        return await self._serve_resource(request, res, namespace, name, subresource)

    def _serve_document(self, parts: list[str], host: str) -> aiohttp.web.StreamResponse:
        """Everything that is not a resource: health, version, discovery and OpenAPI (GET only)."""
        registry, resources = self.store.registry, list(self.store.registry)
        groups = registry.group_versions()
        document: Any = None
        match parts:
            case ["healthz"] | ["livez"] | ["readyz"]:
                return aiohttp.web.Response(text="ok")
            case []:
                paths = {
                    "/api",
                    "/api/v1",
                    "/apis",
                    "/openapi/v3",
                    "/version",
                    "/healthz",
                    "/livez",
                    "/readyz",
                }
                paths |= {f"/apis/{g}" for g in groups} | {
                    f"/apis/{g}/{v}" for g in groups for v in groups[g]
                }
                document = {"paths": sorted(paths)}
            case ["version"]:
                document = VERSION
            case ["api"]:
                address = {"clientCIDR": "0.0.0.0/0", "serverAddress": host}
                document = {
                    "kind": "APIVersions",
                    "versions": ["v1"],
                    "serverAddressByClientCIDRs": [address],
                }
            case ["apis"]:
                document = registry.api_group_list()
            case ["apis", group]:
                document = registry.api_group(group)
            case ["api", version]:
                document = registry.api_resource_list("", version)
            case ["apis", group, version]:
                document = registry.api_resource_list(group, version)
            case ["openapi", "v3"]:
                document = openapi.root_document(resources)
            case ["openapi", "v3", "api", version]:
                document = openapi.group_version_document(resources, "", version)
            case ["openapi", "v3", "apis", group, version]:
                document = openapi.group_version_document(resources, group, version)
            # Notably absent: /openapi/v2, which kubectl does without when v3 is there.
        if document is None:
            raise errors.no_such_path()
        return _json(document)

    async def _serve_resource(
        self,
        request: aiohttp.web.BaseRequest,
        res: ResourceDef,
        namespace: str | None,
        name: str | None,
        subresource: str | None,
    ) -> aiohttp.web.StreamResponse:
        query, store, method = request.query, self.store, request.method
        table = wants_table(request.headers.get("Accept", ""))
        validation = query.get("fieldValidation", "")
        if method == "GET" and name is None:
            try:
                selection = Selection.parse(query.get("labelSelector", ""), query.get("fieldSelector", ""))
            except ValueError as exc:
                raise errors.bad_request(str(exc)) from None
            if query.get("watch") in ("true", "1"):
                return await self._watch(request, res, namespace, selection, table)
            items = [obj for obj in store.objects(res, namespace) if selection.matches(obj)]
            if table:
                return _json(build_table(items, res.printer_columns, str(store.rv)))
            metadata = {"resourceVersion": str(store.rv)}
            return _json(
                {
                    "kind": f"{res.kind}List",
                    "apiVersion": res.api_version,
                    "metadata": metadata,
                    "items": items,
                }
            )
        if method == "GET" and name is not None:
            obj = store.get(res, namespace, name)
            return _json(
                build_table([obj], res.printer_columns, obj["metadata"]["resourceVersion"]) if table else obj
            )
        if method == "POST" and name is None:
            body = patches.parse_body(request.content_type, await request.read())
            obj, warnings = store.create(res, namespace, body, field_validation=validation)
            return _json(obj, 201, warnings)
        if method == "PUT" and name is not None:
            body = patches.parse_body(request.content_type, await request.read())
            obj, warnings = store.update(
                res, namespace, name, lambda _: body, subresource=subresource, field_validation=validation
            )
            return _json(obj, 200, warnings)
        if method == "PATCH" and name is not None:
            return await self._patch(request, res, namespace, name, subresource)
        if method == "DELETE" and name is not None and subresource is None:
            uid = store.get(res, namespace, name)["metadata"]["uid"]
            remaining = store.delete(res, namespace, name)
            if remaining is not None:
                return _json(remaining)
            details = {"name": name, "group": res.group, "kind": res.plural, "uid": uid}
            return _json(
                {
                    "kind": "Status",
                    "apiVersion": "v1",
                    "metadata": {},
                    "status": "Success",
                    "details": details,
                }
            )
        raise errors.method_not_allowed(method)

    async def _patch(
        self,
        request: aiohttp.web.BaseRequest,
        res: ResourceDef,
        namespace: str | None,
        name: str,
        subresource: str | None,
    ) -> aiohttp.web.StreamResponse:
        """Merge (strategic merge is treated alike), JSON patch, and server-side apply."""
        content_type = request.content_type
        body = patches.parse_body(content_type, await request.read())
        validation = request.query.get("fieldValidation", "")
        if content_type in (patches.MERGE, patches.STRATEGIC, patches.APPLY):
            if content_type == patches.APPLY and subresource is None:
                try:
                    self.store.get(res, namespace, name)
                except errors.ApiError as exc:
                    if exc.code != 404:
                        raise
                    if not isinstance(body, dict) or body.get("metadata", {}).get("name") not in (None, name):
                        raise errors.bad_request("the applied object must have the name of the URL") from None
                    obj, warnings = self.store.create(res, namespace, body, field_validation=validation)
                    return _json(obj, 201, warnings)
            if not isinstance(body, dict):
                raise errors.bad_request("a merge patch must be an object")
        elif content_type != patches.JSON_PATCH:
            raise errors.unsupported_media_type(content_type)
        patcher = patches.json_patch if content_type == patches.JSON_PATCH else patches.merge_patch
        obj, warnings = self.store.update(
            res,
            namespace,
            name,
            lambda old: patcher(old, body),
            subresource=subresource,
            field_validation=validation,
        )
        return _json(obj, 200, warnings)

    async def _watch(
        self,
        request: aiohttp.web.BaseRequest,
        res: ResourceDef,
        namespace: str | None,
        selection: Selection,
        table: bool,
    ) -> aiohttp.web.StreamResponse:
        """Chunked JSON lines until `timeoutSeconds`, the client leaving, or the server stopping.

        Objects leaving (entering) a selector are sent as DELETED (ADDED), as the apiserver does.
        With `allowWatchBookmarks`, a BOOKMARK is sent after `bookmark_interval` of silence and
        right before the timeout, so clients resume from a recent resourceVersion.
        """
        query, store = request.query, self.store
        response = aiohttp.web.StreamResponse(headers={"Content-Type": "application/json"})
        response.enable_chunked_encoding()
        bookmarks = query.get("allowWatchBookmarks") == "true"
        try:
            timeout = float(query.get("timeoutSeconds") or math.inf)
        except ValueError:
            raise errors.bad_request("invalid timeoutSeconds") from None
        try:
            watcher = store.watch(
                res,
                namespace,
                query.get("resourceVersion", ""),
                initial_end_bookmark=query.get("sendInitialEvents") == "true",
            )
        except errors.ApiError as exc:
            if exc.code != 410:
                raise
            await response.prepare(request)
            await response.write(json.dumps({"type": "ERROR", "object": exc.status()}).encode() + b"\n")
            await response.write_eof()
            return response

        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        last_sent, seen_rv, with_headers = loop.time(), 0, True
        tick = min(1.0, self.bookmark_interval) if bookmarks else 1.0  # also how often to check the client
        await response.prepare(request)

        async def send(event: dict[str, Any]) -> None:
            nonlocal last_sent
            await response.write(json.dumps(event).encode() + b"\n")
            last_sent = loop.time()

        def current_bookmark() -> dict[str, Any]:
            reached = store.rv if watcher.queue.empty() else seen_rv
            return {"type": "BOOKMARK", "object": bookmark(res, reached)}

        try:
            while True:
                if loop.time() >= deadline:
                    if bookmarks:
                        await send(current_bookmark())
                    break
                try:
                    event = await asyncio.wait_for(watcher.queue.get(), min(tick, deadline - loop.time()))
                except TimeoutError:
                    if request.transport is None or request.transport.is_closing():
                        break
                    if bookmarks and loop.time() - last_sent >= self.bookmark_interval:
                        await send(current_bookmark())
                    continue
                if event is None:
                    break
                seen_rv = max(seen_rv, event.rv)
                line = _render(event, selection)
                if line is not None and table and line["type"] != "BOOKMARK":
                    rv = line["object"]["metadata"]["resourceVersion"]
                    line["object"] = build_table(
                        [line["object"]], res.printer_columns, rv, with_headers=with_headers
                    )
                    with_headers = False
                if line is not None:
                    await send(line)
            await response.write_eof()
        except ConnectionError:
            pass  # the client went away
        finally:
            store.unwatch(watcher)
        return response


def _render(event: Event, selection: Selection) -> dict[str, Any] | None:
    """The event as a watcher with this selection sees it (None: not at all)."""
    if event.type == "BOOKMARK":
        return {"type": "BOOKMARK", "object": event.obj}
    matches_now = selection.matches(event.obj)
    matched_before = event.old is not None and selection.matches(event.old)
    kind = event.type
    if kind == "MODIFIED" and matches_now != matched_before:
        kind = "ADDED" if matches_now else "DELETED"
    elif not matches_now:
        return None
    return {"type": kind, "object": event.obj}
