"""Placement of pending jobs onto hosts: a pure function over a snapshot.

No I/O and no clock: the caller passes the hosts as Redis showed them and gets back one
decision per job. The reservation itself is made atomically in Redis afterwards, so a stale
snapshot can only cause a refused reservation (retried on the next pass), never an overbooking.
"""

from __future__ import annotations

import enum
import heapq
from collections import Counter
from collections.abc import Callable, Hashable, Mapping, Sequence
from dataclasses import dataclass, field

from anklet.redis_protocol import HostSnapshot
from anklet.wire import HostInfo
from controller.placement import PassIndex, class_key


class Unfit(enum.StrEnum):
    """Why one host cannot take one job now."""

    NOT_READY = "host not ready"
    CORDONED = "host unschedulable"
    SELECTOR = "labels do not match hostSelector"
    QUEUE = "does not serve the job's queue"
    NO_VM_SLOT = "no free VM slot"
    CPU = "insufficient cpu"
    MEMORY = "insufficient memory"
    MOUNTS = "mounts need Anka >= 3.9.0 on arm64"
    DISK = "not enough disk to pull the template"
    HELD = "held for a job waiting longer"


@dataclass(frozen=True)
class JobRequest:
    """What the scheduler needs to know about one pending job."""

    uid: str
    cpu: int
    memory_mib: int
    attempts: int = 0
    template: str = ""
    tag: str | None = None
    host_selector: Mapping[str, str] = field(default_factory=dict)
    queue: str | None = None
    priority: int = 0
    waiting_seconds: float = 0.0
    mounts: bool = False
    image_size: int | None = None


@dataclass(frozen=True)
class Placement:
    host: str


@dataclass(frozen=True)
class Adopt:
    """A reservation for this job already exists (controller restarted after reserving)."""

    host: str
    attempt: int


@dataclass(frozen=True)
class ReleaseStale:
    """A reservation of an attempt that already ended is still held: free it first."""

    host: str
    attempt: int


@dataclass(frozen=True)
class Unschedulable:
    """No host fits now; `permanent` when no registered host could fit even when empty."""

    message: str
    permanent: bool = False


Decision = Placement | Adopt | ReleaseStale | Unschedulable


@dataclass
class _HostState:
    info: HostInfo
    ready: bool
    used_slots: int
    used_cpu: int
    used_memory: int
    held_for: str | None = None


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split(" ", maxsplit=1)[0].lstrip("v").split(".")[:3]:
        digits = "".join(ch for ch in piece if ch.isdigit())
        parts.append(int(digits) if digits else 0)
    return tuple(parts)


def _static_unfit(job: JobRequest, info: HostInfo) -> Unfit | None:
    if any(info.labels.get(k) != v for k, v in job.host_selector.items()):
        return Unfit.SELECTOR
    served = info.queues or ["default"]
    if (job.queue or "default") not in served:
        return Unfit.QUEUE
    if job.mounts and (info.arch != "arm64" or _version(info.anka_version) < (3, 9, 0)):
        return Unfit.MOUNTS
    return None


def _never_fits(job: JobRequest, info: HostInfo) -> bool:
    if info.vm_slots < 1:
        return True
    if info.overcommit:
        return False
    return job.cpu > info.cpu or job.memory_mib > info.memory_mib


def _unfit(job: JobRequest, host: _HostState) -> Unfit | None:
    info = host.info
    if not host.ready:
        return Unfit.NOT_READY
    if not info.schedulable:
        return Unfit.CORDONED
    static = _static_unfit(job, info)
    if static is not None:
        return static
    if host.held_for is not None and host.held_for != job.uid:
        return Unfit.HELD
    if host.used_slots + 1 > info.vm_slots:
        return Unfit.NO_VM_SLOT
    if not info.overcommit:
        if host.used_cpu + job.cpu > info.cpu:
            return Unfit.CPU
        if host.used_memory + job.memory_mib > info.memory_mib:
            return Unfit.MEMORY
    if job.image_size and not _has_template(job, info) and info.disk_free and info.disk_free < job.image_size:
        return Unfit.DISK
    return None


def _has_template(job: JobRequest, info: HostInfo) -> bool:
    return any(
        job.template in (t.uuid, t.name) and (job.tag is None or t.tag == job.tag) for t in info.templates
    )


def _score(job: JobRequest, host: _HostState) -> tuple[int, int, str]:
    """Lower is better: template already on disk first (a pull is tens of GiB), then pack."""
    free_slots = host.info.vm_slots - host.used_slots
    return (0 if _has_template(job, host.info) else 1, free_slots, host.info.name)


def _explain(reasons: Counter[Unfit], total: int) -> str:
    # Ties in declaration order, so the message does not depend on the order hosts were counted in.
    ranked = sorted(reasons.items(), key=lambda kv: (-kv[1], list(Unfit).index(kv[0])))
    parts = ", ".join(f"{n} {reason.value}" for reason, n in ranked)
    return f"0/{total} hosts available: {parts}" if parts else f"0/{total} hosts registered"


