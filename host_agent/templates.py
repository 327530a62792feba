"""Templates on this host's disk: make sure a template tag is local, one pull at a time.

Anka corrupts templates when two pulls, or a pull and a clone of the same template, overlap
on one host, so a host-wide lock (an flock on a file, which also holds between two agent
processes on one Mac) serialises pulls and the clones that read a template.

Before a pull the store asks Anka how much it would download and, when that would eat into the
free-space buffer, evicts whole templates that no VM uses, least recently used first, one at a
time, asking again after each (the policy is ``host_agent.eviction``). When no eviction can make
room it deletes nothing and fails the placement as ``InsufficientDisk`` (retryable: another host,
or this one later, may have the space).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fcntl
import logging
import os
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import psutil

from anklet.vmname import PREFIX as VM_PREFIX
from anklet.wire import PullInfo, TemplateInfo
from host_agent.anka import AnkaDriver, AnkaError, AnkaNotFound, DownloadSize, VMInfo
from host_agent.anka_model import as_int
from host_agent.eviction import Candidate, CannotFit, buffer_bytes, gib, plan_eviction, shortfall

log = logging.getLogger("anklet.agent")


class TemplateUnavailable(Exception):
    """The template tag cannot be made local; `retryable` says whether another try may work."""

    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


def matches(vm: VMInfo, template: str, tag: str | None) -> bool:
    return template in (vm.uuid, vm.name) and (tag is None or vm.version == tag)


def is_template(vm: VMInfo) -> bool:
    """Tagged VMs that Anklet did not create are templates (clones carry no tag)."""
    return not vm.name.startswith(VM_PREFIX) and vm.version is not None


@dataclass(frozen=True)
class TemplateSize:
    names: list[str]
    cpu: int
    memory_mib: int


@dataclass(frozen=True)
class DiskBudget:
    """The free space a pull must leave (``buffer``) and the disk's size (``total``, if known)."""

    buffer: int = 0
    total: int | None = None

    @classmethod
    def for_path(cls, path: Path, *, percent: float, absolute: int | None = None) -> DiskBudget:
        """Size the buffer against the volume holding ``path`` (Anka's library shares the system
        volume with the agent's state directory on a standard Mac)."""
        total = psutil.disk_usage(str(path)).total
        return cls(buffer=buffer_bytes(total, percent, absolute), total=total)


