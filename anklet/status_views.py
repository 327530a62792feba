"""What `anklet status`, `anklet jobs` and `anklet hosts` show, as pure functions over API objects.

Inputs are AnkaJob / AnkaHost objects as the API returns them (plain dicts) or the pydantic models
of `anklet.models`; outputs are rows and summaries that `anklet.tables` renders. Nothing here
does I/O or reads the clock (`now` is passed in), so every view is unit-tested with hand-made
objects and the same code serves the dev stack and a real cluster.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anklet.apiobjects import Obj, as_int, dig, plain
from anklet.host_views import is_draining
from anklet.models import Phase
from anklet.tables import Cell, Style, Styled, age, gib, iso, parse_time, phase_cell, seconds_since

# The condition the controller keeps on a job about placement (controller/phases.py writes it:
# status False with reason Unschedulable and the scheduler's message while the job waits).
SCHEDULED_CONDITION = "Scheduled"
PHASES = [p.value for p in Phase]


def normalize_phase(text: str) -> str:
    """`pending` → `Pending`; ValueError naming the phases for anything else."""
    for phase in PHASES:
        if phase.lower() == text.strip().lower():
            return phase
    raise ValueError(f"unknown phase {text!r} (one of {', '.join(PHASES)})")


# ----- jobs ---------------------------------------------------------------------------------

JOB_HEADERS = ("NAMESPACE", "NAME", "PHASE", "HOST", "TEMPLATE:TAG", "ATTEMPTS", "AGE", "REASON")


@dataclass(frozen=True)
class JobRow:
    """One AnkaJob as `anklet jobs` lists it."""

    namespace: str
    name: str
    uid: str
    phase: str
    host: str | None
    template: str
    tag: str | None
    attempts: int
    created: datetime | None
    reason: str | None
    message: str | None
    exit_code: int | None

    @property
    def key(self) -> str:
        return self.uid or f"{self.namespace}/{self.name}"

    @property
    def template_tag(self) -> str:
        return f"{self.template}:{self.tag}" if self.tag else self.template

    def visible(self) -> tuple[Any, ...]:
        """What a watch line reports; a change elsewhere (age, resourceVersion) is no news."""
        return (self.phase, self.host, self.attempts, self.reason, self.template, self.tag)

    def cells(self, now: datetime, *, phase: str | None = None) -> list[Cell]:
        return [
            self.namespace,
            self.name,
            phase_cell(phase or self.phase),
            self.host or "-",
            self.template_tag,
            str(self.attempts),
            age(self.created, now),
            self.reason or "",
        ]

    def record(self, now: datetime) -> dict[str, Any]:
        return {
            "namespace": self.namespace,
            "name": self.name,
            "uid": self.uid,
            "phase": self.phase,
            "host": self.host,
            "template": self.template,
            "tag": self.tag,
            "attempts": self.attempts,
            "created": iso(self.created),
            "ageSeconds": seconds_since(self.created, now),
            "reason": self.reason,
            "message": self.message,
            "exitCode": self.exit_code,
        }


def job_row(obj: Obj) -> JobRow:
    job = plain(obj)
    status = dig(job, "status") or {}
    exit_code = status.get("exitCode")
    return JobRow(
        namespace=str(dig(job, "metadata", "namespace") or "default"),
        name=str(dig(job, "metadata", "name") or "?"),
        uid=str(dig(job, "metadata", "uid") or ""),
        phase=str(status.get("phase") or Phase.PENDING.value),
        host=status.get("host") or None,
        template=str(dig(job, "spec", "template") or "-"),
        tag=dig(job, "spec", "tag") or None,
        attempts=as_int(status.get("attempts")),
        created=parse_time(dig(job, "metadata", "creationTimestamp")),
        reason=status.get("reason") or None,
        message=status.get("message") or None,
        exit_code=exit_code if isinstance(exit_code, int) else None,
    )


def job_rows(objs: Iterable[Obj], *, phase: str | None = None) -> list[JobRow]:
    """Rows of the jobs (only those in `phase` if given), oldest first within a namespace."""
    rows = [job_row(o) for o in objs]
    if phase is not None:
        rows = [r for r in rows if r.phase == phase]
    return sorted(rows, key=lambda r: (r.namespace, r.created is None, r.created or 0, r.name))


def waiting_reason(obj: Obj) -> tuple[str, str]:
    """Why a Pending job waits: (reason, message).

    The Scheduled condition while it is False holds the scheduler's own words (`0/12 hosts
    available: …`); after a failed attempt the job is Pending again with the retry's reason in
    `status.reason`; with neither, the controller has not looked at it yet.
    """
    job = plain(obj)
    status = dig(job, "status") or {}
    for condition in status.get("conditions") or []:
        if condition.get("type") == SCHEDULED_CONDITION and condition.get("status") == "False":
            return str(condition.get("reason") or "Unschedulable"), str(condition.get("message") or "")
    reason = status.get("reason")
    if reason and reason != SCHEDULED_CONDITION:
        return str(reason), str(status.get("message") or "")
    return "Waiting", "not placed by the controller yet"


# ----- watching jobs ------------------------------------------------------------------------


@dataclass(frozen=True)
class WatchLine:
    """One line of `anklet jobs --watch`: the event type and the job as it is now."""

    type: str  # ADDED, MODIFIED or DELETED
    row: JobRow

    def cells(self, now: datetime) -> list[Cell]:
        return self.row.cells(now, phase="Deleted" if self.type == "DELETED" else None)

    def record(self, now: datetime) -> dict[str, Any]:
        return {"type": self.type, "job": self.row.record(now)}


class JobWatch:
    """Which watch events deserve a line: one per visible change, none for no-op updates.

    With a phase filter, a job is shown while it is in that phase, plus the one line where it
    leaves it (so a watcher sees a Pending job start instead of it silently disappearing).
    """

    def __init__(self, phase: str | None = None) -> None:
        self.phase = phase
        self.known: dict[str, JobRow] = {}

    def _wanted(self, row: JobRow, before: JobRow | None) -> bool:
        if self.phase is None:
            return True
        return row.phase == self.phase or (before is not None and before.phase == self.phase)

    def seed(self, objs: Iterable[Obj]) -> list[JobRow]:
        """Remember a full listing; the rows to print first (filtered, oldest first)."""
        rows = job_rows(objs)
        self.known = {r.key: r for r in rows}
        return [r for r in rows if self._wanted(r, None)]

    def apply(self, event_type: str, obj: Obj) -> WatchLine | None:
        row = job_row(obj)
        before = self.known.get(row.key)
        if event_type == "DELETED":
            self.known.pop(row.key, None)
            return WatchLine("DELETED", row) if self._wanted(row, before) else None
        self.known[row.key] = row
        if before is not None and before.visible() == row.visible():
            return None
        if not self._wanted(row, before):
            return None
        return WatchLine("ADDED" if before is None else "MODIFIED", row)

    def resync(self, objs: Iterable[Obj]) -> list[WatchLine]:
        """After a relist (the watch expired with 410): lines for what changed while we were away."""
        current = {r.key: r for r in job_rows(objs)}
        lines = [
            WatchLine("DELETED", row)
            for key, row in self.known.items()
            if key not in current and self._wanted(row, row)
        ]
        for key, row in current.items():
            before = self.known.get(key)
            if (before is None or before.visible() != row.visible()) and self._wanted(row, before):
                lines.append(WatchLine("ADDED" if before is None else "MODIFIED", row))
        self.known = current
        return lines


# ----- the fleet summary --------------------------------------------------------------------


@dataclass(frozen=True)
class PendingJob:
    namespace: str
    name: str
    created: datetime | None
    reason: str
    message: str


@dataclass(frozen=True)
class HostPulling:
    """A template pull in progress on one host (from its AnkaHost status)."""

    host: str
    template: str
    tag: str | None
    size_bytes: int
    started: datetime | None

    def line(self, now: datetime) -> str:
        size = f", {self.size_bytes / 2**30:.1f} GiB" if self.size_bytes else ""
        since = f", for {age(self.started, now)}" if self.started is not None else ""
        return f"{self.host}: {self.template}:{self.tag or 'latest'}{size}{since}"

    def record(self, now: datetime) -> dict[str, Any]:
        return {
            "host": self.host,
            "template": self.template,
            "tag": self.tag,
            "sizeBytes": self.size_bytes,
            "started": iso(self.started),
            "seconds": seconds_since(self.started, now),
        }


def host_pulls(hosts: Iterable[Mapping[str, Any]]) -> tuple[HostPulling, ...]:
    """The pulls the hosts' statuses show, by host name."""
    found = []
    for host in hosts:
        pull = dig(host, "status", "pulling")
        if isinstance(pull, Mapping) and pull.get("template"):
            found.append(
                HostPulling(
                    host=str(dig(host, "metadata", "name") or "?"),
                    template=str(pull["template"]),
                    tag=None if pull.get("tag") is None else str(pull["tag"]),
                    size_bytes=as_int(pull.get("sizeBytes")),
                    started=parse_time(pull.get("startedAt")),
                )
            )
    return tuple(sorted(found, key=lambda p: p.host))


@dataclass(frozen=True)
class FleetSummary:
    """`anklet status`: the fleet's hosts and capacity, and the jobs by phase.

    `slots_free` counts only hosts that can take work now (ready, not cordoned, not draining),
    so "0 free" means a new job waits, whatever the idle capacity of unusable hosts.
    """

    hosts: int
    ready: int
    not_ready: int
    cordoned: int
    draining: int
    slots_used: int
    slots_free: int
    slots_total: int
    cpu_allocated: int
    cpu_total: int
    memory_allocated_mib: int
    memory_total_mib: int
    jobs: dict[str, int]
    oldest_pending: PendingJob | None
    namespace: str | None = None
    pulls: tuple[HostPulling, ...] = ()  # template pulls in progress, by host

    def record(self, now: datetime) -> dict[str, Any]:
        pending = self.oldest_pending
        return {
            "namespace": self.namespace,
            "hosts": {
                "total": self.hosts,
                "ready": self.ready,
                "notReady": self.not_ready,
                "cordoned": self.cordoned,
                "draining": self.draining,
            },
            "vmSlots": {"used": self.slots_used, "free": self.slots_free, "total": self.slots_total},
            "cpu": {"allocated": self.cpu_allocated, "total": self.cpu_total},
            "memoryMiB": {"allocated": self.memory_allocated_mib, "total": self.memory_total_mib},
            "jobs": dict(self.jobs),
            "pulls": [p.record(now) for p in self.pulls],
            "oldestPending": None
            if pending is None
            else {
                "namespace": pending.namespace,
                "name": pending.name,
                "created": iso(pending.created),
                "ageSeconds": seconds_since(pending.created, now),
                "reason": pending.reason,
                "message": pending.message,
            },
        }

    def rows(self, now: datetime) -> list[list[Cell]]:
        """A two-column table: what, and the figures."""
        hosts = (
            f"{self.hosts} total: {self.ready} ready, {self.not_ready} not ready, "
            f"{self.cordoned} cordoned, {self.draining} draining"
        )
        jobs = ", ".join(f"{n} {phase}" for phase, n in self.jobs.items() if n) or "none"
        rows: list[list[Cell]] = [
            ["HOSTS", Styled(hosts, Style.RED) if self.not_ready else hosts],
            ["VM SLOTS", f"{self.slots_used} used, {self.slots_free} free, {self.slots_total} total"],
            ["CPU", f"{self.cpu_allocated}/{self.cpu_total} cores allocated"],
            ["MEMORY", f"{gib(self.memory_allocated_mib)}/{gib(self.memory_total_mib)} GiB allocated"],
            ["JOBS" if self.namespace is None else f"JOBS ({self.namespace})", jobs],
        ]
        if self.pulls:
            rows.append(["PULLS", "; ".join(p.line(now) for p in self.pulls)])
        pending = self.oldest_pending
        if pending is not None:
            why = f"{pending.reason}: {pending.message}" if pending.message else pending.reason
            text = f"{pending.namespace}/{pending.name}, waiting {age(pending.created, now)}: {why}"
            rows.append(["OLDEST PENDING", Styled(text, Style.YELLOW)])
        return rows


def _takes_work(host: Mapping[str, Any]) -> bool:
    return bool(dig(host, "status", "ready")) and not (
        dig(host, "spec", "unschedulable") or dig(host, "status", "draining")
    )


def _slots(host: Mapping[str, Any], which: str) -> int:
    return as_int(dig(host, "status", which, "vmSlots"))


def fleet_summary(hosts: Iterable[Obj], jobs: Iterable[Obj], *, namespace: str | None = None) -> FleetSummary:
    host_list = [plain(h) for h in hosts]
    counts = dict.fromkeys(PHASES, 0)
    pending: list[tuple[JobRow, Mapping[str, Any]]] = []
    for obj in jobs:
        job = plain(obj)
        row = job_row(job)
        counts[row.phase] = counts.get(row.phase, 0) + 1
        if row.phase == Phase.PENDING.value:
            pending.append((row, job))
    oldest = None
    if pending:
        row, job = min(pending, key=lambda p: (p[0].created is None, p[0].created or 0, p[0].name))
        reason, message = waiting_reason(job)
        oldest = PendingJob(row.namespace, row.name, row.created, reason, message)

    def total(*path: str) -> int:
        return sum(as_int(dig(h, "status", *path)) for h in host_list)

    usable = [h for h in host_list if _takes_work(h)]
    ready = sum(1 for h in host_list if dig(h, "status", "ready"))
    return FleetSummary(
        hosts=len(host_list),
        ready=ready,
        not_ready=len(host_list) - ready,
        cordoned=sum(1 for h in host_list if dig(h, "spec", "unschedulable")),
        draining=sum(1 for h in host_list if is_draining(h)),
        slots_used=total("allocated", "vmSlots"),
        slots_free=sum(max(0, _slots(h, "capacity") - _slots(h, "allocated")) for h in usable),
        slots_total=total("capacity", "vmSlots"),
        cpu_allocated=total("allocated", "cpu"),
        cpu_total=total("capacity", "cpu"),
        memory_allocated_mib=total("allocated", "memoryMiB"),
        memory_total_mib=total("capacity", "memoryMiB"),
        jobs=counts,
        oldest_pending=oldest,
        namespace=namespace,
        pulls=host_pulls(host_list),
    )
