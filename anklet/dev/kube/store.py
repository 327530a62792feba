"""Objects, the global resourceVersion, the watch history, and the apiserver's write rules.

Everything here is synchronous and runs on the server's event loop, so each write is atomic for
watchers: an event is appended to the history and handed to live watch queues in the same step,
and a watch registers and takes its backlog in one step too, so no event can fall in between.
"""

from __future__ import annotations

import asyncio
import collections
import copy
import dataclasses
import datetime
import random
import uuid
from collections.abc import Callable, Iterator
from typing import Any

from anklet.dev.kube import errors
from anklet.dev.kube.resources import CRD_KEY, NAMESPACES_KEY, Registry, ResourceDef, crd_causes, crd_status
from anklet.dev.kube.schema import SchemaValidator, apply_defaults, prune, prune_nulls, validate_metadata

ObjectKey = tuple[str, str | None, str]  # (resource key, namespace or None, name)
Change = Callable[[dict[str, Any]], Any]

# Set by the server only; whatever a client sends for these is ignored (or checked, for rv).
_SERVER_METADATA = (
    "uid",
    "creationTimestamp",
    "generation",
    "deletionTimestamp",
    "deletionGracePeriodSeconds",
)
_GENERATED_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"  # apiserver's alphabet (no vowels, no confusables)


def now_rfc3339() -> str:
    return datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


@dataclasses.dataclass(frozen=True)
class Event:
    """A committed change; `old` is the previous state, used to re-type events for selectors."""

    rv: int
    type: str  # ADDED, MODIFIED, DELETED, or BOOKMARK (only the initial-events-end marker)
    key: str  # the resource's key
    obj: dict[str, Any]
    old: dict[str, Any] | None = None


def bookmark(res: ResourceDef, rv: int, *, initial_end: bool = False) -> dict[str, Any]:
    """A BOOKMARK event's object: only the kind and the resourceVersion the stream has reached."""
    meta: dict[str, Any] = {"resourceVersion": str(rv)}
    if initial_end:
        meta["annotations"] = {"k8s.io/initial-events-end": "true"}
    return {"kind": res.kind, "apiVersion": res.api_version, "metadata": meta}


def _copy_key(source: dict[str, Any], target: dict[str, Any], key: str) -> None:
    if key in source:
        target[key] = copy.deepcopy(source[key])
    else:
        target.pop(key, None)


def _without_metadata(obj: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in obj.items() if key != "metadata"}


class Watcher:
    """One watch stream's subscription: a queue of events of one resource (and namespace)."""

    def __init__(self, res: ResourceDef, namespace: str | None) -> None:
        self.key = res.key
        self.namespace = namespace
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()

    def offer(self, event: Event) -> None:
        namespace = event.obj.get("metadata", {}).get("namespace")
        if event.key == self.key and self.namespace in (None, namespace):
            self.queue.put_nowait(event)


