from __future__ import annotations

import jsonschema
import pytest

from anklet import crd


def test_crd_files_match_the_models() -> None:
    for path, text in crd.files().items():
        assert path.read_text() == text, f"{path.name} drifted: run `make crds`"


def test_ankahost_is_cluster_scoped_with_its_columns() -> None:
    spec = crd.build_host_crd()["spec"]
    assert spec["scope"] == "Cluster" and spec["names"]["shortNames"] == ["ah"]
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"] if "priority" not in c]
    assert columns == ["Ready", "VMs", "CPU", "Memory", "Age"]


def _schema() -> dict[str, object]:
    version = crd.build_crd()["spec"]["versions"][0]
    return version["schema"]["openAPIV3Schema"]  # type: ignore[no-any-return]


def test_schema_is_structural() -> None:
    def walk(node: object) -> None:
        if isinstance(node, dict):
            assert "$ref" not in node and "anyOf" not in node and "allOf" not in node
            if "properties" in node:
                assert node.get("type") == "object"
                assert "additionalProperties" not in node
            for value in node.values():
                walk(value)
        elif isinstance(node, list):
            for value in node:
                walk(value)

    walk(_schema())


GOOD = {"spec": {"template": "t", "handler": "script", "script": {"run": "true"}}}


@pytest.mark.parametrize(
    ("spec", "error"),
    [
        pytest.param({"handler": "script"}, "'template' is a required property", id="missing-template"),
        pytest.param({"template": "t"}, "'handler' is a required property", id="missing-handler"),
        pytest.param(
            {"template": "t", "handler": "script", "resources": {"cpu": "lots", "memoryMiB": 1024}},
            "'lots' is not of type 'integer'",
            id="cpu-not-int",
        ),
        pytest.param({"template": "t", "handler": "Bad Name"}, "does not match", id="handler-pattern"),
        pytest.param(
            {"template": "t", "handler": "script", "backoffLimit": -1},
            "less than the minimum",
            id="negative-backoff",
        ),
    ],
)
def test_schema_refuses_bad_specs(spec: dict[str, object], error: str) -> None:
    jsonschema.validate(GOOD, _schema())
    with pytest.raises(jsonschema.ValidationError, match=error):
        jsonschema.validate({"spec": spec}, _schema())


def test_printer_columns_and_names() -> None:
    spec = crd.build_crd()["spec"]
    assert spec["names"]["shortNames"] == ["aj"]
    columns = [c["name"] for c in spec["versions"][0]["additionalPrinterColumns"]]
    assert columns[:4] == ["Phase", "Host", "Template", "Tag"] and columns[-1] == "Age"
    assert spec["versions"][0]["subresources"] == {"status": {}}
