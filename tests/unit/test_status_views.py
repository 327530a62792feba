from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anklet import models, status_views
from anklet.status_views import JobWatch
from anklet.tables import render
from controller import phases

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"


def ts(minutes_ago: float) -> str:
    return (NOW - timedelta(minutes=minutes_ago)).strftime("%Y-%m-%dT%H:%M:%SZ")


def job(
    name: str,
    phase: str | None = "Pending",
    *,
    namespace: str = "default",
    created: float = 1,
    uid: str | None = None,
    **status: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {
        "apiVersion": models.API_VERSION,
        "kind": "AnkaJob",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "uid": uid or f"uid-{namespace}-{name}",
            "creationTimestamp": ts(created),
            "resourceVersion": "1",
        },
        "spec": {"template": TEMPLATE, "tag": "2c4r", "handler": "script", "script": {"run": "true"}},
    }
    if phase is not None:
        body["status"] = {"phase": phase, **status}
    return body


def unschedulable(message: str, minutes_ago: float = 0.5) -> list[dict[str, Any]]:
    return [
        {
            "type": "Scheduled",
            "status": "False",
            "reason": "Unschedulable",
            "message": message,
            "lastTransitionTime": ts(minutes_ago),
        }
    ]


def host(
    name: str,
    *,
    ready: bool = True,
    cordoned: bool = False,
    draining: bool = False,
    used: tuple[int, int, int] = (0, 0, 0),
    capacity: tuple[int, int, int] = (2, 8, 16384),
    jobs: list[str] | None = None,
    templates: int = 1,
) -> dict[str, Any]:
    def cap(values: tuple[int, int, int]) -> dict[str, int]:
        return {"vmSlots": values[0], "cpu": values[1], "memoryMiB": values[2]}

    return {
        "metadata": {"name": name, "creationTimestamp": ts(90)},
        "spec": {"unschedulable": cordoned},
        "status": {
            "ready": ready,
            "draining": draining,
            "capacity": cap(capacity),
            "allocated": cap(used),
            "vms": f"{used[0]}/{capacity[0]}",
            "cpu": f"{used[1]}/{capacity[1]}",
            "memory": f"{used[2] // 1024}/{capacity[2] // 1024} GiB",
            "jobs": jobs or [],
            "templates": [{"uuid": f"t{i}", "name": "anklet", "tag": "2c4r"} for i in range(templates)],
            "ankaVersion": "3.9.1",
        },
    }


def test_the_condition_type_is_the_controllers() -> None:
    assert status_views.SCHEDULED_CONDITION == phases.COND_SCHEDULED


def test_a_job_row_has_the_listed_columns() -> None:
    row = status_views.job_row(job("build", "Running", host="mac-1", attempts=2, reason="running", created=3))
    assert row.cells(NOW) == [
        "default",
        "build",
        row.cells(NOW)[2],
        "mac-1",
        f"{TEMPLATE}:2c4r",
        "2",
        "3m",
        "running",
    ]
    assert row.cells(NOW)[2].text == "Running"  # type: ignore[union-attr]
    assert status_views.JOB_HEADERS == (
        "NAMESPACE",
        "NAME",
        "PHASE",
        "HOST",
        "TEMPLATE:TAG",
        "ATTEMPTS",
        "AGE",
        "REASON",
    )


def test_a_fresh_job_without_status_reads_as_pending() -> None:
    row = status_views.job_row(job("new", None))
    assert (row.phase, row.host, row.attempts, row.reason) == ("Pending", None, 0, None)
    assert row.cells(NOW)[3] == "-"


def test_rows_accept_the_pydantic_model_too() -> None:
    model = models.AnkaJob.model_validate(job("typed", "Succeeded", exitCode=0, attempts=1))
    record = status_views.job_row(model).record(NOW)
    assert record["phase"] == "Succeeded" and record["exitCode"] == 0 and record["ageSeconds"] == 60


def test_rows_are_filtered_by_phase_and_sorted_by_namespace_then_age() -> None:
    jobs = [
        job("young", "Pending", created=1),
        job("old", "Pending", created=9),
        job("done", "Succeeded", created=20),
        job("other", "Pending", namespace="a-team", created=0),
    ]
    names = [r.name for r in status_views.job_rows(jobs, phase="Pending")]
    assert names == ["other", "old", "young"]
    assert len(status_views.job_rows(jobs)) == 4


@pytest.mark.parametrize(("text", "phase"), [("pending", "Pending"), (" RUNNING ", "Running")])
def test_phase_names_are_case_insensitive(text: str, phase: str) -> None:
    assert status_views.normalize_phase(text) == phase


def test_an_unknown_phase_names_the_known_ones() -> None:
    with pytest.raises(ValueError, match="Provisioning"):
        status_views.normalize_phase("Waiting")


def test_why_a_job_waits_comes_from_its_scheduled_condition() -> None:
    message = "0/12 hosts available: 8 no free VM slot, 4 insufficient memory"
    waiting = job("stuck", reason="Unschedulable", message=message, conditions=unschedulable(message))
    assert status_views.waiting_reason(waiting) == ("Unschedulable", message)


def test_a_requeued_job_waits_for_its_retry_not_for_a_stale_condition() -> None:
    placed = [{"type": "Scheduled", "status": "True", "reason": "Scheduled", "message": "placed on mac-1"}]
    retry = job(
        "retry",
        reason="HostLost",
        message="attempt 1 failed on mac-1: host mac-1 stopped heartbeating; retrying",
        conditions=placed,
        attempts=1,
    )
    reason, message = status_views.waiting_reason(retry)
    assert reason == "HostLost" and "retrying" in message


