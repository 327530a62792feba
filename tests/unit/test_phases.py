from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from anklet.models import AnkaJobStatus, Phase
from anklet.wire import Observation, ObservedPhase
from controller import phases

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def scheduled_status(phase: Phase = Phase.SCHEDULED, attempts: int = 1) -> AnkaJobStatus:
    return AnkaJobStatus(phase=phase, host="mac-1", vm_name="vm", attempts=attempts)


def obs(phase: ObservedPhase, *, attempt: int = 1, deleted: bool = True, **kw: object) -> Observation:
    return Observation(
        uid="u", attempt=attempt, host="mac-1", phase=phase, vm_name="vm", vm_deleted=deleted, **kw
    )  # type: ignore[arg-type]


def test_schedule_only_from_pending() -> None:
    patch = phases.scheduled(AnkaJobStatus(), host="mac-1", vm_name="vm", attempt=1, now=NOW)
    assert patch is not None and patch["phase"] == "Scheduled" and patch["attempts"] == 1
    assert phases.scheduled(scheduled_status(), host="mac-2", vm_name="x", attempt=2, now=NOW) is None


def test_unschedulable_condition_is_written_once() -> None:
    status = AnkaJobStatus()
    patch = phases.pending_unschedulable(status, "0/2 hosts available: 2 insufficient cpu", NOW)
    assert patch is not None
    assert patch["conditions"][0]["reason"] == "Unschedulable"
    again = AnkaJobStatus.model_validate({**status.model_dump(by_alias=True), **patch})
    assert phases.pending_unschedulable(again, "0/2 hosts available: 2 insufficient cpu", NOW) is None


@pytest.mark.parametrize(
    ("current", "observed", "expected"),
    [
        pytest.param(Phase.SCHEDULED, ObservedPhase.PROVISIONING, "Provisioning", id="forward-1"),
        pytest.param(Phase.SCHEDULED, ObservedPhase.RUNNING, "Running", id="skip-forward"),
        pytest.param(Phase.RUNNING, ObservedPhase.PROVISIONING, None, id="never-backward"),
        pytest.param(Phase.RUNNING, ObservedPhase.RUNNING, None, id="duplicate"),
    ],
)
def test_observations_apply_forward_only(
    current: Phase, observed: ObservedPhase, expected: str | None
) -> None:
    outcome = phases.apply_observation(
        scheduled_status(current), obs(observed, deleted=False), backoff_limit=2, now=NOW
    )
    assert (outcome.patch or {}).get("phase") == expected
    assert not outcome.release


def test_success_needs_the_vm_gone() -> None:
    status = scheduled_status(Phase.RUNNING)
    pending = phases.apply_observation(
        status, obs(ObservedPhase.SUCCEEDED, deleted=False, exit_code=0), backoff_limit=2, now=NOW
    )
    assert pending.patch is None and not pending.release
    done = phases.apply_observation(
        status, obs(ObservedPhase.SUCCEEDED, exit_code=0, output="hi"), backoff_limit=2, now=NOW
    )
    assert done.release and done.patch is not None
    assert done.patch["phase"] == "Succeeded" and done.patch["exitCode"] == 0 and done.patch["output"] == "hi"


def test_workload_failure_is_final_with_exit_code() -> None:
    outcome = phases.apply_observation(
        scheduled_status(Phase.RUNNING),
        obs(ObservedPhase.FAILED, exit_code=3, reason="ExitCode", message="workload exited 3"),
        backoff_limit=2,
        now=NOW,
    )
    assert outcome.patch is not None and outcome.patch["phase"] == "Failed" and outcome.patch["exitCode"] == 3


def test_infrastructure_failure_is_retried_until_backoff_limit() -> None:
    failure = {"reason": "ProvisioningFailed", "message": "start failed", "retryable": True}
    retry = phases.apply_observation(
        scheduled_status(attempts=1), obs(ObservedPhase.FAILED, **failure), backoff_limit=1, now=NOW
    )
    assert retry.release and retry.patch is not None
    assert retry.patch["phase"] == "Pending" and retry.patch["host"] is None
    final = phases.apply_observation(
        scheduled_status(attempts=2),
        obs(ObservedPhase.FAILED, attempt=2, **failure),
        backoff_limit=1,
        now=NOW,
    )
    assert final.patch is not None and final.patch["phase"] == "Failed"
    assert "backoffLimit 1 reached after 2 attempts" in final.patch["message"]


def test_stale_attempt_and_terminal_jobs_ignore_observations() -> None:
    stale = phases.apply_observation(
        scheduled_status(attempts=2), obs(ObservedPhase.SUCCEEDED, attempt=1), backoff_limit=2, now=NOW
    )
    assert stale.patch is None and not stale.release
    done = AnkaJobStatus(phase=Phase.SUCCEEDED, host="mac-1", attempts=1)
    assert phases.apply_observation(done, obs(ObservedPhase.FAILED), backoff_limit=2, now=NOW).patch is None


