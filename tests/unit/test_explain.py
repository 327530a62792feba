from __future__ import annotations

from datetime import timedelta
from typing import Any

from anklet import explain
from anklet.redis_protocol import HostSnapshot
from anklet.wire import HostInfo, Reservation
from controller import scheduling
from tests.unit.test_status_views import NOW, job, ts, unschedulable


def event(
    reason: str,
    message: str,
    at: float,
    *,
    name: str = "build",
    uid: str = "uid-default-build",
    type_: str = "Normal",
    count: int = 1,
    last: float | None = None,
    kind: str = "AnkaJob",
    rv: int = 1,
) -> dict[str, Any]:
    """A core/v1 Event as controller/kube.py posts it; `at` and `last` in minutes ago."""
    return {
        "apiVersion": "v1",
        "kind": "Event",
        "metadata": {"name": f"{name}.{reason}{at}", "namespace": "default", "resourceVersion": str(rv)},
        "involvedObject": {"kind": kind, "name": name, "namespace": "default", "uid": uid},
        "reason": reason,
        "message": message,
        "type": type_,
        "source": {"component": "anklet-controller"},
        "firstTimestamp": ts(at),
        "lastTimestamp": ts(at if last is None else last),
        "count": count,
    }


def failed_job() -> dict[str, Any]:
    output = "\n".join(f"line {i}" for i in range(1, 31)) + "\n"
    return job(
        "build",
        "Failed",
        created=10,
        host="mac-1",
        attempts=1,
        reason="ExitCode",
        message="workload exited 3",
        exitCode=3,
        output=output,
        startTime=ts(9),
        completionTime=ts(8),
        conditions=[
            {
                "type": "Scheduled",
                "status": "True",
                "reason": "Scheduled",
                "message": "attempt 1 placed on mac-1",
                "lastTransitionTime": ts(9.9),
            },
            {
                "type": "Finished",
                "status": "True",
                "reason": "ExitCode",
                "message": "workload exited 3",
                "lastTransitionTime": ts(8),
            },
        ],
    )


def unschedulable_message(slots_full: int, memory_full: int) -> str:
    """What the real scheduler says about a 2 CPU / 4 GiB job on such a fleet."""
    full = tuple(Reservation(uid=f"r{i}", attempt=1, cpu=1, memory_mib=1) for i in range(2))
    big = (Reservation(uid="big", attempt=1, cpu=1, memory_mib=14000),)

    def mac(name: str, used: tuple[Reservation, ...]) -> HostSnapshot:
        info = HostInfo(name=name, cpu=8, memory_mib=16384, vm_slots=2)
        return HostSnapshot(info, ready=True, reservations=used)

    hosts = [mac(f"s{i}", full) for i in range(slots_full)] + [mac(f"m{i}", big) for i in range(memory_full)]
    [(_, decision)] = scheduling.plan([scheduling.JobRequest(uid="j", cpu=2, memory_mib=4096)], hosts)
    assert isinstance(decision, scheduling.Unschedulable)
    return decision.message


def test_every_reason_the_scheduler_gives_has_a_hint() -> None:
    assert set(explain.UNFIT_HINTS) == {reason.value for reason in scheduling.Unfit}


def test_the_schedulers_message_is_parsed_into_counted_reasons() -> None:
    message = unschedulable_message(8, 4)
    assert message == "0/12 hosts available: 8 no free VM slot, 4 insufficient memory"
    assert explain.unfit_counts(message) == [(8, "no free VM slot"), (4, "insufficient memory")]
    assert explain.unfit_counts("attempt 1 failed on mac-1: boom; retrying") == []


def test_a_pending_job_says_why_in_one_sentence_with_what_would_help() -> None:
    message = unschedulable_message(8, 4)
    stuck = job("stuck", created=5, reason="Unschedulable", conditions=unschedulable(message))
    diagnosis = explain.diagnose(stuck, NOW)
    assert diagnosis.summary == f"Pending for 5m: {message}."
    hints = explain.UNFIT_HINTS
    assert diagnosis.hints == (hints["no free VM slot"], hints["insufficient memory"])


def test_a_pending_job_with_no_host_at_all() -> None:
    message = "0/0 hosts registered"
    diagnosis = explain.diagnose(job("stuck", conditions=unschedulable(message)), NOW)
    assert diagnosis.hints == (explain.NO_HOSTS_HINT,)


def test_a_job_the_controller_ignores_points_at_the_controller_after_a_while() -> None:
    assert explain.diagnose(job("new", None, created=0.1), NOW).hints == ()
    late = explain.diagnose(job("new", None, created=2), NOW)
    assert late.hints == (explain.CONTROLLER_HINT,) and "not placed by the controller yet" in late.summary


def test_a_requeued_job_says_its_attempt_failed_and_will_be_retried() -> None:
    message = "attempt 1 failed on mac-1: host mac-1 stopped heartbeating; retrying"
    retry = job("retry", reason="HostLost", message=message)
    diagnosis = explain.diagnose(retry, NOW)
    assert diagnosis.summary.endswith("retrying (HostLost).")
    assert diagnosis.hints == (explain.RETRY_HINT,)


def test_a_failed_job_gives_reason_exit_code_and_output_tail() -> None:
    diagnosis = explain.diagnose(failed_job(), NOW)
    assert diagnosis.summary == "Failed after 1 attempt: ExitCode: workload exited 3."
    assert diagnosis.exit_code == 3 and diagnosis.hints == (explain.FAILURE_HINTS["ExitCode"],)
    assert diagnosis.output_tail is not None
    tail = diagnosis.output_tail.splitlines()
    assert len(tail) == explain.OUTPUT_TAIL_LINES and tail[-1] == "line 30" and tail[0] == "line 11"


