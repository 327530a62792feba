"""The controller's Prometheus metrics, in a registry of its own (served by `anklet controller`).

Two kinds of series:

- counters and histograms the reconciler feeds as things happen: stage durations and scheduling
  latency (observed once per transition, when the status write that made it posts its Event),
  scheduling passes, reservations Redis refused, retries and finished jobs;
- gauges computed at scrape time from what the reconciler already holds in memory: jobs by phase,
  pending jobs by reason, hosts by state, and the fleet's capacity and allocations from the hosts'
  registrations and reservations (the last fleet read, at most one resync old). These replace the
  Go Anklet's metrics aggregator: one scrape of the controller shows the whole fleet.

Label values come from closed sets (phases, stages, reasons named in code). Job names, uids and
URLs are never label values. The one exception is `host` on the `anklet_host_*` gauges: their
cardinality is the fleet's size, bounded by the Macs registered, and a series goes away with
its host. The pure helpers below (`pending_reason`, `unschedulable_cause`, `host_state`, ...)
decide the label values and are tested without I/O.
"""

from __future__ import annotations

import re
from collections import Counter as Tally
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import datetime
from typing import Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from anklet.models import AnkaHostSpec, AnkaJob, AnkaJobStatus, Phase
from anklet.redis_protocol import HostSnapshot
from controller import scheduling
from controller.phases import SIZED
from controller.scheduling import Unfit

MIB = 1024 * 1024

#: The stage a job is in while it has each phase; its duration is observed when the phase ends.
STAGES = {
    Phase.PENDING: "queued",
    Phase.SCHEDULED: "scheduled",
    Phase.PROVISIONING: "provisioning",
    Phase.RUNNING: "running",
}
PENDING_REASONS = ("new", "unschedulable", "retry", "host_lost", "reservation_lost", "template_sized")
UNSCHEDULABLE_CAUSES = (*(u.name.lower() for u in Unfit), "no_hosts", "other")
HOST_STATES = ("ready", "not_ready", "cordoned", "draining")
REFUSALS = (
    "host_not_ready",
    "host_unknown",
    "host_unschedulable",
    "already_reserved",
    "no_vm_slot",
    "insufficient_cpu",
    "insufficient_memory",
)
DECISIONS = ("placed", "adopted", "released_stale", "unschedulable", "unschedulable_permanent")
RETRY_REASONS = ("Retrying", "HostLost", "ReservationLost", SIZED)

_UNFIT_BY_TEXT = {u.value: u.name.lower() for u in Unfit}
_FIRST_CAUSE = re.compile(r"^0/\d+ hosts available: \d+ (?P<cause>[^,]+)")


# ----- label decisions (pure) -------------------------------------------------------------------
def pending_reason(status: AnkaJobStatus) -> str:
    """Why a Pending job waits, as one of PENDING_REASONS."""
    reason = status.reason or ""
    if reason == "Unschedulable":
        return "unschedulable"
    if reason == "HostLost":
        return "host_lost"
    if reason == "ReservationLost":
        return "reservation_lost"
    if reason == SIZED:
        return "template_sized"
    return "retry" if status.attempts > 0 else "new"


def unschedulable_cause(message: str | None) -> str:
    """The commonest reason hosts refused the job, from the scheduler's own message
    ("0/4 hosts available: 3 insufficient cpu, 1 no free VM slot" → insufficient cpu → "cpu").
    Read from status, so it is right after a controller restart too."""
    text = message or ""
    if text.startswith("0/0 hosts registered"):
        return "no_hosts"
    match = _FIRST_CAUSE.match(text)
    if match is None:
        return "other"
    return _UNFIT_BY_TEXT.get(match.group("cause").strip(), "other")


def host_state(snapshot: HostSnapshot, spec: AnkaHostSpec | None) -> str:
    """One state per host, so the states add up to the fleet: not_ready (heartbeat lease gone)
    wins over cordoned (the operator's spec.unschedulable), which wins over draining (the host
    itself asked for no new work)."""
    if not snapshot.ready:
        return "not_ready"
    if spec is not None and spec.unschedulable:
        return "cordoned"
    if not snapshot.info.schedulable:
        return "draining"
    return "ready"


def decision_label(decision: scheduling.Decision) -> str:
    """The scheduler's decision for one job, as one of DECISIONS."""
    if isinstance(decision, scheduling.Placement):
        return "placed"
    if isinstance(decision, scheduling.Adopt):
        return "adopted"
    if isinstance(decision, scheduling.ReleaseStale):
        return "released_stale"
    return "unschedulable_permanent" if decision.permanent else "unschedulable"


def refusal_label(result: str) -> str:
    return result if result in REFUSALS else "other"


def queued_since(created: datetime | None, first_seen: float) -> float:
    """When a new job started waiting, as a Unix time.

    creationTimestamp has second resolution, which alone would add up to a second to a
    sub-second dispatch; the moment this controller first saw the job is exact but late after
    a restart. Use the first sighting when it falls within the creation's second (a live
    watch), else the creation time."""
    if created is None:
        return first_seen
    stamp = created.timestamp()
    return first_seen if 0 <= first_seen - stamp < 1.0 else stamp


