"""The invariant checks over hand-made snapshots: each one must pass a clean system and flag every
way of breaking its invariant (a checker that cannot fail is worthless)."""

from __future__ import annotations

import dataclasses

from anklet import keys
from anklet.dev.invariants import checks
from anklet.dev.invariants.model import (
    CallRecord,
    EventRecord,
    FinalSnapshot,
    HostRecord,
    JobRecord,
    RedisState,
    ReservationRecord,
    RunnerRecord,
    Sample,
    StatusVersion,
    Violation,
    VMRecord,
)

VM1 = "anklet-vm-u1-a1"
VM2 = "anklet-vm-u1-a2"
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"


def job(uid: str = "u1", phase: str = "Running", **fields: object) -> JobRecord:
    base: dict[str, object] = {"reason": phase, "message": "", "attempts": 1, "host": "mac-1", "vm_name": VM1}
    base.update(fields)
    return JobRecord(uid=uid, namespace="default", name=f"job-{uid}", phase=phase, **base)  # type: ignore[arg-type]


def host(name: str = "mac-1", *held: ReservationRecord, **fields: object) -> HostRecord:
    base: dict[str, object] = {"vm_slots": 2, "cpu": 8, "memory_mib": 16384}
    base.update(fields)
    return HostRecord(name=name, reservations=held, **base)  # type: ignore[arg-type]


def vm(name: str = VM1, where: str = "mac-1", cpu: int = 2, memory: int = 4096) -> VMRecord:
    return VMRecord(host=where, name=name, status="running", cpu=cpu, memory_mib=memory)


def res(uid: str, attempt: int = 1, cpu: int = 2, memory: int = 4096) -> ReservationRecord:
    return ReservationRecord(uid, attempt, cpu, memory)


def call(
    argv: str, start: float, end: float | None, exit: int | None = 0, where: str = "mac-1"
) -> CallRecord:
    return CallRecord(host=where, argv=tuple(argv.split()), start=start, end=end, exit=exit)


def invariants(violations: list[Violation]) -> list[int]:
    return sorted(v.invariant for v in violations)


# ----- samples: invariants 2 and 3 ---------------------------------------------------------------


def test_a_healthy_moment_passes() -> None:
    sample = Sample(
        1.0,
        (host("mac-1", res("u1"), res("u2")), host("mac-2")),
        (vm(VM1), vm("anklet-vm-u2-a1"), vm("anklet", cpu=8, memory=16384), vm("anklet-vm-u3-a1", "mac-2")),
    )
    assert checks.check_sample(sample) == []


def test_two_vms_for_one_attempt_on_two_hosts() -> None:
    [violation] = checks.check_sample(Sample(1.0, (), (vm(VM1, "mac-1"), vm(VM1, "mac-2"))))
    assert violation.invariant == 2 and "mac-1, mac-2" in violation.detail


def test_two_attempts_of_one_job_are_not_one_attempt_twice() -> None:
    assert checks.check_sample(Sample(1.0, (), (vm(VM1, "mac-1"), vm(VM2, "mac-2")))) == []


def test_more_reservations_than_vm_slots() -> None:
    sample = Sample(1.0, (host("mac-1", res("a", cpu=1), res("b", cpu=1), res("c", cpu=1)),), ())
    assert [v.detail for v in checks.check_sample(sample)] == ["3 reservations for 2 VM slots"]


def test_reserved_cpu_and_memory_over_the_host() -> None:
    sample = Sample(1.0, (host("mac-1", res("a", cpu=6, memory=14336), res("b", cpu=6, memory=4096)),), ())
    details = [v.detail for v in checks.check_sample(sample)]
    assert details == ["reserved CPU 12 > 8", "reserved memory MiB 18432 > 16384"]


def test_real_vms_over_slots_cpu_and_memory_even_with_a_clean_ledger() -> None:
    vms = tuple(vm(f"anklet-vm-u{i}-a1", cpu=4, memory=8192) for i in range(3))
    found = checks.check_sample(Sample(1.0, (host("mac-1"),), vms))
    assert invariants(found) == [3, 3, 3]
    assert {v.detail for v in found} == {
        "3 Anklet VMs exist for 2 VM slots",
        "CPU of its VMs 12 > 8",
        "memory MiB of its VMs 24576 > 16384",
    }


