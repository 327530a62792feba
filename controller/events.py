"""Which Kubernetes Event a transition deserves: pure functions over the status before and after.

The reconciler calls these with the status its patch was computed from and the status the API
returned, so an Event always describes a transition a write really made. Each Event carries a
`key` naming that transition (e.g. "attempt 2 became Running"); `EventLedger` remembers the
keys already posted per object, so a step run twice, or a write computed from a stale view,
cannot post the same Event twice. Messages are built from status fields only, which hold no
secrets.

AnkaJob reasons: Unschedulable (Warning, whenever the reason it waits changes), Scheduled,
Provisioning, Running, Succeeded, Failed (Warning; the message starts with status.reason),
Cancelled, and on a retry one of Retrying (Warning), HostLost, ReservationLost (Warning) or
TemplateSized (Normal: the host learnt the template's size, not a failure).
AnkaHost reasons: Registered, Ready, NotReady (Warning), HostLost (Warning), Cordoned,
Uncordoned, Draining, Drained.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

from anklet.models import AnkaJobStatus, Phase
from controller.phases import SIZED

NORMAL = "Normal"
WARNING = "Warning"

#: Event kinds that may legitimately repeat with a new message (only the latest key is kept).
_REPEATABLE = frozenset({"Unschedulable"})
_TERMINAL_KEY = ("phase", "terminal")


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: str = NORMAL
    #: Identity of the transition this Event reports; posted at most once per object.
    key: tuple[Hashable, ...] = ()


def _phase_key(status: AnkaJobStatus) -> tuple[Hashable, ...]:
    if status.phase.is_terminal():
        return _TERMINAL_KEY  # a job ends once, whatever a stale view may try afterwards
    return ("phase", status.phase.value, status.attempts)


def _sizing_attempts(status: AnkaJobStatus) -> int:
    return int(any(c.type == SIZED for c in status.conditions))


def job_events(before: AnkaJobStatus, after: AnkaJobStatus, *, backoff_limit: int) -> list[Event]:
    """The Events for the write that took an AnkaJob's status from `before` to `after`."""
    n, host, vm = after.attempts, after.host or before.host or "?", after.vm_name or before.vm_name or "?"
    if after.phase == before.phase:
        if (
            after.phase == Phase.PENDING
            and after.reason == "Unschedulable"
            and (before.reason, before.message) != (after.reason, after.message)
        ):
            message = after.message or "no host can take the job now"
            return [Event("Unschedulable", message, WARNING, ("Unschedulable", n, message))]
        return []
    key = _phase_key(after)
    if after.phase == Phase.PENDING:
        return [_requeued(before, after, backoff_limit, key)]
    if after.phase == Phase.SCHEDULED:
        return [Event("Scheduled", after.message or f"attempt {n} placed on {host}", NORMAL, key)]
    if after.phase == Phase.PROVISIONING:
        stage = after.reason if after.reason and after.reason != Phase.PROVISIONING.value else ""
        detail = f" ({stage})" if stage else ""
        return [Event("Provisioning", f"attempt {n}: preparing VM {vm} on {host}{detail}", NORMAL, key)]
    if after.phase == Phase.RUNNING:
        return [Event("Running", f"attempt {n}: workload running in VM {vm} on {host}", NORMAL, key)]
    if after.phase == Phase.SUCCEEDED:
        return [Event("Succeeded", after.message or "workload exited 0", NORMAL, key)]
    if after.phase == Phase.CANCELLED:
        return [Event("Cancelled", after.message or "cancelled", NORMAL, key)]
    reason = after.reason or "Failed"
    message = after.message or reason
    text = message if reason == "Failed" else f"{reason}: {message}"
    return [Event("Failed", text, WARNING, key)]


def _requeued(
    before: AnkaJobStatus, after: AnkaJobStatus, backoff_limit: int, key: tuple[Hashable, ...]
) -> Event:
    """An attempt ended without a verdict and the job waits for a host again."""
    why = after.message or f"attempt {after.attempts} on {before.host or '?'} ended ({after.reason})"
    if after.reason == SIZED:
        return Event(SIZED, why, NORMAL, key)
    retry = after.attempts - _sizing_attempts(after)
    message = f"{why} (retry {retry} of backoffLimit {backoff_limit})"
    reason = after.reason if after.reason in ("HostLost", "ReservationLost") else "Retrying"
    return Event(reason, message, WARNING, key)


def is_phase_change(event: Event) -> bool:
    """True for the Event of a phase transition (not a new reason to stay Pending)."""
    return bool(event.key) and event.key[0] == "phase"


@dataclass(frozen=True)
class HostView:
    """What of an AnkaHost its Events are about."""

    ready: bool
    cordoned: bool = False
    draining: bool = False
    vms: int = 0


def host_events(before: HostView | None, after: HostView) -> list[Event]:
    """The Events for an AnkaHost whose state went from `before` (None: not known yet) to `after`."""
    if before is None:
        return []
    events: list[Event] = []
    if before.ready != after.ready:
        events.append(
            Event("Ready", "the agent's heartbeat lease is live")
            if after.ready
            else Event("NotReady", "the agent's heartbeat lease expired", WARNING)
        )
    running = f"{after.vms} VM(s) still running" if after.vms else "no VMs running"
    if before.cordoned != after.cordoned:
        events.append(
            Event("Cordoned", f"spec.unschedulable: no new jobs; {running}")
            if after.cordoned
            else Event("Uncordoned", "spec.unschedulable cleared: the host takes new jobs")
        )
    if after.draining and not before.draining:
        events.append(Event("Draining", f"the host asked for no new work; {running}"))
    if (after.cordoned or after.draining) and before.vms > 0 and after.vms == 0:
        events.append(Event("Drained", "no VMs left on the host"))
    return events


class EventLedger:
    """The transition keys already posted, per object (an AnkaJob's uid, an AnkaHost's name).

    Keys of a repeatable kind (Unschedulable) replace the previous one of that kind, so a job
    that waits for hours with a changing reason keeps one entry, not one per message."""

    def __init__(self) -> None:
        self._seen: dict[str, dict[Hashable, Hashable]] = {}

    def fresh(self, obj: str, key: tuple[Hashable, ...]) -> bool:
        """True (and remembered) when `key` was not posted for `obj` yet."""
        if not key:
            return True
        slot: Hashable = key[0] if key[0] in _REPEATABLE else key
        seen = self._seen.setdefault(obj, {})
        if seen.get(slot) == key:
            return False
        seen[slot] = key
        return True

    def forget(self, obj: str) -> None:
        self._seen.pop(obj, None)

    def __len__(self) -> int:
        return len(self._seen)
