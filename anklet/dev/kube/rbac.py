"""RBAC as kube-apiserver decides it, over plain (Cluster)Role and (Cluster)RoleBinding objects.

The emulator does not enforce RBAC (every request is served), but tests compare the accesses it
records (`anklet.dev.kube.audit`) with the Roles in `manifests/`: `Authorizer.allows` answers
"would a real cluster let this through?", and `Authorizer.unused` lists the granted permissions
that no recorded access needed (least privilege). The matching rules are those of
`k8s.io/component-helpers/auth/rbac` (verbs, API groups, `resource/subresource` and `*/sub`,
resourceNames, non-resource URLs with a trailing `*`); bindings of a Role only reach requests in
the binding's namespace. Pure functions over data: no I/O.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

from anklet.dev.kube.audit import Access

AUTHENTICATED = "system:authenticated"
# What every authenticated user may do on a real cluster (bootstrap ClusterRoles system:discovery
# and system:public-info-viewer, bound to system:authenticated): read discovery and health.
DISCOVERY_URLS = (
    "/api",
    "/api/*",
    "/apis",
    "/apis/*",
    "/healthz",
    "/livez",
    "/readyz",
    "/version",
    "/version/",
    "/openapi",
    "/openapi/*",
)


def service_account_user(namespace: str, name: str) -> str:
    """The user name a ServiceAccount's token authenticates as."""
    return f"system:serviceaccount:{namespace}:{name}"


def groups_of(user: str) -> frozenset[str]:
    """The groups the apiserver adds to an authenticated user (ServiceAccounts get two more)."""
    if user in ("system:anonymous", "system:unknown-token"):
        return frozenset({"system:unauthenticated"})
    groups = {AUTHENTICATED}
    parts = user.split(":")
    if len(parts) == 4 and parts[:2] == ["system", "serviceaccount"]:
        groups |= {"system:serviceaccounts", f"system:serviceaccounts:{parts[2]}"}
    return frozenset(groups)


@dataclasses.dataclass(frozen=True)
class Rule:
    """One PolicyRule."""

    verbs: tuple[str, ...]
    api_groups: tuple[str, ...] = ()
    resources: tuple[str, ...] = ()
    resource_names: tuple[str, ...] = ()
    non_resource_urls: tuple[str, ...] = ()

    @classmethod
    def from_dict(cls, rule: Mapping[str, Any]) -> Rule:
        return cls(
            verbs=tuple(rule.get("verbs") or ()),
            api_groups=tuple(rule.get("apiGroups") or ()),
            resources=tuple(rule.get("resources") or ()),
            resource_names=tuple(rule.get("resourceNames") or ()),
            non_resource_urls=tuple(rule.get("nonResourceURLs") or ()),
        )

    def allows(self, access: Access) -> bool:
        if not ("*" in self.verbs or access.verb in self.verbs):
            return False
        if not access.is_resource:
            return any(_url_matches(pattern, access.path) for pattern in self.non_resource_urls)
        if not ("*" in self.api_groups or access.api_group in self.api_groups):
            return False
        if not any(_resource_matches(r, access.resource, access.subresource) for r in self.resources):
            return False
        return not self.resource_names or access.name in self.resource_names

    def items(self) -> Iterator[Rule]:
        """The rule split into single-verb, single-resource (single-name) rules."""
        for verb in self.verbs:
            for url in self.non_resource_urls:
                yield Rule(verbs=(verb,), non_resource_urls=(url,))
            for group in self.api_groups:
                for resource in self.resources:
                    for name in self.resource_names or ("",):
                        yield Rule((verb,), (group,), (resource,), (name,) if name else ())


def _resource_matches(rule_resource: str, resource: str, subresource: str) -> bool:
    combined = f"{resource}/{subresource}" if subresource else resource
    if rule_resource in ("*", combined):
        return True
    return bool(subresource) and rule_resource == f"*/{subresource}"


def _url_matches(pattern: str, path: str) -> bool:
    if pattern in ("*", path):
        return True
    return pattern.endswith("*") and path.startswith(pattern[:-1])


