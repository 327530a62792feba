"""The controller's metrics: label decisions, and an exposition that parses and is well named."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from anklet.models import AnkaHostSpec, AnkaJob, AnkaJobStatus, Condition, ConditionStatus, Phase
from anklet.redis_protocol import HostSnapshot
from anklet.wire import HostInfo, Reservation
from controller import metrics, scheduling
from controller.metrics import ControllerMetrics
from tests.metrics_rules import check, parse, value

NOW = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)
UID = "6f1c1c7e-3b7a-4e0e-9a43-2d1f0b7a9c11"


def job(name: str, phase: Phase = Phase.PENDING, uid: str = UID, **status: Any) -> AnkaJob:
    return AnkaJob.model_validate(
        {
            "metadata": {"name": name, "uid": uid, "creationTimestamp": "2026-11-25T12:00:00Z"},
            "spec": {"template": "t", "handler": "script", "script": {"run": "true"}},
            "status": {"phase": phase.value, **status},
        }
    )


def host(name: str, *, ready: bool = True, schedulable: bool = True, used: int = 0) -> HostSnapshot:
    info = HostInfo(
        name=name, cpu=8, memory_mib=16384, vm_slots=2, schedulable=schedulable, disk_total=10, disk_free=4
    )
    reservations = tuple(Reservation(uid=f"u{i}", attempt=1, cpu=2, memory_mib=4096) for i in range(used))
    return HostSnapshot(info=info, ready=ready, reservations=reservations, heartbeat=1_700_000_000.0)


@dataclass
class View:
    jobs: dict[str, AnkaJob] = field(default_factory=dict)
    host_specs: dict[str, AnkaHostSpec] = field(default_factory=dict)
    fleet: list[HostSnapshot] = field(default_factory=list)


def test_pending_reason() -> None:
    assert metrics.pending_reason(AnkaJobStatus()) == "new"
    assert metrics.pending_reason(AnkaJobStatus(reason="Unschedulable")) == "unschedulable"
    assert metrics.pending_reason(AnkaJobStatus(reason="HostLost", attempts=1)) == "host_lost"
    assert metrics.pending_reason(AnkaJobStatus(reason="ReservationLost", attempts=1)) == "reservation_lost"
    assert metrics.pending_reason(AnkaJobStatus(reason="TemplateSized", attempts=1)) == "template_sized"
    assert metrics.pending_reason(AnkaJobStatus(reason="ProvisioningFailed", attempts=1)) == "retry"


def test_unschedulable_cause_reads_the_schedulers_own_message() -> None:
    """From real scheduler messages, so a change of their wording fails here."""
    big = scheduling.JobRequest(uid="u", cpu=7, memory_mib=1024)
    hosts = [host("mac-1", used=1), host("mac-2", used=1)]
    [(_, decision)] = scheduling.plan([big], hosts)
    assert isinstance(decision, scheduling.Unschedulable)
    assert metrics.unschedulable_cause(decision.message) == "cpu"
    full = [host("mac-1", used=2)]
    [(_, decision)] = scheduling.plan([scheduling.JobRequest(uid="u", cpu=1, memory_mib=1)], full)
    assert isinstance(decision, scheduling.Unschedulable)
    assert metrics.unschedulable_cause(decision.message) == "no_vm_slot"
    [(_, decision)] = scheduling.plan([big], [])
    assert isinstance(decision, scheduling.Unschedulable)
    assert metrics.unschedulable_cause(decision.message) == "no_hosts"
    assert metrics.unschedulable_cause("something else") == "other"
    assert set(metrics.UNSCHEDULABLE_CAUSES) >= {"not_ready", "cordoned", "memory", "disk", "held"}


def test_host_state_is_exclusive_and_ordered() -> None:
    cordon = AnkaHostSpec(unschedulable=True)
    assert metrics.host_state(host("a"), None) == "ready"
    assert metrics.host_state(host("a", ready=False), cordon) == "not_ready"
    assert metrics.host_state(host("a", schedulable=False), cordon) == "cordoned"
    assert metrics.host_state(host("a", schedulable=False), AnkaHostSpec()) == "draining"


def test_refusals_and_decisions_are_closed_sets() -> None:
    assert metrics.refusal_label("no_vm_slot") == "no_vm_slot"
    assert metrics.refusal_label("something new from Lua") == "other"
    assert metrics.decision_label(scheduling.Placement(host="h")) == "placed"
    assert metrics.decision_label(scheduling.Adopt(host="h", attempt=1)) == "adopted"
    assert metrics.decision_label(scheduling.ReleaseStale(host="h", attempt=1)) == "released_stale"
    assert (
        metrics.decision_label(scheduling.Unschedulable(message="x", permanent=True))
        == "unschedulable_permanent"
    )


def test_queued_since_prefers_a_live_first_sighting() -> None:
    created = datetime(2026, 11, 25, 12, 0, 0, tzinfo=UTC)  # creationTimestamp: seconds only
    seen_live = created.timestamp() + 0.4
    assert metrics.queued_since(created, seen_live) == seen_live
    seen_after_restart = created.timestamp() + 90
    assert metrics.queued_since(created, seen_after_restart) == created.timestamp()
    assert metrics.queued_since(None, 5.0) == 5.0


def test_phase_started_uses_the_mark_then_what_status_records() -> None:
    status = AnkaJobStatus(phase=Phase.SCHEDULED, attempts=1)
    assert metrics.phase_started(status, (Phase.SCHEDULED, 42.0)) == 42.0
    assert metrics.phase_started(status, (Phase.PENDING, 42.0)) is None, "a mark of another phase"
    since = NOW - timedelta(seconds=30)
    condition = Condition(
        type="Scheduled", status=ConditionStatus.TRUE, reason="x", last_transition_time=since
    )
    scheduled = status.model_copy(update={"conditions": [condition]})
    assert metrics.phase_started(scheduled, None) == since.timestamp()
    running = AnkaJobStatus(phase=Phase.RUNNING, attempts=1, start_time=since)
    assert metrics.phase_started(running, None) == since.timestamp()
    assert metrics.phase_started(running.model_copy(update={"attempts": 2}), None) is None
    assert metrics.phase_started(AnkaJobStatus(), None, created=NOW) == NOW.timestamp()


def test_job_counts_name_every_label_even_at_zero() -> None:
    jobs = [
        job("a"),
        job("b", reason="Unschedulable", message="0/1 hosts available: 1 insufficient memory"),
        job("c", Phase.RUNNING),
    ]
    phases, reasons, causes = metrics.job_counts(jobs)
    assert phases == {"Pending": 2, "Scheduled": 0, "Provisioning": 0, "Running": 1, "Succeeded": 0,
                      "Failed": 0, "Cancelled": 0}  # fmt: skip
    assert reasons["new"] == 1 and reasons["unschedulable"] == 1 and sum(reasons.values()) == 2
    assert causes["memory"] == 1 and sum(causes.values()) == 1


def filled() -> ControllerMetrics:
    """A registry with every series present, as after a busy minute."""
    m = ControllerMetrics()
    view = View(
        jobs={
            "1": job("build-42", reason="Unschedulable", message="0/2 hosts available: 2 no free VM slot"),
            "2": job("build-43", Phase.RUNNING, uid="x2", host="mac-1", attempts=1),
        },
        host_specs={"mac-2": AnkaHostSpec(unschedulable=True)},
        fleet=[host("mac-1", used=2), host("mac-2", schedulable=False), host("mac-3", ready=False)],
    )
    m.bind(view)
    m.scheduling_latency.observe(0.3)
    m.stage_duration.labels(stage="running").observe(12.0)
    m.passes.inc()
    m.pass_duration.observe(0.002)
    m.decisions.labels(decision="placed").inc()
    m.reservations_refused.labels(reason="no_vm_slot").inc()
    m.retries.labels(reason="Retrying").inc()
    m.finished.labels(phase="Succeeded").inc()
    return m


def test_the_exposition_parses_and_is_well_named() -> None:
    families = parse(filled().exposition().decode())
    assert (
        check(families, forbidden_values=["build-42", "build-43", UID], hosts=["mac-1", "mac-2", "mac-3"])
        == []
    )
    types = {f.name: f.type for f in families}
    assert types["anklet_jobs"] == "gauge"
    assert types["anklet_job_scheduling_latency_seconds"] == "histogram"
    assert types["anklet_job_stage_duration_seconds"] == "histogram"
    assert types["anklet_scheduling_passes"] == "counter"
    assert types["anklet_reservations_refused"] == "counter"
    assert types["anklet_fleet_memory_bytes"] == "gauge"


def test_the_gauges_read_the_view() -> None:
    families = parse(filled().exposition().decode())
    assert value(families, "anklet_jobs", phase="Pending") == 1
    assert value(families, "anklet_jobs", phase="Running") == 1
    assert value(families, "anklet_jobs", phase="Failed") == 0
    assert value(families, "anklet_jobs_pending", reason="unschedulable") == 1
    assert value(families, "anklet_jobs_unschedulable", cause="no_vm_slot") == 1
    assert value(families, "anklet_hosts", state="ready") == 1
    assert value(families, "anklet_hosts", state="cordoned") == 1
    assert value(families, "anklet_hosts", state="not_ready") == 1
    assert value(families, "anklet_hosts", state="draining") == 0
    assert value(families, "anklet_fleet_vm_slots") == 6
    assert value(families, "anklet_fleet_vm_slots_used") == 2
    assert value(families, "anklet_fleet_cpu_cores_allocated") == 4
    assert value(families, "anklet_fleet_memory_allocated_bytes") == 2 * 4096 * 2**20
    assert value(families, "anklet_host_vm_slots_used", host="mac-1") == 2
    assert value(families, "anklet_host_ready", host="mac-3") == 0
    assert value(families, "anklet_reservations_refused_total", reason="no_vm_slot") == 1
    assert value(families, "anklet_reservations_refused_total", reason="insufficient_cpu") == 0, (
        "pre-declared"
    )


def test_an_unbound_registry_still_serves_valid_text() -> None:
    families = parse(ControllerMetrics().exposition().decode())
    assert check(families) == []
    assert value(families, "anklet_jobs", phase="Pending") == 0


@pytest.mark.parametrize("stage", list(metrics.STAGES.values()))
def test_every_stage_is_declared(stage: str) -> None:
    families = parse(ControllerMetrics().exposition().decode())
    assert value(families, "anklet_job_stage_duration_seconds_count", stage=stage) == 0
