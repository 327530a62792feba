"""The spec models prune `null`s as kube-apiserver does (anklet.models.prune_nulls).

The API server drops the null of a field that is not `nullable` (then fills in its default) and a
null map entry; the model must accept the same manifests and read them as the API stores them.
tests/fuzz/test_ankajob_schema_fuzz.py checks the agreement against the emulated API server.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from anklet import models
from anklet.models import AnkaJobSpec, GitHubJobSpec, ScriptSpec, prune_nulls

BASE = {"template": "t", "handler": "script"}
GITHUB = {"owner": "o", "repo": "r", "jobId": 1, "runId": 2}


def errors(spec: Any) -> list[tuple[tuple[str | int, ...], str]]:
    with pytest.raises(ValidationError) as caught:
        AnkaJobSpec.model_validate(spec)
    return [(tuple(e["loc"]), e["type"]) for e in caught.value.errors()]


def test_a_null_for_a_field_with_a_default_becomes_the_default() -> None:
    spec = AnkaJobSpec.model_validate({**BASE, "priority": None, "backoffLimit": None, "cancel": None})
    assert (spec.priority, spec.backoff_limit, spec.cancel) == (0, 2, False)


def test_a_null_for_a_nullable_field_is_kept_as_none() -> None:
    pruned = prune_nulls({**BASE, "tag": None, "hostSelector": None}, AnkaJobSpec.model_fields)
    assert pruned == {**BASE, "tag": None, "hostSelector": None}
    spec = AnkaJobSpec.model_validate({**BASE, "tag": None, "hostSelector": None, "resources": None})
    assert (spec.tag, spec.host_selector, spec.resources) == (None, None, None)


def test_null_map_entries_are_dropped() -> None:
    spec = AnkaJobSpec.model_validate(
        {**BASE, "hostSelector": {"a": None, "b": "c"}, "script": {"run": "x", "env": {"A": None, "B": ""}}}
    )
    assert spec.host_selector == {"b": "c"}
    assert spec.script == ScriptSpec(run="x", env={"B": ""})


def test_nested_spec_models_prune_too() -> None:
    github = GitHubJobSpec.model_validate({**GITHUB, "runAttempt": None, "labels": None, "jobName": None})
    assert (github.run_attempt, github.labels, github.job_name) == (1, [], None)
    assert ScriptSpec.model_validate({"run": "x", "env": None}).env == {}


def test_a_null_for_a_required_field_is_missing() -> None:
    assert errors({"template": None, "handler": "script"}) == [(("template",), "missing")]
    assert errors({**BASE, "script": {"run": None}}) == [(("script", "run"), "missing")]


def test_a_null_list_item_is_still_refused() -> None:
    assert errors({**BASE, "mounts": [None]}) == [(("mounts", 0), "string_type")]
    assert errors({**BASE, "github": {**GITHUB, "labels": [None]}}) == [
        (("github", "labels", 0), "string_type")
    ]


def test_only_the_wire_name_is_pruned() -> None:
    """`backoff_limit` is unknown to the API server (refused there), so its null must not vanish here."""
    assert prune_nulls({"backoff_limit": None, "extra": None}, AnkaJobSpec.model_fields) == {
        "backoff_limit": None,
        "extra": None,
    }
    assert errors({**BASE, "backoff_limit": None}) == [(("backoff_limit",), "int_type")]
    assert errors({**BASE, "extra": None}) == [(("extra",), "extra_forbidden")]


def test_a_map_value_of_the_wrong_type_is_still_refused() -> None:
    assert errors({**BASE, "hostSelector": {"a": 1, "b": None}}) == [(("hostSelector", "a"), "string_type")]


def test_prune_nulls_does_not_change_its_input() -> None:
    data = {**BASE, "priority": None, "hostSelector": {"a": None}}
    assert prune_nulls(data, AnkaJobSpec.model_fields) == {**BASE, "hostSelector": {}}
    assert data == {**BASE, "priority": None, "hostSelector": {"a": None}}


def test_input_that_is_not_a_mapping_is_left_to_validation() -> None:
    assert errors("spec") == [((), "model_type")]
    spec = AnkaJobSpec.model_validate(BASE)
    job = models.AnkaJob.model_validate({"metadata": {"name": "x"}, "spec": spec})
    assert job.spec is spec
