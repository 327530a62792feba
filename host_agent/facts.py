"""What this Mac is: CPU, memory and disk (psutil), arch, Anka version and licence.

``preflight`` is what the agent checks before it takes any work: a licence that can run CI VMs,
and, when host-to-guest mounts are configured, an Anka and an arch that can mount (anka-cli.md
§2.13). Either failing stops the agent with one clear line instead of failing every job later.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

import psutil

from anklet import __version__
from anklet.wire import HostInfo, TemplateInfo
from host_agent.anka import AnkaDriver
from host_agent.mounts import unsupported_reason

_ARCH = {"arm64": "arm64", "aarch64": "arm64", "x86_64": "amd64", "amd64": "amd64"}


class StartRefused(RuntimeError):
    """This host cannot run the agent as configured; the agent exits 2 with this message."""


class LicenceRefused(StartRefused):
    """Anka's licence cannot run VMs for CI (invalid, or a Develop/Run licence)."""


class MountsRefused(StartRefused):
    """Host-to-guest mounts are configured, but this Anka or arch cannot mount."""


_UNUSABLE_LICENCES = ("com.veertu.anka.develop", "com.veertu.anka.run")


@dataclass(frozen=True)
class HostFacts:
    anka: AnkaDriver
    disk_path: Path
    arch: str | None = None
    cpu: int | None = None
    memory_mib: int | None = None
    reserved_cpu: int = 0
    reserved_memory_mib: int = 0
    vm_slots: int | None = None
    overcommit: bool = False
    labels: dict[str, str] | None = None
    queues: list[str] | None = None
    mounts: list[str] | None = None

    def host_arch(self) -> str:
        return self.arch or _ARCH.get(platform.machine().lower(), platform.machine())

    async def preflight(self) -> None:
        """Refuse to start (raise :class:`StartRefused`) when this host cannot do what is configured."""
        version, _, _ = await self.check_licence()
        if self.mounts and (reason := unsupported_reason(version, self.host_arch())) is not None:
            raise MountsRefused(f"mounts are configured ({', '.join(self.mounts)}), but {reason}")

    async def check_licence(self) -> tuple[str, str, str]:
        """(version, licence type, licence status); raises LicenceRefused like the Go agent."""
        version = (await self.anka.version()).get("version", "")
        lic = await self.anka.license()
        status, kind = lic.get("status", ""), lic.get("license_type", "")
        if status != "valid":
            raise LicenceRefused(f"anka licence status is {status!r}, not 'valid'")
        if kind in _UNUSABLE_LICENCES:
            raise LicenceRefused(f"anka licence type {kind} cannot run CI VMs")
        return version, kind, status

    async def collect(self, name: str, templates: list[TemplateInfo]) -> HostInfo:
        version, kind, status = await self.check_licence()
        arch = self.host_arch()
        cpu = (self.cpu or psutil.cpu_count(logical=True) or 1) - self.reserved_cpu
        memory = (
            self.memory_mib or psutil.virtual_memory().total // (1024 * 1024)
        ) - self.reserved_memory_mib
        disk = psutil.disk_usage(str(self.disk_path))
        return HostInfo(
            name=name,
            arch=arch,
            cpu=max(1, cpu),
            memory_mib=max(1, memory),
            disk_total=disk.total,
            disk_free=disk.free,
            vm_slots=self.vm_slots if self.vm_slots is not None else 2,
            overcommit=self.overcommit,
            labels=dict(self.labels or {}),
            queues=list(self.queues or []),
            anka_version=version,
            license_type=kind,
            license_status=status,
            agent_version=__version__,
            templates=templates,
        )