class Store:
    """The in-memory etcd plus registry logic: one instance per emulated apiserver."""

    def __init__(self, registry: Registry, *, history_size: int = 10_000) -> None:
        self.registry = registry
        self.rv = 0
        self._objects: dict[ObjectKey, dict[str, Any]] = {}
        self._history: collections.deque[Event] = collections.deque(maxlen=history_size)
        self._compacted = 0  # events with rv <= this are no longer in the history
        self._watchers: set[Watcher] = set()
        self._validators: dict[str, tuple[ResourceDef, SchemaValidator]] = {}
        self._closed = False
        self.create(self._resource(NAMESPACES_KEY), None, {"metadata": {"name": "default"}})

    # Reads.

    def _resource(self, key: str) -> ResourceDef:
        res = self.registry.get(key)
        if res is None:
            raise errors.no_such_path()
        return res

    def get(self, res: ResourceDef, namespace: str | None, name: str) -> dict[str, Any]:
        obj = self._objects.get((res.key, namespace if res.namespaced else None, name))
        if obj is None:
            raise errors.not_found(res.plural, res.group, name)
        return obj

    def objects(self, res: ResourceDef, namespace: str | None) -> Iterator[dict[str, Any]]:
        """Objects of a resource in a namespace (None: all), in the apiserver's key order."""
        keys = sorted(k for k in self._objects if k[0] == res.key and namespace in (None, k[1]))
        return (self._objects[k] for k in keys)

    # Writes.

    def create(
        self, res: ResourceDef, namespace: str | None, body: Any, *, field_validation: str = ""
    ) -> tuple[dict[str, Any], list[str]]:
        """POST: server metadata, generateName, status dropped (status subresource), 409 if taken."""
        if not isinstance(body, dict) or not isinstance(body.get("metadata", {}), dict):
            raise errors.bad_request("the body must be an object with object metadata")
        obj = copy.deepcopy(body)
        meta = obj.setdefault("metadata", {})
        if obj.get("kind") not in (None, res.kind):
            raise errors.bad_request(f"the kind {obj['kind']!r} does not match the URL's kind {res.kind!r}")
        if res.namespaced:
            if meta.get("namespace") not in (None, "", namespace):
                raise errors.bad_request(
                    "the namespace of the provided object does not match the namespace sent on the request"
                )
            meta["namespace"] = namespace
            self.get(self._resource(NAMESPACES_KEY), None, str(namespace))  # 404 if absent
        else:
            meta.pop("namespace", None)
        if not meta.get("name") and meta.get("generateName"):
            meta["name"] = self._generate_name(res, namespace, str(meta["generateName"]))
        for field in (*_SERVER_METADATA, "resourceVersion"):
            meta.pop(field, None)
        if res.has_status:
            obj.pop("status", None)
        obj.update(apiVersion=res.api_version, kind=res.kind)
        meta.update(uid=str(uuid.uuid4()), creationTimestamp=now_rfc3339(), generation=1)
        warnings = self._admit(res, obj, field_validation)
        if (res.key, meta.get("namespace"), meta["name"]) in self._objects:
            raise errors.already_exists(res.plural, res.group, meta["name"])
        self._commit(res, "ADDED", obj, None)
        return obj, warnings

    def update(
        self,
        res: ResourceDef,
        namespace: str | None,
        name: str,
        change: Change,
        *,
        subresource: str | None = None,
        field_validation: str = "",
    ) -> tuple[dict[str, Any], list[str]]:
        """PUT/PATCH: `change` maps a copy of the current object to the requested one.

        Enforces optimistic concurrency (a stale resourceVersion is 409), status subresource
        separation, server-owned metadata, generation bumps on non-metadata changes only, no-op
        writes without an rv bump, and deletion once the last finalizer of a deleting object goes.
        """
        old = self.get(res, namespace, name)
        candidate = change(copy.deepcopy(old))
        if not isinstance(candidate, dict) or not isinstance(candidate.setdefault("metadata", {}), dict):
            raise errors.bad_request("the result must be an object with object metadata")
        if candidate["metadata"].get("name", name) != name:
            raise errors.bad_request(
                f"the name of the object ({candidate['metadata']['name']})"
                f" does not match the name on the URL ({name})"
            )
        sent_rv = candidate["metadata"].get("resourceVersion")
        if sent_rv and sent_rv != old["metadata"]["resourceVersion"]:
            raise errors.conflict(res.plural, res.group, name)

        if subresource == "status":
            new = copy.deepcopy(old)
            _copy_key(candidate, new, "status")
        else:
            new = candidate
            if res.has_status:
                _copy_key(old, new, "status")
        new.update(apiVersion=res.api_version, kind=res.kind)
        for field in (*_SERVER_METADATA, "name", "namespace", "resourceVersion"):
            _copy_key(old["metadata"], new["metadata"], field)
        warnings = self._admit(res, new, field_validation)
        if subresource is None and _without_metadata(new) != _without_metadata(old):
            new["metadata"]["generation"] = old["metadata"].get("generation", 0) + 1
        if new == old:
            return old, warnings
        meta = new["metadata"]
        self._commit(
            res,
            "DELETED" if meta.get("deletionTimestamp") and not meta.get("finalizers") else "MODIFIED",
            new,
            old,
        )
        return new, warnings

    def delete(self, res: ResourceDef, namespace: str | None, name: str) -> dict[str, Any] | None:
        """DELETE: gone at once (None), or marked for deletion while finalizers remain (the object)."""
        old = self.get(res, namespace, name)
        if not old["metadata"].get("finalizers"):
            self._commit(res, "DELETED", copy.deepcopy(old), old)
            return None
        if old["metadata"].get("deletionTimestamp"):
            return old
        new = copy.deepcopy(old)
        new["metadata"].update(deletionTimestamp=now_rfc3339(), deletionGracePeriodSeconds=0)
        self._commit(res, "MODIFIED", new, old)
        return new

    # Watching.

    def watch(
        self, res: ResourceDef, namespace: str | None, since: str, *, initial_end_bookmark: bool
    ) -> Watcher:
        """Subscribe, with a backlog: current state as ADDED (since "" or "0") or history after `since`.

        Raises 410 Gone when `since` is older than the kept history (clients re-list).
        """
        watcher = Watcher(res, namespace)
        if self._closed:
            watcher.queue.put_nowait(None)
            return watcher
        if since in ("", "0") or initial_end_bookmark:
            for obj in self.objects(res, namespace):
                watcher.queue.put_nowait(
                    Event(int(obj["metadata"]["resourceVersion"]), "ADDED", res.key, obj)
                )
            if initial_end_bookmark:
                end = bookmark(res, self.rv, initial_end=True)
                watcher.queue.put_nowait(Event(self.rv, "BOOKMARK", res.key, end))
        else:
            try:
                resume = int(since)
            except ValueError:
                raise errors.bad_request(f"invalid resourceVersion {since!r}") from None
            if resume < self._compacted:
                raise errors.gone(resume, self._compacted + 1)
            for event in self._history:
                if event.rv > resume:
                    watcher.offer(event)
        self._watchers.add(watcher)
        return watcher

    def watching(self, key: str) -> int:
        """How many watch streams of a resource are open (tests wait for clients to be watching)."""
        return sum(1 for watcher in self._watchers if watcher.key == key)

    def unwatch(self, watcher: Watcher) -> None:
        self._watchers.discard(watcher)

    def close(self) -> None:
        """End all watch streams (the HTTP server cannot stop while they are open)."""
        self._closed = True
        for watcher in self._watchers:
            watcher.queue.put_nowait(None)
        self._watchers.clear()

    # Internals.

    def _generate_name(self, res: ResourceDef, namespace: str | None, prefix: str) -> str:
        while True:
            name = prefix + "".join(random.choices(_GENERATED_NAME_CHARS, k=5))
            if (res.key, namespace, name) not in self._objects:
                return name

    def _admit(self, res: ResourceDef, obj: dict[str, Any], field_validation: str) -> list[str]:
        """Prune (unknown fields, then nulls) → default → validate, as the apiserver does for CRs."""
        warnings: list[str] = []
        causes = validate_metadata(obj["metadata"])
        if res.schema is not None:
            dropped = prune(obj, res.schema)
            if dropped and field_validation == "Strict":
                unknown = ", ".join(f'unknown field "{path}"' for path in dropped)
                raise errors.bad_request(
                    f'{res.kind} in version "{res.version}" cannot be handled as a {res.kind}:'
                    f" strict decoding error: {unknown}"
                )
            if field_validation != "Ignore":
                warnings += [f'unknown field "{path}"' for path in dropped]
            prune_nulls(obj, res.schema)
            apply_defaults(obj, res.schema)
            causes += self._validator(res).causes(obj)
        if res.key == CRD_KEY:
            causes += crd_causes(obj)
            if not causes:
                obj["status"] = crd_status(obj)
        if res.key == NAMESPACES_KEY:
            obj.setdefault("status", {}).setdefault("phase", "Active")
        if causes:
            raise errors.invalid(res.kind, res.group, str(obj["metadata"].get("name") or ""), causes)
        return warnings

    def _validator(self, res: ResourceDef) -> SchemaValidator:
        cached = self._validators.get(res.key)
        if cached is None or cached[0] is not res:
            assert res.schema is not None
            cached = self._validators[res.key] = (res, SchemaValidator(res.schema))
        return cached[1]

    def _commit(self, res: ResourceDef, kind: str, obj: dict[str, Any], old: dict[str, Any] | None) -> None:
        """Bump the rv, store, record and broadcast; then keep CRD registrations in sync."""
        self.rv += 1
        obj["metadata"]["resourceVersion"] = str(self.rv)
        key = (res.key, obj["metadata"].get("namespace"), obj["metadata"]["name"])
        if kind == "DELETED":
            del self._objects[key]
        else:
            self._objects[key] = obj
        event = Event(self.rv, kind, res.key, obj, old)
        if len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(event)
        for watcher in self._watchers:
            watcher.offer(event)
        if res.key == CRD_KEY and kind == "DELETED":
            for gone in self.registry.unregister_crd(obj["metadata"]["name"]):
                for orphan in list(self.objects(gone, None)):
                    self._commit(gone, "DELETED", copy.deepcopy(orphan), orphan)
        elif res.key == CRD_KEY:
            self.registry.register_crd(obj)
