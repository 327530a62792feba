"""What kube-apiserver does with a CRD's `openAPIV3Schema` on every write: prune, default, validate.

Order as in the apiserver: unknown fields are pruned (reported per `fieldValidation`), `default`s
are filled in, then the object is validated and every violation becomes a 422 cause with the
apiserver's reasons (`FieldValueRequired`, `FieldValueTypeInvalid`, ...), which kubectl prints.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Mapping, MutableMapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]

# Not part of a CR's schema: the apiserver handles these itself.
_ROOT_MANAGED = ("apiVersion", "kind", "metadata")
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_GO_TYPES = {bool: "boolean", int: "integer", float: "number", str: "string", list: "array", dict: "object"}


def _to_jsonschema(schema: Mapping[str, Any]) -> dict[str, Any]:
    """OpenAPI v3 → JSON Schema draft 4: `nullable` and int-or-string have no direct equivalent."""
    result: dict[str, Any] = {}
    for key, value in schema.items():
        if key in ("properties", "patternProperties") and isinstance(value, Mapping):
            result[key] = {name: _to_jsonschema(sub) for name, sub in value.items()}
        elif key in ("items", "additionalProperties", "not") and isinstance(value, Mapping):
            result[key] = _to_jsonschema(value)
        elif key in ("allOf", "anyOf", "oneOf") and isinstance(value, list):
            result[key] = [_to_jsonschema(sub) for sub in value]
        elif key != "nullable" and not key.startswith("x-"):
            result[key] = value
    if schema.get("x-kubernetes-int-or-string"):
        result.pop("type", None)
        result["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if schema.get("nullable") and isinstance(result.get("type"), str):
        result["type"] = [result["type"], "null"]
    return result


def _field(path: list[str | int]) -> str:
    """`spec.mounts[0].name`: the apiserver's field path notation."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _go_type(value: Any) -> str:
    return "null" if value is None else _GO_TYPES.get(type(value), "object")


def _cause(error: jsonschema.ValidationError) -> list[dict[str, str]]:
    """One jsonschema error as the apiserver's cause(s): kubectl prints `* field: message` per cause."""
    path = list(error.absolute_path)
    field = _field(path)
    value, rule = error.instance, error.validator_value
    shown = json.dumps(value)
    match error.validator:
        case "required":
            missing = [name for name in rule if isinstance(value, Mapping) and name not in value]
            return [
                {"reason": "FieldValueRequired", "message": "Required value", "field": _field([*path, n])}
                for n in missing
            ]
        case "type":
            expected = rule if isinstance(rule, str) else " or ".join(rule)
            message = (
                f'Invalid value: "{_go_type(value)}": {field} in body must be of type {expected}:'
                f' "{_go_type(value)}"'
            )
            return [{"reason": "FieldValueTypeInvalid", "message": message, "field": field}]
        case "enum":
            supported = ", ".join(json.dumps(v) for v in rule)
            message = f"Unsupported value: {shown}: supported values: {supported}"
            return [{"reason": "FieldValueNotSupported", "message": message, "field": field}]
    texts = {
        "minimum": f"should be greater than or equal to {rule}",
        "maximum": f"should be less than or equal to {rule}",
        "minLength": f"should be at least {rule} chars long",
        "maxLength": f"should be at most {rule} chars long",
        "pattern": f"should match '{rule}'",
        "minItems": f"should have at least {rule} items",
        "maxItems": f"should have at most {rule} items",
    }
    detail = f"{field} in body {texts[error.validator]}" if error.validator in texts else error.message
    return [{"reason": "FieldValueInvalid", "message": f"Invalid value: {shown}: {detail}", "field": field}]


def _drops_unknown_fields(schema: Mapping[str, Any]) -> bool:
    """Structural schemas keep undeclared fields only when told to."""
    preserve = schema.get("x-kubernetes-preserve-unknown-fields")
    return not preserve and schema.get("additionalProperties") in (None, False)


def prune(obj: Any, schema: Mapping[str, Any], path: list[str | int] | None = None) -> list[str]:
    """Drop fields the structural schema does not declare; return their paths (for Strict/Warn)."""
    path = path or []
    dropped: list[str] = []
    if isinstance(obj, MutableMapping) and (schema.get("type") == "object" or "properties" in schema):
        properties = schema.get("properties") or {}
        additional = schema.get("additionalProperties")
        for key in list(obj):
            if not path and key in _ROOT_MANAGED:
                continue
            if key in properties:
                dropped += prune(obj[key], properties[key], [*path, key])
            elif isinstance(additional, Mapping):
                dropped += prune(obj[key], additional, [*path, key])
            elif _drops_unknown_fields(schema):
                del obj[key]
                dropped.append(_field([*path, key]))
    elif isinstance(obj, list) and isinstance(schema.get("items"), Mapping):
        for index, item in enumerate(obj):
            dropped += prune(item, schema["items"], [*path, index])
    return dropped


def apply_defaults(obj: Any, schema: Mapping[str, Any]) -> None:
    """Fill in absent properties that declare a `default`, at every level that exists."""
    if isinstance(obj, MutableMapping):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                apply_defaults(obj[key], sub)
        if isinstance(schema.get("additionalProperties"), Mapping):
            for value in obj.values():
                apply_defaults(value, schema["additionalProperties"])
    elif isinstance(obj, list) and isinstance(schema.get("items"), Mapping):
        for item in obj:
            apply_defaults(item, schema["items"])


class SchemaValidator:
    """Validation of one resource's objects against its (converted, pre-compiled) schema."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        converted = _to_jsonschema(schema)
        properties = dict(converted.get("properties") or {})
        for key in _ROOT_MANAGED:  # metadata is validated by validate_metadata() instead
            properties.pop(key, None)
        converted["properties"] = properties
        self._validator = jsonschema.Draft4Validator(converted)

    def causes(self, obj: Mapping[str, Any]) -> list[dict[str, str]]:
        errors = sorted(self._validator.iter_errors(obj), key=lambda e: [str(p) for p in e.absolute_path])
        return [cause for error in errors for cause in _cause(error)]


def validate_metadata(metadata: Mapping[str, Any]) -> list[dict[str, str]]:
    """Name rules shared by all resources here (RFC 1123 subdomain)."""
    name = metadata.get("name")
    if not name:
        return [
            {
                "reason": "FieldValueRequired",
                "message": "name or generateName is required",
                "field": "metadata.name",
            }
        ]
    if len(name) > 253 or not _NAME_RE.match(name):
        message = (
            f'Invalid value: "{name}": a lowercase RFC 1123 subdomain must consist of lower case alphanumeric'
            " characters, '-' or '.', and must start and end with an alphanumeric character"
        )
        return [{"reason": "FieldValueInvalid", "message": message, "field": "metadata.name"}]
    return []