def test_finished_is_written_once() -> None:
    patch = phases.finished(AnkaJobStatus(), Phase.CANCELLED, reason="Cancelled", message="x", now=NOW)
    assert patch is not None and patch["completionTime"] == "2026-11-25T12:00:00Z"
    terminal = AnkaJobStatus(phase=Phase.CANCELLED)
    assert phases.finished(terminal, Phase.FAILED, reason="r", message="m", now=NOW) is None


def test_learning_a_template_size_requeues_without_spending_the_backoff() -> None:
    sized = obs(
        ObservedPhase.FAILED, retryable=True, reason="TemplateSized", message="needs 6 CPU / 14336 MiB"
    )
    outcome = phases.apply_observation(scheduled_status(attempts=1), sized, backoff_limit=0, now=NOW)
    assert outcome.release and outcome.patch is not None and outcome.patch["phase"] == "Pending"
    after = AnkaJobStatus.model_validate(
        {**scheduled_status(attempts=1).model_dump(by_alias=True), **outcome.patch}
    )
    again = scheduled_status(attempts=2).model_copy(update={"conditions": after.conditions})
    failure = obs(ObservedPhase.FAILED, attempt=2, retryable=True, reason="ProvisioningFailed")
    retried = phases.apply_observation(again, failure, backoff_limit=1, now=NOW)
    assert retried.patch is not None and retried.patch["phase"] == "Pending", (
        "one real retry is still allowed"
    )


def _explained(message: str) -> AnkaJobStatus:
    patch = phases.pending_unschedulable(AnkaJobStatus(), message, NOW)
    assert patch is not None
    return AnkaJobStatus.model_validate(patch)


@pytest.mark.parametrize(
    ("old", "new", "last_written_ago", "due"),
    [
        (None, "0/12 hosts available: 12 no free VM slot", None, True),  # no explanation yet
        ("0/12 hosts available: 12 no free VM slot", "0/12 hosts available: 12 no free VM slot", 0, False),
        # only the counts moved: at most once per refresh
        ("0/12 hosts available: 11 no free VM slot, 1 insufficient cpu",
         "0/12 hosts available: 10 no free VM slot, 2 insufficient cpu", 5, False),
        ("0/12 hosts available: 11 no free VM slot, 1 insufficient cpu",
         "0/12 hosts available: 10 no free VM slot, 2 insufficient cpu", 31, True),
        ("0/12 hosts available: 11 no free VM slot, 1 insufficient cpu",
         "0/12 hosts available: 10 no free VM slot, 2 insufficient cpu", None, True),  # after a restart
        # the reasons changed: at once
        ("0/12 hosts available: 12 no free VM slot",
         "0/12 hosts available: 11 no free VM slot, 1 insufficient memory", 1, True),
    ],
)  # fmt: skip
def test_a_waiting_jobs_explanation_is_rewritten_for_new_reasons_at_once_and_new_counts_rarely(
    old: str | None, new: str, last_written_ago: float | None, due: bool
) -> None:
    status = AnkaJobStatus() if old is None else _explained(old)
    last = None if last_written_ago is None else NOW - timedelta(seconds=last_written_ago)
    assert (
        phases.unschedulable_write_due(status, new, NOW, last_written=last, refresh=timedelta(seconds=30))
        is due
    )


def test_no_explanation_is_written_for_a_job_that_left_pending() -> None:
    status = scheduled_status()
    assert not phases.unschedulable_write_due(
        status, "0/1 hosts", NOW, last_written=None, refresh=timedelta(0)
    )


def test_a_cancel_nobody_requested_is_a_lost_reservation_and_retried() -> None:
    """A host deletes a VM whose record vanished from Redis and reports "cancelled": unless the
    user (or the handler) asked for it, the job is retried, never marked Cancelled."""
    running = scheduled_status(Phase.RUNNING)
    lost = phases.apply_observation(
        running, obs(ObservedPhase.CANCELLED), backoff_limit=2, now=NOW, cancel_requested=False
    )
    assert lost.release and lost.patch is not None
    assert lost.patch["phase"] == "Pending" and lost.patch["reason"] == phases.RESERVATION_LOST
    asked = phases.apply_observation(
        running, obs(ObservedPhase.CANCELLED), backoff_limit=2, now=NOW, cancel_requested=True
    )
    assert asked.patch is not None and asked.patch["phase"] == "Cancelled"
    spent = phases.apply_observation(
        scheduled_status(Phase.RUNNING, attempts=3),
        obs(ObservedPhase.CANCELLED, attempt=3),
        backoff_limit=2,
        now=NOW,
        cancel_requested=False,
    )
    assert spent.patch is not None and spent.patch["phase"] == "Failed"
    assert spent.patch["reason"] == phases.RESERVATION_LOST


def test_a_job_is_explained_once_its_status_says_why_it_waits() -> None:
    waiting = AnkaJobStatus()
    assert not phases.explained(waiting)
    patch = phases.pending_unschedulable(waiting, "0/2 hosts available: 2 no free VM slot", NOW)
    assert patch is not None
    assert phases.explained(AnkaJobStatus.model_validate({**waiting.model_dump(by_alias=True), **patch}))
    assert not phases.explained(scheduled_status())
