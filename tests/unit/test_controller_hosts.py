"""controller.hosts: an AnkaHost's status from a Redis snapshot, and when it is worth a write."""

from __future__ import annotations

from datetime import UTC, datetime

from anklet.models import AnkaHostSpec
from anklet.redis_protocol import HostSnapshot
from anklet.wire import HostInfo, PullInfo, Reservation
from controller import hosts

T0 = datetime(2026, 11, 25, 12, 0, tzinfo=UTC).timestamp()


def snapshot(*, heartbeat: float = T0, pulling: PullInfo | None = None, ready: bool = True) -> HostSnapshot:
    info = HostInfo(name="mac-1", cpu=8, memory_mib=16384, vm_slots=2, anka_version="3.9.1", pulling=pulling)
    used = (Reservation(uid="u1", attempt=1, cpu=2, memory_mib=4096),)
    return HostSnapshot(info=info, ready=ready, reservations=used, heartbeat=heartbeat if ready else None)


def test_figures_and_the_pull_in_progress_are_mirrored() -> None:
    pull = PullInfo(template="xcode", tag="16", size_bytes=42 * 2**30, started_at=T0 - 60)
    status = hosts.build_status(snapshot(pulling=pull), jobs=["default/a"], previous=None)
    assert (status.vms, status.cpu, status.memory) == ("1/2", "2/8", "4/16 GiB")
    assert status.pulling is not None and (status.pulling.template, status.pulling.tag) == ("xcode", "16")
    assert status.pulling.size_bytes == 42 * 2**30
    assert status.pulling.started_at == datetime(2026, 11, 25, 11, 59, tzinfo=UTC)
    body = hosts.status_patch(status, None)
    assert body is not None and body["pulling"]["sizeBytes"] == 42 * 2**30
    done = hosts.build_status(snapshot(), jobs=["default/a"], previous=status)
    assert done.pulling is None
    assert hosts.status_patch(done, status) is not None, "the end of a pull is written at once"


def test_heartbeats_alone_are_written_at_most_once_a_minute() -> None:
    first = hosts.build_status(snapshot(), jobs=[], previous=None)
    soon = hosts.build_status(snapshot(heartbeat=T0 + 30), jobs=[], previous=first)
    later = hosts.build_status(snapshot(heartbeat=T0 + 61), jobs=[], previous=first)
    assert hosts.status_patch(soon, first) is None
    assert hosts.status_patch(later, first) is not None


def test_readiness_keeps_its_transition_time_until_it_changes() -> None:
    first = hosts.build_status(snapshot(), jobs=[], previous=None)
    again = hosts.build_status(snapshot(heartbeat=T0 + 120), jobs=[], previous=first)
    assert again.conditions[0].last_transition_time == first.conditions[0].last_transition_time
    lost = hosts.build_status(snapshot(ready=False), jobs=[], previous=again)
    assert not lost.ready and lost.conditions[0].reason == "HeartbeatExpired"
    assert lost.last_heartbeat == again.last_heartbeat


def test_cordon_and_labels_shape_what_the_scheduler_sees() -> None:
    snap = snapshot()
    assert hosts.effective(snap, None) is snap
    assert hosts.effective(snap, AnkaHostSpec()) is snap
    seen = hosts.effective(snap, AnkaHostSpec(unschedulable=True, labels={"pool": "ios"}))
    assert not seen.info.schedulable and seen.info.labels == {"pool": "ios"}


def test_a_host_is_lost_only_after_the_grace() -> None:
    tracker = hosts.LossTracker(grace=30)
    tracker.update([snapshot(ready=False)], now=100)
    assert not tracker.lost("mac-1", 129) and tracker.lost("mac-1", 130)
    tracker.update([snapshot()], now=131)
    assert tracker.lost_hosts(200) == set()
