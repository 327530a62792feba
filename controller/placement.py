"""One scheduling pass's index over the hosts: the answers of scanning every host for every job,
without scanning every host for every job.

`controller.scheduling.place` looks at all H hosts for each of J pending jobs, O(J × H) per pass;
at 1,000 Macs and 10,000 pending jobs that is ten million filter calls for every capacity change.
Two facts make most of that work redundant:

1. jobs with the same requirements (a *class*: every `JobRequest` field except the job's
   identity and age) see every host the same way, so they rank hosts identically and find
   the same hosts unfit;
2. within a pass a host only changes when the pass itself changes it (a placement consumes its
   capacity, a starvation hold fences it), and the caller says so with `changed()`.

So per class the index keeps a heap of the hosts not known to be unfit, ordered by the caller's
score and then by snapshot position (the tie-break `min()` over the snapshot would apply), and a
map of the hosts known unfit with their reason. `best()` pops hosts off the top until one fits;
`changed()` re-scores a changed host in every class (lazily: stale heap entries are skipped) and
re-evaluates it where it was unfit, so the per-class reason counts stay exact and explaining an
unschedulable job costs nothing once its class is exhausted. A pass then costs about
O(classes × H log H + J + changes × classes × log H) instead of O(J × H).

The index is generic over the scheduler's types and takes its `unfit` and `score` functions, so
filters and scores can change without touching it. Its one assumption: `unfit(job, host)` and
`score(job, host)` depend on the job only through the fields in its class key (callers route a
job that some host is held for, whose uid matters, around the index).
"""

from __future__ import annotations

import heapq
import operator
from collections import Counter
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace
from typing import Any, Generic, TypeVar

J = TypeVar("J")  # a job request
S = TypeVar("S")  # a host's state in this pass
U = TypeVar("U", bound=Hashable)  # why a host does not fit

# JobRequest fields that identify or age a job but do not change which hosts fit it or how they
# rank, with the neutral value a class's representative job gets (no host is ever held for uid "").
IDENTITY_FIELDS: Mapping[str, Any] = {"uid": "", "attempts": 0, "waiting_seconds": 0.0}


def _freeze(value: Any) -> Hashable:
    if value is None or isinstance(value, str | int | float):
        return value
    if isinstance(value, Mapping):
        return tuple(sorted((k, _freeze(v)) for k, v in value.items()))
    if isinstance(value, list | tuple | set | frozenset):
        items = [_freeze(v) for v in value]
        return tuple(sorted(items, key=repr)) if isinstance(value, set | frozenset) else tuple(items)
    return value  # type: ignore[no-any-return]


_REQUIREMENTS: dict[type, Callable[[Any], tuple[Any, ...]]] = {}


def class_key(job: object) -> Hashable:
    """The job's requirements: every dataclass field but its identity, hashable."""
    read = _REQUIREMENTS.get(type(job))
    if read is None:
        if not is_dataclass(job) or isinstance(job, type):
            raise TypeError(f"class_key needs a dataclass instance, got {type(job).__name__}")
        names = [f.name for f in fields(job) if f.name not in IDENTITY_FIELDS]
        getter = operator.attrgetter(*names)
        read = _REQUIREMENTS[type(job)] = (lambda j: (getter(j),)) if len(names) == 1 else getter
    # Plain values as they are (this runs once per job per pass); containers frozen.
    return tuple(v if v is None or type(v) in (str, int, float, bool) else _freeze(v) for v in read(job))


def neutral(job: J) -> J:
    """The job with its identity fields neutral: the class's representative."""
    names = {f.name for f in fields(job)} if is_dataclass(job) and not isinstance(job, type) else set()
    return replace(job, **{k: v for k, v in IDENTITY_FIELDS.items() if k in names})  # type: ignore[type-var]


@dataclass
class _Class(Generic[J, U]):
    rep: J
    heap: list[tuple[Any, int, int, str]] = field(default_factory=list)  # score, position, version, host
    unfit: dict[str, U] = field(default_factory=dict)
    reasons: Counter[U] = field(default_factory=Counter)
    memo: dict[str, Any] = field(default_factory=dict)
    explained: tuple[int, str] | None = None  # (reasons version, message)
    version: int = 0  # bumped whenever `reasons` changes


