"""The patch flavours clients send: JSON merge patch (kopf, kubectl apply), JSON patch (kopf's
finalizers, guarded by a `test` of resourceVersion) and server-side apply (kubectl --server-side).
"""

from __future__ import annotations

import copy
import json
from typing import Any

import jsonpatch
import jsonpointer
import yaml

from anklet.dev.kube import errors

MERGE = "application/merge-patch+json"
STRATEGIC = "application/strategic-merge-patch+json"
JSON_PATCH = "application/json-patch+json"
APPLY = "application/apply-patch+yaml"


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386: objects merge recursively, `null` deletes, anything else (lists too) replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def json_patch(target: dict[str, Any], operations: Any) -> dict[str, Any]:
    """RFC 6902. A failed `test` is 422, which kopf treats as "changed meanwhile, retry later"."""
    try:
        patch = jsonpatch.JsonPatch(operations)
        result = patch.apply(target)
    except jsonpatch.InvalidJsonPatch as exc:
        raise errors.bad_request(f"invalid JSON patch: {exc}") from exc
    except (jsonpatch.JsonPatchException, jsonpointer.JsonPointerException) as exc:
        message = f"the server rejected our request due to an error in our request: {exc}"
        raise errors.ApiError(422, "Invalid", message) from exc
    if not isinstance(result, dict):
        raise errors.bad_request("a JSON patch must leave an object")
    return result


def parse_body(content_type: str, raw: bytes) -> Any:
    """Apply patches are YAML (kubectl sends JSON, which is YAML too), as may be other bodies.

    Protobuf (sent by kubectl's typed generators, e.g. `kubectl create namespace x`) cannot be
    decoded without the built-in types' schemas: 415, so that `create -f`/`apply -f` are used instead.
    """
    if "protobuf" in content_type:
        message = "the emulated API server cannot decode protobuf; use `kubectl create -f` or `apply -f`"
        raise errors.ApiError(415, "UnsupportedMediaType", message)
    try:
        return yaml.safe_load(raw) if "yaml" in content_type else json.loads(raw or b"null")
    except (yaml.YAMLError, ValueError) as exc:
        raise errors.bad_request(f"cannot decode the request body: {exc}") from exc
