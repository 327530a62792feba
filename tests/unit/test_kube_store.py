"""The emulated apiserver's write rules and watch history, without HTTP (`anklet.dev.kube.store`)."""

from __future__ import annotations

import contextlib
import copy
import pathlib
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from anklet.dev.kube.errors import ApiError
from anklet.dev.kube.patches import json_patch, merge_patch
from anklet.dev.kube.resources import CRD_KEY, Registry, ResourceDef
from anklet.dev.kube.store import Event, Store, Watcher

CRD = yaml.safe_load((pathlib.Path(__file__).parents[2] / "crds" / "ankajob.yaml").read_text())


@pytest.fixture
def store() -> Store:
    store = Store(Registry())
    store.create(resource(store, CRD_KEY), None, CRD)
    return store


def resource(store: Store, key: str) -> ResourceDef:
    res = store.registry.get(key)
    assert res is not None
    return res


def jobs(store: Store) -> ResourceDef:
    return resource(store, "anklet.dev/v1alpha1/ankajobs")


def job(name: str = "job1", **spec: Any) -> dict[str, Any]:
    spec = {"template": "macos-14", "handler": "script", **spec}
    return {"apiVersion": "anklet.dev/v1alpha1", "kind": "AnkaJob", "metadata": {"name": name}, "spec": spec}


def drain(watcher: Watcher) -> list[Event]:
    events = []
    while not watcher.queue.empty():
        event = watcher.queue.get_nowait()
        assert event is not None
        events.append(event)
    return events


@contextlib.contextmanager
def raises(code: int, reason: str) -> Iterator[None]:
    with pytest.raises(ApiError) as info:
        yield
    assert (info.value.code, info.value.reason) == (code, reason), info.value.status()


def test_crd_registers_its_resource_for_discovery(store: Store) -> None:
    res = jobs(store)
    assert (res.kind, res.namespaced, res.short_names) == ("AnkaJob", True, ("aj",))
    assert res.subresources == {"status"}
    assert [c["name"] for c in res.printer_columns][:2] == ["Phase", "Host"]
    listing = store.registry.api_resource_list("anklet.dev", "v1alpha1")
    assert listing is not None
    assert [(r["name"], r.get("shortNames")) for r in listing["resources"]] == [
        ("ankajobs", ["aj"]),
        ("ankajobs/status", None),
    ]
    crd = store.get(resource(store, CRD_KEY), None, "ankajobs.anklet.dev")
    assert {c["type"]: c["status"] for c in crd["status"]["conditions"]} == {
        "NamesAccepted": "True",
        "Established": "True",
    }


def test_create_sets_server_metadata_and_defaults(store: Store) -> None:
    before = store.rv
    body = job()
    body["status"] = {"phase": "Succeeded"}
    obj, _ = store.create(jobs(store), "default", body)
    meta = obj["metadata"]
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and meta["generation"] == 1
    assert meta["resourceVersion"] == str(before + 1) == str(store.rv)
    assert meta["namespace"] == "default"
    assert "status" not in obj  # dropped on create when status is a subresource
    assert obj["spec"]["backoffLimit"] == 2 and obj["spec"]["cancel"] is False


def test_create_errors_are_standard_statuses(store: Store) -> None:
    store.create(jobs(store), "default", job())
    with raises(409, "AlreadyExists"):
        store.create(jobs(store), "default", job())
    with raises(404, "NotFound"):
        store.create(jobs(store), "nowhere", job())
    with raises(404, "NotFound"):
        store.get(jobs(store), "default", "absent")
    with pytest.raises(ApiError) as invalid:
        store.create(jobs(store), "default", job("bad", template=7, handler="Bad Name", timeoutSeconds=0))
    assert invalid.value.code == 422
    causes = invalid.value.status()["details"]["causes"]
    assert [(c["field"], c["reason"]) for c in causes] == [
        ("spec.handler", "FieldValueInvalid"),
        ("spec.template", "FieldValueTypeInvalid"),
        ("spec.timeoutSeconds", "FieldValueInvalid"),
    ]
    assert invalid.value.message.startswith(
        'AnkaJob.anklet.dev "bad" is invalid: [spec.handler: Invalid value'
    )


