"""CRD schema handling as the apiserver does it: OpenAPI quirks, pruning, defaults, 422 causes."""

from __future__ import annotations

from typing import Any

from anklet.dev.kube.schema import (
    SchemaValidator,
    apply_defaults,
    pattern_causes,
    prune,
    prune_nulls,
    validate_metadata,
)

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


# The example of the Kubernetes docs (CRDs, "Defaulting and Nullable"), plus maps and lists.
NULLS: dict[str, Any] = {
    "type": "object",
    "properties": {
        "metadata": {"type": "object"},
        "spec": {
            "type": "object",
            "properties": {
                "foo": {"type": "string", "nullable": False, "default": "default"},
                "bar": {"type": "string", "nullable": True},
                "baz": {"type": "string"},
                "env": {"type": "object", "additionalProperties": {"type": "string"}},
                "names": {"type": "array", "items": {"type": "string"}},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True},
            },
        },
    },
}


def test_nulls_of_non_nullable_fields_are_pruned_then_defaulted() -> None:
    obj: dict[str, Any] = {
        "metadata": {"name": "x"},
        "spec": {
            "foo": None,
            "bar": None,
            "baz": None,
            "env": {"A": None, "B": "1"},
            "names": [None, "n"],
            "free": {"kept": None},
        },
    }
    prune_nulls(obj, NULLS)
    assert obj["spec"] == {  # foo: left for its default; bar: nullable; a null list item stays
        "foo": None,
        "bar": None,
        "env": {"B": "1"},
        "names": [None, "n"],
        "free": {"kept": None},
    }
    apply_defaults(obj, NULLS)
    assert obj["spec"]["foo"] == "default" and obj["spec"]["bar"] is None
    causes = SchemaValidator(NULLS).causes(obj)
    assert [(c["field"], c["reason"]) for c in causes] == [("spec.names[0]", "FieldValueTypeInvalid")]


def test_defaults_replace_nulls_at_every_level() -> None:
    obj: dict[str, Any] = {"spec": {"steps": [{"retries": None}, {}]}}
    apply_defaults(obj, SCHEMA)
    assert obj == {"spec": {"steps": [{"retries": 1}, {"retries": 1}]}}


def test_patterns_are_go_regexps() -> None:
    schema = {"type": "object", "properties": {"name": {"type": "string", "pattern": "^[a-z]+$"}}}
    validator = SchemaValidator(schema)
    assert validator.causes({"name": "abc"}) == []
    causes = validator.causes({"name": "abc\n"})  # Python's `$` would accept the trailing newline
    assert causes == [
        {
            "reason": "FieldValueInvalid",
            "message": "Invalid value: \"abc\\n\": name in body should match '^[a-z]+$'",
            "field": "name",
        }
    ]


def test_patterns_go_cannot_compile_are_causes() -> None:
    schema = {
        "type": "object",
        "properties": {
            "ok": {"type": "string", "pattern": r"^\d+$"},
            "list": {"type": "array", "items": {"type": "string", "pattern": "(?=x)"}},
        },
    }
    assert pattern_causes(schema, "root") == [
        {
            "reason": "FieldValueInvalid",
            "message": 'Invalid value: "(?=x)": must be a valid regular expression, but isn\'t:'
            " error parsing regexp: invalid or unsupported Perl syntax: `(?=`",
            "field": "root.properties[list].items.pattern",
        }
    ]
