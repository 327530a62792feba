"""anklet.dev.kube.rbac: kube-apiserver's RBAC decisions over plain objects."""

from __future__ import annotations

from typing import Any

import pytest

from anklet.dev.kube.audit import Access
from anklet.dev.kube.rbac import Authorizer, RBACError, Rule, groups_of, service_account_user

SA = service_account_user("sys", "ctl")


def _objects(*rules: dict[str, Any], namespaced: bool = False) -> list[dict[str, Any]]:
    kind = "Role" if namespaced else "ClusterRole"
    meta = {"name": "r", **({"namespace": "sys"} if namespaced else {})}
    binding_meta = {"name": "b", **({"namespace": "sys"} if namespaced else {})}
    return [
        {"kind": kind, "metadata": meta, "rules": list(rules)},
        {
            "kind": "RoleBinding" if namespaced else "ClusterRoleBinding",
            "metadata": binding_meta,
            "roleRef": {"kind": kind, "name": "r"},
            "subjects": [{"kind": "ServiceAccount", "name": "ctl", "namespace": "sys"}],
        },
    ]


def _access(verb: str, resource: str = "ankajobs", **extra: str) -> Access:
    return Access(user=SA, verb=verb, api_group=extra.pop("group", "anklet.dev"), resource=resource, **extra)


JOBS = {"apiGroups": ["anklet.dev"], "resources": ["ankajobs"], "verbs": ["list", "watch"]}


@pytest.mark.parametrize(
    ("rule", "access", "allowed"),
    [
        pytest.param(JOBS, _access("list"), True, id="granted"),
        pytest.param(JOBS, _access("get"), False, id="other-verb"),
        pytest.param(JOBS, _access("list", "ankahosts"), False, id="other-resource"),
        pytest.param(JOBS, _access("list", group="other.dev"), False, id="other-group"),
        pytest.param(JOBS, _access("list", subresource="status"), False, id="subresource-not-implied"),
        pytest.param(
            {"apiGroups": ["anklet.dev"], "resources": ["ankajobs/status"], "verbs": ["patch"]},
            _access("patch", subresource="status"),
            True,
            id="subresource",
        ),
        pytest.param(
            {"apiGroups": ["*"], "resources": ["*/status"], "verbs": ["*"]},
            _access("patch", subresource="status"),
            True,
            id="wildcards",
        ),
        pytest.param(
            {
                "apiGroups": ["anklet.dev"],
                "resources": ["ankajobs"],
                "resourceNames": ["x"],
                "verbs": ["get"],
            },
            _access("get", name="y"),
            False,
            id="resource-name",
        ),
        pytest.param(
            {"nonResourceURLs": ["/metrics"], "verbs": ["get"]},
            Access(user=SA, verb="get", path="/metrics"),
            True,
            id="non-resource",
        ),
        pytest.param(
            JOBS,
            Access(user="someone-else", verb="list", api_group="anklet.dev", resource="ankajobs"),
            False,
            id="not-bound",
        ),
    ],
)
def test_cluster_role_decisions(rule: dict[str, Any], access: Access, allowed: bool) -> None:
    assert Authorizer(_objects(rule)).allows(access) is allowed


def test_a_role_binding_reaches_only_its_namespace() -> None:
    authorizer = Authorizer(_objects(JOBS, namespaced=True))
    assert authorizer.allows(_access("list", namespace="sys"))
    assert not authorizer.allows(_access("list", namespace="other"))
    assert not authorizer.allows(_access("list")), "all namespaces is more than one"


def test_everyone_authenticated_may_read_discovery() -> None:
    authorizer = Authorizer([])
    assert authorizer.allows(Access(user=SA, verb="get", path="/apis/anklet.dev/v1alpha1"))
    assert not authorizer.allows(Access(user=SA, verb="get", path="/metrics"))
    assert not authorizer.allows(Access(user="system:anonymous", verb="get", path="/apis"))


def test_groups() -> None:
    assert groups_of(SA) == {"system:authenticated", "system:serviceaccounts", "system:serviceaccounts:sys"}
    assert groups_of("alice") == {"system:authenticated"}


def test_unused_lists_each_verb_nobody_needed() -> None:
    authorizer = Authorizer(_objects(JOBS, {"apiGroups": [""], "resources": ["events"], "verbs": ["create"]}))
    unused = authorizer.unused(SA, [_access("list", namespace="x"), _access("get")])
    assert [item for _, item in unused] == [
        Rule(verbs=("watch",), api_groups=("anklet.dev",), resources=("ankajobs",)),
        Rule(verbs=("create",), api_groups=("",), resources=("events",)),
    ]


def test_a_binding_to_a_missing_role_is_an_error() -> None:
    objects = _objects(JOBS)[1:]
    with pytest.raises(RBACError, match="missing"):
        Authorizer(objects).grants(SA)
