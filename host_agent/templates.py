"""Templates on this host's disk: make sure a template tag is local, one pull at a time.

Anka corrupts templates when two pulls, or a pull and a clone of the same template, overlap
on one host, so a host-wide lock (an flock on a file, which also holds between two agent
processes on one Mac) serialises pulls and the clones that read a template.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from anklet.vmname import PREFIX as VM_PREFIX
from anklet.wire import TemplateInfo
from host_agent.anka import AnkaDriver, AnkaError, AnkaNotFound, VMInfo
from host_agent.anka_model import as_int

log = logging.getLogger("anklet.agent")


class TemplateUnavailable(Exception):
    """The template tag cannot be made local; `retryable` says whether another try may work."""

    def __init__(self, reason: str, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.reason = reason
        self.retryable = retryable


def matches(vm: VMInfo, template: str, tag: str | None) -> bool:
    return template in (vm.uuid, vm.name) and (tag is None or vm.version == tag)


@dataclass(frozen=True)
class TemplateSize:
    names: list[str]
    cpu: int
    memory_mib: int


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


class TemplateStore:
    def __init__(
        self,
        anka: AnkaDriver,
        lock_path: Path,
        *,
        on_change: Callable[[], Awaitable[None]] | None = None,
    ) -> None:
        self.anka = anka
        self._lock = _HostLock(lock_path)
        self._on_change = on_change

    async def local(self) -> list[TemplateInfo]:
        """Tagged VMs on disk that Anklet did not create: the host's template catalogue."""
        found = []
        for vm in await self.anka.list_vms():
            if vm.name.startswith(VM_PREFIX) or vm.version is None:
                continue
            try:
                info = await self.anka.show(vm.uuid)
            except AnkaError:
                info = vm
            found.append(
                TemplateInfo(
                    uuid=vm.uuid,
                    name=vm.name,
                    tag=vm.version,
                    cpu=info.cpu_cores,
                    memory_mib=info.ram_size // (1024 * 1024) if info.ram_size else None,
                    image_size=info.image_size,
                )
            )
        return found

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
        async with self._lock.held():
            if tag is not None and await self._present(template, tag):
                return
            await self._pull(template, tag)
        if self._on_change is not None:
            await self._on_change()

    async def _pull(self, template: str, tag: str | None) -> None:
        label = f"{template}:{tag or 'latest'}"
        try:
            size = await self.anka.check_download_size(template, tag=tag)
        except AnkaNotFound as exc:
            raise TemplateUnavailable(
                "TemplateNotFound", f"{label} is not in the registry: {exc}", retryable=False
            ) from exc
        except AnkaError as exc:
            raise TemplateUnavailable(
                "RegistryUnavailable", f"checking {label}: {exc}", retryable=True
            ) from exc
        if size is not None and size.to_download > size.available:
            raise TemplateUnavailable(
                "InsufficientDisk",
                f"pulling {label} needs {size.to_download} bytes; {size.available} available",
                retryable=True,
            )
        log.info("pulling %s", label)
        try:
            await self.anka.registry_pull(template, tag=tag, shrink=False)
        except AnkaNotFound as exc:
            raise TemplateUnavailable(
                "TemplateNotFound", f"{label} is not in the registry: {exc}", retryable=False
            ) from exc
        except AnkaError as exc:
            raise TemplateUnavailable("PullFailed", f"pulling {label}: {exc}", retryable=True) from exc
