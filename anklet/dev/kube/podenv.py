"""A container's environment and command line as the kubelet builds them from a pod spec.

Tests start the controller and the receiver with exactly the environment and arguments the
Deployments in `manifests/` would give them (so a misspelt setting name or a missing Secret key
shows up as a failing process, not in production). The rules follow the kubelet: `envFrom`
first (later sources win), then `env` in order, where `$(VAR)` refers to variables defined
before it (`$$` is a literal `$`; an unknown reference stays as written); a missing Secret or
ConfigMap (or key) is an error unless the reference is `optional`. Pure functions over data.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any

_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class EnvError(LookupError):
    """The pod could not start: the kubelet would report CreateContainerConfigError."""


@dataclasses.dataclass(frozen=True)
class PodContext:
    """What a container's references resolve against: its pod and the objects in its namespace."""

    name: str
    namespace: str
    service_account: str = "default"
    secrets: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)  # decoded values
    config_maps: Mapping[str, Mapping[str, str]] = dataclasses.field(default_factory=dict)

    def field(self, path: str) -> str:
        values = {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "spec.serviceAccountName": self.service_account,
        }
        if path not in values:
            raise EnvError(f"fieldRef {path} is not modelled")
        return values[path]


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' `$(VAR)` expansion."""
    out: list[str] = []
    i = 0
    while i < len(text):
        if text.startswith("$$", i):
            out.append("$")
            i += 2
        elif text.startswith("$(", i) and (end := text.find(")", i + 2)) != -1:
            name = text[i + 2 : end]
            out.append(env[name] if name in env else text[i : end + 1])
            i = end + 1
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def _lookup(
    store: Mapping[str, Mapping[str, str]], kind: str, ref: Mapping[str, Any], key: str | None
) -> str | Mapping[str, str] | None:
    """The object's data (key None) or one value; None when missing and optional."""
    name = str(ref.get("name", ""))
    data = store.get(name)
    if data is None or (key is not None and key not in data):
        if ref.get("optional"):
            return None
        what = f"{kind} {name!r}" if data is None else f"key {key!r} in {kind} {name!r}"
        raise EnvError(f"{what} not found")
    return data if key is None else data[key]


def container_env(container: Mapping[str, Any], pod: PodContext) -> dict[str, str]:
    """The environment variables the container starts with (besides the image's own)."""
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = str(source.get("prefix", ""))
        if "configMapRef" in source:
            data = _lookup(pod.config_maps, "ConfigMap", source["configMapRef"], None)
        elif "secretRef" in source:
            data = _lookup(pod.secrets, "Secret", source["secretRef"], None)
        else:
            raise EnvError(f"envFrom source {sorted(source)} is not modelled")
        if isinstance(data, Mapping):
            env.update({prefix + k: v for k, v in data.items() if _ENV_NAME.match(prefix + k)})
    for item in container.get("env") or []:
        name = str(item["name"])
        if "valueFrom" not in item:
            env[name] = expand(str(item.get("value", "")), env)
            continue
        value_from = item["valueFrom"]
        value: str | Mapping[str, str] | None
        if "fieldRef" in value_from:
            value = pod.field(str(value_from["fieldRef"]["fieldPath"]))
        elif "secretKeyRef" in value_from:
            ref = value_from["secretKeyRef"]
            value = _lookup(pod.secrets, "Secret", ref, str(ref["key"]))
        elif "configMapKeyRef" in value_from:
            ref = value_from["configMapKeyRef"]
            value = _lookup(pod.config_maps, "ConfigMap", ref, str(ref["key"]))
        else:
            raise EnvError(f"env {name}: valueFrom {sorted(value_from)} is not modelled")
        if isinstance(value, str):
            env[name] = value
    return env


def container_argv(container: Mapping[str, Any], env: Mapping[str, str]) -> list[str]:
    """command + args after expansion (without `command`, the image's entrypoint goes first)."""
    return [
        expand(str(part), env) for part in [*(container.get("command") or []), *(container.get("args") or [])]
    ]
