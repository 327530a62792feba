from __future__ import annotations

from anklet import crd, host_views
from anklet.tables import render
from tests.unit.test_status_views import NOW, host


def kubectl_headers(*, wide: bool) -> list[str]:
    """The headers `kubectl get ah` prints: NAME plus the CRD's printer columns."""
    columns = crd.build_host_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    return ["NAME"] + [c["name"].upper() for c in columns if wide or not c.get("priority")]


def test_the_columns_are_kubectls_plus_templates_before_age() -> None:
    for wide in (False, True):
        expected = kubectl_headers(wide=wide)
        expected.insert(expected.index("AGE"), "TEMPLATES")
        assert host_views.host_headers(host_views.host_columns(wide=wide)) == expected
    assert host_views.host_headers(host_views.host_columns()) == [
        "NAME",
        "READY",
        "VMS",
        "CPU",
        "MEMORY",
        "TEMPLATES",
        "AGE",
    ]


def test_cells_render_as_kubectl_renders_them() -> None:
    columns = host_views.host_columns(wide=True)
    pulling = host("mac-1", used=(1, 2, 4096), templates=3)
    pulling["status"]["pulling"] = {"template": "xcode-16", "tag": "v2", "sizeBytes": 42 * 2**30}
    hosts = [host("mac-2", ready=False, templates=0), pulling]
    text = render(host_views.host_headers(columns), host_views.host_rows(hosts, columns, NOW))
    assert text.splitlines() == [
        "NAME    READY   VMS   CPU   MEMORY     CORDONED   ANKA    PULLING    TEMPLATES   AGE",
        "mac-1   true    1/2   2/8   4/16 GiB   false      3.9.1   xcode-16   3           90m",
        "mac-2   false   0/2   0/8   0/16 GiB   false      3.9.1   <none>     0           90m",
    ]
    assert host_views.host_record(pulling, NOW)["pulling"]["template"] == "xcode-16"


def test_a_host_without_status_shows_none_like_kubectl() -> None:
    columns = host_views.host_columns()
    row = host_views.host_row({"metadata": {"name": "new"}}, columns, NOW)
    assert [c if isinstance(c, str) else c.text for c in row] == [
        "new",
        "<none>",
        "<none>",
        "<none>",
        "<none>",
        "0",
        "<none>",
    ]


def test_host_records_for_scripts() -> None:
    record = host_views.host_record(host("mac-1", cordoned=True, used=(1, 2, 4096), jobs=["ci/a"]), NOW)
    assert record["ready"] is True and record["cordoned"] is True and record["draining"] is True
    assert record["jobs"] == ["ci/a"] and record["templates"] == 1 and record["ageSeconds"] == 5400


def test_draining_means_no_new_work_with_vms_left_or_the_agent_stopping() -> None:
    assert host_views.is_draining(host("a", cordoned=True, used=(1, 2, 4096)))
    assert not host_views.is_draining(host("b", cordoned=True))
    assert host_views.is_draining(host("c", draining=True))
    assert not host_views.is_draining(host("d", used=(2, 8, 8192)))


def test_drain_progress_names_the_jobs_left() -> None:
    two = host_views.drain_progress(host("mac-2", used=(2, 4, 8192), jobs=["ci/a", "ci/b"]))
    assert two.line() == "ankahost/mac-2: 2 jobs left (2 VMs): ci/a, ci/b"
    one = host_views.drain_progress(host("mac-2", used=(1, 2, 4096), jobs=["ci/b"]))
    assert one.line() == "ankahost/mac-2: 1 job left (1 VM): ci/b" and not one.done
    unknown = host_views.drain_progress(host("mac-2", used=(1, 2, 4096)))
    assert unknown.line() == "ankahost/mac-2: 1 VM left"
    done = host_views.drain_progress(host("mac-2"))
    assert done.done and done.line() == "ankahost/mac-2 drained"
