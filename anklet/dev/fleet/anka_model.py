"""An in-process Anka for the fleet simulator: `host_agent.anka.AnkaDriver` over a dict.

Why not the CLI simulator (`anklet.dev.anka_sim`)? It is the fidelity path, but each call is a
process; a thousand simulated Macs would spend the machine on forks and measure that. This model
keeps what the agent's decisions depend on (names, states, tags on disk, VM sizes, errors by
class, Apple's limit of two running macOS VMs) at microseconds per call, with configurable tiny
latencies, and it records what a benchmark or a test needs to know from the host side: when
each VM saw its first command (dispatch latency), and the most VMs that ever existed or ran at
once (a double-booked host shows up here even if Redis looked right).
"""

from __future__ import annotations

import asyncio
import time
import uuid as uuidlib
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anklet.vmname import PREFIX as JOB_VM_PREFIX
from host_agent.anka import (
    AnkaAlreadyExists,
    AnkaDriver,
    AnkaError,
    AnkaNotFound,
    AnkaTimeout,
    DownloadSize,
    RunResult,
    VMInfo,
)

MIB = 1024 * 1024
RUNNING = "running"
STOPPED = "stopped"


@dataclass(frozen=True)
class ModelTemplate:
    """One template tag, as a registry lists it and as it sits on a host's disk."""

    uuid: str
    name: str
    tag: str
    cpu: int
    memory_mib: int
    image_size: int = 30 * 1024 * MIB


@dataclass(frozen=True)
class Latencies:
    """Seconds each kind of call takes; 0 still yields to the event loop once (like an await on I/O)."""

    query: float = 0.0
    clone: float = 0.0
    start: float = 0.0
    ready: float = 0.0
    run: float = 0.0
    delete: float = 0.0
    pull: float = 0.0


@dataclass
class _VM:
    name: str
    uuid: str
    status: str
    version: str | None
    cpu: int
    memory_mib: int
    image_size: int
    ip: str | None = None
    template: bool = False


@dataclass
class ModelStats:
    """What the host side saw, for assertions and measurements (read after the run)."""

    first_command: dict[str, float] = field(default_factory=dict)
    started: dict[str, float] = field(default_factory=dict)
    deleted: dict[str, float] = field(default_factory=dict)
    run_ended: dict[str, float] = field(default_factory=dict)
    peak_running: int = 0
    peak_job_vms: int = 0
    calls: Counter[str] = field(default_factory=Counter)
    refused_starts: int = 0