def test_unknown_fields_are_pruned_or_refused_per_field_validation(store: Store) -> None:
    obj, warnings = store.create(jobs(store), "default", job("warned", bogus=1))
    assert "bogus" not in obj["spec"] and warnings == ['unknown field "spec.bogus"']
    with raises(400, "BadRequest"):
        store.create(jobs(store), "default", job("strict", bogus=1), field_validation="Strict")
    # Where the schema preserves unknown fields (AnkaJob status does), they stay.
    store.create(jobs(store), "default", job("kept"))

    def add_status(obj: dict[str, Any]) -> dict[str, Any]:
        return {**obj, "status": {"phase": "Pending", "kopf": {"any": {"thing": 1}}}}

    obj, warnings = store.update(jobs(store), "default", "kept", add_status, subresource="status")
    assert obj["status"]["kopf"] == {"any": {"thing": 1}} and warnings == []


def test_nulls_are_pruned_or_defaulted_as_the_apiserver_does(store: Store) -> None:
    body = job("nulls", tag=None, priority=None, hostSelector={"a": None, "b": "1"})
    obj, warnings = store.create(jobs(store), "default", body, field_validation="Strict")
    assert warnings == []  # a pruned null is not an unknown field
    spec = obj["spec"]
    assert "tag" not in spec and spec["priority"] == 0 and spec["hostSelector"] == {"b": "1"}
    with pytest.raises(ApiError) as invalid:  # a required field's null is pruned, then missing
        store.create(jobs(store), "default", job("nulls2", template=None, mounts=[None]))
    causes = invalid.value.status()["details"]["causes"]
    assert [(c["field"], c["reason"]) for c in causes] == [
        ("spec.template", "FieldValueRequired"),
        ("spec.mounts[0]", "FieldValueTypeInvalid"),
    ]


def test_patterns_are_checked_with_go_semantics(store: Store) -> None:
    with raises(422, "Invalid"):  # `$` does not match before a trailing newline in Go
        store.create(jobs(store), "default", job("newline", handler="script\n"))
    bad = copy.deepcopy(CRD)
    bad["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]["properties"]["handler"][
        "pattern"
    ] = "^(?!x)"
    with pytest.raises(ApiError) as invalid:
        store.update(resource(store, CRD_KEY), None, "ankajobs.anklet.dev", lambda _: bad)
    assert invalid.value.code == 422
    [cause] = invalid.value.status()["details"]["causes"]
    assert cause["field"] == (
        "spec.versions[0].schema.openAPIV3Schema.properties[spec].properties[handler].pattern"
    )
    assert "must be a valid regular expression" in cause["message"]


def test_generate_name(store: Store) -> None:
    events = resource(store, "v1/events")
    body: dict[str, Any] = {"metadata": {"generateName": "kopf-event-"}, "reason": "x"}
    first, _ = store.create(events, "default", body)
    second, _ = store.create(events, "default", body)
    assert first["metadata"]["name"].startswith("kopf-event-") and len(first["metadata"]["name"]) == 16
    assert first["metadata"]["name"] != second["metadata"]["name"]


def test_updates_check_resource_versions(store: Store) -> None:
    obj, _ = store.create(jobs(store), "default", job())
    stale = obj["metadata"]["resourceVersion"]
    store.update(jobs(store), "default", "job1", lambda old: merge_patch(old, {"spec": {"tag": "a"}}))
    with raises(409, "Conflict"):
        patch = {"metadata": {"resourceVersion": stale}, "spec": {"tag": "b"}}
        store.update(jobs(store), "default", "job1", lambda old: merge_patch(old, patch))
    with raises(422, "Invalid"):
        test = [{"op": "test", "path": "/metadata/resourceVersion", "value": stale}]
        store.update(jobs(store), "default", "job1", lambda old: json_patch(old, test))
    current = store.get(jobs(store), "default", "job1")["metadata"]["resourceVersion"]
    ops = [
        {"op": "test", "path": "/metadata/resourceVersion", "value": current},
        {"op": "add", "path": "/metadata/finalizers", "value": ["x/y"]},
    ]
    updated, _ = store.update(jobs(store), "default", "job1", lambda old: json_patch(old, ops))
    assert updated["metadata"]["finalizers"] == ["x/y"]