def test_an_unknown_infrastructure_failure_points_at_the_host() -> None:
    failed = job("x", "Failed", reason="AnkaVMFailed", message="vm failed (backoffLimit 2 reached)")
    assert explain.diagnose(failed, NOW).hints == (explain.INFRA_HINT,)


def test_other_phases_in_one_sentence() -> None:
    running = job("r", "Running", host="mac-1", attempts=1, startTime=ts(2), message="running")
    assert explain.diagnose(running, NOW).summary == "Running on mac-1 for 2m (attempt 1): running."
    ok = job("ok", "Succeeded", host="mac-2", attempts=1, startTime=ts(3), completionTime=ts(1), exitCode=0)
    assert explain.diagnose(ok, NOW).summary == "Succeeded on mac-2 in 2m after 1 attempt."
    gone = job("c", "Cancelled", message="cancelled; VM deleted")
    assert explain.diagnose(gone, NOW).summary == "Cancelled: cancelled; VM deleted."
    deleting = job("d", "Running", host="mac-1")
    deleting["metadata"]["deletionTimestamp"] = ts(0)
    assert explain.DELETING_HINT in explain.diagnose(deleting, NOW).hints


def test_the_timeline_without_events_comes_from_the_status() -> None:
    entries = explain.timeline(failed_job(), [])
    assert [(e.reason, e.source) for e in entries] == [
        ("Created", "status"),
        ("Scheduled", "status"),
        ("Running", "status"),
        ("Failed", "status"),
    ]
    assert entries[-1].message == "ExitCode: workload exited 3 (exit code 3)"
    assert entries[-1].type == "Warning"


def test_events_replace_the_status_entries_of_the_same_transition() -> None:
    events = [
        event("Failed", "workload exited 3", 8, type_="Warning"),
        event("Scheduled", "attempt 1 placed on mac-1", 9.9),
        event("Scheduled", "for another job", 9.9, name="other", uid="uid-default-other"),
        event("Scheduled", "an earlier job of the same name", 60, uid="old-uid"),
        event("Other", "about the host", 9, kind="AnkaHost"),
    ]
    entries = explain.timeline(failed_job(), events)
    assert [(e.reason, e.source) for e in entries] == [
        ("Created", "status"),
        ("Scheduled", "anklet-controller"),
        ("Running", "status"),
        ("Failed", "anklet-controller"),
    ]


def test_repeated_events_are_folded_with_their_count() -> None:
    message = "0/2 hosts available: 2 insufficient cpu"
    stuck = job("build", created=10, conditions=unschedulable(message, minutes_ago=9))
    events = [
        event("Unschedulable", message, 9, type_="Warning"),
        event("Unschedulable", message, 7, type_="Warning", count=2, last=6),
        event("Scheduled", "attempt 1 placed on mac-1", 5),
        event("Unschedulable", message, 4, type_="Warning"),
    ]
    entries = explain.timeline(stuck, events)
    assert [(e.reason, e.count) for e in entries] == [
        ("Created", 1),
        ("Unschedulable", 3),
        ("Scheduled", 1),
        ("Unschedulable", 1),
    ]
    folded = entries[1]
    assert folded.time == NOW - timedelta(minutes=9) and folded.last == NOW - timedelta(minutes=6)
    rows = explain.timeline_rows(entries, NOW - timedelta(minutes=10))
    assert rows[1][0] == "+60s" and rows[1][4] == f"{message} (×3 over 3m)"


def test_the_rendered_explanation_reads_top_down() -> None:
    events = [event("Scheduled", "attempt 1 placed on mac-1", 9.9), event("Failed", "workload exited 3", 8)]
    text = explain.render_explanation(explain.explain(failed_job(), events, NOW), NOW)
    assert text.startswith("AnkaJob default/build\n")
    assert "  exit:     3\n" in text
    assert "\nFailed after 1 attempt: ExitCode: workload exited 3.\n" in text
    assert f"  → {explain.FAILURE_HINTS['ExitCode']}\n" in text
    assert "  | line 30\n" in text and "  | line 10\n" not in text
    lines = text.splitlines()
    header = lines.index("AFTER   TYPE     REASON      FROM                MESSAGE")
    assert lines[header + 1].split()[:3] == ["+0s", "Normal", "Created"]
    assert lines[-1].split()[:3] == ["+2m", "Normal", "Failed"]
    assert "\x1b[" not in text


def test_the_explanation_record_is_plain_data() -> None:
    record = explain.explain(failed_job(), [], NOW).record(NOW)
    assert record["job"]["name"] == "build" and record["diagnosis"]["exitCode"] == 3
    assert record["timeline"][0] == {
        "time": ts(10),
        "lastTime": None,
        "type": "Normal",
        "reason": "Created",
        "message": "template 84266873-da90-4e0d-903b-ed0233471f9f:2c4r, handler script",
        "source": "status",
        "count": 1,
    }


def test_events_of_the_same_second_keep_the_order_they_were_written_in() -> None:
    events = [
        event("Provisioning", "attempt 1: preparing VM on mac-1 (Pulling)", 9.9, rv=49),
        event("Scheduled", "attempt 1 placed on mac-1", 9.9, rv=35),
    ]
    reasons = [e.reason for e in explain.timeline(failed_job(), events)]
    assert reasons[:3] == ["Created", "Scheduled", "Provisioning"]