class AnkaModel:
    """One Mac's Anka, in memory. Implements :class:`host_agent.anka.AnkaDriver`.

    `local` templates are on disk from the start; `registry` is what `registry pull` can fetch.
    With `hold=True`, `run` blocks until :meth:`finish` releases the VM (or the run's own
    timeout), so a benchmark decides when capacity frees up; otherwise a run takes
    `latencies.run` seconds and exits 0.
    """

    def __init__(
        self,
        *,
        local: Iterable[ModelTemplate] = (),
        registry: Iterable[ModelTemplate] = (),
        vm_limit: int = 2,
        latencies: Latencies | None = None,
        hold: bool = False,
        clock: Callable[[], float] = time.time,
        version: str = "3.9.1 (build 210)",
        license_type: str = "com.veertu.anka.entplus",
    ) -> None:
        self.latencies = latencies or Latencies()
        self.vm_limit = vm_limit
        self.hold = hold
        self.clock = clock
        self.stats = ModelStats()
        self._version = version
        self._license_type = license_type
        self._registry = {(t.uuid, t.tag): t for t in registry}
        self._vms: dict[str, _VM] = {}
        self._gates: dict[str, asyncio.Event] = {}
        for t in local:
            self._registry.setdefault((t.uuid, t.tag), t)
            self._add_template(t)

    # ----- inspection (not part of the driver) -------------------------------------------------
    @property
    def job_vms(self) -> list[str]:
        return [vm.name for vm in self._vms.values() if vm.name.startswith(JOB_VM_PREFIX)]

    @property
    def running(self) -> list[str]:
        return [vm.name for vm in self._vms.values() if vm.status == RUNNING]

    def holding(self) -> list[str]:
        """Job VMs whose workload is blocked in `run`, waiting for :meth:`finish`."""
        return [name for name, gate in self._gates.items() if not gate.is_set()]

    def finish(self, vm: str) -> bool:
        """Let a held workload exit 0; False when that VM is not running a workload."""
        gate = self._gates.get(vm)
        if gate is None or gate.is_set():
            return False
        gate.set()
        return True

    # ----- internals ---------------------------------------------------------------------------
    def _add_template(self, t: ModelTemplate) -> None:
        existing = self._by_ref(t.uuid)
        if existing is not None:
            existing.version = t.tag
            return
        self._vms[t.uuid] = _VM(
            name=t.name,
            uuid=t.uuid,
            status=STOPPED,
            version=t.tag,
            cpu=t.cpu,
            memory_mib=t.memory_mib,
            image_size=t.image_size,
            template=True,
        )

    def _by_ref(self, ref: str) -> _VM | None:
        vm = self._vms.get(ref)
        if vm is not None:
            return vm
        return next((v for v in self._vms.values() if v.name == ref), None)

    def _get(self, ref: str, verb: str) -> _VM:
        vm = self._by_ref(ref)
        if vm is None:
            raise AnkaNotFound(f"{ref}: not found", argv=["anka", verb, ref], code=3, exit_status=1)
        return vm

    async def _call(self, verb: str, delay: float, vm: str | None = None) -> None:
        """Count the call, stamp a job VM's first command, then take the call's latency."""
        self.stats.calls[verb] += 1
        if vm is not None and vm.startswith(JOB_VM_PREFIX) and vm not in self.stats.first_command:
            self.stats.first_command[vm] = self.clock()
        await asyncio.sleep(delay)

    def _info(self, vm: _VM) -> VMInfo:
        return VMInfo(
            name=vm.name,
            uuid=vm.uuid,
            status=vm.status,
            version=vm.version,
            ip=vm.ip,
            cpu_cores=vm.cpu,
            ram_size=vm.memory_mib * MIB,
            image_size=vm.image_size,
        )

    def _template(self, ref: str, tag: str | None) -> ModelTemplate | None:
        candidates = [t for (u, g), t in self._registry.items() if ref in (u, t.name) and tag in (None, g)]
        return candidates[-1] if candidates else None

    # ----- AnkaDriver --------------------------------------------------------------------------
    async def version(self) -> dict[str, str]:
        await self._call("version", self.latencies.query)
        return {"version": self._version, "product": "Anka Build", "license": "com.veertu.anka"}

    async def license(self) -> dict[str, str]:
        await self._call("license", self.latencies.query)
        return {"status": "valid", "license_type": self._license_type}

    async def list_vms(self, *, running_only: bool = False) -> list[VMInfo]:
        await self._call("list", self.latencies.query)
        return [self._info(vm) for vm in self._vms.values() if not running_only or vm.status == RUNNING]

    async def show(self, vm: str) -> VMInfo:
        await self._call("show", self.latencies.query, vm)
        return self._info(self._get(vm, "show"))

    async def clone(self, source: str, name: str, *, tag: str | None = None) -> None:
        await self._call("clone", self.latencies.clone, name)
        if self._by_ref(name) is not None:
            raise AnkaAlreadyExists(f"{name}: already exists", argv=["anka", "clone", name], code=18)
        template = self._get(source, "clone")
        if not template.template or (tag is not None and template.version != tag):
            raise AnkaNotFound(f"{source}:{tag}: tag not found locally", argv=["anka", "clone"], code=3)
        self._vms[name] = _VM(
            name=name,
            uuid=str(uuidlib.uuid4()),
            status=STOPPED,
            version=None,
            cpu=template.cpu,
            memory_mib=template.memory_mib,
            image_size=template.image_size,
        )
        self.stats.peak_job_vms = max(self.stats.peak_job_vms, len(self.job_vms))

    async def start(self, vm: str, *, mounts: Sequence[str] = ()) -> None:
        await self._call("start", self.latencies.start, vm)
        target = self._get(vm, "start")
        if target.status == RUNNING:
            return
        if len(self.running) >= self.vm_limit:
            self.stats.refused_starts += 1
            raise AnkaError(
                f"{vm}: cannot start, {self.vm_limit} VMs are already running (the macOS limit)",
                argv=["anka", "start", vm],
                exit_status=1,
            )
        target.status = RUNNING
        target.ip = "192.168.64.2"
        self.stats.started[vm] = self.clock()
        self.stats.peak_running = max(self.stats.peak_running, len(self.running))

    async def stop(self, vm: str, *, force: bool = False) -> None:
        await self._call("stop", self.latencies.query, vm)
        target = self._get(vm, "stop")
        target.status, target.ip = STOPPED, None

    async def delete(self, vm: str) -> None:
        await self._call("delete", self.latencies.delete, vm)
        target = self._get(vm, "delete")
        if target.template:
            raise AnkaError(f"{vm}: refusing to delete a template in the model", argv=["anka", "delete"])
        del self._vms[target.name]
        gate = self._gates.pop(target.name, None)
        if gate is not None:
            gate.set()
        self.stats.deleted[target.name] = self.clock()

    async def wait_ready(self, vm: str, *, timeout: float, interval: float = 2.0) -> VMInfo:
        await self._call("show", self.latencies.ready, vm)
        target = self._get(vm, "show")
        if target.status != RUNNING:
            raise AnkaTimeout(f"{vm}: not ready after {timeout}s", argv=["anka", "show", vm])
        return self._info(target)

    async def mount(self, vm: str, spec: str) -> None:
        await self._call("mount", self.latencies.query, vm)
        if self._get(vm, "mount").status != RUNNING:
            raise AnkaError(f"{vm}: not running", argv=["anka", "mount", vm, spec], exit_status=1)

    async def run(
        self,
        vm: str,
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        output_limit: int = 64_000,
    ) -> RunResult:
        await self._call("run", 0.0, vm)
        target = self._get(vm, "run")
        if target.status != RUNNING:
            return RunResult(exit_code=125, output="guest not running", timed_out=False)
        if not self.hold:
            await asyncio.sleep(self.latencies.run)
            self.stats.run_ended[vm] = self.clock()
            return RunResult(exit_code=0, output="", timed_out=False)
        gate = self._gates.setdefault(vm, asyncio.Event())
        try:
            await asyncio.wait_for(gate.wait(), timeout)
        except TimeoutError:
            return RunResult(exit_code=-9, output="", timed_out=True)
        finally:
            self._gates.pop(vm, None)
        self.stats.run_ended[vm] = self.clock()
        if self._by_ref(vm) is None:  # deleted under the workload: the guest link is gone
            return RunResult(exit_code=125, output="guest went away", timed_out=False)
        return RunResult(exit_code=0, output="", timed_out=False)

    async def registry_show(self, template: str, *, tag: str | None = None) -> dict[str, Any]:
        await self._call("registry show", self.latencies.query)
        t = self._template(template, tag)
        if t is None:
            raise AnkaNotFound(f"{template}: not found in the registry", argv=["anka", "registry"], code=3)
        return {
            "uuid": t.uuid,
            "name": t.name,
            "version": t.tag,
            "cpu_cores": t.cpu,
            "ram_size": t.memory_mib * MIB,
            "size": t.image_size,
        }

    async def registry_pull(self, template: str, *, tag: str | None = None, shrink: bool = True) -> None:
        await self._call("registry pull", self.latencies.pull)
        t = self._template(template, tag)
        if t is None:
            raise AnkaNotFound(f"{template}: not found in the registry", argv=["anka", "registry"], code=3)
        self._add_template(t)

    async def check_download_size(self, template: str, *, tag: str | None = None) -> DownloadSize | None:
        await self._call("check-download-size", self.latencies.query)
        t = self._template(template, tag)
        if t is None:
            raise AnkaNotFound(f"{template}: not found in the registry", argv=["anka", "pull"], code=3)
        local = self._by_ref(t.uuid)
        if local is not None and local.version == t.tag:
            return None
        return DownloadSize(size=t.image_size, cached=0, available=10 * t.image_size)


def _conforms(model: AnkaModel) -> AnkaDriver:
    """mypy proves the model implements the driver protocol the agent takes."""
    return model
