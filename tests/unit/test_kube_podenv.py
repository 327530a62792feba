"""anklet.dev.kube.podenv: a container's environment as the kubelet builds it."""

from __future__ import annotations

from typing import Any

import pytest

from anklet.dev.kube.podenv import EnvError, PodContext, container_argv, container_env, expand

POD = PodContext(
    name="p-0",
    namespace="ns",
    service_account="sa",
    secrets={"s": {"url": "redis://x", "token": "t"}},
    config_maps={"cfg": {"A": "from-cm", "B": "b", "bad key": "ignored"}},
)


def test_env_from_then_env_in_order_with_expansion() -> None:
    container: dict[str, Any] = {
        "envFrom": [{"configMapRef": {"name": "cfg"}}, {"prefix": "S_", "secretRef": {"name": "s"}}],
        "env": [
            {"name": "A", "value": "literal wins over envFrom"},
            {"name": "URL", "valueFrom": {"secretKeyRef": {"name": "s", "key": "url"}}},
            {"name": "POD", "valueFrom": {"fieldRef": {"fieldPath": "metadata.name"}}},
            {"name": "NS", "valueFrom": {"fieldRef": {"fieldPath": "metadata.namespace"}}},
            {"name": "JOINED", "value": "$(POD).$(NS) $(LATER) $$(POD)"},
            {"name": "LATER", "value": "x"},
            {
                "name": "MISSING",
                "valueFrom": {"secretKeyRef": {"name": "s", "key": "nope", "optional": True}},
            },
        ],
    }
    assert container_env(container, POD) == {
        "A": "literal wins over envFrom",
        "B": "b",
        "S_url": "redis://x",
        "S_token": "t",
        "URL": "redis://x",
        "POD": "p-0",
        "NS": "ns",
        "JOINED": "p-0.ns $(LATER) $(POD)",
        "LATER": "x",
    }


@pytest.mark.parametrize(
    "env",
    [
        pytest.param(
            {"name": "X", "valueFrom": {"secretKeyRef": {"name": "gone", "key": "k"}}}, id="no-secret"
        ),
        pytest.param({"name": "X", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}, id="no-key"),
        pytest.param(
            {"name": "X", "valueFrom": {"configMapKeyRef": {"name": "cfg", "key": "k"}}}, id="no-cm-key"
        ),
        pytest.param(
            {"name": "X", "valueFrom": {"resourceFieldRef": {"resource": "limits.cpu"}}}, id="unmodelled"
        ),
    ],
)
def test_a_missing_required_reference_stops_the_container(env: dict[str, Any]) -> None:
    with pytest.raises(EnvError):
        container_env({"env": [env]}, POD)


def test_optional_missing_sources_are_skipped() -> None:
    container = {"envFrom": [{"configMapRef": {"name": "gone", "optional": True}}]}
    assert container_env(container, POD) == {}
    with pytest.raises(EnvError, match="ConfigMap 'gone' not found"):
        container_env({"envFrom": [{"configMapRef": {"name": "gone"}}]}, POD)


def test_argv_is_command_then_args_expanded() -> None:
    container = {"command": ["sh", "-c"], "args": ["echo $(A) $(B)"]}
    assert container_argv(container, {"A": "1"}) == ["sh", "-c", "echo 1 $(B)"]
    assert container_argv({"args": ["controller"]}, {}) == ["controller"]


def test_expand_edge_cases() -> None:
    assert expand("$(", {}) == "$("
    assert expand("a$b", {"b": "x"}) == "a$b"
    assert expand("$$$$", {}) == "$$"