def test_overcommit_allows_cpu_and_memory_but_never_more_slots() -> None:
    busy = host("mac-1", res("a", cpu=8), res("b", cpu=8), overcommit=True)
    assert checks.check_sample(Sample(1.0, (busy,), ())) == []
    crowded = host("mac-1", res("a"), res("b"), res("c"), overcommit=True)
    assert invariants(checks.check_sample(Sample(1.0, (crowded,), ()))) == [3]


def test_an_unreadable_sample_checks_what_it_has() -> None:
    assert checks.check_sample(Sample(1.0, None, None)) == []
    assert invariants(checks.check_sample(Sample(1.0, None, (vm(VM1), vm(VM1, "mac-2"))))) == [2]


# ----- call logs: invariant 2 over time ----------------------------------------------------------


def lifecycle(vm_name: str, where: str, t: float, run_exit: int | None = 0) -> list[CallRecord]:
    return [
        call(f"-j clone --tag 2c4r {TEMPLATE} {vm_name}", t, t + 1, where=where),
        call(f"-j start {vm_name}", t + 1, t + 2, where=where),
        call(f"run {vm_name} true", t + 2, t + 2.5, where=where),
        call(
            f"run {vm_name} bash -l -s", t + 3, t + 5 if run_exit is not None else None, run_exit, where=where
        ),
        call(f"-j delete --yes {vm_name}", t + 6, t + 7, where=where),
    ]


def test_a_retry_after_an_infrastructure_failure_is_not_a_double_run() -> None:
    calls = lifecycle(VM1, "mac-1", 0, run_exit=125) + lifecycle(VM2, "mac-2", 10)
    assert checks.check_calls(calls, {"u1": 30.0}) == []


def test_one_attempts_vm_on_two_hosts_at_once() -> None:
    calls = lifecycle(VM1, "mac-1", 0, run_exit=125) + lifecycle(VM1, "mac-2", 3, run_exit=125)
    found = checks.check_calls(calls, {})
    assert any("existed on mac-1 and mac-2 at once" in v.detail for v in found)
    assert all(v.invariant == 2 for v in found)


def test_two_attempts_running_the_workload_at_once() -> None:
    calls = lifecycle(VM1, "mac-1", 0, run_exit=125) + lifecycle(VM2, "mac-2", 1, run_exit=125)
    [violation] = checks.check_calls(calls, {})
    assert "workload ran twice at once" in violation.detail


def test_a_killed_run_lasts_until_its_vm_is_deleted() -> None:
    first = lifecycle(VM1, "mac-1", 0, run_exit=None)  # no end: runs until the delete at t=7
    assert invariants(checks.check_calls(first + lifecycle(VM2, "mac-2", 3.5), {})) == [2]
    assert checks.check_calls(first + lifecycle(VM2, "mac-2", 7.5), {}) == []


def test_a_workload_run_again_after_it_succeeded() -> None:
    calls = lifecycle(VM1, "mac-1", 0) + lifecycle(VM2, "mac-1", 10)
    [violation] = checks.check_calls(calls, {})
    assert f"ran again ({VM2}) after {VM1} exited 0" in violation.detail


def test_a_workload_started_after_the_job_ended() -> None:
    [violation] = checks.check_calls(lifecycle(VM1, "mac-1", 10), {"u1": 5.0})
    assert "after the job ended" in violation.detail


def test_readiness_probes_and_failed_clones_are_not_runs_or_vms() -> None:
    calls = [
        call(f"-j clone {TEMPLATE} {VM1}", 0, 1, exit=18, where="mac-2"),
        *lifecycle(VM1, "mac-1", 0),
        call(f"run {VM1} true", 3.5, 4, where="mac-1"),
    ]
    assert checks.check_calls(calls, {}) == []


# ----- the job watch and Events: invariants 1 and 5 -----------------------------------------------


