"""Server-side Table rendering: ages as kubectl users know them, typed cells, Accept negotiation."""

from __future__ import annotations

import datetime

import pytest

from anklet.dev.kube.table import AGE_COLUMN, build_table, cell, human_duration, jsonpath, wants_table

NOW = datetime.datetime(2025, 6, 1, 12, 0, 0, tzinfo=datetime.UTC)
TABLE_ACCEPT = (  # what kubectl get sends
    "application/json;as=Table;v=v1;g=meta.k8s.io,application/json;as=Table;v=v1beta1;g=meta.k8s.io,application/json"
)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (-5, "<invalid>"),
        (-1, "0s"),
        (0, "0s"),
        (5.9, "5s"),
        (119, "119s"),
        (120, "2m"),
        (200, "3m20s"),
        (180, "3m"),
        (599, "9m59s"),
        (600, "10m"),
        (179 * 60, "179m"),
        (3 * 3600, "3h"),
        (2 * 3600 + 30 * 60 + 3 * 3600, "5h30m"),
        (8 * 3600, "8h"),
        (47 * 3600, "47h"),
        (2 * 86400, "2d"),
        (4 * 86400 + 5 * 3600, "4d5h"),
        (30 * 86400, "30d"),
        (3 * 365 * 86400, "3y"),
        (2 * 365 * 86400 + 10 * 86400, "2y10d"),
        (9 * 365 * 86400, "9y"),
    ],
)
def test_human_duration_matches_apimachinery(seconds: float, text: str) -> None:
    assert human_duration(seconds) == text


def test_jsonpath_subset() -> None:
    obj = {"status": {"phase": "Running", "conditions": [{"type": "Ready"}]}, "spec": {"a.b": 1}}
    assert jsonpath(obj, ".status.phase") == "Running"
    assert jsonpath(obj, "{.status.conditions[0].type}") == "Ready"
    assert jsonpath(obj, ".spec['a.b']") == 1
    assert jsonpath(obj, ".status.conditions[3].type") is None
    assert jsonpath(obj, ".status.absent") is None
    assert jsonpath(obj, '.status.conditions[?(@.type=="Ready")].type') is None  # unsupported → absent


def test_cells_are_typed_like_the_crd_table_convertor() -> None:
    obj = {
        "status": {
            "exitCode": 3,
            "phase": "Failed",
            "ok": True,
            "ratio": 2,
            "started": "2025-06-01T11:57:00Z",
        }
    }

    def render(kind: str, path: str) -> object:
        return cell({"type": kind, "jsonPath": path}, obj, NOW)

    assert render("integer", ".status.exitCode") == 3
    assert render("number", ".status.ratio") == 2.0
    assert render("boolean", ".status.ok") is True
    assert render("string", ".status.phase") == "Failed"
    assert render("string", ".status.exitCode") == "3"
    assert render("integer", ".status.phase") is None  # mistyped → null
    assert render("date", ".status.started") == "3m"
    assert render("date", ".status.phase") == "<invalid>"
    assert render("string", ".status.absent") is None


def test_table_rows_carry_partial_object_metadata() -> None:
    obj = {"metadata": {"name": "job1", "namespace": "default", "creationTimestamp": "2025-06-01T11:59:55Z"}}
    table = build_table([obj], [AGE_COLUMN], "42", now=NOW)
    assert table["kind"] == "Table" and table["metadata"] == {"resourceVersion": "42"}
    assert [c["name"] for c in table["columnDefinitions"]] == ["Name", "Age"]
    assert table["rows"] == [
        {
            "cells": ["job1", "5s"],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj["metadata"],
            },
        }
    ]
    assert build_table([obj], [AGE_COLUMN], "42", now=NOW, with_headers=False)["columnDefinitions"] == []


@pytest.mark.parametrize(
    ("accept", "table"),
    [
        (TABLE_ACCEPT, True),
        ("application/json", False),
        ("application/json, */*", False),
        ("", False),
        ("application/json;as=Table;v=v1beta1;g=meta.k8s.io", True),
        ("application/json;g=apidiscovery.k8s.io;v=v2;as=APIGroupDiscoveryList,application/json", False),
    ],
)
def test_table_negotiation(accept: str, table: bool) -> None:
    assert wants_table(accept) is table
