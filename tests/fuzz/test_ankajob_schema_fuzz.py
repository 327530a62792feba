"""Fuzzing the AnkaJob spec: the CRD generated from anklet/models.py and the model itself must agree.

For Hypothesis-generated specs (valid ones, then one field broken: wrong type, out of range, too
long, unknown, missing), the emulated API server (which validates against crds/ankajob.yaml as
kube-apiserver does, with kubectl's `fieldValidation=Strict`) and `anklet.models.AnkaJob` must
both accept or both reject. And whatever the API stores, the controller must be able to parse.

The generated values include `null` (a YAML `tag:`) for every field and map entry: kube-apiserver
drops the null of a field that is not `nullable`, or puts the field's default in its place, and
drops a null map entry, before it validates; the emulator does the same, and so does the model
(`anklet.models.prune_nulls`).
"""

from __future__ import annotations

import itertools
import json
import string
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from hypothesis import example, given, note
from hypothesis import strategies as st
from pydantic import ValidationError

import anklet.crd
from anklet import models
from anklet.dev.kube_emulator import KubeApiServer, serve_in_thread
from tests.fuzz.budget import examples, fuzz_settings

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(examples(300))]

COLLECTION = "/apis/anklet.dev/v1alpha1/namespaces/default/ankajobs"
_names = itertools.count(1)


@pytest.fixture(scope="module")
def api() -> Iterator[httpx.Client]:
    server: KubeApiServer
    with (
        serve_in_thread(crds=[anklet.crd.build_crd()]) as server,
        httpx.Client(base_url=server.url) as client,
    ):
        yield client
        assert server.failures == [], "the emulator answered 500"


def api_verdict(api: httpx.Client, spec: Any) -> tuple[bool, dict[str, Any]]:
    """POST as `kubectl apply` does; (accepted, the stored object or the Status)."""
    body = {"apiVersion": models.API_VERSION, "kind": models.KIND, "metadata": {"name": f"fz-{next(_names)}"}}
    body["spec"] = spec
    response = api.post(
        COLLECTION,
        params={"fieldValidation": "Strict"},
        content=json.dumps(body),  # ASCII-escaped: httpx's json= would choke on what we do not send anyway
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code in (201, 400, 422), response.text
    return response.status_code == 201, response.json()


def model_verdict(spec: Any) -> tuple[bool, str]:
    try:
        models.AnkaJob.model_validate({"metadata": {"name": "x"}, "spec": spec})
    except ValidationError as exc:
        return False, "; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors())
    return True, ""


# ---- generators --------------------------------------------------------------------------------------

names = st.text(st.characters(codec="utf-8", exclude_categories=["Cs"]), min_size=1, max_size=30)
handlers = st.one_of(
    st.sampled_from(["script", "github", "x", "a" * 63]),
    st.from_regex(r"[a-z][a-z0-9_-]{0,20}", fullmatch=True),
)
str_maps = st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3)
github_specs = st.fixed_dictionaries(
    {
        "owner": st.text(max_size=20),
        "repo": st.text(max_size=20),
        "jobId": st.integers(1, 2**63 - 1),
        "runId": st.integers(1, 2**63 - 1),
    },
    optional={
        "runAttempt": st.integers(1, 100),
        "labels": st.lists(st.text(max_size=20), max_size=4),
        "htmlUrl": st.text(max_size=20),
        "workflowName": st.text(max_size=20),
        "jobName": st.text(max_size=20),
    },
)
NESTED = {
    "script": st.fixed_dictionaries({"run": st.text(min_size=1, max_size=30)}, optional={"env": str_maps}),
    "github": github_specs,
    "resources": st.fixed_dictionaries(
        {"cpu": st.integers(1, 512), "memoryMiB": st.integers(256, 4 * 1024 * 1024)}
    ),
}
valid_specs = st.fixed_dictionaries(
    {"template": names, "handler": handlers},
    optional={
        "tag": names,
        **NESTED,
        "hostSelector": str_maps,
        "queue": st.text(max_size=63),
        "mounts": st.lists(st.text(max_size=20), max_size=3),
        "timeoutSeconds": st.integers(1, 10**9),
        "ttlSecondsAfterFinished": st.integers(0, 10**9),
        "priority": st.integers(-1000, 1000),
        "backoffLimit": st.integers(0, 100),
        "cancel": st.booleans(),
    },
)