def versions(*jobs: JobRecord) -> list[StatusVersion]:
    return [
        StatusVersion(float(i), dataclasses.replace(j, resource_version=i + 1)) for i, j in enumerate(jobs)
    ]


def test_a_normal_life_has_a_reason_at_every_step() -> None:
    history = versions(
        job(phase="Pending", reason="", attempts=0, host=None, vm_name=None),
        job(phase="Pending", reason="Unschedulable", message="0/2 hosts", attempts=0, host=None),
        job(phase="Scheduled", reason="Scheduled"),
        job(phase="Provisioning", reason="Pulling"),
        job(phase="Running", reason="Running"),
        job(phase="Pending", reason="AgentRestarted", message="retrying", host=None),
        job(phase="Scheduled", reason="Scheduled", attempts=2, host="mac-2"),
        job(phase="Succeeded", reason="Succeeded", attempts=2, host="mac-2"),
    )
    assert checks.check_transitions(history) == []


def test_a_phase_change_without_a_reason() -> None:
    history = versions(job(phase="Scheduled", reason="Scheduled"), job(phase="Running", reason=""))
    [violation] = checks.check_transitions(history)
    assert violation.invariant == 5 and "Scheduled → Running" in violation.detail


def test_a_move_to_another_host_without_a_reason() -> None:
    history = versions(job(phase="Running"), job(phase="Running", reason="", host="mac-2"))
    assert invariants(checks.check_transitions(history)) == [5]


def test_a_terminal_phase_is_final() -> None:
    history = versions(job(phase="Failed", reason="ExitCode"), job(phase="Running", reason="Running"))
    assert invariants(checks.check_transitions(history)) == [1]


def test_versions_are_ordered_by_resource_version_not_arrival() -> None:
    late = StatusVersion(5.0, JobRecord("u1", "default", "j", "Running", "Running", "", 1, "mac-1", VM1, 3))
    early = StatusVersion(
        9.0, JobRecord("u1", "default", "j", "Scheduled", "Scheduled", "", 1, "mac-1", VM1, 2)
    )
    assert checks.check_transitions([early, late]) == []


def test_a_finished_job_needs_an_event() -> None:
    done = job(phase="Failed", reason="ExitCode", message="workload exited 3")
    assert checks.check_events([done], [EventRecord("u1", "Failed")], 1.0) == []
    assert checks.check_events([done], [EventRecord("u1", "ExitCode")], 1.0) == []
    [violation] = checks.check_events(
        [done], [EventRecord("u1", "Scheduled"), EventRecord("u2", "Failed")], 1.0
    )
    assert violation.invariant == 5 and "no Event" in violation.detail
    assert checks.check_events([job(phase="Running")], [], 1.0) == [], "only finished jobs"


# ----- after quiescence: invariants 1 and 4 ------------------------------------------------------


def test_unfinished_jobs_must_say_why() -> None:
    waiting = job(phase="Pending", reason="Unschedulable", message="0/2 hosts: insufficient cpu", host=None)
    done = job("u2", phase="Succeeded", reason="Succeeded")
    silent = job("u3", phase="Running", reason="Running", message="")
    [violation] = checks.check_progress([waiting, done, silent], 1.0)
    assert (violation.invariant, violation.subject) == (1, "default/job-u3")


def clean_redis(*hosts: str) -> RedisState:
    per_host = [keys.host_info(h) for h in hosts] + [keys.host_lease(h) for h in hosts]
    return RedisState(
        keys=(keys.hosts_index(), keys.events_stream(), keys.template_sizes(), *per_host),
        hosts_index=frozenset(hosts),
    )


def final(
    jobs: tuple[JobRecord, ...] = (),
    vms: tuple[VMRecord, ...] = (),
    redis: RedisState | None = None,
    runners: tuple[RunnerRecord, ...] | None = (),
) -> FinalSnapshot:
    return FinalSnapshot(9.0, jobs, vms, redis or clean_redis("mac-1", "mac-2"), runners)


def test_a_quiet_clean_system_has_no_orphans() -> None:
    assert checks.check_orphans(final((job(phase="Succeeded"),), (vm("anklet", cpu=8),))) == []