@dataclasses.dataclass(frozen=True)
class Grant:
    """A rule as bound to a subject: cluster-wide (`namespace` None) or within one namespace."""

    rule: Rule
    namespace: str | None
    source: str  # e.g. "ClusterRole/anklet-controller via ClusterRoleBinding/anklet-controller"

    def allows(self, access: Access) -> bool:
        if self.namespace is not None and (not access.is_resource or access.namespace != self.namespace):
            return False
        return self.rule.allows(access)


class RBACError(ValueError):
    """The RBAC objects are inconsistent (e.g. a binding names a role that does not exist)."""


class Authorizer:
    """The RBAC decisions of a cluster holding `objects` (other kinds are ignored)."""

    def __init__(self, objects: Iterable[Mapping[str, Any]], *, bootstrap: bool = True) -> None:
        self._cluster_roles: dict[str, list[Rule]] = {}
        self._roles: dict[tuple[str, str], list[Rule]] = {}
        self._bindings: list[Mapping[str, Any]] = []
        for obj in objects:
            kind, meta = obj.get("kind"), obj.get("metadata") or {}
            rules = [Rule.from_dict(r) for r in obj.get("rules") or []]
            if kind == "ClusterRole":
                if obj.get("aggregationRule"):
                    raise RBACError(f"ClusterRole {meta.get('name')}: aggregation is not modelled")
                self._cluster_roles[meta["name"]] = rules
            elif kind == "Role":
                self._roles[(meta.get("namespace", "default"), meta["name"])] = rules
            elif kind in ("ClusterRoleBinding", "RoleBinding"):
                self._bindings.append(obj)
        self._bootstrap = [Rule(verbs=("get",), non_resource_urls=DISCOVERY_URLS)] if bootstrap else []

    def grants(self, user: str) -> list[Grant]:
        """Every rule bound to `user` (directly, or through its groups), with its scope."""
        groups = groups_of(user)
        found = [
            Grant(rule, None, "bootstrap discovery") for rule in self._bootstrap if AUTHENTICATED in groups
        ]
        for binding in self._bindings:
            if not any(_subject_matches(s, user, groups) for s in binding.get("subjects") or []):
                continue
            meta, ref = binding.get("metadata") or {}, binding.get("roleRef") or {}
            namespace = meta.get("namespace", "default") if binding["kind"] == "RoleBinding" else None
            if ref.get("kind") == "ClusterRole":
                rules = self._cluster_roles.get(ref.get("name", ""))
            elif ref.get("kind") == "Role" and namespace is not None:
                rules = self._roles.get((namespace, ref.get("name", "")))
            else:
                rules = None
            if rules is None:
                raise RBACError(f"{binding['kind']} {meta.get('name')} refers to a missing {ref}")
            source = f"{ref['kind']}/{ref['name']} via {binding['kind']}/{meta.get('name')}"
            found.extend(Grant(rule, namespace, source) for rule in rules)
        return found

    def allows(self, access: Access) -> bool:
        return any(grant.allows(access) for grant in self.grants(access.user))

    def unused(self, user: str, accesses: Iterable[Access]) -> list[tuple[Grant, Rule]]:
        """Granted (binding, single-verb item) pairs that none of `accesses` needed.

        The bootstrap discovery rules are left out: every authenticated user has them anyway.
        """
        mine = [a for a in accesses if a.user == user]
        unused = []
        for grant in self.grants(user):
            if grant.source == "bootstrap discovery":
                continue
            for item in grant.rule.items():
                scoped = Grant(item, grant.namespace, grant.source)
                if not any(scoped.allows(a) for a in mine):
                    unused.append((grant, item))
        return unused


def _subject_matches(subject: Mapping[str, Any], user: str, groups: frozenset[str]) -> bool:
    kind, name = subject.get("kind"), str(subject.get("name", ""))
    if kind == "ServiceAccount":
        return service_account_user(str(subject.get("namespace", "")), name) == user
    if kind == "User":
        return name == user
    if kind == "Group":
        return name in groups
    return False
