from __future__ import annotations

import pytest

from anklet.redis_protocol import HostSnapshot
from anklet.wire import HostInfo, Reservation, TemplateInfo
from controller.scheduling import (
    Adopt,
    JobRequest,
    Placement,
    ReleaseStale,
    Unschedulable,
    plan,
)


def host(
    name: str,
    *,
    cpu: int = 8,
    mem: int = 16384,
    slots: int = 2,
    ready: bool = True,
    used: tuple[Reservation, ...] = (),
    **info: object,
) -> HostSnapshot:
    return HostSnapshot(
        info=HostInfo(name=name, cpu=cpu, memory_mib=mem, vm_slots=slots, **info),  # type: ignore[arg-type]
        ready=ready,
        reservations=used,
    )


def job(uid: str = "j1", cpu: int = 2, mem: int = 4096, **kw: object) -> JobRequest:
    return JobRequest(uid=uid, cpu=cpu, memory_mib=mem, **kw)  # type: ignore[arg-type]


def res(uid: str, cpu: int, mem: int, attempt: int = 1) -> Reservation:
    return Reservation(uid=uid, attempt=attempt, cpu=cpu, memory_mib=mem)


@pytest.mark.parametrize(
    ("hosts", "request_", "expected"),
    [
        pytest.param([host("a")], job(), Placement("a"), id="fits-empty-host"),
        pytest.param([host("a", ready=False)], job(), "1 host not ready", id="not-ready"),
        pytest.param([host("a", schedulable=False)], job(), "1 host unschedulable", id="cordoned"),
        pytest.param(
            [host("a", used=(res("x", 1, 1), res("y", 1, 1)))], job(), "1 no free VM slot", id="slots"
        ),
        pytest.param([host("a", used=(res("x", 6, 1),))], job(cpu=4), "1 insufficient cpu", id="cpu"),
        pytest.param(
            [host("a", used=(res("x", 1, 14000),))], job(mem=4096), "1 insufficient memory", id="memory"
        ),
        pytest.param(
            [host("a", used=(res("x", 6, 14000),), overcommit=True)],
            job(cpu=6, mem=14000),
            Placement("a"),
            id="overcommit-ignores-cpu-and-memory",
        ),
        pytest.param(
            [host("a", labels={"os": "15"})],
            job(host_selector={"os": "14"}),
            "labels do not match",
            id="selector",
        ),
        pytest.param(
            [host("a", labels={"os": "14"})],
            job(host_selector={"os": "14"}),
            Placement("a"),
            id="selector-match",
        ),
        pytest.param(
            [host("a", queues=["ios"])], job(), "does not serve the job's queue", id="queue-default"
        ),
        pytest.param([host("a", queues=["ios"])], job(queue="ios"), Placement("a"), id="queue-match"),
        pytest.param([], job(), "0/0 hosts registered", id="no-hosts"),
    ],
)
def test_single_job_filters(hosts: list[HostSnapshot], request_: JobRequest, expected: object) -> None:
    [(_, decision)] = plan([request_], hosts)
    if isinstance(expected, str):
        assert isinstance(decision, Unschedulable)
        assert expected in decision.message
        assert not decision.permanent
    else:
        assert decision == expected


def test_template_affinity_beats_an_emptier_host() -> None:
    tmpl = TemplateInfo(uuid="u1", name="anklet", tag="6c14r")
    busy_with_template = host("b", used=(res("x", 1, 1),), templates=[tmpl])
    empty = host("a")
    [(_, decision)] = plan([job(template="u1", tag="6c14r")], [empty, busy_with_template])
    assert decision == Placement("b")


def test_pack_prefers_the_fuller_host_and_breaks_ties_by_name() -> None:
    hosts = [host("c"), host("b", used=(res("x", 1, 1),)), host("a")]
    assert plan([job()], hosts)[0][1] == Placement("b")
    assert plan([job()], [host("c"), host("a")])[0][1] == Placement("a")


def test_three_big_jobs_on_two_hosts_never_overlap() -> None:
    hosts = [host("mac-1"), host("mac-2")]
    jobs = [job(f"j{i}", cpu=6, mem=14336) for i in range(3)]
    decisions = [d for _, d in plan(jobs, hosts)]
    assert {d.host for d in decisions[:2] if isinstance(d, Placement)} == {"mac-1", "mac-2"}
    assert isinstance(decisions[2], Unschedulable)
    assert "2 insufficient cpu" in decisions[2].message