def order(jobs: Sequence[JobRequest]) -> list[JobRequest]:
    """Higher priority first; within one priority, longest waiting first (FIFO). The sort is
    stable: jobs created in the same second keep the caller's order (creation, then name), so
    which of them waits does not depend on their random uids."""
    return sorted(jobs, key=lambda j: (-j.priority, -j.waiting_seconds))


def plan(
    jobs: Sequence[JobRequest],
    hosts: Sequence[HostSnapshot],
    *,
    starvation_seconds: float | None = 600.0,
    quiet: Callable[[JobRequest], bool] | None = None,
) -> list[tuple[JobRequest, Decision]]:
    """Decide for each job in `order`; each placement consumes capacity for the jobs after it.

    Anti-starvation: a job that has waited `starvation_seconds` and still does not fit holds
    the best host it could fit on once that host's running VMs end; jobs after it may not take
    that host, so a large job is not overtaken forever by a stream of small ones.

    Once no usable host has a free VM slot, nothing after can be placed: jobs for which
    `quiet(job)` is true (they already say why they wait) get no decision at all, so a pass
    after one freed slot costs the jobs up to that slot, not the whole backlog. Always decided:
    jobs holding a reservation (adopt / release), jobs that are not quiet, and starving jobs
    while a host is left to hold (a hold changes the reasons of the jobs after it). Every
    decision made is the one a full pass makes (property-tested).
    """
    states = {
        h.info.name: _HostState(
            info=h.info,
            ready=h.ready,
            used_slots=len(h.reservations),
            used_cpu=sum(r.cpu for r in h.reservations),
            used_memory=sum(r.memory_mib for r in h.reservations),
        )
        for h in hosts
    }
    held = {r.uid: (h.info.name, r.attempt) for h in hosts for r in h.reservations}
    free_slots = free_vm_slots(hosts)
    unheld = sum(1 for h in hosts if _usable(h))  # hosts a starving job could still hold
    # Same answers as `place` for every job, without scanning every host per job (see placement).
    index: PassIndex[JobRequest, _HostState, Unfit] = PassIndex(states, unfit=_unfit, score=_score)
    hold = _HoldTargets(states)
    holders: set[str] = set()  # jobs a host is held for: `_unfit` depends on their uid
    decisions: list[tuple[JobRequest, Decision]] = []
    for job in order(jobs):
        if job.uid in held:
            host_name, attempt = held[job.uid]
            if attempt > job.attempts:
                decisions.append((job, Adopt(host=host_name, attempt=attempt)))
            else:
                decisions.append((job, ReleaseStale(host=host_name, attempt=attempt)))
            continue
        starving = starvation_seconds is not None and job.waiting_seconds >= starvation_seconds
        if free_slots <= 0 and (not starving or unheld <= 0) and quiet is not None and quiet(job):
            continue
        decision = place(job, states) if job.uid in holders else _place_indexed(job, states, index)
        if isinstance(decision, Placement):
            free_slots -= 1
            state = states[decision.host]
            state.used_slots += 1
            state.used_cpu += job.cpu
            state.used_memory += job.memory_mib
            index.changed(decision.host)
            hold.changed(decision.host)
        elif (
            starvation_seconds is not None
            and job.waiting_seconds >= starvation_seconds
            and not decision.permanent
        ):
            target = hold.target(job)
            if target is not None:
                target.held_for = job.uid
                unheld -= 1
                holders.add(job.uid)
                index.changed(target.info.name)
        decisions.append((job, decision))
    return decisions


def _usable(host: HostSnapshot) -> bool:
    return host.ready and host.info.schedulable


def free_vm_slots(hosts: Sequence[HostSnapshot]) -> int:
    """VM slots free on the hosts that take new jobs (what `plan` can still place)."""
    return sum(max(0, h.info.vm_slots - len(h.reservations)) for h in hosts if _usable(h))


def plan_head(
    head: Callable[[int], tuple[Sequence[JobRequest], bool]],
    always: Sequence[JobRequest],
    hosts: Sequence[HostSnapshot],
    *,
    quiet: Callable[[JobRequest], bool],
    starvation_seconds: float | None = 600.0,
    first: int | None = None,
) -> list[tuple[JobRequest, Decision]]:
    """`plan(queue, hosts, quiet=quiet)` for a long queue, reading only its head.

    `head(k)` gives the queue's first k jobs in `order` and whether that is all of it;
    `always` holds the queue's jobs that `plan` decides wherever they stand: the ones that are
    not quiet, hold a reservation, or are starving. Once the placements have used every free
    slot, `plan` decides nothing else behind them, so when the head's own placements use them all,
    the rest of the queue needs no look (and no request built). Otherwise the head grows and
    the plan is redone; being pure, it gives exactly the decisions of a pass over the whole
    queue (property-tested), at a cost that follows the free slots, not the backlog."""
    free = free_vm_slots(hosts)
    size = first if first is not None else max(64, 4 * free)
    while True:
        jobs, complete = head(size)
        seen = {j.uid for j in jobs}
        behind = [j for j in always if j.uid not in seen]
        decisions = plan([*jobs, *behind], hosts, starvation_seconds=starvation_seconds, quiet=quiet)
        # Only the head's own placements count: a job behind it may not take a slot that a
        # quiet job between them would have taken in a pass over everything.
        placed = sum(1 for r, d in decisions if isinstance(d, Placement) and r.uid in seen)
        if complete or placed >= free:
            return decisions
        size *= 4