class PassIndex(Generic[J, S, U]):
    """Best host per job for one pass over `hosts` (which the caller mutates, then calls `changed`)."""

    def __init__(
        self,
        hosts: Mapping[str, S],
        *,
        unfit: Callable[[J, S], U | None],
        score: Callable[[J, S], Any],
        key: Callable[[J], Hashable] = class_key,
    ) -> None:
        self.hosts = hosts
        self._unfit = unfit
        self._score = score
        self._key = key
        self._position = {name: i for i, name in enumerate(hosts)}
        self._version = dict.fromkeys(hosts, 0)
        self._classes: dict[Hashable, _Class[J, U]] = {}
        self._last: tuple[J, _Class[J, U]] | None = None  # the last job asked about, and its class
        self._by_job: dict[int, tuple[J, _Class[J, U]]] = {}  # every job asked about, and its class

    def _class(self, job: J) -> _Class[J, U]:
        if self._last is not None and self._last[0] is job:
            return self._last[1]
        # The caller holds its jobs for the whole pass, so an id stays theirs while it is cached.
        known = self._by_job.get(id(job))
        if known is not None and known[0] is job:
            self._last = (job, known[1])
            return known[1]
        key = self._key(job)
        cls = self._classes.get(key)
        if cls is None:
            rep = neutral(job)
            cls = self._classes[key] = _Class(rep=rep)
            for name, host in self.hosts.items():
                reason = self._unfit(rep, host)
                if reason is None:
                    cls.heap.append((self._score(rep, host), self._position[name], self._version[name], name))
                else:
                    cls.unfit[name] = reason
                    cls.reasons[reason] += 1
            heapq.heapify(cls.heap)
        self._last = (job, cls)
        self._by_job[id(job)] = (job, cls)
        return cls

    def best(self, job: J) -> str | None:
        """The fitting host with the lowest (score, snapshot position), or None when none fits."""
        cls = self._class(job)
        while cls.heap:
            _, _, version, name = cls.heap[0]
            if version != self._version[name] or name in cls.unfit:
                heapq.heappop(cls.heap)  # superseded by a newer entry, or known unfit
                continue
            reason = self._unfit(cls.rep, self.hosts[name])
            if reason is None:
                return name
            heapq.heappop(cls.heap)
            cls.unfit[name] = reason
            cls.reasons[reason] += 1
            cls.version += 1
        return None

    def reasons(self, job: J) -> Counter[U]:
        """Why each host does not fit the job's class; complete once `best` returned None."""
        return Counter(self._class(job).reasons)

    def explain(self, job: J, explain: Callable[[Counter[U]], str]) -> str:
        """`explain(reasons(job))`, computed again only when the class's reasons changed."""
        cls = self._class(job)
        if cls.explained is None or cls.explained[0] != cls.version:
            cls.explained = (cls.version, explain(Counter(cls.reasons)))
        return cls.explained[1]

    def memo(self, job: J, what: str, compute: Callable[[], Any]) -> Any:
        """A per-class value that depends on static host facts only (computed once per pass)."""
        cls = self._class(job)
        if what not in cls.memo:
            cls.memo[what] = compute()
        return cls.memo[what]

    def changed(self, name: str) -> None:
        """The caller changed `hosts[name]`: re-rank it, and re-explain it where it was unfit."""
        version = self._version[name] = self._version[name] + 1
        host = self.hosts[name]
        for cls in self._classes.values():
            old = cls.unfit.get(name)
            reason = self._unfit(cls.rep, host)
            if old is not None:
                cls.reasons[old] -= 1
                if not cls.reasons[old]:
                    del cls.reasons[old]
                del cls.unfit[name]
                cls.version += 1
            if reason is None:
                heapq.heappush(cls.heap, (self._score(cls.rep, host), self._position[name], version, name))
            else:
                cls.unfit[name] = reason
                cls.reasons[reason] += 1
                cls.version += 1