def phase_started(
    status: AnkaJobStatus, mark: tuple[Phase, float] | None, *, created: datetime | None = None
) -> float | None:
    """When the job entered its current phase (Unix time): when this controller saw or wrote
    that transition (`mark`), else what the object records (after a restart: creation for a
    first wait, the Scheduled condition, startTime); None when nothing says."""
    if mark is not None and mark[0] == status.phase:
        return mark[1]
    if status.phase == Phase.PENDING and status.attempts == 0 and created is not None:
        return created.timestamp()
    if status.phase == Phase.SCHEDULED:
        for condition in status.conditions:
            if (
                condition.type == "Scheduled"
                and condition.status == "True"
                and condition.last_transition_time
            ):
                return condition.last_transition_time.timestamp()
    if status.phase == Phase.RUNNING and status.attempts == 1 and status.start_time is not None:
        return status.start_time.timestamp()
    return None


# ----- scrape-time gauges -------------------------------------------------------------------------
class ControllerView(Protocol):
    """What the gauges read (the reconciler has all of it)."""

    @property
    def jobs(self) -> Mapping[str, AnkaJob]: ...
    @property
    def host_specs(self) -> Mapping[str, AnkaHostSpec]: ...
    @property
    def fleet(self) -> Sequence[HostSnapshot]: ...


def job_counts(jobs: Iterable[AnkaJob]) -> tuple[dict[str, int], dict[str, int], dict[str, int]]:
    """(jobs by phase, pending jobs by reason, unschedulable jobs by cause), every label present."""
    phases = dict.fromkeys((p.value for p in Phase), 0)
    reasons = dict.fromkeys(PENDING_REASONS, 0)
    causes = dict.fromkeys(UNSCHEDULABLE_CAUSES, 0)
    for job in jobs:
        status = job.status
        phases[status.phase.value] += 1
        if status.phase == Phase.PENDING:
            reason = pending_reason(status)
            reasons[reason] += 1
            if reason == "unschedulable":
                causes[unschedulable_cause(status.message)] += 1
    return phases, reasons, causes