def test_a_job_larger_than_every_host_fails_permanently() -> None:
    [(_, decision)] = plan([job(cpu=12, mem=20480)], [host("a"), host("b", ready=False)])
    assert isinstance(decision, Unschedulable) and decision.permanent
    assert "can ever fit 12 CPU" in decision.message


def test_existing_reservation_is_adopted_not_doubled() -> None:
    hosts = [host("a", used=(res("j1", 2, 4096, attempt=3),)), host("b")]
    [(_, decision)] = plan([job("j1", attempts=2)], hosts)
    assert decision == Adopt(host="a", attempt=3)


def test_reservation_of_an_ended_attempt_is_released_first() -> None:
    hosts = [host("a", used=(res("j1", 2, 4096, attempt=2),))]
    [(_, decision)] = plan([job("j1", attempts=2)], hosts)
    assert decision == ReleaseStale(host="a", attempt=2)


def test_higher_priority_first_then_fifo() -> None:
    hosts = [host("a", slots=1)]
    jobs = [job("old-low", waiting_seconds=50), job("new-high", priority=5, waiting_seconds=1),
            job("older-low", waiting_seconds=90)]  # fmt: skip
    decisions = dict((j.uid, d) for j, d in plan(jobs, hosts))
    assert decisions["new-high"] == Placement("a")
    assert isinstance(decisions["older-low"], Unschedulable) and isinstance(
        decisions["old-low"], Unschedulable
    )
    assert [j.uid for j, _ in plan(jobs, [host("a", slots=3)])] == ["new-high", "older-low", "old-low"]


def test_a_starving_big_job_holds_a_host_against_small_ones() -> None:
    busy = host("a", used=(res("x", 4, 4096),))
    big = job("big", cpu=8, mem=8192, waiting_seconds=900)
    small = job("small", cpu=2, mem=2048, waiting_seconds=10)
    decisions = dict((j.uid, d) for j, d in plan([big, small], [busy], starvation_seconds=600))
    assert isinstance(decisions["big"], Unschedulable)
    assert (
        isinstance(decisions["small"], Unschedulable)
        and "held for a job waiting longer" in decisions["small"].message
    )
    fresh = dict((j.uid, d) for j, d in plan([job("big", cpu=8, mem=8192, waiting_seconds=5), small], [busy]))
    assert fresh["small"] == Placement("a"), "before the threshold small jobs may pass"


@pytest.mark.parametrize(
    ("info", "fits"),
    [
        pytest.param({"arch": "arm64", "anka_version": "3.9.1"}, True, id="arm64-3.9.1"),
        pytest.param({"arch": "arm64", "anka_version": "3.8.6"}, False, id="too-old"),
        pytest.param({"arch": "amd64", "anka_version": "3.9.1"}, False, id="intel"),
    ],
)
def test_mounts_need_anka_3_9_on_arm64(info: dict[str, str], fits: bool) -> None:
    [(_, decision)] = plan([job(mounts=True)], [host("a", **info)])
    assert isinstance(decision, Placement) == fits
    if not fits:
        assert "mounts need Anka >= 3.9.0 on arm64" in decision.message  # type: ignore[union-attr]


def test_a_host_without_room_to_pull_the_template_is_avoided() -> None:
    tmpl = TemplateInfo(uuid="u1", name="anklet", tag="6c14r")
    small_disk = host("a", disk_free=10 * 2**30)
    has_it = host("b", disk_free=1, templates=[tmpl], used=(res("x", 1, 1),))
    request = job(template="u1", tag="6c14r", image_size=40 * 2**30)
    assert plan([request], [small_disk, has_it])[0][1] == Placement("b")
    [(_, decision)] = plan([request], [small_disk])
    assert isinstance(decision, Unschedulable) and "not enough disk" in decision.message


def test_after_the_last_free_slot_quiet_jobs_are_skipped_and_the_rest_still_decided() -> None:
    full = (res("old-1", 2, 4096), res("old-2", 2, 4096))
    hosts = [host("a", used=full), host("b", used=full[:1])]  # one free slot, on b
    jobs = [job(f"q{i}", waiting_seconds=100 - i) for i in range(5)] + [job("new", waiting_seconds=0)]
    decided = dict((r.uid, d) for r, d in plan(jobs, hosts, quiet=lambda r: r.uid.startswith("q")))
    assert decided.keys() == {"q0", "new"}
    assert decided["q0"] == Placement("b")
    assert isinstance(decided["new"], Unschedulable) and "no free VM slot" in decided["new"].message
    everyone = plan(jobs, hosts)
    assert len(everyone) == 6 and dict((r.uid, d) for r, d in everyone)["new"] == decided["new"]
