"""What kube-apiserver does with a CRD's `openAPIV3Schema` on every write: prune, default, validate.

Order as in the apiserver: unknown fields are pruned (reported per `fieldValidation`), then `null`s
of fields that are not `nullable` and have no `default` (a YAML `tag:`), `default`s are filled in
(also over such a `null`), then the object is validated and every violation becomes a 422 cause
with the apiserver's reasons (`FieldValueRequired`, `FieldValueTypeInvalid`, ...), which kubectl
prints. `pattern` means what it means to Go's regexp (`goregex`), not to Python's `re`.
"""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator, Mapping, MutableMapping
from typing import Any

import jsonschema  # type: ignore[import-untyped]

from anklet.dev.kube import goregex

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


def _field_schema(schema: Mapping[str, Any], key: str) -> Mapping[str, Any] | None:
    """The schema of one key of an object: its property, else `additionalProperties`."""
    properties = schema.get("properties") or {}
    if key in properties:
        return properties[key]  # type: ignore[no-any-return]
    additional = schema.get("additionalProperties")
    return additional if isinstance(additional, Mapping) else None


def _replaceable_null(value: Any, schema: Mapping[str, Any] | None) -> bool:
    """A `null` the apiserver does not keep: the field is not `nullable: true`."""
    return value is None and schema is not None and not schema.get("nullable")


def prune_nulls(obj: Any, schema: Mapping[str, Any] | None, path: list[str | int] | None = None) -> None:
    """Drop `null` values of fields that are neither `nullable` nor defaulted, as the apiserver does.

    "Null values for fields that either don't specify the nullable flag, or give it a false value,
    will be pruned before defaulting happens. If a default is present, it will be applied. When
    nullable is true, null values will be conserved" (Kubernetes docs, CRD "Defaulting and
    Nullable"; apiextensions-apiserver PruneNonNullableNullsWithoutDefaults). This applies to object
    keys (declared properties and `additionalProperties` entries); a `null` list item is kept and
    then fails validation. A non-nullable `null` with a default is left to `apply_defaults`.
    """
    path = path or []
    if schema is None:
        return
    if isinstance(obj, MutableMapping):
        for key in list(obj):
            if not path and key in _ROOT_MANAGED:
                continue
            sub = _field_schema(schema, key)
            if _replaceable_null(obj[key], sub) and "default" not in (sub or {}):
                del obj[key]
            else:
                prune_nulls(obj[key], sub, [*path, key])
    elif isinstance(obj, list):
        items = schema.get("items")
        for index, item in enumerate(obj):
            prune_nulls(item, items if isinstance(items, Mapping) else None, [*path, index])


def apply_defaults(obj: Any, schema: Mapping[str, Any]) -> None:
    """Fill in `default`s of absent fields and over `null`s of non-nullable ones, at every existing level."""
    if isinstance(obj, MutableMapping):
        properties = schema.get("properties") or {}
        for key, sub in properties.items():
            if "default" in sub and (key not in obj or _replaceable_null(obj[key], sub)):
                obj[key] = copy.deepcopy(sub["default"])
        additional = schema.get("additionalProperties")
        for key, value in obj.items():
            if key in properties:
                apply_defaults(value, properties[key])
            elif isinstance(additional, Mapping):
                if "default" in additional and _replaceable_null(value, additional):
                    obj[key] = copy.deepcopy(additional["default"])
                apply_defaults(obj[key], additional)
    elif isinstance(obj, list) and isinstance(schema.get("items"), Mapping):
        items = schema["items"]
        for index, item in enumerate(obj):
            if "default" in items and _replaceable_null(item, items):
                obj[index] = copy.deepcopy(items["default"])
            apply_defaults(obj[index], items)


def _go_pattern(
    validator: jsonschema.protocols.Validator, pattern: str, instance: Any, schema: Mapping[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    """`pattern` as kube-apiserver checks it: Go's regexp.MatchString (`$` only at the very end)."""
    if validator.is_type(instance, "string") and not goregex.search(pattern, instance):
        yield jsonschema.ValidationError(f"{instance!r} does not match {pattern!r}")


_Validator = jsonschema.validators.extend(jsonschema.Draft4Validator, {"pattern": _go_pattern})


def pattern_causes(schema: Any, field: str) -> list[dict[str, str]]:
    """A CRD's patterns that Go cannot compile, as the apiserver refuses them (422 on the CRD)."""
    causes: list[dict[str, str]] = []
    if isinstance(schema, list):
        for index, sub in enumerate(schema):
            causes += pattern_causes(sub, f"{field}[{index}]")
        return causes
    if not isinstance(schema, Mapping):
        return causes
    pattern = schema.get("pattern")
    if isinstance(pattern, str):
        try:
            goregex.compile_go(pattern)
        except goregex.GoRegexError as exc:
            message = (
                f"Invalid value: {json.dumps(pattern)}: must be a valid regular expression, but isn't: {exc}"
            )
            causes.append({"reason": "FieldValueInvalid", "message": message, "field": f"{field}.pattern"})
    for key in ("properties", "patternProperties"):
        named = schema.get(key)
        for name, sub in named.items() if isinstance(named, Mapping) else ():
            causes += pattern_causes(sub, f"{field}.{key}[{name}]")
    for key in ("items", "additionalProperties", "not", "allOf", "anyOf", "oneOf"):
        if key in schema:
            causes += pattern_causes(schema[key], f"{field}.{key}")
    return causes


class SchemaValidator:
    """Validation of one resource's objects against its (converted, pre-compiled) schema."""

    def __init__(self, schema: Mapping[str, Any]) -> None:
        converted = _to_jsonschema(schema)
        properties = dict(converted.get("properties") or {})
        for key in _ROOT_MANAGED:  # metadata is validated by validate_metadata() instead
            properties.pop(key, None)
        converted["properties"] = properties
        self._validator = _Validator(converted)

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