# Values of every JSON type, boundary values of the CRD's limits, the coercions pydantic's lax mode
# would make ("5" → 5, 5.0 → 5, "true" → True, 1 → True) and a trailing newline for the pattern.
non_null_values = st.one_of(
    st.sampled_from(
        [0, 1, -1, 2, 63, 64, 255, 256, 512, 513, 100, 101, 1000, 1001, -1000, -1001, 4194304, 4194305, 2**63]
    ),
    st.sampled_from(["", "5", "true", "false", "yes", "on", "1", "Script", "1abc", "a" * 64, "t" * 254]),
    st.sampled_from(["script\n", "script\n\n", "\nscript", "a-b\n", "x\r"]),
    st.sampled_from([5.0, 1.5, -0.0, 1e300, True, False, [], ["x"], [1], {}, {"a": 1}, {"a": "b"}]),
    st.text(string.ascii_lowercase + string.digits + "-_.", max_size=70),
)
odd_values = st.one_of(st.none(), non_null_values)
WRONG_ITEMS: list[Any] = [[1], [None], ["ok", 2], {"k": 1}, {"k": ["v"]}, {"k": None}]
FIELDS: list[tuple[str, ...]] = [
    ("template",),
    ("tag",),
    ("handler",),
    ("script",),
    ("script", "run"),
    ("script", "env"),
    ("github",),
    ("github", "owner"),
    ("github", "jobId"),
    ("github", "runId"),
    ("github", "runAttempt"),
    ("github", "labels"),
    ("github", "htmlUrl"),
    ("resources",),
    ("resources", "cpu"),
    ("resources", "memoryMiB"),
    ("hostSelector",),
    ("queue",),
    ("mounts",),
    ("timeoutSeconds",),
    ("ttlSecondsAfterFinished",),
    ("priority",),
    ("backoffLimit",),
    ("cancel",),
]


@st.composite
def mutated_specs(draw: st.DrawFn) -> Any:
    spec: dict[str, Any] = draw(valid_specs)
    for _ in range(draw(st.integers(0, 2))):
        path = draw(st.sampled_from(FIELDS))
        parent = spec
        for key in path[:-1]:
            if not isinstance(parent.get(key), dict):
                parent[key] = draw(NESTED[key])
            parent = parent[key]
        how = draw(st.sampled_from(["set", "set", "set", "null", "delete", "unknown", "item"]))
        if how == "set":
            parent[path[-1]] = draw(non_null_values)
        elif how == "null":  # a YAML `key:`
            parent[path[-1]] = None
        elif how == "delete":
            parent.pop(path[-1], None)
        elif how == "unknown":  # Strict field validation refuses it; so does extra="forbid"
            parent[draw(st.sampled_from(["extra", "Template", "job_id", "memory_mib"]))] = draw(odd_values)
        else:  # a wrong item inside a list or map (a null map entry is dropped, not wrong)
            parent[path[-1]] = draw(st.sampled_from(WRONG_ITEMS))
    return spec


# ---- the tests -------------------------------------------------------------------------------------


@fuzz_settings(300)
@given(spec=st.one_of(valid_specs, mutated_specs()))
@example(spec={"template": "t", "handler": "script", "priority": "5"})  # lax pydantic used to accept these
@example(spec={"template": "t", "handler": "script", "cancel": "true"})
@example(spec={"template": "t", "handler": "script", "resources": {"cpu": 2.0, "memoryMiB": 4096}})
@example(spec={"template": "t", "handler": "script", "timeoutSeconds": True})
@example(spec={"template": "t", "handler": "script", "tag": None})  # the emulator used to refuse it
@example(spec={"template": "t", "handler": "script\n"})  # ... and to accept this
@example(spec={"template": "t", "handler": "script", "priority": None})  # the model used to refuse these
@example(spec={"template": "t", "handler": "script", "hostSelector": {"k": None}})
@example(spec={"template": "t", "handler": "script", "backoff_limit": None})  # unknown to the API: refused
def test_the_crd_and_the_model_accept_and_reject_the_same_specs(api: httpx.Client, spec: Any) -> None:
    model_ok, why = model_verdict(spec)
    api_ok, answer = api_verdict(api, spec)
    note(f"model: {model_ok} {why}")
    note(f"api: {api_ok} {answer.get('message', '')}")
    assert model_ok == api_ok, (
        f"the CRD {'accepts' if api_ok else 'rejects'} what the model"
        f" {'accepts' if model_ok else 'rejects'}: "
        f"{spec!r}; model: {why or 'ok'}; API: {answer.get('message', 'created')}"
    )
    if api_ok:  # what the API stored (defaults applied) is what the controller reads
        stored = models.AnkaJob.model_validate(answer)
        assert stored.spec.priority == (0 if spec.get("priority") is None else spec["priority"])
        assert stored.spec.backoff_limit == (2 if spec.get("backoffLimit") is None else spec["backoffLimit"])
        # ... and the model reads the spec as sent just as the API server stored it
        assert models.AnkaJob.model_validate({"metadata": {"name": "x"}, "spec": spec}).spec == stored.spec


