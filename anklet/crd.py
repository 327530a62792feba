"""Generate the AnkaJob CustomResourceDefinition from the pydantic models.

Kubernetes wants a *structural* OpenAPI v3 schema: no `$ref`, no `anyOf` with null, every
object typed. pydantic emits JSON Schema with references and nullable unions, so this module
inlines and simplifies it. A unit test regenerates the CRD and fails when `crds/` drifts.
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel

from anklet import models

_DROP_KEYS = {"title", "$defs"}


def _structural(node: Any, defs: dict[str, Any]) -> Any:
    if isinstance(node, list):
        return [_structural(item, defs) for item in node]
    if not isinstance(node, dict):
        return node
    if "$ref" in node:
        target = copy.deepcopy(defs[node["$ref"].rsplit("/", 1)[-1]])
        extra = {k: v for k, v in node.items() if k != "$ref"}
        return _structural({**target, **extra}, defs)
    if "anyOf" in node:
        branches = [b for b in node["anyOf"] if b.get("type") != "null"]
        rest = {k: v for k, v in node.items() if k != "anyOf"}
        if len(branches) == 1:
            return _structural({**branches[0], **rest}, defs)
    out: dict[str, Any] = {}
    for key, value in node.items():
        if key in _DROP_KEYS:
            continue
        if key == "default" and value is None:
            continue
        if key == "properties":
            out[key] = {name: _structural(sub, defs) for name, sub in value.items()}
        else:
            out[key] = _structural(value, defs)
    if out.get("format") == "date-time":
        out["type"] = "string"
    if out.get("type") == "object" and "properties" not in out and "additionalProperties" not in out:
        out["x-kubernetes-preserve-unknown-fields"] = True
    if "x-kubernetes-preserve-unknown-fields" in out or "properties" in out:
        # Kubernetes forbids properties beside additionalProperties; unknown fields are pruned.
        out.pop("additionalProperties", None)
    return out


def model_schema(model: type[BaseModel]) -> dict[str, Any]:
    """The structural schema of one model, with aliases as field names."""
    raw = model.model_json_schema(by_alias=True, mode="validation")
    result: dict[str, Any] = _structural(raw, raw.get("$defs", {}))
    return result


def _crd(
    *,
    kind: str,
    plural: str,
    singular: str,
    short_names: list[str],
    scope: str,
    spec: type[BaseModel],
    status: type[BaseModel],
    columns: list[dict[str, Any]],
    spec_required: bool,
) -> dict[str, Any]:
    status_schema = model_schema(status)
    # The status is written by the controller and by kopf's own bookkeeping (status.kopf).
    status_schema["x-kubernetes-preserve-unknown-fields"] = True
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": model_schema(spec),
            "status": status_schema,
        },
    }
    if spec_required:
        schema["required"] = ["spec"]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": f"{plural}.{models.GROUP}"},
        "spec": {
            "group": models.GROUP,
            "scope": scope,
            "names": {
                "kind": kind,
                "listKind": f"{kind}List",
                "plural": plural,
                "singular": singular,
                "shortNames": list(short_names),
                "categories": ["anklet"],
            },
            "versions": [
                {
                    "name": models.VERSION,
                    "served": True,
                    "storage": True,
                    "subresources": {"status": {}},
                    "additionalPrinterColumns": columns,
                    "schema": {"openAPIV3Schema": schema},
                }
            ],
        },
    }


def build_crd() -> dict[str, Any]:
    """The whole CRD object for AnkaJob."""
    columns: list[dict[str, Any]] = [
        {"name": "Phase", "type": "string", "jsonPath": ".status.phase"},
        {"name": "Host", "type": "string", "jsonPath": ".status.host"},
        {"name": "Template", "type": "string", "jsonPath": ".spec.template"},
        {"name": "Tag", "type": "string", "jsonPath": ".spec.tag"},
        {"name": "Exit", "type": "integer", "jsonPath": ".status.exitCode", "priority": 1},
        {"name": "Reason", "type": "string", "jsonPath": ".status.reason", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        kind=models.KIND,
        plural=models.PLURAL,
        singular=models.SINGULAR,
        short_names=models.SHORT_NAMES,
        scope="Namespaced",
        spec=models.AnkaJobSpec,
        status=models.AnkaJobStatus,
        columns=columns,
        spec_required=True,
    )


def build_host_crd() -> dict[str, Any]:
    """The whole CRD object for AnkaHost (cluster-scoped: a Mac belongs to no namespace)."""
    columns: list[dict[str, Any]] = [
        {"name": "Ready", "type": "boolean", "jsonPath": ".status.ready"},
        {"name": "VMs", "type": "string", "jsonPath": ".status.vms"},
        {"name": "CPU", "type": "string", "jsonPath": ".status.cpu"},
        {"name": "Memory", "type": "string", "jsonPath": ".status.memory"},
        {"name": "Cordoned", "type": "boolean", "jsonPath": ".spec.unschedulable", "priority": 1},
        {"name": "Anka", "type": "string", "jsonPath": ".status.ankaVersion", "priority": 1},
        {"name": "Pulling", "type": "string", "jsonPath": ".status.pulling.template", "priority": 1},
        {"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"},
    ]
    return _crd(
        kind=models.HOST_KIND,
        plural=models.HOST_PLURAL,
        singular=models.HOST_SINGULAR,
        short_names=models.HOST_SHORT_NAMES,
        scope="Cluster",
        spec=models.AnkaHostSpec,
        status=models.AnkaHostStatus,
        columns=columns,
        spec_required=False,
    )


HEADER = "# Generated from anklet/models.py by `make crds`; do not edit by hand.\n"
ROOT = Path(__file__).resolve().parent.parent
CRD_DIR = ROOT / "crds"
CRD_PATH = CRD_DIR / "ankajob.yaml"
HOST_CRD_PATH = CRD_DIR / "ankahost.yaml"
# kustomize refuses files outside its root, so manifests/base carries identical copies.
MANIFEST_CRD_DIR = ROOT / "manifests" / "base" / "crds"


def all_crds() -> list[dict[str, Any]]:
    return [build_crd(), build_host_crd()]


def render(crd: dict[str, Any] | None = None) -> str:
    return HEADER + yaml.safe_dump(crd if crd is not None else build_crd(), sort_keys=False, width=100)


def files() -> dict[Path, str]:
    """Every generated file: crds/ and its copies in manifests/base/crds/ (the drift check covers both)."""
    generated = {CRD_PATH: render(build_crd()), HOST_CRD_PATH: render(build_host_crd())}
    copies = {MANIFEST_CRD_DIR / path.name: text for path, text in generated.items()}
    return {**generated, **copies}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Write or check crds/*.yaml and manifests/base/crds/*.yaml.")
    parser.add_argument("--check", action="store_true", help="fail when a file is out of date")
    args = parser.parse_args(argv)
    stale = 0
    for path, text in files().items():
        if args.check:
            if not path.exists() or path.read_text() != text:
                print(f"{path} is out of date; run `make crds`", file=sys.stderr)
                stale += 1
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return 1 if stale else 0


if __name__ == "__main__":
    raise SystemExit(main())
