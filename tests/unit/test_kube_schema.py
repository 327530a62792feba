"""CRD schema handling as the apiserver does it: OpenAPI quirks, pruning, defaults, 422 causes."""

from __future__ import annotations

from typing import Any

from anklet.dev.kube.schema import SchemaValidator, apply_defaults, prune, validate_metadata

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "port": {"x-kubernetes-int-or-string": True},
                "note": {"type": "string", "nullable": True},
                "mode": {"type": "string", "enum": ["a", "b"]},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "steps": {
                    "type": "array",
                    "items": {"type": "object", "properties": {"retries": {"type": "integer", "default": 1}}},
                },
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
}


def test_openapi_extensions_are_understood() -> None:
    validator = SchemaValidator(SCHEMA)
    assert validator.causes({"spec": {"port": 80, "note": None}}) == []
    assert validator.causes({"spec": {"port": "http"}}) == []
    causes = validator.causes({"spec": {"port": 1.5, "mode": "c"}})
    assert [(c["field"], c["reason"]) for c in causes] == [
        ("spec.mode", "FieldValueNotSupported"),
        ("spec.port", "FieldValueInvalid"),
    ]
    assert causes[0]["message"] == 'Unsupported value: "c": supported values: "a", "b"'


def test_pruning_keeps_declared_and_preserved_fields() -> None:
    obj: dict[str, Any] = {
        "metadata": {"annotations": {"kept": "yes"}},
        "spec": {"env": {"A": "1"}, "free": {"x": {"y": 1}}, "steps": [{"retries": 2, "junk": 1}], "junk": 1},
        "junk": 1,
    }
    assert prune(obj, SCHEMA) == ["spec.steps[0].junk", "spec.junk", "junk"]
    assert obj == {
        "metadata": {"annotations": {"kept": "yes"}},
        "spec": {"env": {"A": "1"}, "free": {"x": {"y": 1}}, "steps": [{"retries": 2}]},
    }


def test_defaults_fill_only_absent_fields_at_existing_levels() -> None:
    obj: dict[str, Any] = {"spec": {"steps": [{}, {"retries": 5}]}}
    apply_defaults(obj, SCHEMA)
    assert obj == {"spec": {"steps": [{"retries": 1}, {"retries": 5}]}}


def test_metadata_names() -> None:
    assert validate_metadata({"name": "job-1.a"}) == []
    assert validate_metadata({})[0]["reason"] == "FieldValueRequired"
    assert validate_metadata({"name": "Job_1"})[0]["reason"] == "FieldValueInvalid"
