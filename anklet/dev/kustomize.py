"""Render a kustomization: `kubectl kustomize` when kubectl is there, else a small Python renderer.

The tests validate what `kubectl apply -k manifests/overlays/...` would send to a cluster, so they
need the rendered objects even on a machine without kubectl. The Python renderer covers exactly
the kustomize features `manifests/` uses — `resources` (files and directories), `namespace`,
`images`, `replicas`, `configMapGenerator` (with kustomize's name-suffix hash and the references
to it in pod templates) and `generatorOptions.disableNameSuffixHash` — and raises
`UnsupportedKustomization` for anything else rather than rendering something kustomize would not.
A test renders every overlay both ways and requires identical objects, which keeps it honest.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import yaml

Object = dict[str, Any]

KUSTOMIZATION_FILES = ("kustomization.yaml", "kustomization.yml", "Kustomization")
_SUPPORTED = {
    "apiVersion",
    "kind",
    "resources",
    "namespace",
    "images",
    "replicas",
    "configMapGenerator",
    "generatorOptions",
}
_GENERATOR_KEYS = {"name", "envs", "literals", "options"}
# Kinds without a namespace (the ones a deployment plausibly contains).
CLUSTER_SCOPED = frozenset(
    {
        "Namespace",
        "CustomResourceDefinition",
        "ClusterRole",
        "ClusterRoleBinding",
        "PersistentVolume",
        "StorageClass",
        "PriorityClass",
        "IngressClass",
        "RuntimeClass",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "APIService",
    }
)
_SCALABLE = frozenset({"Deployment", "StatefulSet", "ReplicaSet", "ReplicationController"})
_ENV_KEY = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")


class KustomizeError(RuntimeError):
    """The kustomization cannot be rendered (bad file, or kubectl failed)."""


class UnsupportedKustomization(KustomizeError):
    """A kustomize feature the Python renderer does not implement: use kubectl, or extend it."""


def render(path: Path, *, use_kubectl: bool | None = None, timeout: float = 60.0) -> list[Object]:
    """The objects of the kustomization at `path`; kubectl's renderer when available (or asked for)."""
    kubectl = shutil.which("kubectl")
    if use_kubectl is None:
        use_kubectl = kubectl is not None
    if not use_kubectl:
        return render_python(path)
    if kubectl is None:
        raise KustomizeError("kubectl is not on PATH")
    result = subprocess.run(
        [kubectl, "kustomize", str(path)], capture_output=True, text=True, timeout=timeout, check=False
    )
    if result.returncode != 0:
        raise KustomizeError(f"kubectl kustomize {path} failed: {result.stderr.strip()}")
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def render_python(path: Path) -> list[Object]:
    """kustomize's output for the features listed in the module docstring, in input order."""
    objects, generated = _build(path.resolve(), stack=())
    _fix_references(objects, generated)
    return objects


def _load_kustomization(directory: Path) -> Object:
    for name in KUSTOMIZATION_FILES:
        candidate = directory / name
        if candidate.is_file():
            data = yaml.safe_load(candidate.read_text()) or {}
            if not isinstance(data, dict):
                raise KustomizeError(f"{candidate}: not a mapping")
            unsupported = sorted(set(data) - _SUPPORTED)
            if unsupported:
                raise UnsupportedKustomization(f"{candidate}: {', '.join(unsupported)} not supported")
            return data
    raise KustomizeError(f"no kustomization file in {directory}")


