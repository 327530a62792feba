"""Plain snapshots of the system, as the invariant checks read them, and what a check reports.

Everything here is data without I/O: collectors (``collect.py``) fill these records from the
Kubernetes API, Redis, the ``anka`` simulator's files and the fake GitHub, and the checks
(``checks.py``) are pure functions over them, so each check can be unit tested with a
hand-made snapshot that breaks it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

TERMINAL_PHASES = frozenset({"Succeeded", "Failed", "Cancelled"})

#: The invariants, numbered as in the reliability issue (docs/reliability.md).
INVARIANTS: Mapping[int, str] = {
    1: "every AnkaJob reaches a terminal phase, or is still progressing with an explanation",
    2: "never two VMs for one job attempt; a job never runs twice",
    3: "no host exceeds its VM slots, CPU or memory (unless overcommit is on)",
    4: "after quiescence nothing is left without an owner (VM, reservation, Redis key, runner)",
    5: "every state change is visible in AnkaJob status or an Event, with a reason",
}


@dataclass(frozen=True)
class Violation:
    """One breach of an invariant, when it was seen and about what."""

    invariant: int
    subject: str
    detail: str
    at: float

    def __str__(self) -> str:
        return f"[{self.invariant}] {self.subject}: {self.detail}"


@dataclass(frozen=True)
class JobRecord:
    """The parts of an AnkaJob the checks need (one resourceVersion of it)."""

    uid: str
    namespace: str
    name: str
    phase: str = "Pending"
    reason: str = ""
    message: str = ""
    attempts: int = 0
    host: str | None = None
    vm_name: str | None = None
    resource_version: int = 0

    @property
    def key(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def terminal(self) -> bool:
        return self.phase in TERMINAL_PHASES


@dataclass(frozen=True)
class StatusVersion:
    """A job as one watch event showed it, with the local time the event arrived."""

    at: float
    job: JobRecord


@dataclass(frozen=True)
class EventRecord:
    """A core/v1 Event about an AnkaJob."""

    uid: str
    reason: str
    message: str = ""
    type: str = "Normal"


@dataclass(frozen=True)
class VMRecord:
    """A VM on a (simulated) Mac, as its library lists it."""

    host: str
    name: str
    status: str = "stopped"
    cpu: int = 0
    memory_mib: int = 0


@dataclass(frozen=True)
class ReservationRecord:
    uid: str
    attempt: int
    cpu: int
    memory_mib: int


@dataclass(frozen=True)
class HostRecord:
    """A host's registered limits and the capacity ledger (reservations) Redis holds for it."""

    name: str
    vm_slots: int
    cpu: int
    memory_mib: int
    overcommit: bool = False
    reservations: tuple[ReservationRecord, ...] = ()


@dataclass(frozen=True)
class Sample:
    """One moment during a scenario. ``hosts`` is None when Redis could not be read (an outage
    injected by the scenario), ``vms`` None when the hosts' libraries could not be read."""

    at: float
    hosts: tuple[HostRecord, ...] | None
    vms: tuple[VMRecord, ...] | None


@dataclass(frozen=True)
class CallRecord:
    """One ``anka`` invocation from a simulator's call log; ``end``/``exit`` None if it never ended
    (hung, or killed)."""

    host: str
    argv: tuple[str, ...]
    start: float
    end: float | None = None
    exit: int | None = None


@dataclass(frozen=True)
class RedisState:
    """Every Anklet key in Redis, and the per-host hashes that name a job attempt.

    ``alloc``, ``desired`` and ``observed`` map host → uid → attempt."""

    keys: tuple[str, ...] = ()
    hosts_index: frozenset[str] = frozenset()
    alloc: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    desired: Mapping[str, Mapping[str, int]] = field(default_factory=dict)
    observed: Mapping[str, Mapping[str, int]] = field(default_factory=dict)


@dataclass(frozen=True)
class RunnerRecord:
    """A self-hosted runner registered on (the fake) GitHub."""

    id: int
    name: str
    busy: bool = False
    status: str = "offline"


@dataclass(frozen=True)
class FinalSnapshot:
    """Everything the after-quiescence checks look at, read at one moment.

    ``runners`` is None when no GitHub is part of the system under test."""

    at: float
    jobs: tuple[JobRecord, ...]
    vms: tuple[VMRecord, ...]
    redis: RedisState
    runners: tuple[RunnerRecord, ...] | None = None
