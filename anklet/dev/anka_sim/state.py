"""The persistent VM library and the locks that make concurrent ``anka`` processes safe.

Many simulator processes run at once (an agent polls ``list -r`` while another call starts a
VM), so every read-modify-write of ``state.json`` happens under an ``fcntl`` lock, and the file
is replaced atomically. The global lock is only ever held for bookkeeping: commands sleep for
their simulated latency *outside* it, holding at most the per-VM lock, so a slow start never
blocks an unrelated ``list``.
"""

from __future__ import annotations

import fcntl
import json
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from anklet.dev.anka_sim.config import write_json_atomic
from anklet.dev.anka_sim.paths import SimPaths

RUNNING = "running"
STOPPED = "stopped"
SUSPENDED = "suspended"
FAILED = "failed"


@dataclass
class VM:
    """One VM in the library. Templates are VMs with tags (``tags`` maps tag → layer bytes)."""

    uuid: str
    name: str
    creation_date: float
    access_date: float
    status: str = STOPPED
    version: str | None = None
    tags: dict[str, int] = field(default_factory=dict)
    base_size: int = 0
    source_uuid: str | None = None
    cpu_cores: int = 4
    ram_size: int = 8 * 1024**3
    hard_drive: int = 100 * 1024**3
    image_size: int = 0
    start_date: float | None = None
    stop_date: float | None = None
    #: Wall-clock times derived at start; lazily applied by :func:`settle`.
    ready_at: float | None = None
    ip_at: float | None = None
    fail_at: float | None = None
    ip_never: bool = False
    ip: str | None = None
    mac: str = ""
    pid: int | None = None
    boot_id: int = 0
    booted_once: bool = False
    #: Intel keeps the suspended state so the next start is a quick resume.
    resumable: bool = False
    #: A concurrent pull damaged this template (and clones inherit it): start fails.
    corrupt: bool = False
    mounts: list[dict[str, Any]] = field(default_factory=list)
    #: ``[pid, create_time]`` of guest commands started by ``run``; killed on stop/delete.
    run_procs: list[list[float]] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> VM:
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def ip_visible(self, now: float) -> bool:
        return (
            self.status == RUNNING
            and not self.ip_never
            and self.ip is not None
            and self.ip_at is not None
            and now >= self.ip_at
        )


@dataclass
class State:
    """Everything in ``state.json``."""

    vms: dict[str, VM] = field(default_factory=dict)
    ip_counter: int = 0
    fsid_counter: int = 0
    #: Hits of count-limited fault rules that come from the environment (not the file).
    fault_hits: dict[str, int] = field(default_factory=dict)
    initialised: bool = False

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> State:
        return cls(
            vms={k: VM.from_json(v) for k, v in data.get("vms", {}).items()},
            ip_counter=int(data.get("ip_counter", 0)),
            fsid_counter=int(data.get("fsid_counter", 0)),
            fault_hits={str(k): int(v) for k, v in data.get("fault_hits", {}).items()},
            initialised=bool(data.get("initialised", False)),
        )

    def to_json(self) -> dict[str, Any]:
        return {
            "vms": {k: asdict(v) for k, v in self.vms.items()},
            "ip_counter": self.ip_counter,
            "fsid_counter": self.fsid_counter,
            "fault_hits": self.fault_hits,
            "initialised": self.initialised,
        }

    def find(self, ref: str) -> VM | None:
        """Anka accepts a UUID or a name wherever it wants a vmid."""
        if ref in self.vms:
            return self.vms[ref]
        return next((vm for vm in self.vms.values() if vm.name == ref), None)

    def running(self) -> list[VM]:
        return [vm for vm in self.vms.values() if vm.status == RUNNING]

    def next_ip(self) -> str:
        self.ip_counter += 1
        n = self.ip_counter
        return f"192.168.{64 + (n // 250) % 190}.{2 + n % 250}"


def settle(state: State, now: float) -> State:
    """Apply time-driven transitions (a VM scheduled to fail has failed by ``now``)."""
    for vm in state.vms.values():
        if vm.status == RUNNING and vm.fail_at is not None and now >= vm.fail_at:
            vm.status = FAILED
            vm.ip = None
            vm.pid = None
            vm.stop_date = vm.fail_at
    return state


@contextmanager
def flocked(path: Path, mode: int) -> Iterator[None]:
    """Hold an ``fcntl.flock`` on ``path``; the kernel drops it if the process is killed."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a+") as handle:
        fcntl.flock(handle.fileno(), mode)
        try:
            yield
        finally:
            fcntl.flock(handle.fileno(), fcntl.LOCK_UN)


class Store:
    """Locked access to the library. Nested use of :meth:`write` in one process deadlocks."""

    def __init__(self, paths: SimPaths, init: Callable[[State], None] | None = None) -> None:
        self.paths = paths
        #: Called with a fresh :class:`State` the first time the library is created.
        self._init = init

    def _load(self) -> State:
        try:
            raw = self.paths.state.read_text()
        except FileNotFoundError:
            return State()
        return State.from_json(json.loads(raw or "{}"))

    def _ensure_initialised(self) -> None:
        if self.paths.state.exists():
            return
        with flocked(self.paths.state_lock, fcntl.LOCK_EX):
            if self.paths.state.exists():
                return
            state = State(initialised=True)
            if self._init is not None:
                self._init(state)
            write_json_atomic(self.paths.state, state.to_json())

    @contextmanager
    def read(self) -> Iterator[State]:
        """A consistent snapshot; changes made to it are discarded."""
        self._ensure_initialised()
        with flocked(self.paths.state_lock, fcntl.LOCK_SH):
            state = self._load()
        yield settle(state, time.time())

    @contextmanager
    def write(self) -> Iterator[State]:
        """Read-modify-write under the exclusive lock; saved only if the block succeeds."""
        self._ensure_initialised()
        with flocked(self.paths.state_lock, fcntl.LOCK_EX):
            state = settle(self._load(), time.time())
            yield state
            write_json_atomic(self.paths.state, state.to_json())

    @contextmanager
    def vm_lock(self, uuid: str) -> Iterator[None]:
        """Serialise operations on one VM (Anka's ``vm_lock_dir``); waits for the holder."""
        with flocked(self.paths.locks / f"{uuid}.lock", fcntl.LOCK_EX):
            yield
