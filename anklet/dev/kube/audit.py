"""Who asked the emulated API for what, in the terms RBAC decides on.

kube-apiserver turns every request into authorization attributes (user, verb, API group,
resource, subresource, namespace, name; or a non-resource path) before RBAC sees it. The
emulator does the same here so tests can compare what our components *actually* call with the
Roles the manifests grant them: `request_attributes` is the pure mapping (mirroring the
apiserver's RequestInfo rules), `RequestRecorder` keeps the distinct accesses per user.

Users come from bearer tokens: `RequestRecorder.token_for(user)` mints a token for a user name
(e.g. `system:serviceaccount:anklet-system:anklet-controller`), which a kubeconfig then carries,
as a ServiceAccount token would in a pod. Requests without a token are `system:anonymous`.
"""

from __future__ import annotations

import dataclasses
import secrets
import threading
from collections import Counter
from collections.abc import Mapping

ANONYMOUS = "system:anonymous"
UNKNOWN = "system:unknown-token"
# The apiserver's namespace subresources: `namespaces/x/status` is namespace x's status.
_NAMESPACE_SUBRESOURCES = frozenset({"status", "finalize"})
_VERBS = {
    "POST": "create",
    "GET": "get",
    "HEAD": "get",
    "PUT": "update",
    "PATCH": "patch",
    "DELETE": "delete",
}
DEFAULT_LIMIT = 50_000


@dataclasses.dataclass(frozen=True, order=True)
class Access:
    """One request's authorization attributes.

    Resource requests have `resource` set (and `path` empty); non-resource requests (discovery,
    /version, /healthz, OpenAPI) have only `verb` (the lower-cased method) and `path`.
    """

    user: str
    verb: str
    api_group: str = ""
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""

    @property
    def is_resource(self) -> bool:
        return bool(self.resource)


def request_attributes(method: str, path: str, query: Mapping[str, str], user: str) -> Access:
    """The attributes kube-apiserver's RequestInfo derives from a request (pure).

    `GET` on a collection is `list`, or `watch` with `watch=true` (or the legacy `/watch/`
    prefix); `DELETE` on a collection is `deletecollection`. A list or watch narrowed by
    `fieldSelector=metadata.name=x` carries the name, so `resourceNames` rules apply to it.
    """
    parts = [part for part in path.split("/") if part]
    verb = _VERBS.get(method.upper(), method.lower())
    if len(parts) >= 2 and parts[0] == "api":
        group, rest = "", parts[2:]
    elif len(parts) >= 3 and parts[0] == "apis":
        group, rest = parts[1], parts[3:]
    else:
        return Access(user=user, verb=method.lower(), path=path or "/")
    if not rest:  # /api/v1, /apis/g/v: discovery documents
        return Access(user=user, verb=method.lower(), path=path)
    watching = False
    if rest[0] == "watch":
        watching, rest = True, rest[1:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 1:
        namespace = rest[1]
        if len(rest) > 2 and rest[2] not in _NAMESPACE_SUBRESOURCES:
            rest = rest[2:]
    if not rest:
        return Access(user=user, verb=method.lower(), path=path)
    resource = rest[0]
    name = rest[1] if len(rest) > 1 else ""
    subresource = "/".join(rest[2:])
    if not name:
        if verb == "get":
            verb = "watch" if watching or query.get("watch") in ("true", "1") else "list"
            selector = query.get("fieldSelector", "")
            if selector.startswith("metadata.name=") and "," not in selector:
                name = selector.removeprefix("metadata.name=")
        elif verb == "delete":
            verb = "deletecollection"
    elif watching:
        verb = "watch"
    return Access(
        user=user,
        verb=verb,
        api_group=group,
        resource=resource,
        subresource=subresource,
        namespace=namespace,
        name=name,
    )


class RequestRecorder:
    """Distinct accesses per user, with how often each happened.

    Bounded: after `limit` distinct accesses new ones are counted in `dropped` instead (a long
    dev stack creates many object names); tests assert that `dropped` stays 0.
    Thread-safe, since tests read it from another thread than the server's loop.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._tokens: dict[str, str] = {}
        self._seen: Counter[Access] = Counter()
        self._lock = threading.Lock()
        self.limit = limit
        self.dropped = 0

    def token_for(self, user: str) -> str:
        """A fresh bearer token that authenticates as `user` (kept in memory only)."""
        token = secrets.token_urlsafe(24)
        with self._lock:
            self._tokens[token] = user
        return token

    def user_of(self, authorization: str | None) -> str:
        if not authorization:
            return ANONYMOUS
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer":
            return UNKNOWN
        with self._lock:
            return self._tokens.get(token.strip(), UNKNOWN)

    def record(self, method: str, path: str, query: Mapping[str, str], authorization: str | None) -> Access:
        access = request_attributes(method, path, query, self.user_of(authorization))
        with self._lock:
            if access in self._seen or len(self._seen) < self.limit:
                self._seen[access] += 1
            else:
                self.dropped += 1
        return access

    def accesses(self, user: str | None = None) -> dict[Access, int]:
        """A copy of what was recorded (for one user, or everyone), with counts."""
        with self._lock:
            return {a: n for a, n in self._seen.items() if user is None or a.user == user}

    def clear(self) -> None:
        with self._lock:
            self._seen.clear()
            self.dropped = 0
