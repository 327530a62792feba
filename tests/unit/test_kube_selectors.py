"""Label and field selector parsing and matching, as kube-apiserver interprets them."""

from __future__ import annotations

import pytest

from anklet.dev.kube.selectors import (
    LabelRequirement,
    Selection,
    field_value,
    parse_field_selector,
    parse_label_selector,
)

LABELS = {"team": "ci", "tier": "mac", "anklet.dev/queue": "fast"}


def test_parses_every_label_operator() -> None:
    parsed = parse_label_selector("a=1, b==2,c!=3,d in (x, y),e notin (z),f,!g")
    assert parsed == [
        LabelRequirement("a", "=", frozenset({"1"})),
        LabelRequirement("b", "=", frozenset({"2"})),
        LabelRequirement("c", "!=", frozenset({"3"})),
        LabelRequirement("d", "in", frozenset({"x", "y"})),
        LabelRequirement("e", "notin", frozenset({"z"})),
        LabelRequirement("f", "exists"),
        LabelRequirement("g", "!exists"),
    ]


@pytest.mark.parametrize(
    ("selector", "matches"),
    [
        ("", True),
        ("team=ci", True),
        ("team==web", False),
        ("team!=web", True),
        ("absent!=x", True),  # negative operators match absent keys
        ("tier in (mac,linux)", True),
        ("tier notin (mac)", False),
        ("absent notin (x)", True),
        ("absent in (x)", False),
        ("anklet.dev/queue=fast", True),
        ("team", True),
        ("!team", False),
        ("!absent", True),
        ("team=ci,tier=linux", False),
        ("team=ci,tier in (mac)", True),
    ],
)
def test_label_selector_matching(selector: str, matches: bool) -> None:
    assert Selection.parse(label_selector=selector).matches({"metadata": {"labels": LABELS}}) is matches


def test_objects_without_labels_match_only_negative_terms() -> None:
    assert Selection.parse("!team,x!=y").matches({"metadata": {}})
    assert not Selection.parse("team").matches({"metadata": {}})


@pytest.mark.parametrize("bad", ["a in (x", "a in ()", "a=(b)", "=x", "a b", "a in (x,y))"])
def test_malformed_label_selectors_are_rejected(bad: str) -> None:
    with pytest.raises(ValueError):
        parse_label_selector(bad)


def test_field_selector_as_kubectl_describe_sends_it() -> None:
    event = {
        "metadata": {"name": "kopf-event-abcde", "namespace": "default"},
        "involvedObject": {"uid": "u1", "name": "job1", "namespace": "default", "kind": "AnkaJob"},
    }
    selector = "involvedObject.uid=u1,involvedObject.name=job1,involvedObject.namespace=default"
    selector += ",involvedObject.kind=AnkaJob"
    assert Selection.parse(field_selector=selector).matches(event)
    assert not Selection.parse(field_selector="involvedObject.name=job2").matches(event)
    assert Selection.parse(
        field_selector="metadata.name==kopf-event-abcde,metadata.namespace!=other"
    ).matches(event)


def test_field_values_compare_as_apiserver_strings() -> None:
    obj = {"spec": {"paused": False, "replicas": 3}}
    assert field_value(obj, "spec.paused") == "false"
    assert field_value(obj, "spec.replicas") == "3"
    assert field_value(obj, "spec.absent.deeper") == ""
    assert Selection.parse(field_selector="spec.absent=").matches(obj)


def test_malformed_field_selector_is_rejected() -> None:
    with pytest.raises(ValueError):
        parse_field_selector("metadata.name")
