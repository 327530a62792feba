"""Which templates to delete so that a pull fits on disk: least recently used first, never one in use.

A pure policy (no I/O), so every case is a row in ``tests/unit/test_eviction.py``; the adapter
that lists templates, deletes them one at a time and re-checks the download size after each is
``host_agent.templates.TemplateStore``. It follows the Go Anklet's ``lru_cleanup`` (anka-cli.md
§4.6) and closes two of its gaps (anklet-behaviour.md §9.4): a template that backs a VM is really
protected, and the free-space buffer is really applied.

The plan is all or nothing up front: when even deleting every template it may delete would not
make room, it says so and nothing is deleted, because a host that evicts and then still cannot
pull has lost its cache for nothing.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

_NEVER = datetime.min.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Candidate:
    """A template on disk. ``size`` is what deleting it frees (``image_size``, bytes)."""

    uuid: str
    name: str
    size: int
    access_date: datetime | None
    #: A VM was cloned from it (or will be, for a job already placed here): never evicted.
    in_use: bool = False
    #: The controller wants it pre-pulled: evicted last, and never to make room for another pre-pull.
    pinned: bool = False


@dataclass(frozen=True)
class Evict:
    """Delete ``victims`` in this order (re-checking after each); empty means the pull fits."""

    victims: tuple[Candidate, ...]
    shortfall: int


@dataclass(frozen=True)
class CannotFit:
    """No eviction makes room; delete nothing."""

    size: int
    to_download: int
    available: int
    buffer: int
    total: int | None
    reclaimable: int

    def describe(self, label: str) -> str:
        if self.total is not None and max(self.size, self.to_download + self.buffer) > self.total:
            return (
                f"{label} needs {gib(self.size)} (plus a {gib(self.buffer)} free-space buffer), "
                f"more than this host's whole disk ({gib(self.total)})"
            )
        return (
            f"pulling {label} needs {gib(self.to_download)} plus a {gib(self.buffer)} free-space "
            f"buffer, {gib(self.available)} is free, and evicting every unused template would free "
            f"only {gib(self.reclaimable)}"
        )


def gib(n: int) -> str:
    return f"{n / 1024**3:.1f} GiB"


def buffer_bytes(total: int, percent: float, absolute: int | None = None) -> int:
    """The free space a pull must leave: ``absolute`` bytes when set, else ``percent`` of the disk."""
    if absolute is not None:
        return max(0, absolute)
    return max(0, int(total * percent / 100))


def shortfall(*, to_download: int, available: int, buffer: int) -> int:
    """Bytes missing so that ``available - to_download`` stays at or above ``buffer`` (≤ 0: it fits)."""
    return to_download + buffer - available


def eviction_order(candidates: Iterable[Candidate]) -> list[Candidate]:
    """Unpinned before pinned, then least recently accessed first (unknown dates count as oldest)."""
    return sorted(candidates, key=lambda c: (c.pinned, c.access_date or _NEVER, c.name, c.uuid))


def plan_eviction(
    *,
    size: int,
    to_download: int,
    available: int,
    buffer: int,
    total: int | None,
    candidates: Iterable[Candidate],
    pulling: Collection[str] = (),
    evict_pinned: bool = True,
) -> Evict | CannotFit:
    """What to delete before pulling a tag of ``size`` bytes (``to_download`` of them not cached).

    ``pulling`` names the template being pulled (UUID and/or name): it is never a victim, since its
    local layers are what make the download smaller. A pre-pull passes ``evict_pinned=False`` so two
    pre-pulled templates that do not fit together cannot evict each other on every resync.
    """
    if total is not None and max(size, to_download + buffer) > total:
        return CannotFit(size, to_download, available, buffer, total, reclaimable=0)
    missing = shortfall(to_download=to_download, available=available, buffer=buffer)
    if missing <= 0:
        return Evict((), missing)
    evictable = [
        c
        for c in candidates
        if not c.in_use and c.uuid not in pulling and c.name not in pulling and (evict_pinned or not c.pinned)
    ]
    victims: list[Candidate] = []
    freed = 0
    for candidate in eviction_order(evictable):
        if freed >= missing:
            break
        if candidate.size <= 0:
            continue  # frees nothing we know of; deleting it would only lose a cached template
        victims.append(candidate)
        freed += candidate.size
    if freed < missing:
        return CannotFit(size, to_download, available, buffer, total, reclaimable=freed)
    return Evict(tuple(victims), missing)