def test_a_live_attempt_owns_its_vm_reservation_secret_and_runner() -> None:
    live = job(phase="Running")
    redis = clean_redis("mac-1")
    redis = RedisState(
        keys=(*redis.keys, keys.host_alloc("mac-1"), keys.host_secret("mac-1", "u1", 1)),
        hosts_index=redis.hosts_index,
        alloc={"mac-1": {"u1": 1}},
        desired={"mac-1": {"u1": 1}},
        observed={"mac-1": {"u1": 1}},
    )
    snapshot = final((live,), (vm(VM1),), redis, (RunnerRecord(1, VM1, busy=True, status="online"),))
    assert checks.check_orphans(snapshot) == []


def test_leftovers_of_a_finished_job_are_orphans() -> None:
    done = job(phase="Succeeded")
    redis = clean_redis("mac-1")
    redis = RedisState(
        keys=(*redis.keys, keys.host_secret("mac-1", "u1", 1)),
        hosts_index=redis.hosts_index,
        alloc={"mac-1": {"u1": 1}},
        desired={"mac-1": {"u1": 1}},
        observed={"mac-1": {"u1": 1}},
    )
    snapshot = final((done,), (vm(VM1),), redis, (RunnerRecord(7, VM1),))
    found = checks.check_orphans(snapshot)
    assert invariants(found) == [4] * 6
    details = " | ".join(v.detail for v in found)
    for what in ("VM (running)", "reservation", "desired VM", "observation", "secret", "GitHub runner"):
        assert what in details


def test_a_vm_of_an_older_attempt_or_another_host_is_an_orphan() -> None:
    live = job(phase="Running", attempts=2, vm_name=VM2)
    found = checks.check_orphans(final((live,), (vm(VM1), vm(VM2, "mac-2"))))
    assert {v.subject for v in found} == {f"mac-1/{VM1}", f"mac-2/{VM2}"}


def test_keys_outside_the_schema_or_of_unknown_hosts() -> None:
    redis = clean_redis("mac-1")
    redis = RedisState(
        keys=(*redis.keys, "anklet:stray", keys.host_alloc("ghost"), "anklet:{h:mac-1}:mystery"),
        hosts_index=redis.hosts_index,
    )
    found = checks.check_orphans(final(redis=redis))
    assert [v.subject for v in found] == [
        "anklet:stray",
        keys.host_alloc("ghost"),
        "anklet:{h:mac-1}:mystery",
    ]


def test_foreign_vms_and_runners_are_not_ours_to_judge() -> None:
    snapshot = final(vms=(vm("someone-elses-vm"),), runners=(RunnerRecord(3, "build-box"),))
    assert checks.check_orphans(snapshot) == []


def test_every_run_after_a_successful_one_counts_and_names_the_job() -> None:
    calls = lifecycle(VM1, "mac-1", 0) + lifecycle(VM2, "mac-1", 10, run_exit=125)
    calls += lifecycle("anklet-vm-u1-a3", "mac-2", 20)
    found = checks.check_calls(calls, {}, {"u1": "default/build"})
    assert [v.subject for v in found] == ["default/build", "default/build"]
    assert [v.detail.split(")")[0] for v in found] == [
        f"workload ran again ({VM2}",
        "workload ran again (anklet-vm-u1-a3",
    ]


def test_stopping_the_monitor_survives_a_task_that_swallows_one_cancellation() -> None:
    """Python 3.11's wait_for can swallow a cancellation; a single cancel() + gather hung here."""
    import asyncio

    from anklet.dev.invariants.monitor import cancel_and_wait

    swallowed = []

    async def stubborn() -> None:
        while True:
            try:
                await asyncio.sleep(3600)
            except asyncio.CancelledError:
                if swallowed:
                    raise
                swallowed.append(True)  # the first cancellation is lost, as in the wait_for race

    async def scenario() -> bool:
        task = asyncio.create_task(stubborn())
        await asyncio.sleep(0)
        await asyncio.wait_for(cancel_and_wait([task], wait=0.05), 5)
        return task.cancelled()

    assert asyncio.run(scenario())
    assert swallowed == [True]
