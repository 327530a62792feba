"""The jobs waiting for a host, kept in queue order as they come and go.

A freed slot should cost the scheduler the head of the queue, not the whole backlog: with
10,000 jobs waiting, sorting them and redoing their datetime arithmetic on every pass is most
of a hand-off's time. So the order (priority, then creation, then name: `scheduling.order`'s
FIFO) is kept between passes, each job's facts are worked out once per version of it, and the
jobs a pass must decide wherever they stand (never explained, or starving) can be found
without a scan.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Iterator, Set
from dataclasses import dataclass

from anklet.models import AnkaJob
from controller import phases

# (-priority, created (Unix time; +inf when unknown), name, uid): the queue's order.
Key = tuple[int, float, str, str]


@dataclass(frozen=True, slots=True)
class Waiting:
    """One waiting job and what every pass reads of it, for one version of the job."""

    job: AnkaJob
    key: Key
    explained: bool  # its status already says why it waits

    @classmethod
    def of(cls, job: AnkaJob) -> Waiting:
        created = job.metadata.creation_timestamp
        at = created.timestamp() if created is not None else math.inf
        key = (-job.spec.priority, at, job.metadata.name, job.metadata.uid)
        return cls(job, key, phases.explained(job.status))

    @property
    def uid(self) -> str:
        return self.key[3]

    def waiting(self, now: float) -> float:
        """Seconds waited by `now` (0 when the creation time is unknown or ahead of the clock)."""
        return max(0.0, now - self.key[1]) if self.key[1] != math.inf else 0.0


class Backlog:
    """Waiting jobs by uid and in queue order."""

    def __init__(self) -> None:
        self._by_uid: dict[str, Waiting] = {}
        self._order: list[Key] = []
        self._priorities: Counter[int] = Counter()
        self._unexplained: set[str] = set()

    def __len__(self) -> int:
        return len(self._by_uid)

    def __contains__(self, uid: object) -> bool:
        return uid in self._by_uid

    def get(self, uid: str) -> Waiting | None:
        return self._by_uid.get(uid)

    def uids(self) -> Set[str]:
        return self._by_uid.keys()

    def put(self, job: AnkaJob) -> Waiting:
        """Add a waiting job, or take a new version of one (its place moves with its priority)."""
        uid = job.metadata.uid
        old = self._by_uid.get(uid)
        if old is not None and old.job is job:
            return old
        entry = Waiting.of(job)
        if old is None or old.key != entry.key:
            if old is not None:
                self._unlink(old)
            bisect.insort(self._order, entry.key)
            self._priorities[entry.key[0]] += 1
        self._by_uid[uid] = entry
        if entry.explained:
            self._unexplained.discard(uid)
        else:
            self._unexplained.add(uid)
        return entry

    def discard(self, uid: str) -> None:
        """The job no longer waits (placed, finished, cancelled, deleted)."""
        old = self._by_uid.pop(uid, None)
        if old is not None:
            self._unlink(old)
            self._unexplained.discard(uid)

    def _unlink(self, entry: Waiting) -> None:
        i = bisect.bisect_left(self._order, entry.key)
        del self._order[i]
        self._priorities[entry.key[0]] -= 1
        if not self._priorities[entry.key[0]]:
            del self._priorities[entry.key[0]]

    def ordered(self, skip: Set[str] = frozenset()) -> Iterator[Waiting]:
        """Every waiting job in queue order, but those in `skip`."""
        for key in self._order:
            if key[3] not in skip:
                yield self._by_uid[key[3]]

    def head(self, size: int, skip: Set[str] = frozenset()) -> tuple[list[Waiting], bool]:
        """The first `size` jobs in queue order (but those in `skip`), and whether that is all."""
        out: list[Waiting] = []
        for entry in self.ordered(skip):
            if len(out) == size:
                return out, False
            out.append(entry)
        return out, True

    def unexplained(self) -> Set[str]:
        """Jobs whose status does not yet say why they wait."""
        return self._unexplained

    def created_by(self, at: float) -> list[Waiting]:
        """Jobs created at or before `at` (Unix time): the starving ones, for a cut-off."""
        out: list[Waiting] = []
        for priority in self._priorities:
            i = bisect.bisect_left(self._order, (priority, -math.inf, "", ""))
            while i < len(self._order) and self._order[i][0] == priority and self._order[i][1] <= at:
                out.append(self._by_uid[self._order[i][3]])
                i += 1
        return out