def _build(directory: Path, stack: tuple[Path, ...]) -> tuple[list[Object], dict[tuple[str, str], str]]:
    """(objects, {(kind, original name): generated name}) of one kustomization, transformed."""
    if directory in stack:
        raise KustomizeError(f"kustomization cycle through {directory}")
    kustomization = _load_kustomization(directory)
    objects: list[Object] = []
    renamed: dict[tuple[str, str], str] = {}
    for entry in kustomization.get("resources") or []:
        target = (directory / str(entry)).resolve()
        if not target.is_relative_to(directory) and not target.is_dir():
            raise KustomizeError(f"{directory}: {entry} is outside the kustomization root")
        if target.is_dir():
            children, child_renamed = _build(target, (*stack, directory))
            objects.extend(children)
            renamed.update(child_renamed)
        elif target.is_file():
            objects.extend(doc for doc in yaml.safe_load_all(target.read_text()) if doc)
        else:
            raise KustomizeError(f"{directory}: resource {entry} not found")
    options = kustomization.get("generatorOptions") or {}
    if set(options) - {"disableNameSuffixHash"}:
        raise UnsupportedKustomization(f"{directory}: generatorOptions {sorted(options)}")
    for spec in kustomization.get("configMapGenerator") or []:
        obj = _generate(directory, spec)
        name = obj["metadata"]["name"]
        hashed = not (spec.get("options") or {}).get(
            "disableNameSuffixHash", options.get("disableNameSuffixHash", False)
        )
        if hashed:
            obj["metadata"]["name"] = f"{name}-{name_hash(obj)}"
            renamed[("ConfigMap", name)] = obj["metadata"]["name"]
        objects.append(obj)
    namespace = kustomization.get("namespace")
    if namespace:
        for obj in objects:
            _set_namespace(obj, str(namespace))
    for image in kustomization.get("images") or []:
        _set_image(objects, image)
    for replicas in kustomization.get("replicas") or []:
        _set_replicas(objects, replicas)
    return objects, renamed


def _generate(directory: Path, spec: Object) -> Object:
    unknown = set(spec) - _GENERATOR_KEYS
    if unknown or (spec.get("options") and set(spec["options"]) - {"disableNameSuffixHash"}):
        raise UnsupportedKustomization(f"{directory}: generator {spec.get('name')}: {sorted(unknown)}")
    if "name" not in spec:
        raise KustomizeError(f"{directory}: a generator needs a name")
    data: dict[str, str] = {}
    for env_file in spec.get("envs") or []:
        data.update(parse_env_file(directory / str(env_file)))
    for literal in spec.get("literals") or []:
        key, value = _key_value(str(literal), f"{directory}: literal")
        data[key] = value
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": str(spec["name"])}, "data": data}


def parse_env_file(path: Path) -> dict[str, str]:
    """KEY=value lines; blank lines and `#` comments skipped; the value is taken verbatim."""
    data: dict[str, str] = {}
    for number, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        key, value = _key_value(line, f"{path}:{number}")
        data[key] = value
    return data


def _key_value(text: str, where: str) -> tuple[str, str]:
    if "=" not in text:
        # kustomize would read the value from its own environment: never what a manifest wants.
        raise UnsupportedKustomization(f"{where}: {text.strip()!r} has no '='")
    key, value = text.split("=", 1)
    key = key.lstrip()
    if not _ENV_KEY.match(key):
        raise KustomizeError(f"{where}: invalid key {key!r}")
    return key, value


