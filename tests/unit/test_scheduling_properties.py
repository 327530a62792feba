"""Properties of `controller.scheduling.plan` under random histories, and of its per-pass index.

A tiny pure model plays Redis (reservations per host, hosts ready or lost) and the controller
(pending jobs, attempts): random sequences of create / cancel / host loss / host return /
capacity free / lost status write are interleaved with scheduling passes that apply `plan`'s
placements *without* checking them, so any overbooking `plan` decides shows up in the model.
The Lua reservation would refuse such a placement in production; here it must never be asked to.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from hypothesis import given, settings
from hypothesis import strategies as st

from anklet.redis_protocol import HostSnapshot
from anklet.wire import HostInfo, Reservation, TemplateInfo
from controller import scheduling
from controller.scheduling import Adopt, JobRequest, Placement, ReleaseStale, Unschedulable, plan

TEMPLATES = [TemplateInfo(uuid="u1", name="xcode", tag="t1"), TemplateInfo(uuid="u2", name="small", tag="t2")]

hosts_strategy = st.lists(
    st.builds(
        HostInfo,
        name=st.sampled_from([f"mac-{i}" for i in range(8)]),
        cpu=st.sampled_from([4, 8, 12]),
        memory_mib=st.sampled_from([8192, 16384]),
        vm_slots=st.sampled_from([0, 1, 2, 2, 3]),
        overcommit=st.sampled_from([False, False, False, True]),
        schedulable=st.sampled_from([True, True, True, False]),
        labels=st.sampled_from([{}, {"os": "15"}, {"os": "14"}]),
        queues=st.sampled_from([[], [], ["ios"]]),
        templates=st.lists(st.sampled_from(TEMPLATES), max_size=2, unique_by=lambda t: t.uuid),
        anka_version=st.sampled_from(["3.8.2", "3.9.1"]),
    ),
    min_size=1,
    max_size=6,
    unique_by=lambda h: h.name,
)


@dataclass
class Job:
    uid: str
    cpu: int
    memory_mib: int
    priority: int
    waiting: float
    template: str
    host_selector: dict[str, str]
    queue: str | None
    attempts: int = 0
    state: str = "pending"  # pending | placed | done | cancelled

    def request(self) -> JobRequest:
        return JobRequest(
            uid=self.uid,
            cpu=self.cpu,
            memory_mib=self.memory_mib,
            attempts=self.attempts,
            template=self.template,
            host_selector=self.host_selector,
            queue=self.queue,
            priority=self.priority,
            waiting_seconds=self.waiting,
        )


@dataclass
class Fleet:
    """The model: what Redis holds (reservations, leases) and what the controller knows (jobs)."""

    infos: dict[str, HostInfo]
    ready: dict[str, bool] = field(default_factory=dict)
    held: dict[str, dict[str, Reservation]] = field(default_factory=dict)
    jobs: dict[str, Job] = field(default_factory=dict)

    def snapshot(self) -> list[HostSnapshot]:
        return [
            HostSnapshot(info=info, ready=self.ready[name], reservations=tuple(self.held[name].values()))
            for name, info in self.infos.items()
        ]

    def release(self, uid: str) -> None:
        for reservations in self.held.values():
            reservations.pop(uid, None)

    def holders(self, uid: str) -> list[str]:
        return [name for name, reservations in self.held.items() if uid in reservations]

    def schedule(self) -> None:
        pending = [j.request() for j in self.jobs.values() if j.state == "pending"]
        decisions = plan(pending, self.snapshot())
        assert len({r.uid for r, _ in decisions}) == len(decisions), "a job decided twice in one pass"
        for request, decision in decisions:
            job = self.jobs[request.uid]
            if isinstance(decision, Placement):
                assert not self.holders(job.uid), (
                    f"{job.uid} placed again while {self.holders(job.uid)} holds it"
                )
                assert self.ready[decision.host] and self.infos[decision.host].schedulable
                job.attempts += 1
                self.held[decision.host][job.uid] = Reservation(
                    uid=job.uid, attempt=job.attempts, cpu=request.cpu, memory_mib=request.memory_mib
                )
                job.state = "placed"
            elif isinstance(decision, Adopt):
                assert self.holders(job.uid) == [decision.host]
                job.attempts, job.state = decision.attempt, "placed"
            elif isinstance(decision, ReleaseStale):
                self.release(job.uid)
            else:
                assert isinstance(decision, Unschedulable) and decision.message
                if decision.permanent:
                    job.state = "done"
        self.check()

    def check(self) -> None:
        for name, info in self.infos.items():
            reservations = list(self.held[name].values())
            assert len(reservations) <= info.vm_slots, (
                f"{name}: {len(reservations)} VMs > {info.vm_slots} slots"
            )
            if not info.overcommit:
                assert sum(r.cpu for r in reservations) <= info.cpu, f"{name}: cpu overbooked"
                assert sum(r.memory_mib for r in reservations) <= info.memory_mib, (
                    f"{name}: memory overbooked"
                )
        for uid in self.jobs:
            assert len(self.holders(uid)) <= 1, f"{uid} reserved on {self.holders(uid)}"


create = st.tuples(
    st.just("create"),
    st.sampled_from([1, 2, 4, 6, 16]),
    st.sampled_from([2048, 4096, 8192, 14336, 20000]),
    st.sampled_from([0, 0, 1]),
    st.sampled_from([0.0, 10.0, 900.0]),
    st.sampled_from(["u1", "xcode", "small", "other"]),
    st.sampled_from([{}, {}, {"os": "15"}]),
    st.sampled_from([None, None, "ios"]),
)
pick = st.integers(min_value=0, max_value=50)
operation = st.one_of(
    create,
    st.tuples(st.just("cancel"), pick),
    st.tuples(st.just("free"), pick),
    st.tuples(st.just("lose-host"), pick),
    st.tuples(st.just("host-back"), pick),
    st.tuples(st.just("lose-status"), pick),
    st.tuples(st.just("schedule")),
)


@settings(max_examples=300, deadline=None)
@given(infos=hosts_strategy, ops=st.lists(operation, max_size=60))
def test_random_histories_never_overbook_a_host_or_place_a_job_twice(
    infos: list[HostInfo], ops: list[tuple[object, ...]]
) -> None:
    fleet = Fleet(infos={h.name: h for h in infos})
    fleet.ready = dict.fromkeys(fleet.infos, True)
    fleet.held = {name: {} for name in fleet.infos}
    names = list(fleet.infos)
    for op in ops:
        kind = op[0]
        jobs = list(fleet.jobs.values())
        if kind == "create":
            _, cpu, mem, priority, waiting, template, selector, queue = op
            uid = f"job-{len(fleet.jobs)}"
            fleet.jobs[uid] = Job(uid, cpu, mem, priority, waiting, template, selector, queue)
        elif kind == "schedule":
            fleet.schedule()
        elif kind in ("cancel", "free", "lose-status") and jobs:
            job = jobs[int(op[1]) % len(jobs)]
            if kind == "cancel" and job.state in ("pending", "placed"):
                fleet.release(job.uid)  # the host deletes the VM, then the controller releases
                job.state = "cancelled"
            elif kind == "free" and job.state == "placed":
                fleet.release(job.uid)
                job.state = "done"
            elif kind == "lose-status" and job.state == "placed":
                # The controller reserved but its status write was lost (restart): it must adopt,
                # never place the job a second time.
                job.state = "pending"
                job.attempts -= 1
        elif kind in ("lose-host", "host-back"):
            name = names[int(op[1]) % len(names)]
            if kind == "host-back":
                fleet.ready[name] = True
            else:
                # The lease expired: waiting jobs there move elsewhere (attempts counted), the
                # host's reservations are released.
                fleet.ready[name] = False
                for uid in list(fleet.held[name]):
                    fleet.release(uid)
                    if fleet.jobs[uid].state == "placed":
                        fleet.jobs[uid].state = "pending"
        fleet.check()
    fleet.schedule()


def reference_plan(
    jobs: list[JobRequest], hosts: list[HostSnapshot], starvation_seconds: float = 600.0
) -> list[tuple[JobRequest, scheduling.Decision]]:
    """`plan` as it was before the per-pass index: `place` scans every host for every job."""
    states = {
        h.info.name: scheduling._HostState(
            info=h.info,
            ready=h.ready,
            used_slots=len(h.reservations),
            used_cpu=sum(r.cpu for r in h.reservations),
            used_memory=sum(r.memory_mib for r in h.reservations),
        )
        for h in hosts
    }
    held = {r.uid: (h.info.name, r.attempt) for h in hosts for r in h.reservations}
    decisions: list[tuple[JobRequest, scheduling.Decision]] = []
    for job in scheduling.order(jobs):
        if job.uid in held:
            name, attempt = held[job.uid]
            decision: scheduling.Decision = (
                Adopt(host=name, attempt=attempt) if attempt > job.attempts else ReleaseStale(name, attempt)
            )
            decisions.append((job, decision))
            continue
        decision = scheduling.place(job, states)
        if isinstance(decision, Placement):
            state = states[decision.host]
            state.used_slots += 1
            state.used_cpu += job.cpu
            state.used_memory += job.memory_mib
        elif job.waiting_seconds >= starvation_seconds and not decision.permanent:
            target = scheduling._hold_target(job, states)
            if target is not None:
                target.held_for = job.uid
        decisions.append((job, decision))
    return decisions


reservation = st.builds(
    Reservation,
    uid=st.sampled_from([f"r{i}" for i in range(6)] + ["job-0", "job-1"]),
    attempt=st.integers(min_value=1, max_value=2),
    cpu=st.sampled_from([1, 2, 4]),
    memory_mib=st.sampled_from([1024, 4096, 8192]),
)
snapshots = hosts_strategy.flatmap(
    lambda infos: st.tuples(
        *[
            st.builds(
                HostSnapshot,
                info=st.just(info),
                ready=st.sampled_from([True, True, False]),
                reservations=st.lists(reservation, max_size=2, unique_by=lambda r: r.uid).map(tuple),
            )
            for info in infos
        ]
    ).map(list)
)
requests = st.lists(create, max_size=25).map(
    lambda raw: [
        JobRequest(
            uid=f"job-{i}",
            cpu=cpu,
            memory_mib=mem,
            attempts=i % 2,
            template=template,
            tag="t1" if i % 3 == 0 else None,
            host_selector=selector,
            queue=queue,
            priority=priority,
            waiting_seconds=waiting,
            mounts=i % 7 == 0,
        )
        for i, (_, cpu, mem, priority, waiting, template, selector, queue) in enumerate(raw)
    ]
)


@settings(max_examples=400, deadline=None)
@given(hosts=snapshots, jobs=requests)
def test_the_indexed_plan_decides_exactly_like_scanning_every_host(
    hosts: list[HostSnapshot], jobs: list[JobRequest]
) -> None:
    assert plan(jobs, hosts) == reference_plan(jobs, hosts)


@settings(max_examples=400, deadline=None)
@given(hosts=snapshots, jobs=requests, quiet_ids=st.sets(st.integers(min_value=0, max_value=24)))
def test_skipping_quiet_jobs_after_the_last_free_slot_changes_no_decision(
    hosts: list[HostSnapshot], jobs: list[JobRequest], quiet_ids: set[int]
) -> None:
    """A pass that skips quiet jobs once no slot is free decides every job it does decide
    exactly as a full pass does, places the same jobs, and skips only quiet jobs that the full
    pass could not place either."""
    quiet = {f"job-{i}" for i in quiet_ids}
    full = dict((r.uid, d) for r, d in plan(jobs, hosts))
    partial = dict((r.uid, d) for r, d in plan(jobs, hosts, quiet=lambda r: r.uid in quiet))
    for uid, decision in partial.items():
        assert decision == full[uid]
    for uid in set(full) - set(partial):
        assert uid in quiet and isinstance(full[uid], scheduling.Unschedulable), (uid, full[uid])


@settings(max_examples=400, deadline=None)
@given(
    hosts=snapshots,
    jobs=requests,
    quiet_ids=st.sets(st.integers(min_value=0, max_value=24)),
    first=st.integers(min_value=0, max_value=6),
)
def test_planning_the_head_of_the_queue_decides_exactly_like_planning_all_of_it(
    hosts: list[HostSnapshot], jobs: list[JobRequest], quiet_ids: set[int], first: int
) -> None:
    """`plan_head` reads the queue a head at a time (from `first` jobs, growing) and looks
    behind it only at the jobs a pass always decides; it returns the very decisions, in the same
    order, of `plan` over the whole queue."""
    quiet_uids = {f"job-{i}" for i in quiet_ids}

    def quiet(r: JobRequest) -> bool:
        return r.uid in quiet_uids

    ordered = scheduling.order(jobs)
    held = {r.uid for h in hosts for r in h.reservations}
    always = [j for j in ordered if not quiet(j) or j.uid in held or j.waiting_seconds >= 600.0]
    looked: list[int] = []

    def head(k: int) -> tuple[list[JobRequest], bool]:
        looked.append(k)
        return ordered[:k], k >= len(ordered)

    decided = scheduling.plan_head(head, always, hosts, quiet=quiet, first=max(1, first))
    assert decided == plan(jobs, hosts, quiet=quiet)
    assert looked == sorted(looked) and len(looked) <= 5  # the head only grows, and fast