def test_null_for_an_optional_field_is_dropped(api: httpx.Client) -> None:
    """A YAML `tag:` is null: kube-apiserver prunes it (not `nullable`), the model reads it as absent."""
    spec = {"template": "t", "handler": "script", "tag": None, "queue": None, "resources": None}
    assert model_verdict(spec) == (True, "")
    accepted, stored = api_verdict(api, spec)
    assert accepted, stored
    defaults = {"priority": 0, "backoffLimit": 2, "cancel": False}
    assert stored["spec"] == {"template": "t", "handler": "script", **defaults}
    assert models.AnkaJob.model_validate(stored).spec.tag is None


def test_null_for_a_required_field_is_refused(api: httpx.Client) -> None:
    spec = {"template": None, "handler": "script"}
    assert not model_verdict(spec)[0]
    accepted, status = api_verdict(api, spec)
    assert not accepted
    assert [(c["field"], c["reason"]) for c in status["details"]["causes"]] == [
        ("spec.template", "FieldValueRequired")
    ]


def test_a_trailing_newline_does_not_match_a_pattern(api: httpx.Client) -> None:
    """Go's `$` (kube-apiserver) and pydantic's Rust regex match only at the very end of the text."""
    spec = {"template": "t", "handler": "script\n"}
    assert not model_verdict(spec)[0]
    accepted, status = api_verdict(api, spec)
    assert not accepted
    assert [(c["field"], c["reason"]) for c in status["details"]["causes"]] == [
        ("spec.handler", "FieldValueInvalid")
    ]


# Nulls kube-apiserver accepts: it puts the CRD's default in place of a null, and drops the null of a
# field without a default and of a map entry; the model prunes them the same way (`prune_nulls`).
GITHUB = {"owner": "o", "repo": "r", "jobId": 1, "runId": 2}
NULLS_THE_API_SERVER_ACCEPTS: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"priority": None}, {"priority": 0}),
    ({"backoffLimit": None}, {"backoffLimit": 2}),
    ({"cancel": None}, {"cancel": False}),
    ({"hostSelector": {"a": None, "b": "c"}}, {"hostSelector": {"b": "c"}}),
    ({"script": {"run": "x", "env": None}}, {"script": {"run": "x"}}),
    ({"script": {"run": "x", "env": {"A": None}}}, {"script": {"run": "x", "env": {}}}),
    ({"github": {**GITHUB, "runAttempt": None}}, {"github": {**GITHUB, "runAttempt": 1}}),
    ({"github": {**GITHUB, "labels": None}}, {"github": {**GITHUB, "runAttempt": 1}}),
]


@pytest.mark.parametrize(("extra", "stored"), NULLS_THE_API_SERVER_ACCEPTS)
def test_the_model_accepts_and_reads_nulls_as_the_api_server_stores_them(
    api: httpx.Client, extra: dict[str, Any], stored: dict[str, Any]
) -> None:
    spec = {"template": "t", "handler": "script", **extra}
    accepted, answer = api_verdict(api, spec)
    assert accepted, answer
    assert {key: answer["spec"][key] for key in stored} == stored
    assert model_verdict(spec) == (True, "")
    as_sent = models.AnkaJob.model_validate({"metadata": {"name": "x"}, "spec": spec})
    assert as_sent.spec == models.AnkaJob.model_validate(answer).spec