class _HostLock:
    """An asyncio lock for this process plus an flock for every process on the host."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._local = asyncio.Lock()

    @contextlib.asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        async with self._local:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.path, os.O_CREAT | os.O_RDWR, 0o600)
            try:
                await asyncio.to_thread(fcntl.flock, fd, fcntl.LOCK_EX)
                yield
            finally:
                fcntl.flock(fd, fcntl.LOCK_UN)
                os.close(fd)


def _nothing() -> Iterable[str]:
    return ()


class TemplateObserver(Protocol):
    """Told about every pull (result: ok, failed, not_found; bytes downloaded) and eviction."""

    def pulled(self, result: str, downloaded: int) -> None: ...
    def evicted(self) -> None: ...


class TemplateStore:
    """Local templates: list, size, pull (with eviction) and the lock that keeps pulls apart.

    ``in_use`` names templates (UUID or name) that VMs on this host are, or are about to be,
    cloned from; they are never evicted. Workers also :meth:`claim` their template for their
    whole life. ``pinned`` names the templates the controller wants pre-pulled: evicted last.
    """

    def __init__(
        self,
        anka: AnkaDriver,
        lock_path: Path,
        *,
        on_change: Callable[[], Awaitable[None]] | None = None,
        on_pull: Callable[[], Awaitable[None]] | None = None,
        budget: DiskBudget | None = None,
        in_use: Callable[[], Iterable[str]] = _nothing,
        pinned: Callable[[], Iterable[str]] = _nothing,
        observer: TemplateObserver | None = None,
    ) -> None:
        self.anka = anka
        self.observer = observer
        self._lock = _HostLock(lock_path)
        self._on_change = on_change
        self._on_pull = on_pull
        self.budget = budget or DiskBudget()
        self._in_use = in_use
        self._pinned = pinned
        self._claims: collections.Counter[str] = collections.Counter()
        self._dirty = False
        #: The pull in progress (at most one: the host lock), shown on the AnkaHost while it runs.
        self.pulling: PullInfo | None = None

    async def _templates(self) -> list[tuple[VMInfo, VMInfo]]:
        """(list row, ``show`` body) of every template; ``show`` adds sizes the list lacks."""
        found = []
        for vm in await self.anka.list_vms():
            if not is_template(vm):
                continue
            try:
                info = await self.anka.show(vm.uuid)
            except AnkaError:
                info = vm
            found.append((vm, info))
        return found

    async def local(self) -> list[TemplateInfo]:
        """Tagged VMs on disk that Anklet did not create: the host's template catalogue."""
        return [
            TemplateInfo(
                uuid=vm.uuid,
                name=vm.name,
                tag=vm.version,
                cpu=info.cpu_cores,
                memory_mib=info.ram_size // (1024 * 1024) if info.ram_size else None,
                image_size=info.image_size,
            )
            for vm, info in await self._templates()
        ]

    async def size(
        self, template: str, tag: str | None, *, known: Sequence[VMInfo] = ()
    ) -> TemplateSize | None:
        """The VM size a template tag defines: from the local copy, else the registry."""
        local = next((vm for vm in known if matches(vm, template, tag)), None)
        try:
            if local is not None:
                info = await self.anka.show(local.uuid)
                cpu, ram, names = info.cpu_cores, info.ram_size, [local.uuid, local.name]
            else:
                body = await self.anka.registry_show(template, tag=tag)
                cpu, ram = as_int(body.get("cpu_cores")), as_int(body.get("ram_size"))
                names = [str(n) for n in (body.get("uuid") or body.get("id"), body.get("name")) if n]
        except AnkaError as exc:
            log.warning("cannot size %s:%s: %s", template, tag or "latest", exc)
            return None
        if not cpu or not ram:
            return None
        return TemplateSize(names=sorted({template, *names}), cpu=cpu, memory_mib=ram // (1024 * 1024))

    async def _present(self, template: str, tag: str | None) -> bool:
        for vm in await self.anka.list_vms():
            if matches(vm, template, tag):
                return vm.status != "failed"
        return False

    @contextlib.contextmanager
    def claim(self, template: str) -> Iterator[None]:
        """Mark ``template`` as backing a VM while the block runs (a worker's whole life)."""
        self._claims[template] += 1
        try:
            yield
        finally:
            self._claims[template] -= 1
            if self._claims[template] <= 0:
                del self._claims[template]

    def in_use(self) -> set[str]:
        return {*self._claims, *self._in_use()}

    @contextlib.asynccontextmanager
    async def using(self, template: str) -> AsyncIterator[None]:
        """Hold the pull lock while reading a template (clone), so no pull rewrites it meanwhile."""
        async with self._lock.held():
            yield

    async def ensure(self, template: str, tag: str | None, *, known: Sequence[VMInfo] = ()) -> None:
        """Pull the template tag unless it is already local (checked again under the lock).

        `known` is a listing the caller just made; when it shows the tag, no `anka list` is spent.
        """
        if tag is not None and any(matches(vm, template, tag) and vm.status != "failed" for vm in known):
            return
        if tag is not None and await self._present(template, tag):
            return
        try:
            async with self._lock.held():
                if tag is not None and await self._present(template, tag):
                    return
                await self._pull(template, tag, checkout=True, evict_pinned=True)
        finally:
            await self._changed()

    async def prefetch(self, template: str, tag: str | None) -> bool:
        """Pre-pull: download the tag unless Anka already has it locally (no checkout of a local
        tag, so pre-pulling two tags of one template does not flip its current tag back and
        forth). Never evicts another pinned template. True when something was downloaded."""
        try:
            async with self._lock.held():
                return await self._pull(template, tag, checkout=False, evict_pinned=False)
        finally:
            await self._changed()

    async def _changed(self) -> None:
        """Re-register once the disk changed (a pull, or an eviction even if the pull then failed)."""
        if not self._dirty or self._on_change is None:
            return
        self._dirty = False
        try:
            await self._on_change()
        except Exception as exc:  # best effort: the next registration refresh catches up
            log.warning("could not refresh the host's registration after a template change: %s", exc)

    async def _check(self, template: str, tag: str | None, label: str) -> DownloadSize | None:
        try:
            return await self.anka.check_download_size(template, tag=tag)
        except AnkaNotFound as exc:
            raise TemplateUnavailable(
                "TemplateNotFound", f"{label} is not in the registry: {exc}", retryable=False
            ) from exc
        except AnkaError as exc:
            raise TemplateUnavailable(
                "RegistryUnavailable", f"checking {label}: {exc}", retryable=True
            ) from exc

    async def _pull(self, template: str, tag: str | None, *, checkout: bool, evict_pinned: bool) -> bool:
        """Under the lock: make room, then pull. False when the tag was local and ``checkout`` is off."""
        label = f"{template}:{tag or 'latest'}"
        size = await self._check(template, tag, label)
        if size is None and not checkout:
            return False
        if size is not None:
            await self._make_room(template, tag, label, size, evict_pinned=evict_pinned)
        log.info("pulling %s", label)
        self.pulling = PullInfo(
            template=template, tag=tag, size_bytes=size.to_download if size else 0, started_at=time.time()
        )
        try:
            await self._announce_pull()  # inside: a job cancelled meanwhile must not leave it shown
            await self.anka.registry_pull(template, tag=tag, shrink=False)
        except AnkaNotFound as exc:
            self._observe_pull("not_found", 0)
            raise TemplateUnavailable(
                "TemplateNotFound", f"{label} is not in the registry: {exc}", retryable=False
            ) from exc
        except AnkaError as exc:
            self._observe_pull("failed", 0)
            raise TemplateUnavailable("PullFailed", f"pulling {label}: {exc}", retryable=True) from exc
        finally:
            self.pulling = None
            self._dirty = True  # the registration that follows no longer shows the pull
        self._observe_pull("ok", size.to_download if size is not None else 0)
        return True

    async def _announce_pull(self) -> None:
        """Tell the controller a pull started (the AnkaHost shows it); best effort."""
        if self._on_pull is None:
            return
        try:
            await self._on_pull()
        except Exception as exc:
            log.warning("could not announce the pull of %s: %s", self.pulling, exc)

    def _observe_pull(self, result: str, downloaded: int) -> None:
        if self.observer is not None:
            self.observer.pulled(result, downloaded)

    async def _candidates(self) -> list[Candidate]:
        in_use, pinned = self.in_use(), set(self._pinned())
        return [
            Candidate(
                uuid=vm.uuid,
                name=vm.name,
                size=info.image_size or 0,
                access_date=info.access_date or vm.access_date,
                in_use=bool({vm.uuid, vm.name} & in_use) or vm.status == "running",
                pinned=bool({vm.uuid, vm.name} & pinned),
            )
            for vm, info in await self._templates()
        ]

    async def _make_room(
        self, template: str, tag: str | None, label: str, size: DownloadSize, *, evict_pinned: bool
    ) -> None:
        """Evict until the download fits the budget, asking Anka again after each deletion (it
        knows what a deletion really freed; ``image_size`` is only the plan's estimate)."""
        budget = self.budget
        evicted: set[str] = set()
        current: DownloadSize | None = size
        while current is not None:
            missing = shortfall(
                to_download=current.to_download, available=current.available, buffer=budget.buffer
            )
            if missing <= 0:
                return
            candidates = [c for c in await self._candidates() if c.uuid not in evicted]
            pulling = {template} | {c.name for c in candidates if c.uuid == template}
            pulling |= {c.uuid for c in candidates if c.name == template}
            decision = plan_eviction(
                size=current.size,
                to_download=current.to_download,
                available=current.available,
                buffer=budget.buffer,
                total=budget.total,
                candidates=candidates,
                pulling=pulling,
                evict_pinned=evict_pinned,
            )
            if isinstance(decision, CannotFit):
                message = decision.describe(label)
                if evicted:
                    message += f" (after evicting {len(evicted)} template(s))"
                raise TemplateUnavailable("InsufficientDisk", message, retryable=True)
            if not decision.victims:
                return
            victim = decision.victims[0]
            log.info(
                "evicting template %s (%s, %s, last used %s) to make room for %s",
                victim.name,
                victim.uuid,
                gib(victim.size),
                victim.access_date.isoformat() if victim.access_date else "never",
                label,
            )
            try:
                await self.anka.delete(victim.uuid)
            except AnkaNotFound:
                pass
            except AnkaError as exc:
                raise TemplateUnavailable(
                    "InsufficientDisk",
                    f"evicting {victim.name} to make room for {label}: {exc}",
                    retryable=True,
                ) from exc
            evicted.add(victim.uuid)
            if self.observer is not None:
                self.observer.evicted()
            self._dirty = True
            current = await self._check(template, tag, label)