def name_hash(obj: Object) -> str:
    """kustomize's name suffix for a ConfigMap: sha256 of Go's JSON of kind and data, 10 chars.

    As kustomize 5 computes it: the name it hashes is always empty (its lookup of `metadata/name`
    misses), and Go's encoder escapes <, > and & in strings.
    """
    encoded: Object = {"kind": obj["kind"], "name": "", "data": obj.get("data") or ""}
    text = json.dumps(encoded, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    for char, escaped in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026")):
        text = text.replace(char, escaped)
    digest = hashlib.sha256(text.encode()).hexdigest()[:10]
    return digest.translate(str.maketrans("013ae", "ghkmt"))


def _set_namespace(obj: Object, namespace: str) -> None:
    if obj.get("kind") in CLUSTER_SCOPED:
        for subject in _service_account_subjects(obj):
            _check_subject(obj, subject, namespace)
        return
    obj.setdefault("metadata", {})["namespace"] = namespace
    for subject in _service_account_subjects(obj):
        _check_subject(obj, subject, namespace)


def _service_account_subjects(obj: Object) -> list[Object]:
    if obj.get("kind") not in ("RoleBinding", "ClusterRoleBinding"):
        return []
    return [s for s in obj.get("subjects") or [] if s.get("kind") == "ServiceAccount"]


def _check_subject(obj: Object, subject: Object, namespace: str) -> None:
    # kustomize rewrites some subjects' namespaces by rules that depend on the other objects; the
    # manifests spell them out instead, and this renderer only accepts that.
    if subject.get("namespace") != namespace:
        name = f"{obj['kind']} {obj.get('metadata', {}).get('name')}"
        raise UnsupportedKustomization(
            f"{name}: ServiceAccount subject {subject.get('name')} must name namespace {namespace}"
        )


def _containers(node: Any) -> Iterator[Object]:
    """Every container and init container anywhere in an object."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers") and isinstance(value, list):
                yield from (c for c in value if isinstance(c, dict))
            else:
                yield from _containers(value)
    elif isinstance(node, list):
        for item in node:
            yield from _containers(item)


def split_image(image: str) -> tuple[str, str, str]:
    """(name, tag, digest) of an image reference; a registry port is not a tag."""
    name, _, digest = image.partition("@")
    slash = name.rfind("/")
    colon = name.rfind(":")
    tag = ""
    if colon > slash:
        name, tag = name[:colon], name[colon + 1 :]
    return name, tag, digest


def _set_image(objects: list[Object], image: Object) -> None:
    unknown = set(image) - {"name", "newName", "newTag", "digest"}
    if unknown:
        raise UnsupportedKustomization(f"images: {sorted(unknown)}")
    for obj in objects:
        for container in _containers(obj):
            name, tag, digest = split_image(str(container.get("image", "")))
            if name != image["name"]:
                continue
            name = str(image.get("newName", name))
            if "digest" in image:
                container["image"] = f"{name}@{image['digest']}"
            elif "newTag" in image:
                container["image"] = f"{name}:{image['newTag']}"
            else:
                container["image"] = name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


def _set_replicas(objects: list[Object], replicas: Object) -> None:
    for obj in objects:
        if obj.get("kind") in _SCALABLE and obj.get("metadata", {}).get("name") == replicas["name"]:
            obj.setdefault("spec", {})["replicas"] = int(replicas["count"])


def _fix_references(objects: list[Object], renamed: dict[tuple[str, str], str]) -> None:
    """Point pod templates at the hashed names of generated ConfigMaps (all in one namespace here)."""

    def fix(ref: Object) -> None:
        new = renamed.get(("ConfigMap", str(ref.get("name"))))
        if new is not None:
            ref["name"] = new

    for obj in objects:
        for container in _containers(obj):
            for source in container.get("envFrom") or []:
                if "configMapRef" in source:
                    fix(source["configMapRef"])
            for env in container.get("env") or []:
                if "configMapKeyRef" in (env.get("valueFrom") or {}):
                    fix(env["valueFrom"]["configMapKeyRef"])
        for volume in _volumes(obj):
            if "configMap" in volume:
                fix(volume["configMap"])


def _volumes(node: Any) -> Iterator[Object]:
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "volumes" and isinstance(value, list):
                yield from (v for v in value if isinstance(v, dict))
            else:
                yield from _volumes(value)
    elif isinstance(node, list):
        for item in node:
            yield from _volumes(item)


def by_identity(objects: list[Object]) -> dict[tuple[str, str, str, str], Object]:
    """Objects keyed by (apiVersion, kind, namespace, name): what makes two renderings comparable."""
    keyed: dict[tuple[str, str, str, str], Object] = {}
    for obj in objects:
        meta = obj.get("metadata") or {}
        key = (
            obj.get("apiVersion", ""),
            obj.get("kind", ""),
            meta.get("namespace", ""),
            meta.get("name", ""),
        )
        if key in keyed:
            raise KustomizeError(f"{key} appears twice")
        keyed[key] = copy.deepcopy(obj)
    return keyed