class _StateCollector(Collector):
    def __init__(self, owner: ControllerMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return []  # computed at scrape time; nothing to check at registration

    def collect(self) -> Iterator[Metric]:
        view = self._owner.view
        jobs: Iterable[AnkaJob] = list(view.jobs.values()) if view is not None else []
        phases, reasons, causes = job_counts(jobs)
        yield _labelled("anklet_jobs", "AnkaJobs this controller holds, by status.phase.", "phase", phases)
        yield _labelled(
            "anklet_jobs_pending",
            "Pending AnkaJobs by why they wait (new, unschedulable, retry, host_lost, ...).",
            "reason",
            reasons,
        )
        yield _labelled(
            "anklet_jobs_unschedulable",
            "Pending AnkaJobs no host can take now, by the commonest reason hosts refused them.",
            "cause",
            causes,
        )
        if view is None:
            return
        yield from fleet_metrics(list(view.fleet), dict(view.host_specs))


def _labelled(name: str, doc: str, label: str, values: Mapping[str, float]) -> GaugeMetricFamily:
    family = GaugeMetricFamily(name, doc, labels=[label])
    for value, count in values.items():
        family.add_metric([value], count)
    return family


def fleet_metrics(snapshots: Sequence[HostSnapshot], specs: Mapping[str, AnkaHostSpec]) -> Iterator[Metric]:
    """Hosts by state, fleet totals and per-host figures from the hosts' registrations."""
    states = Tally({state: 0 for state in HOST_STATES})
    for snap in snapshots:
        states[host_state(snap, specs.get(snap.info.name))] += 1
    yield _labelled("anklet_hosts", "Registered hosts by state (exclusive).", "state", dict(states))

    def used(snap: HostSnapshot) -> tuple[int, int, int]:
        r = snap.reservations
        return len(r), sum(x.cpu for x in r), sum(x.memory_mib for x in r) * MIB

    totals = {
        "vm_slots": sum(s.info.vm_slots for s in snapshots),
        "vm_slots_used": sum(used(s)[0] for s in snapshots),
        "cpu_cores": sum(s.info.cpu for s in snapshots),
        "cpu_cores_allocated": sum(used(s)[1] for s in snapshots),
        "memory_bytes": sum(s.info.memory_mib for s in snapshots) * MIB,
        "memory_allocated_bytes": sum(used(s)[2] for s in snapshots),
        "disk_bytes": sum(s.info.disk_total for s in snapshots),
        "disk_free_bytes": sum(s.info.disk_free for s in snapshots),
    }
    for key, value in totals.items():
        yield GaugeMetricFamily(f"anklet_fleet_{key}", _FLEET_DOCS[key], value=value)
    per_host = {
        key: GaugeMetricFamily(f"anklet_host_{key}", doc, labels=["host"]) for key, doc in _HOST_DOCS.items()
    }
    for snap in snapshots:
        name, info = [snap.info.name], snap.info
        slots, cpu, memory = used(snap)
        per_host["ready"].add_metric(name, 1.0 if snap.ready else 0.0)
        per_host["vm_slots"].add_metric(name, info.vm_slots)
        per_host["vm_slots_used"].add_metric(name, slots)
        per_host["cpu_cores"].add_metric(name, info.cpu)
        per_host["cpu_cores_allocated"].add_metric(name, cpu)
        per_host["memory_bytes"].add_metric(name, info.memory_mib * MIB)
        per_host["memory_allocated_bytes"].add_metric(name, memory)
        if snap.heartbeat is not None:
            per_host["last_heartbeat_timestamp_seconds"].add_metric(name, snap.heartbeat)
    yield from per_host.values()


_FLEET_DOCS = {
    "vm_slots": "VM slots of every registered host.",
    "vm_slots_used": "VM slots reserved for jobs across the fleet.",
    "cpu_cores": "CPU cores the registered hosts offer to VMs.",
    "cpu_cores_allocated": "CPU cores reserved for jobs across the fleet.",
    "memory_bytes": "Memory the registered hosts offer to VMs.",
    "memory_allocated_bytes": "Memory reserved for jobs across the fleet.",
    "disk_bytes": "Disk size of the registered hosts (as of their last registration).",
    "disk_free_bytes": "Free disk of the registered hosts (as of their last registration).",
}
_HOST_DOCS = {
    "ready": "1 while the host's heartbeat lease is live, else 0.",
    "vm_slots": "VM slots of the host.",
    "vm_slots_used": "VM slots reserved for jobs on the host.",
    "cpu_cores": "CPU cores the host offers to VMs.",
    "cpu_cores_allocated": "CPU cores reserved for jobs on the host.",
    "memory_bytes": "Memory the host offers to VMs.",
    "memory_allocated_bytes": "Memory reserved for jobs on the host.",
    "last_heartbeat_timestamp_seconds": "Unix time of the host's last heartbeat (while its lease lives).",
}


# ----- the registry -------------------------------------------------------------------------------
_LATENCY_BUCKETS = (
    0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0,
)  # fmt: skip
_STAGE_BUCKETS = (
    0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1200.0, 1800.0, 3600.0, 7200.0, 14400.0,
)  # fmt: skip
_PASS_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class ControllerMetrics:
    """Every controller series, in one registry; `bind` the reconciler for the gauges."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.view: ControllerView | None = None
        r = self.registry
        self.scheduling_latency = Histogram(
            "anklet_job_scheduling_latency_seconds",
            "From an AnkaJob's creation to the reservation of its first attempt on a host.",
            registry=r,
            buckets=_LATENCY_BUCKETS,
        )
        self.stage_duration = Histogram(
            "anklet_job_stage_duration_seconds",
            "Time AnkaJobs spent in each stage: queued (Pending), scheduled (host reserved, not "
            "started), provisioning (pull, clone, start, mounts), running (the workload).",
            ["stage"],
            registry=r,
            buckets=_STAGE_BUCKETS,
        )
        self.passes = Counter(
            "anklet_scheduling_passes", "Scheduling passes over the pending jobs.", registry=r
        )
        self.pass_duration = Histogram(
            "anklet_scheduling_pass_duration_seconds",
            "Wall time of one scheduling pass: fleet read, placement, reservations and status writes.",
            registry=r,
            buckets=_PASS_BUCKETS,
        )
        self.decisions = Counter(
            "anklet_scheduling_decisions",
            "Per-job decisions of the scheduling passes (placed, adopted, released_stale, "
            "unschedulable, unschedulable_permanent).",
            ["decision"],
            registry=r,
        )
        self.reservations_refused = Counter(
            "anklet_reservations_refused",
            "Reservations the host's atomic check in Redis refused (the job is placed again).",
            ["reason"],
            registry=r,
        )
        self.retries = Counter(
            "anklet_job_retries",
            "Attempts that ended without a verdict and sent their job back to Pending, by Event reason.",
            ["reason"],
            registry=r,
        )
        self.finished = Counter(
            "anklet_jobs_finished", "AnkaJobs that reached a terminal phase.", ["phase"], registry=r
        )
        for stage in STAGES.values():
            self.stage_duration.labels(stage=stage)
        for decision in DECISIONS:
            self.decisions.labels(decision=decision)
        for reason in (*REFUSALS, "other"):
            self.reservations_refused.labels(reason=reason)
        for reason in RETRY_REASONS:
            self.retries.labels(reason=reason)
        for phase in (Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED):
            self.finished.labels(phase=phase.value)
        r.register(_StateCollector(self))

    def bind(self, view: ControllerView) -> None:
        """Read the gauges from `view` (the reconciler) from now on."""
        self.view = view

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
