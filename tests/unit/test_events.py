"""Which Kubernetes Event each status transition posts, and that each is posted once."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from anklet.models import AnkaJobStatus, Phase
from anklet.wire import Observation, ObservedPhase
from controller import events, phases
from controller.events import NORMAL, WARNING, Event, EventLedger, HostView, host_events, job_events

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def applied(status: AnkaJobStatus, patch: dict[str, Any] | None) -> AnkaJobStatus:
    """The status the API returns after a merge patch (None values delete the field)."""
    assert patch is not None
    body = status.model_dump(mode="json", by_alias=True, exclude_none=True)
    for key, value in patch.items():
        if value is None:
            body.pop(key, None)
        else:
            body[key] = value
    return AnkaJobStatus.model_validate(body)


def observed(phase: ObservedPhase, *, attempt: int = 1, **kw: Any) -> Observation:
    return Observation(uid="u", attempt=attempt, host="mac-1", phase=phase, vm_name="vm-a1", **kw)


def only(before: AnkaJobStatus, after: AnkaJobStatus, backoff_limit: int = 2) -> Event:
    [event] = job_events(before, after, backoff_limit=backoff_limit)
    return event


def scheduled(attempt: int = 1) -> tuple[AnkaJobStatus, AnkaJobStatus]:
    before = AnkaJobStatus() if attempt == 1 else AnkaJobStatus(attempts=attempt - 1)
    return before, applied(
        before, phases.scheduled(before, host="mac-1", vm_name=f"vm-a{attempt}", attempt=attempt, now=NOW)
    )


def test_the_happy_path_posts_one_event_per_phase() -> None:
    pending, sched = scheduled()
    assert only(pending, sched) == Event(
        "Scheduled", "attempt 1 placed on mac-1", NORMAL, ("phase", "Scheduled", 1)
    )
    outcome = phases.apply_observation(
        sched, observed(ObservedPhase.PROVISIONING, stage="Pulling"), backoff_limit=2, now=NOW
    )
    prov = applied(sched, outcome.patch)
    event = only(sched, prov)
    assert (event.reason, event.type) == ("Provisioning", NORMAL)
    assert event.message == "attempt 1: preparing VM vm-a1 on mac-1 (Pulling)"
    running = applied(
        prov,
        phases.apply_observation(prov, observed(ObservedPhase.RUNNING), backoff_limit=2, now=NOW).patch,
    )
    assert only(prov, running).message == "attempt 1: workload running in VM vm-a1 on mac-1"
    done = applied(
        running,
        phases.apply_observation(
            running, observed(ObservedPhase.SUCCEEDED, vm_deleted=True, exit_code=0), backoff_limit=2, now=NOW
        ).patch,
    )
    assert only(running, done) == Event("Succeeded", "workload exited 0", NORMAL, ("phase", "terminal"))


def test_a_failure_is_a_warning_that_names_the_status_reason() -> None:
    _, running = scheduled()
    running = running.model_copy(update={"phase": Phase.RUNNING})
    outcome = phases.apply_observation(
        running,
        observed(
            ObservedPhase.FAILED, vm_deleted=True, exit_code=3, reason="ExitCode", message="workload exited 3"
        ),
        backoff_limit=2,
        now=NOW,
    )
    event = only(running, applied(running, outcome.patch))
    assert (event.reason, event.type, event.message) == ("Failed", WARNING, "ExitCode: workload exited 3")


def test_cancelled_before_placement_and_while_running() -> None:
    pending = AnkaJobStatus()
    cancelled = applied(
        pending,
        phases.finished(pending, Phase.CANCELLED, reason="Cancelled", message="cancelled early", now=NOW),
    )
    assert only(pending, cancelled) == Event("Cancelled", "cancelled early", NORMAL, ("phase", "terminal"))


def test_a_retry_says_which_attempt_of_the_backoff_limit_and_why() -> None:
    _, sched = scheduled()
    outcome = phases.apply_observation(
        sched,
        observed(
            ObservedPhase.FAILED,
            vm_deleted=True,
            retryable=True,
            reason="ProvisioningFailed",
            message="start failed",
        ),
        backoff_limit=2,
        now=NOW,
    )
    event = only(sched, applied(sched, outcome.patch), backoff_limit=2)
    assert (event.reason, event.type) == ("Retrying", WARNING)
    assert event.message == "attempt 1 failed on mac-1: start failed; retrying (retry 1 of backoffLimit 2)"
    assert event.key == ("phase", "Pending", 1)


@pytest.mark.parametrize(
    ("reason", "event_reason", "event_type"),
    [("HostLost", "HostLost", WARNING), ("ReservationLost", "ReservationLost", WARNING)],
)
def test_lost_hosts_and_reservations_have_their_own_reasons(
    reason: str, event_reason: str, event_type: str
) -> None:
    _, sched = scheduled()
    requeued = applied(sched, phases.requeue(sched, reason=reason, message="gone"))
    event = only(sched, requeued)
    assert (event.reason, event.type) == (event_reason, event_type)
    assert "retry 1 of backoffLimit 2" in event.message


def test_learning_a_template_size_is_not_a_failure() -> None:
    _, sched = scheduled()
    outcome = phases.apply_observation(
        sched,
        observed(ObservedPhase.FAILED, vm_deleted=True, retryable=True, reason=phases.SIZED, message="6 CPU"),
        backoff_limit=0,
        now=NOW,
    )
    event = only(sched, applied(sched, outcome.patch), backoff_limit=0)
    assert (event.reason, event.type) == ("TemplateSized", NORMAL)


def test_host_lost_while_running_fails_the_job() -> None:
    _, sched = scheduled()
    running = sched.model_copy(update={"phase": Phase.RUNNING})
    failed = applied(running, phases.host_lost(running, backoff_limit=2, now=NOW))
    event = only(running, failed)
    assert (event.reason, event.message) == ("Failed", "HostLost: host mac-1 stopped heartbeating")


def test_unschedulable_is_posted_when_the_reason_changes_only() -> None:
    pending = AnkaJobStatus()
    first = applied(
        pending, phases.pending_unschedulable(pending, "0/2 hosts available: 2 insufficient cpu", NOW)
    )
    event = only(pending, first)
    assert (event.reason, event.type, event.message) == (
        "Unschedulable",
        WARNING,
        "0/2 hosts available: 2 insufficient cpu",
    )
    assert job_events(first, first, backoff_limit=2) == [], "the same status twice: no Event"
    second = applied(
        first, phases.pending_unschedulable(first, "0/2 hosts available: 2 no free VM slot", NOW)
    )
    assert only(first, second).message == "0/2 hosts available: 2 no free VM slot"


def test_writes_that_change_no_phase_post_nothing() -> None:
    _, sched = scheduled()
    with_github = sched.model_copy(update={"message": "runner registered"})
    assert job_events(sched, with_github, backoff_limit=2) == []


def test_the_ledger_posts_each_transition_once_even_from_a_stale_view() -> None:
    ledger = EventLedger()
    pending, sched = scheduled()
    [event] = job_events(pending, sched, backoff_limit=2)
    assert ledger.fresh("uid-1", event.key)
    # The same step again (kopf redelivered, or the view lagged behind our own write):
    assert not ledger.fresh("uid-1", event.key)
    assert ledger.fresh("uid-2", event.key), "per object"
    # A second attempt is a new transition.
    _, again = scheduled(attempt=2)
    [second] = job_events(AnkaJobStatus(attempts=1), again, backoff_limit=2)
    assert ledger.fresh("uid-1", second.key)
    # Only one terminal Event, whatever terminal phase a stale view tries next.
    terminal = ("phase", "terminal")
    assert ledger.fresh("uid-1", terminal) and not ledger.fresh("uid-1", terminal)
    ledger.forget("uid-1")
    assert ledger.fresh("uid-1", terminal)


def test_the_ledger_keeps_one_unschedulable_entry_per_job() -> None:
    ledger = EventLedger()
    for i in range(100):
        assert ledger.fresh("uid", ("Unschedulable", 0, f"message {i % 2}"))
    assert not ledger.fresh("uid", ("Unschedulable", 0, "message 1"))
    assert len(ledger._seen["uid"]) == 1


def test_is_phase_change() -> None:
    assert events.is_phase_change(Event("Running", "", key=("phase", "Running", 1)))
    assert not events.is_phase_change(Event("Unschedulable", "", key=("Unschedulable", 0, "x")))


# ----- AnkaHost ------------------------------------------------------------------------------------
def reasons(before: HostView | None, after: HostView) -> list[str]:
    return [e.reason for e in host_events(before, after)]


def test_host_readiness_flips() -> None:
    assert reasons(HostView(ready=True), HostView(ready=False)) == ["NotReady"]
    assert host_events(HostView(ready=True), HostView(ready=False))[0].type == WARNING
    assert reasons(HostView(ready=False), HostView(ready=True)) == ["Ready"]
    assert reasons(None, HostView(ready=True)) == [], "first sight: nothing to compare with"
    assert reasons(HostView(ready=True, vms=1), HostView(ready=True, vms=2)) == []


def test_cordon_drain_and_uncordon() -> None:
    ready = HostView(ready=True, vms=2)
    cordoned = HostView(ready=True, cordoned=True, vms=2)
    [event] = host_events(ready, cordoned)
    assert (event.reason, event.message) == (
        "Cordoned",
        "spec.unschedulable: no new jobs; 2 VM(s) still running",
    )
    assert reasons(cordoned, HostView(ready=True, cordoned=True, vms=1)) == []
    assert reasons(HostView(ready=True, cordoned=True, vms=1), HostView(ready=True, cordoned=True)) == [
        "Drained"
    ]
    assert reasons(HostView(ready=True, cordoned=True), HostView(ready=True)) == ["Uncordoned"]
    assert reasons(HostView(ready=True, vms=1), HostView(ready=True)) == [], "not cordoned: just idle"


def test_a_host_that_asks_for_no_work_is_draining() -> None:
    assert reasons(HostView(ready=True, vms=1), HostView(ready=True, draining=True, vms=1)) == ["Draining"]
    assert reasons(HostView(ready=True, draining=True, vms=1), HostView(ready=True, draining=True)) == [
        "Drained"
    ]
