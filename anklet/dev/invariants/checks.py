"""The invariant checks: pure functions from snapshots (``model.py``) to violations.

Each function looks at one kind of evidence and names the invariant each breach belongs to:

- ``check_sample``: one moment during a scenario (VMs per attempt, host limits) → 2, 3;
- ``check_calls``: the simulators' call logs, the whole history with timestamps → 2;
- ``check_transitions``: every status version the job watch delivered → 1, 5;
- ``check_events``: finished jobs against the Events posted about them → 5;
- ``check_progress`` and ``check_orphans``: the state after quiescence → 1, 4.

None of them does I/O or reads a clock, so a test can hand each one a snapshot that breaks it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from anklet import keys
from anklet.dev.invariants.model import (
    CallRecord,
    EventRecord,
    FinalSnapshot,
    HostRecord,
    JobRecord,
    Sample,
    StatusVersion,
    Violation,
    VMRecord,
)
from anklet.vmname import NotManagedByAnklet, VMName

# The host probes a VM with `anka run <vm> true` before the workload; that is not the job running.
_PROBE = ("true",)


def _vm_name(name: str) -> VMName | None:
    try:
        return VMName.parse(name)
    except NotManagedByAnklet:
        return None


# ----- during the scenario ------------------------------------------------------------------------


def check_sample(sample: Sample) -> list[Violation]:
    """One moment: at most one VM per job attempt across all hosts (2); no host over its VM
    slots, or (without overcommit) its CPU or memory, by ledger or by the VMs it really has (3)."""
    found: list[Violation] = []
    vms = sample.vms or ()
    by_attempt: dict[VMName, list[VMRecord]] = defaultdict(list)
    for vm in vms:
        parsed = _vm_name(vm.name)
        if parsed is not None:
            by_attempt[parsed].append(vm)
    for parsed, copies in sorted(by_attempt.items()):
        if len(copies) > 1:
            where = ", ".join(sorted(v.host for v in copies))
            found.append(
                Violation(2, str(parsed), f"{len(copies)} VMs for one attempt at once ({where})", sample.at)
            )
    for host in sample.hosts or ():
        found.extend(_host_limits(host, [v for v in vms if v.host == host.name], sample.at))
    return found


def _host_limits(host: HostRecord, vms: Sequence[VMRecord], at: float) -> list[Violation]:
    found = []
    held = host.reservations
    if len(held) > host.vm_slots:
        found.append(Violation(3, host.name, f"{len(held)} reservations for {host.vm_slots} VM slots", at))
    ours = [v for v in vms if _vm_name(v.name) is not None]
    if len(ours) > host.vm_slots:
        found.append(
            Violation(3, host.name, f"{len(ours)} Anklet VMs exist for {host.vm_slots} VM slots", at)
        )
    if host.overcommit:
        return found
    for what, used, limit in (
        ("reserved CPU", sum(r.cpu for r in held), host.cpu),
        ("reserved memory MiB", sum(r.memory_mib for r in held), host.memory_mib),
        ("CPU of its VMs", sum(v.cpu for v in ours), host.cpu),
        ("memory MiB of its VMs", sum(v.memory_mib for v in ours), host.memory_mib),
    ):
        if used > limit:
            found.append(Violation(3, host.name, f"{what} {used} > {limit}", at))
    return found


# ----- the call logs --------------------------------------------------------------------------------


def _verb(argv: Sequence[str]) -> tuple[str, int]:
    """The subcommand and its index, skipping global flags (``-j``)."""
    for i, arg in enumerate(argv):
        if not arg.startswith("-"):
            return arg, i
    return "", len(argv)


def _run_args(argv: Sequence[str]) -> list[str] | None:
    """For ``run``, its positionals: the VM, then the guest command (flags before the VM skipped;
    the agent passes none that take a value)."""
    verb, at = _verb(argv)
    if verb != "run":
        return None
    rest = list(argv[at + 1 :])
    while rest and rest[0].startswith("-"):
        rest.pop(0)
    return rest


def _call_vm(call: CallRecord) -> VMName | None:
    run = _run_args(call.argv)
    if run is not None:
        return _vm_name(run[0]) if run else None
    _, at = _verb(call.argv)
    return next((p for a in call.argv[at + 1 :] if (p := _vm_name(a)) is not None), None)


def _is_workload(call: CallRecord) -> bool:
    run = _run_args(call.argv)
    return run is not None and len(run) >= 2 and tuple(run[1:]) != _PROBE


@dataclass(frozen=True)
class _Span:
    host: str
    vm: VMName
    start: float
    end: float
    exit: int | None


def _deletions(calls: Iterable[CallRecord]) -> dict[tuple[str, VMName], list[float]]:
    """When each VM was confirmed deleted on each host (a successful ``delete``'s end)."""
    done: dict[tuple[str, VMName], list[float]] = defaultdict(list)
    for call in calls:
        verb, _ = _verb(call.argv)
        vm = _call_vm(call)
        if verb == "delete" and vm is not None and call.exit == 0:
            done[(call.host, vm)].append(call.end if call.end is not None else call.start)
    return done


def _until_deleted(
    deleted: Mapping[tuple[str, VMName], list[float]], host: str, vm: VMName, since: float
) -> float:
    return min((t for t in deleted.get((host, vm), []) if t >= since), default=math.inf)


def check_calls(
    calls: Sequence[CallRecord], terminal_at: Mapping[str, float], names: Mapping[str, str] | None = None
) -> list[Violation]:
    """Over the whole history (2): one attempt's VM never exists on two hosts at once; a job's
    workload never runs twice at once, never again after a run that exited 0, and never after
    the job was seen terminal (``terminal_at``: uid → when). ``names`` (uid → namespace/name)
    only makes the reports readable."""
    found: list[Violation] = []
    deleted = _deletions(calls)
    lifetimes: dict[VMName, list[_Span]] = defaultdict(list)
    runs: dict[str, list[_Span]] = defaultdict(list)
    for call in calls:
        verb, _ = _verb(call.argv)
        vm = _call_vm(call)
        if vm is None:
            continue
        if verb == "clone" and call.exit == 0:
            born = call.end if call.end is not None else call.start
            lifetimes[vm].append(_Span(call.host, vm, born, _until_deleted(deleted, call.host, vm, born), 0))
        elif _is_workload(call):
            end = call.end if call.end is not None else _until_deleted(deleted, call.host, vm, call.start)
            runs[vm.uid].append(_Span(call.host, vm, call.start, end, call.exit))
    for vm, spans in sorted(lifetimes.items()):
        for a, b in _overlaps(spans):
            found.append(
                Violation(2, str(vm), f"the attempt's VM existed on {a.host} and {b.host} at once", b.start)
            )
    for uid, spans in sorted(runs.items()):
        job = (names or {}).get(uid, uid)
        for a, b in _overlaps(spans):
            found.append(
                Violation(
                    2, job, f"workload ran twice at once ({a.vm} on {a.host}, {b.vm} on {b.host})", b.start
                )
            )
        ordered = sorted(spans, key=lambda s: s.start)
        succeeded = next((s for s in ordered if s.exit == 0), None)
        for later in ordered:
            if succeeded is not None and later is not succeeded and later.start >= succeeded.end:
                found.append(
                    Violation(
                        2, job, f"workload ran again ({later.vm}) after {succeeded.vm} exited 0", later.start
                    )
                )
        ended = terminal_at.get(uid)
        for span in ordered:
            if ended is not None and span.start > ended:
                found.append(
                    Violation(2, job, f"workload started in {span.vm} after the job ended", span.start)
                )
    return found


def _overlaps(spans: Sequence[_Span]) -> list[tuple[_Span, _Span]]:
    ordered = sorted(spans, key=lambda s: s.start)
    return [(a, b) for i, a in enumerate(ordered) for b in ordered[i + 1 :] if b.start < a.end]


# ----- the job watch and Events ---------------------------------------------------------------------


def _state(job: JobRecord) -> tuple[str, int, str | None]:
    return job.phase, job.attempts, job.host


def check_transitions(history: Sequence[StatusVersion]) -> list[Violation]:
    """Every version the watch delivered: a change of phase, attempt or host carries a reason (5),
    and a terminal phase is final (1)."""
    found: list[Violation] = []
    by_uid: dict[str, list[StatusVersion]] = defaultdict(list)
    for version in history:
        by_uid[version.job.uid].append(version)
    for versions in by_uid.values():
        versions.sort(key=lambda v: (v.job.resource_version, v.at))
        previous: JobRecord | None = None
        for version in versions:
            job = version.job
            before = previous if previous is not None else JobRecord(job.uid, job.namespace, job.name)
            if previous is not None and previous.terminal and _state(job) != _state(previous):
                found.append(
                    Violation(1, job.key, f"left terminal phase {previous.phase} for {job.phase}", version.at)
                )
            if _state(job) != _state(before) and not job.reason:
                found.append(
                    Violation(
                        5,
                        job.key,
                        f"{before.phase} → {job.phase} (attempt {job.attempts}, host {job.host}) "
                        "without a reason",
                        version.at,
                    )
                )
            previous = job
    return found


def check_events(jobs: Iterable[JobRecord], events: Iterable[EventRecord], at: float) -> list[Violation]:
    """A job that finished says so in an Event too, with its reason or its phase as the Event's
    reason (5): status is overwritten, Events are the history users read with ``describe``."""
    reasons: dict[str, set[str]] = defaultdict(set)
    for event in events:
        reasons[event.uid].add(event.reason)
    found = []
    for job in jobs:
        if job.terminal and not reasons[job.uid] & {job.reason, job.phase}:
            found.append(
                Violation(
                    5, job.key, f"ended {job.phase} ({job.reason or 'no reason'}) but no Event says so", at
                )
            )
    return found


# ----- after quiescence -----------------------------------------------------------------------------


def explained(job: JobRecord) -> bool:
    """A job that has not finished says why, in a reason and a message."""
    return job.terminal or bool(job.reason and job.message)


def check_progress(jobs: Iterable[JobRecord], at: float) -> list[Violation]:
    """Every job is terminal, or still progressing with an explanation (1)."""
    return [
        Violation(1, job.key, f"still {job.phase} with no explanation (reason {job.reason!r})", at)
        for job in jobs
        if not explained(job)
    ]


def live_attempts(jobs: Iterable[JobRecord]) -> dict[tuple[str, str, int], JobRecord]:
    """(host, uid, attempt) → the unfinished job that owns that attempt there."""
    return {
        (job.host, job.uid, job.attempts): job
        for job in jobs
        if not job.terminal and job.host is not None and job.attempts > 0
    }


_HOST_KINDS = frozenset({"info", "lease", "alloc", "desired", "observed", "inbox", "config"})
_GLOBAL_KEYS = frozenset({keys.template_sizes(), keys.hosts_index(), keys.events_stream()})


def _host_key(key: str) -> tuple[str, str] | None:
    """``anklet:{h:<host>}:<rest>`` → (host, rest)."""
    head = f"{keys.PREFIX}:{{h:"
    if not key.startswith(head) or "}:" not in key:
        return None
    host, _, rest = key[len(head) :].partition("}:")
    return host, rest


def check_orphans(final: FinalSnapshot) -> list[Violation]:
    """After quiescence nothing is left without an owner (4): no Anklet VM, reservation, desired
    or observed entry, secret or runner without a live job attempt; no key of an unknown host or
    outside the key schema."""
    at = final.at
    live = live_attempts(final.jobs)
    found: list[Violation] = []
    for vm in final.vms:
        parsed = _vm_name(vm.name)
        if parsed is not None and (vm.host, parsed.uid, parsed.attempt) not in live:
            found.append(
                Violation(4, f"{vm.host}/{vm.name}", f"VM ({vm.status}) without a live job attempt", at)
            )
    redis = final.redis
    for what, table in (
        ("reservation", redis.alloc),
        ("desired VM", redis.desired),
        ("observation", redis.observed),
    ):
        for host, entries in sorted(table.items()):
            for uid, attempt in sorted(entries.items()):
                if (host, uid, attempt) not in live:
                    found.append(
                        Violation(4, f"{host}/{uid}", f"{what} of attempt {attempt} without a live job", at)
                    )
    for key in redis.keys:
        found.extend(_key_owner(key, redis.hosts_index, live, at))
    live_vms = {job.vm_name for job in live.values() if job.vm_name}
    for runner in final.runners or ():
        if _vm_name(runner.name) is not None and runner.name not in live_vms:
            found.append(
                Violation(
                    4,
                    f"runner {runner.name}",
                    f"GitHub runner ({runner.status}) without a live job attempt",
                    at,
                )
            )
    return found


def _key_owner(
    key: str, hosts: frozenset[str], live: Mapping[tuple[str, str, int], JobRecord], at: float
) -> list[Violation]:
    if key in _GLOBAL_KEYS:
        return []
    parts = _host_key(key)
    if parts is None:
        return [Violation(4, key, "key outside the Anklet key schema", at)]
    host, rest = parts
    if host not in hosts:
        return [Violation(4, key, f"key of host {host}, which is not in the hosts index", at)]
    if rest in _HOST_KINDS:
        return []
    kind, _, tail = rest.partition(":")
    uid, _, attempt = tail.rpartition(":")
    if kind == "secret" and uid and attempt.isdigit():
        if (host, uid, int(attempt)) in live:
            return []
        return [Violation(4, key, f"secret of attempt {attempt} without a live job", at)]
    return [Violation(4, key, "key outside the Anklet key schema", at)]