def test_a_job_the_controller_never_saw_waits_for_it() -> None:
    assert status_views.waiting_reason(job("new", None))[0] == "Waiting"


def test_the_fleet_summary_counts_hosts_capacity_and_jobs() -> None:
    hosts = [
        host("mac-1", used=(2, 8, 16384), jobs=["default/a", "default/b"]),
        host("mac-2", used=(1, 2, 4096)),
        host("mac-3", ready=False),
        host("mac-4", cordoned=True, used=(1, 2, 4096)),
        host("mac-5", cordoned=True),
        host("mac-6", draining=True),
    ]
    message = "0/6 hosts available: 2 no free VM slot, 1 host not ready"
    jobs = [
        job("young", created=1, conditions=unschedulable("0/6 hosts available: 3 insufficient cpu")),
        job("oldest", created=7, reason="Unschedulable", message=message, conditions=unschedulable(message)),
        job("run", "Running", created=30),
        job("ok", "Succeeded", created=60),
        job("ok2", "Succeeded", created=60),
    ]
    summary = status_views.fleet_summary(hosts, jobs)
    record = summary.record(NOW)
    assert record["hosts"] == {"total": 6, "ready": 5, "notReady": 1, "cordoned": 2, "draining": 2}
    # free slots only on hosts that take work: mac-2 has 1; mac-3/4/5/6 do not count.
    assert record["vmSlots"] == {"used": 4, "free": 1, "total": 12}
    assert record["cpu"] == {"allocated": 12, "total": 48}
    assert record["memoryMiB"] == {"allocated": 24576, "total": 6 * 16384}
    assert record["jobs"] == {
        "Pending": 2,
        "Scheduled": 0,
        "Provisioning": 0,
        "Running": 1,
        "Succeeded": 2,
        "Failed": 0,
        "Cancelled": 0,
    }
    assert record["oldestPending"] == {
        "namespace": "default",
        "name": "oldest",
        "created": ts(7),
        "ageSeconds": 420,
        "reason": "Unschedulable",
        "message": message,
    }
    text = render(None, summary.rows(NOW))
    assert "HOSTS            6 total: 5 ready, 1 not ready, 2 cordoned, 2 draining" in text
    assert "VM SLOTS         4 used, 1 free, 12 total" in text
    assert "CPU              12/48 cores allocated" in text
    assert "MEMORY           24/96 GiB allocated" in text
    assert "JOBS             2 Pending, 1 Running, 2 Succeeded" in text
    assert f"OLDEST PENDING   default/oldest, waiting 7m: Unschedulable: {message}" in text


def test_an_empty_fleet_says_so() -> None:
    summary = status_views.fleet_summary([], [], namespace="ci")
    text = render(None, summary.rows(NOW))
    assert "JOBS (ci)   none" in text and "OLDEST PENDING" not in text
    assert summary.record(NOW)["oldestPending"] is None


# ----- watch --------------------------------------------------------------------------------


def test_a_watch_prints_a_line_per_visible_change_only() -> None:
    watch = JobWatch()
    assert [r.name for r in watch.seed([job("a"), job("b", "Running")])] == ["a", "b"]
    assert watch.apply("MODIFIED", job("a")) is None, "an update nobody can see is no news"
    line = watch.apply("MODIFIED", job("a", "Scheduled", host="mac-1", attempts=1))
    assert line is not None and line.type == "MODIFIED" and line.row.host == "mac-1"
    added = watch.apply("ADDED", job("c"))
    assert added is not None and added.type == "ADDED"
    deleted = watch.apply("DELETED", job("b", "Running"))
    assert deleted is not None and deleted.cells(NOW)[2].text == "Deleted"  # type: ignore[union-attr]
    assert deleted.record(NOW)["type"] == "DELETED"


def test_a_phase_filtered_watch_shows_the_line_where_a_job_leaves_the_phase() -> None:
    watch = JobWatch("Pending")
    assert [r.name for r in watch.seed([job("a"), job("b", "Running")])] == ["a"]
    assert watch.apply("MODIFIED", job("b", "Succeeded")) is None
    left = watch.apply("MODIFIED", job("a", "Scheduled", host="mac-1"))
    assert left is not None and left.row.phase == "Scheduled"
    assert watch.apply("MODIFIED", job("a", "Running", host="mac-1")) is None
    assert watch.apply("ADDED", job("c", "Running")) is None
    assert watch.apply("DELETED", job("c", "Running")) is None


def test_after_a_relist_the_watch_reports_what_it_missed() -> None:
    watch = JobWatch()
    watch.seed([job("same"), job("changed"), job("gone")])
    lines = watch.resync([job("same"), job("changed", "Running", host="mac-2"), job("new")])
    assert sorted((line.type, line.row.name) for line in lines) == [
        ("ADDED", "new"),
        ("DELETED", "gone"),
        ("MODIFIED", "changed"),
    ]
    assert watch.resync([job("same"), job("changed", "Running", host="mac-2"), job("new")]) == []


def test_pulls_in_progress_are_listed_by_host() -> None:
    busy = host("mac-2")
    busy["status"]["pulling"] = {"template": "xcode", "tag": "16", "sizeBytes": 3 * 2**30, "startedAt": ts(5)}
    summary = status_views.fleet_summary([host("mac-1"), busy], [])
    rows = {str(r[0]): r[1] for r in summary.rows(NOW)}
    assert rows["PULLS"] == "mac-2: xcode:16, 3.0 GiB, for 5m"
    [record] = summary.record(NOW)["pulls"]
    assert (record["host"], record["sizeBytes"], record["seconds"]) == ("mac-2", 3 * 2**30, 300)
    assert "PULLS" not in {str(r[0]) for r in status_views.fleet_summary([host("mac-1")], []).rows(NOW)}