def _place_indexed(
    job: JobRequest, hosts: Mapping[str, _HostState], index: PassIndex[JobRequest, _HostState, Unfit]
) -> Placement | Unschedulable:
    """`place(job, hosts)` answered from the pass's index: the same decision and message."""
    best = index.best(job)
    if best is not None:
        return Placement(host=best)
    permanent: bool = index.memo(
        job, "permanent", lambda: bool(hosts) and all(_never_fits(job, h.info) for h in hosts.values())
    )
    if permanent:
        message: str = index.memo(
            job,
            "permanent message",
            lambda: (
                f"no registered host can ever fit {job.cpu} CPU / {job.memory_mib} MiB "
                f"(largest: {_largest(hosts)})"
            ),
        )
        return Unschedulable(message=message, permanent=True)
    return Unschedulable(message=index.explain(job, lambda reasons: _explain(reasons, len(hosts))))


def _hold_target(job: JobRequest, hosts: Mapping[str, _HostState]) -> _HostState | None:
    """The host a starving job should wait for: one that fits it when empty, closest to free."""
    candidates = [
        h
        for h in hosts.values()
        if h.ready
        and h.info.schedulable
        and h.held_for is None
        and _static_unfit(job, h.info) is None
        and not _never_fits(job, h.info)
    ]
    if not candidates:
        return None
    return min(candidates, key=lambda h: (h.used_slots, h.used_cpu, h.info.name))


class _HoldTargets:
    """`_hold_target` for every starving job of a pass, without scanning every host per job.

    A deep backlog is where jobs starve, and there every job past the threshold asks for a host
    to hold: scanning all hosts for each made a pass O(starving jobs × hosts). Which hosts can be
    held for a job depends only on static facts and the job's class (`placement.class_key`), so
    each class keeps a heap of its candidates ordered like `_hold_target`'s `min`; a host that
    gets held is dropped when it reaches the top, and one whose usage changed is pushed again
    with a new version (the stale entry is skipped)."""

    def __init__(self, hosts: Mapping[str, _HostState]) -> None:
        self.hosts = hosts
        self._version = dict.fromkeys(hosts, 0)
        self._heaps: dict[Hashable, tuple[set[str], list[tuple[int, int, str, int]]]] = {}

    def target(self, job: JobRequest) -> _HostState | None:
        key = class_key(job)
        entry = self._heaps.get(key)
        if entry is None:
            names = {
                name
                for name, h in self.hosts.items()
                if h.ready
                and h.info.schedulable
                and _static_unfit(job, h.info) is None
                and not _never_fits(job, h.info)
            }
            heap = [(self.hosts[n].used_slots, self.hosts[n].used_cpu, n, self._version[n]) for n in names]
            heapq.heapify(heap)
            entry = self._heaps[key] = (names, heap)
        heap = entry[1]
        while heap:
            _, _, name, version = heap[0]
            host = self.hosts[name]
            if host.held_for is not None or version != self._version[name]:
                heapq.heappop(heap)
                continue
            return host
        return None

    def changed(self, name: str) -> None:
        """The pass placed a job on `name`: its usage (the heap order) moved."""
        version = self._version[name] = self._version[name] + 1
        host = self.hosts[name]
        if host.held_for is not None:
            return
        for names, heap in self._heaps.values():
            if name in names:
                heapq.heappush(heap, (host.used_slots, host.used_cpu, name, version))


def place(job: JobRequest, hosts: Mapping[str, _HostState]) -> Placement | Unschedulable:
    reasons: Counter[Unfit] = Counter()
    fitting: list[_HostState] = []
    for host in hosts.values():
        unfit = _unfit(job, host)
        if unfit is None:
            fitting.append(host)
        else:
            reasons[unfit] += 1
    if fitting:
        return Placement(host=min(fitting, key=lambda h: _score(job, h)).info.name)
    permanent = bool(hosts) and all(_never_fits(job, h.info) for h in hosts.values())
    message = _explain(reasons, len(hosts))
    if permanent:
        message = (
            f"no registered host can ever fit {job.cpu} CPU / {job.memory_mib} MiB "
            f"(largest: {_largest(hosts)})"
        )
    return Unschedulable(message=message, permanent=permanent)


def _largest(hosts: Mapping[str, _HostState]) -> str:
    best = max(hosts.values(), key=lambda h: (h.info.cpu, h.info.memory_mib))
    return f"{best.info.cpu} CPU / {best.info.memory_mib} MiB"