def test_status_subresource_separation_and_generation(store: Store) -> None:
    store.create(jobs(store), "default", job())
    patch: dict[str, Any] = {"spec": {"tag": "ignored"}, "status": {"phase": "Running"}}
    obj, _ = store.update(
        jobs(store), "default", "job1", lambda old: merge_patch(old, patch), subresource="status"
    )
    assert obj["status"]["phase"] == "Running" and "tag" not in obj["spec"]
    assert obj["status"]["attempts"] == 0  # status defaults apply once there is a status
    assert obj["metadata"]["generation"] == 1
    patch = {"spec": {"tag": "v2"}, "status": {"phase": "Failed"}, "metadata": {"labels": {"a": "b"}}}
    obj, _ = store.update(jobs(store), "default", "job1", lambda old: merge_patch(old, patch))
    assert obj["status"]["phase"] == "Running" and obj["spec"]["tag"] == "v2"
    assert obj["metadata"]["generation"] == 2
    obj, _ = store.update(
        jobs(store), "default", "job1", lambda old: merge_patch(old, {"metadata": {"labels": {"c": "d"}}})
    )
    assert obj["metadata"]["generation"] == 2  # metadata-only change


def test_server_owned_metadata_cannot_be_overwritten(store: Store) -> None:
    obj, _ = store.create(jobs(store), "default", job())
    forged = {"metadata": {"uid": "forged", "generation": 99, "creationTimestamp": "2000-01-01T00:00:00Z"}}
    updated, _ = store.update(jobs(store), "default", "job1", lambda old: merge_patch(old, forged))
    assert updated == obj  # nothing left to change: no write at all
    with raises(400, "BadRequest"):
        store.update(jobs(store), "default", "job1", lambda old: {**old, "metadata": {"name": "other"}})


def test_noop_writes_do_not_bump_or_notify(store: Store) -> None:
    obj, _ = store.create(jobs(store), "default", job())
    watcher = store.watch(
        jobs(store), "default", obj["metadata"]["resourceVersion"], initial_end_bookmark=False
    )
    rv = store.rv
    same, _ = store.update(
        jobs(store), "default", "job1", lambda old: merge_patch(old, {"spec": {"handler": "script"}})
    )
    assert store.rv == rv and same["metadata"]["resourceVersion"] == str(rv)
    assert drain(watcher) == []


def test_deletion_waits_for_finalizers(store: Store) -> None:
    body = job()
    body["metadata"]["finalizers"] = ["a/b"]
    store.create(jobs(store), "default", body)
    watcher = store.watch(jobs(store), "default", str(store.rv), initial_end_bookmark=False)
    marked = store.delete(jobs(store), "default", "job1")
    assert marked is not None
    assert marked["metadata"]["deletionTimestamp"] and marked["metadata"]["deletionGracePeriodSeconds"] == 0
    assert store.delete(jobs(store), "default", "job1") == marked  # repeated: no change
    store.update(
        jobs(store), "default", "job1", lambda old: merge_patch(old, {"metadata": {"finalizers": None}})
    )
    with raises(404, "NotFound"):
        store.get(jobs(store), "default", "job1")
    events = drain(watcher)
    assert [e.type for e in events] == ["MODIFIED", "DELETED"]
    assert [e.rv for e in events] == sorted(e.rv for e in events)
    assert events[1].obj["metadata"]["resourceVersion"] == str(store.rv)


def test_watch_backlog_and_expiry() -> None:
    store = Store(Registry(), history_size=3)
    store.create(resource(store, CRD_KEY), None, CRD)
    for name in ("a", "b", "c", "d"):
        store.create(jobs(store), "default", job(name))
    current = store.watch(jobs(store), None, "", initial_end_bookmark=False)
    assert [(e.type, e.obj["metadata"]["name"]) for e in drain(current)] == [("ADDED", n) for n in "abcd"]
    resumed = store.watch(jobs(store), "default", str(store.rv - 2), initial_end_bookmark=False)
    assert [e.obj["metadata"]["name"] for e in drain(resumed)] == ["c", "d"]
    with raises(410, "Expired"):
        store.watch(jobs(store), "default", str(store.rv - 4), initial_end_bookmark=False)
    initial = store.watch(jobs(store), "default", "", initial_end_bookmark=True)
    last = drain(initial)[-1]
    assert last.type == "BOOKMARK" and last.obj["metadata"]["annotations"] == {
        "k8s.io/initial-events-end": "true"
    }
    store.close()
    assert current.queue.get_nowait() is None


def test_deleting_a_crd_unregisters_it_and_its_objects(store: Store) -> None:
    res = jobs(store)
    store.create(res, "default", job())
    assert store.delete(resource(store, CRD_KEY), None, "ankajobs.anklet.dev") is None
    assert store.registry.get("anklet.dev/v1alpha1/ankajobs") is None
    assert list(store.objects(res, None)) == []
    assert store.registry.api_resource_list("anklet.dev", "v1alpha1") is None
