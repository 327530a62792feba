"""Phase transitions of an AnkaJob as pure functions returning status patches.

Every function takes the current status and returns the merge patch to apply (or None when
nothing changes), so applying the same input twice, or on a stale view, is harmless: the
second call sees the new status and returns None, and observations only move forward.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from anklet.models import AnkaJobStatus, Condition, ConditionStatus, Phase
from anklet.wire import Observation, ObservedPhase

Patch = dict[str, Any]

COND_SCHEDULED = "Scheduled"
COND_FINISHED = "Finished"
#: The host no longer holds the job's attempt (its Redis record is gone): the attempt is retried.
RESERVATION_LOST = "ReservationLost"


def _ts(now: datetime) -> str:
    return now.strftime("%Y-%m-%dT%H:%M:%SZ")


def _condition(
    status: AnkaJobStatus, type_: str, value: ConditionStatus, reason: str, message: str, now: datetime
) -> list[dict[str, Any]] | None:
    """The conditions list with one condition set; None when it is already exactly so."""
    existing = {c.type: c for c in status.conditions}
    old = existing.get(type_)
    if old is not None and (old.status, old.reason, old.message) == (value, reason, message):
        return None
    changed_at = old.last_transition_time if old is not None and old.status == value else None
    existing[type_] = Condition(
        type=type_,
        status=value,
        reason=reason,
        message=message,
        last_transition_time=changed_at or now,
    )
    return [c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in existing.values()]


def pending_unschedulable(status: AnkaJobStatus, message: str, now: datetime) -> Patch | None:
    """Stay Pending and say why; no write when the reason did not change."""
    if status.phase != Phase.PENDING:
        return None
    conditions = _condition(status, COND_SCHEDULED, ConditionStatus.FALSE, "Unschedulable", message, now)
    if conditions is None:
        return None
    return {
        "phase": Phase.PENDING.value,
        "reason": "Unschedulable",
        "message": message,
        "conditions": conditions,
    }


def explained(status: AnkaJobStatus) -> bool:
    """A waiting job whose status already says why it waits (an Unschedulable condition)."""
    if status.phase != Phase.PENDING:
        return False
    old = next((c for c in status.conditions if c.type == COND_SCHEDULED), None)
    return old is not None and old.status == ConditionStatus.FALSE and old.reason == "Unschedulable"


_COUNTS = re.compile(r"\d+")


def unschedulable_write_due(
    status: AnkaJobStatus, message: str, now: datetime, *, last_written: datetime | None, refresh: timedelta
) -> bool:
    """Whether a waiting job's explanation is worth a status write now.

    The scheduler's message carries host counts (`0/12 hosts available: 8 no free VM slot, 4
    insufficient memory`) that shift with every placement and release; writing every shift would
    rewrite every waiting job on every capacity change, O(pending) API writes per freed slot. So
    a job with no explanation gets one at once, and so does a change of *reasons*; a change of
    counts alone is written at most once per `refresh` (`last_written`: our last write of it, or
    None when unknown, e.g. after a restart)."""
    if status.phase != Phase.PENDING:
        return False
    if not explained(status):
        return True
    old = next(c for c in status.conditions if c.type == COND_SCHEDULED)
    if old.message == message:
        return False
    if _COUNTS.sub("#", old.message) != _COUNTS.sub("#", message):
        return True
    return last_written is None or now - last_written >= refresh


def scheduled(status: AnkaJobStatus, *, host: str, vm_name: str, attempt: int, now: datetime) -> Patch | None:
    if status.phase != Phase.PENDING:
        return None
    message = f"attempt {attempt} placed on {host}"
    conditions = _condition(status, COND_SCHEDULED, ConditionStatus.TRUE, "Scheduled", message, now) or []
    return {
        "phase": Phase.SCHEDULED.value,
        "host": host,
        "vmName": vm_name,
        "attempts": attempt,
        "reason": "Scheduled",
        "message": message,
        "exitCode": None,
        "output": None,
        "conditions": conditions,
    }


def finished(
    status: AnkaJobStatus,
    phase: Phase,
    *,
    reason: str,
    message: str,
    now: datetime,
    exit_code: int | None = None,
    output: str | None = None,
) -> Patch | None:
    """Move to a terminal phase (once)."""
    if status.phase.is_terminal():
        return None
    value = ConditionStatus.TRUE
    conditions = _condition(status, COND_FINISHED, value, reason, message, now) or [
        c.model_dump(mode="json", by_alias=True, exclude_none=True) for c in status.conditions
    ]
    patch: Patch = {
        "phase": phase.value,
        "reason": reason,
        "message": message,
        "completionTime": _ts(now),
        "conditions": conditions,
    }
    if exit_code is not None:
        patch["exitCode"] = exit_code
    if output is not None:
        patch["output"] = output
    return patch


@dataclass(frozen=True)
class ObservationOutcome:
    """What to do after a host observation: the status patch and whether to free the host."""

    patch: Patch | None
    release: bool = False


_FORWARD = {ObservedPhase.PROVISIONING: Phase.PROVISIONING, ObservedPhase.RUNNING: Phase.RUNNING}


def apply_observation(
    status: AnkaJobStatus,
    obs: Observation,
    *,
    backoff_limit: int,
    now: datetime,
    cancel_requested: bool = True,
) -> ObservationOutcome:
    """Fold one host observation into the status, forward only and for the current attempt only.

    A host reports "cancelled" whenever it deleted a VM nobody wants any more. Unless a cancel
    was requested (`cancel_requested`: the spec, a deletion or the handler), that means the
    host lost the job's record (Redis lost writes, e.g. in a failover): the user's job is
    retried, never marked Cancelled."""
    if status.phase.is_terminal() or obs.attempt != status.attempts or obs.host != status.host:
        return ObservationOutcome(patch=None)
    if obs.phase in _FORWARD:
        target = _FORWARD[obs.phase]
        if target.rank <= status.phase.rank:
            return ObservationOutcome(patch=None)
        patch: Patch = {
            "phase": target.value,
            "reason": obs.stage or target.value,
            "message": obs.message or "",
        }
        if target == Phase.RUNNING and status.start_time is None:
            patch["startTime"] = _ts(now)
        return ObservationOutcome(patch=patch)
    if not obs.vm_deleted:
        # Terminal reports are only trusted once the VM is gone; until then keep waiting.
        return ObservationOutcome(patch=None)
    if obs.phase == ObservedPhase.CANCELLED and not cancel_requested:
        obs = obs.model_copy(
            update={
                "phase": ObservedPhase.FAILED,
                "reason": RESERVATION_LOST,
                "message": "the host deleted the VM without a cancel request: it no longer held the job",
                "retryable": True,
            }
        )
    if obs.phase == ObservedPhase.SUCCEEDED:
        return ObservationOutcome(
            patch=finished(
                status,
                Phase.SUCCEEDED,
                reason=obs.reason or "Succeeded",
                message=obs.message or "workload exited 0",
                now=now,
                exit_code=obs.exit_code,
                output=obs.output,
            ),
            release=True,
        )
    if obs.phase == ObservedPhase.CANCELLED:
        return ObservationOutcome(
            patch=finished(
                status,
                Phase.CANCELLED,
                reason=obs.reason or "Cancelled",
                message=obs.message or "cancelled",
                now=now,
            ),
            release=True,
        )
    reason = obs.reason or "Failed"
    if obs.retryable and reason == SIZED:
        # Not a failure: the host learnt the template's size; place it again with that size.
        patch = requeue(status, reason=reason, message=obs.message or reason)
        conditions = _condition(status, SIZED, ConditionStatus.TRUE, SIZED, obs.message or "", now)
        if conditions is not None:
            patch["conditions"] = conditions
        return ObservationOutcome(patch=patch, release=True)
    if obs.retryable and status.attempts <= backoff_limit + _sizing_attempts(status):
        return ObservationOutcome(
            patch=requeue(status, reason=reason, message=obs.message or reason), release=True
        )
    message = obs.message or reason
    if obs.retryable:
        message = f"{message} (backoffLimit {backoff_limit} reached after {status.attempts} attempts)"
    return ObservationOutcome(
        patch=finished(
            status,
            Phase.FAILED,
            reason=reason,
            message=message,
            now=now,
            exit_code=obs.exit_code,
            output=obs.output,
        ),
        release=True,
    )


def host_lost(status: AnkaJobStatus, *, backoff_limit: int, now: datetime) -> Patch | None:
    """The job's host stopped heartbeating: a job not yet running moves elsewhere (an attempt,
    within backoffLimit); a running one has lost its workload and fails with HostLost."""
    if status.phase.is_terminal() or status.host is None:
        return None
    message = f"host {status.host} stopped heartbeating"
    if status.phase == Phase.RUNNING or status.attempts > backoff_limit:
        return finished(status, Phase.FAILED, reason="HostLost", message=message, now=now)
    return requeue(status, reason="HostLost", message=message)


SIZED = "TemplateSized"


def _sizing_attempts(status: AnkaJobStatus) -> int:
    """Attempts spent learning a template's size do not count against backoffLimit."""
    return int(any(c.type == SIZED for c in status.conditions))


def requeue(status: AnkaJobStatus, *, reason: str, message: str) -> Patch:
    """Back to Pending after an infrastructure failure; the next placement is a new attempt."""
    return {
        "phase": Phase.PENDING.value,
        "host": None,
        "vmName": None,
        "reason": reason,
        "message": f"attempt {status.attempts} failed on {status.host}: {message}; retrying",
    }
