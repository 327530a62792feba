"""OpenAPI v3 documents: kubectl needs them for `apply`/`create` validation and for `explain`.

kubectl's default `--validate=strict` first downloads `/openapi/v3`; when the GroupVersion document
has a `patch` operation for the kind with a `fieldValidation` parameter, kubectl leaves validation to
the server (`?fieldValidation=Strict`). `explain` reads `components.schemas`, found by the
`x-kubernetes-group-version-kind` extension. Strategic merge is deliberately not listed as a patch
content type: kubectl would then send strategic-merge patches, which CRs do not support.
"""

from __future__ import annotations

import copy
import hashlib
import json
from collections.abc import Iterable
from typing import Any

from anklet.dev.kube.resources import ResourceDef

OBJECT_META = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta"
PATCH = "io.k8s.apimachinery.pkg.apis.meta.v1.Patch"
_STRING = {"type": "string"}
_STRING_MAP = {"type": "object", "additionalProperties": _STRING}
_OBJECT_META_SCHEMA = {
    "type": "object",
    "description": "Standard object metadata that all persisted resources must have.",
    "properties": {
        "name": {**_STRING, "description": "Name must be unique within a namespace."},
        "generateName": {**_STRING, "description": "Prefix for a server-generated name."},
        "namespace": {
            **_STRING,
            "description": "Namespace defines the space within which the name is unique.",
        },
        "labels": {**_STRING_MAP, "description": "Map of string keys and values for selecting objects."},
        "annotations": {**_STRING_MAP, "description": "Unstructured key-value map stored with a resource."},
        "finalizers": {"type": "array", "items": _STRING, "description": "Must be empty before deletion."},
        "uid": {**_STRING, "description": "Unique in time and space value for this object."},
        "resourceVersion": {**_STRING, "description": "Opaque version for optimistic concurrency."},
        "generation": {"type": "integer", "description": "Sequence number of the desired state."},
        "creationTimestamp": {
            **_STRING,
            "format": "date-time",
            "description": "When the object was created.",
        },
        "deletionTimestamp": {
            **_STRING,
            "format": "date-time",
            "description": "When deletion was requested.",
        },
    },
}
_META_PROPERTIES = {
    "apiVersion": {**_STRING, "description": "APIVersion defines the versioned schema of this object."},
    "kind": {**_STRING, "description": "Kind is a string value representing the REST resource."},
    "metadata": {
        "allOf": [{"$ref": f"#/components/schemas/{OBJECT_META}"}],
        "description": "Standard object's metadata.",
    },
}


def gv_path(group: str, version: str) -> str:
    """The key of a GroupVersion in the v3 root: `api/v1` or `apis/{group}/{version}`."""
    return f"apis/{group}/{version}" if group else f"api/{version}"


def schema_name(res: ResourceDef) -> str:
    """Reverse-domain definition names, as the apiserver publishes them (`dev.anklet.v1alpha1.AnkaJob`)."""
    prefix = ".".join(reversed(res.group.split("."))) if res.group else "io.k8s.api.core"
    return f"{prefix}.{res.version}.{res.kind}"


def _resource_schema(res: ResourceDef) -> dict[str, Any]:
    fallback = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
    schema: dict[str, Any] = copy.deepcopy(dict(res.schema or fallback))
    schema["properties"] = {**schema.get("properties", {}), **_META_PROPERTIES}
    schema["x-kubernetes-group-version-kind"] = [
        {"group": res.group, "version": res.version, "kind": res.kind}
    ]
    return schema


def _patch_path(res: ResourceDef) -> tuple[str, dict[str, Any]]:
    scope = "namespaces/{namespace}/" if res.namespaced else ""
    path = f"/{gv_path(res.group, res.version)}/{scope}{res.plural}/{{name}}"
    body = {"schema": {"$ref": f"#/components/schemas/{PATCH}"}}
    reply = {"schema": {"$ref": f"#/components/schemas/{schema_name(res)}"}}
    operation = {
        "operationId": f"patch{res.kind}",
        "x-kubernetes-action": "patch",
        "x-kubernetes-group-version-kind": {"group": res.group, "version": res.version, "kind": res.kind},
        "parameters": [
            {"name": name, "in": "query", "schema": {"type": "string", "uniqueItems": True}}
            for name in ("dryRun", "fieldManager", "fieldValidation", "force")
        ],
        "requestBody": {
            "content": {
                "application/json-patch+json": body,
                "application/merge-patch+json": body,
                "application/apply-patch+yaml": body,
            },
        },
        "responses": {"200": {"description": "OK", "content": {"application/json": reply}}},
    }
    return path, {"patch": operation}


def group_version_document(
    resources: Iterable[ResourceDef], group: str, version: str
) -> dict[str, Any] | None:
    """`/openapi/v3/apis/{g}/{v}`: patch operations and schemas of that GroupVersion's resources."""
    served = [res for res in resources if (res.group, res.version) == (group, version)]
    if not served:
        return None
    schemas: dict[str, Any] = {
        OBJECT_META: _OBJECT_META_SCHEMA,
        PATCH: {"type": "object", "description": "A patch."},
    }
    schemas.update({schema_name(res): _resource_schema(res) for res in served})
    return {
        "openapi": "3.0.0",
        "info": {"title": "Kubernetes", "version": "v1.32.4"},
        "paths": dict(_patch_path(res) for res in served),
        "components": {"schemas": schemas},
    }


def root_document(resources: Iterable[ResourceDef]) -> dict[str, Any]:
    """`/openapi/v3`: one entry per GroupVersion; the hash changes when the document does (cache-busting)."""
    resources = list(resources)
    paths: dict[str, Any] = {}
    for group, version in dict.fromkeys((res.group, res.version) for res in resources):
        document = group_version_document(resources, group, version)
        digest = hashlib.sha256(json.dumps(document, sort_keys=True).encode()).hexdigest().upper()
        key = gv_path(group, version)
        paths[key] = {"serverRelativeURL": f"/openapi/v3/{key}?hash={digest}"}
    return {"paths": paths}
