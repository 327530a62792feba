"""Hosts as the controller sees them: pure decisions over Redis snapshots and AnkaHost specs.

An agent registers its Mac in Redis; the controller mirrors it into an `AnkaHost` (status only,
written when something meaningful changed), applies the operator's spec (cordon, labels) to
what the scheduler sees, and declares a host lost once its heartbeat lease has been gone for a
while, so that its jobs move elsewhere.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from anklet.models import (
    AnkaHostSpec,
    AnkaHostStatus,
    Condition,
    ConditionStatus,
    HostCapacity,
    HostPull,
    HostTemplate,
)
from anklet.redis_protocol import HostSnapshot

GIB = 1024


def _gib(mib: int) -> str:
    value = mib / GIB
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"


def build_status(
    snapshot: HostSnapshot, *, jobs: list[str], previous: AnkaHostStatus | None
) -> AnkaHostStatus:
    """The AnkaHost status for one Redis snapshot of the host."""
    info = snapshot.info
    used_cpu = sum(r.cpu for r in snapshot.reservations)
    used_mem = sum(r.memory_mib for r in snapshot.reservations)
    used = len(snapshot.reservations)
    heartbeat = (
        datetime.fromtimestamp(snapshot.heartbeat, UTC).replace(microsecond=0)
        if snapshot.heartbeat is not None
        else (previous.last_heartbeat if previous is not None else None)
    )
    ready = snapshot.ready
    condition = Condition(
        type="Ready",
        status=ConditionStatus.TRUE if ready else ConditionStatus.FALSE,
        reason="HeartbeatLive" if ready else "HeartbeatExpired",
        message="the agent's heartbeat lease is live" if ready else "the agent's heartbeat lease expired",
        last_transition_time=_transition(previous, ready, heartbeat),
    )
    return AnkaHostStatus(
        ready=ready,
        capacity=HostCapacity(
            vm_slots=info.vm_slots, cpu=info.cpu, memory_mib=info.memory_mib, disk_bytes=info.disk_total
        ),
        allocated=HostCapacity(vm_slots=used, cpu=used_cpu, memory_mib=used_mem),
        vms=f"{used}/{info.vm_slots}",
        cpu=f"{used_cpu}/{info.cpu}",
        memory=f"{_gib(used_mem)}/{_gib(info.memory_mib)} GiB",
        jobs=sorted(jobs),
        templates=[
            HostTemplate(uuid=t.uuid, name=t.name, tag=t.tag, image_size=t.image_size) for t in info.templates
        ],
        pulling=None
        if info.pulling is None
        else HostPull(
            template=info.pulling.template,
            tag=info.pulling.tag,
            size_bytes=info.pulling.size_bytes,
            started_at=datetime.fromtimestamp(info.pulling.started_at, UTC).replace(microsecond=0),
        ),
        arch=info.arch,
        anka_version=info.anka_version or None,
        license_type=info.license_type or None,
        agent_version=info.agent_version or None,
        draining=not info.schedulable,
        last_heartbeat=heartbeat,
        conditions=[condition],
    )


def _transition(previous: AnkaHostStatus | None, ready: bool, heartbeat: datetime | None) -> datetime | None:
    if previous is not None and previous.ready == ready:
        for c in previous.conditions:
            if c.type == "Ready":
                return c.last_transition_time
    return heartbeat or datetime.now(UTC).replace(microsecond=0)


def status_patch(
    new: AnkaHostStatus, old: AnkaHostStatus | None, *, heartbeat_every: float = 60.0
) -> dict[str, Any] | None:
    """The status to write, or None: heartbeats alone are written at most once a minute, so
    1,000 Macs beating every 5 s do not become 200 API writes a second."""
    body = new.model_dump(mode="json", by_alias=True, exclude_none=True)
    if old is None:
        return body
    before = old.model_dump(mode="json", by_alias=True, exclude_none=True)
    if {k: v for k, v in body.items() if k != "lastHeartbeat"} != {
        k: v for k, v in before.items() if k != "lastHeartbeat"
    }:
        return body
    if new.last_heartbeat and old.last_heartbeat:
        if (new.last_heartbeat - old.last_heartbeat).total_seconds() >= heartbeat_every:
            return body
    elif new.last_heartbeat != old.last_heartbeat:
        return body
    return None


def effective(snapshot: HostSnapshot, spec: AnkaHostSpec | None) -> HostSnapshot:
    """What the scheduler sees: the agent's registration with the operator's cordon and labels."""
    if spec is None:
        return snapshot
    info = snapshot.info
    if not spec.unschedulable and all(info.labels.get(k) == v for k, v in spec.labels.items()):
        return snapshot  # nothing to change: no copy (this runs for every host in every pass)
    info = snapshot.info.model_copy(
        update={
            "schedulable": snapshot.info.schedulable and not spec.unschedulable,
            "labels": {**snapshot.info.labels, **spec.labels},
        }
    )
    return replace(snapshot, info=info)


@dataclass
class LossTracker:
    """When each host was first seen without its lease; a host is lost after `grace` seconds.

    The grace keeps a Redis restart (leases gone until the next heartbeat) or one slow
    heartbeat from moving every job in the fleet."""

    grace: float = 30.0

    def __post_init__(self) -> None:
        self._since: dict[str, float] = {}

    def update(self, snapshots: list[HostSnapshot], now: float) -> None:
        seen = {s.info.name for s in snapshots}
        for s in snapshots:
            if s.ready:
                self._since.pop(s.info.name, None)
            else:
                self._since.setdefault(s.info.name, now)
        for name in list(self._since):
            if name not in seen:
                del self._since[name]

    def lost(self, host: str, now: float) -> bool:
        since = self._since.get(host)
        return since is not None and now - since >= self.grace

    def lost_hosts(self, now: float) -> set[str]:
        return {h for h in self._since if self.lost(h, now)}


def job_names(snapshot: HostSnapshot, names: Mapping[str, str]) -> list[str]:
    """namespace/name of the jobs holding capacity on the host (uids we know)."""
    return [names[r.uid] for r in snapshot.reservations if r.uid in names]
