"""Child processes of the fleet benchmark, each with its own event loop, driven over a pipe.

The controller runs alone in its process so that its CPU time and peak RSS are the process's
own (`getrusage`), not shares of a loop that also runs a thousand agents; the simulated hosts
run in one or more other processes so that both cores of the machine are used. The parent
sends `(method, kwargs)` and waits for `("ok", result)` or `("error", traceback)`; every wait
has a timeout, and `close()` ends the child whatever state it is in.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import logging
import multiprocessing
import os
import random
import resource
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from pathlib import Path
from typing import Any

from anklet.dev.fleet.control_plane import ControlPlane, JobKind
from anklet.dev.fleet.hosts import Fleet, FleetSettings, HostSpec
from anklet.vmname import NotManagedByAnklet, VMName


def usage() -> dict[str, float]:
    """This process's CPU seconds (user + system) and peak RSS in MiB since it started."""
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return {"cpu": ru.ru_utime + ru.ru_stime, "peak_rss_mib": ru.ru_maxrss / 1024}


@dataclass(frozen=True)
class VMRecord:
    """One job VM as its host saw it (times are `time.time()`, comparable across processes)."""

    host: str
    uid: str
    attempt: int
    first_command: float
    run_ended: float | None
    deleted: float | None


class AgentsService:
    """A process's share of the simulated fleet."""

    def __init__(
        self, redis_url: str, hosts: Sequence[HostSpec], settings: FleetSettings, state_dir: str
    ) -> None:
        self.fleet = Fleet(redis_url, hosts, settings, Path(state_dir))
        self.rng = random.Random(settings.seed)

    async def start(self, timeout: float = 180.0) -> None:
        await self.fleet.start()
        await self.fleet.wait_registered(timeout)

    async def finish(self, count: int, rate: float) -> int:
        """Let `count` held workloads end, `rate` per second, at random across hosts."""
        done = 0
        start = time.monotonic()
        for i in range(count):
            await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            done += self.fleet.finish(1, self.rng)
        return done

    async def dispatched(self) -> int:
        return self.fleet.dispatched()

    async def report(self) -> dict[str, Any]:
        vms = []
        peaks = {}
        for name, host in self.fleet.hosts.items():
            stats = host.model.stats
            peaks[name] = (stats.peak_running, stats.peak_job_vms, stats.refused_starts)
            for vm, ts in stats.first_command.items():
                with contextlib.suppress(NotManagedByAnklet):
                    key = VMName.parse(vm)
                    vms.append(
                        asdict(
                            VMRecord(
                                host=name,
                                uid=key.uid,
                                attempt=key.attempt,
                                first_command=ts,
                                run_ended=stats.run_ended.get(vm),
                                deleted=stats.deleted.get(vm),
                            )
                        )
                    )
        return {"vms": vms, "peaks": peaks, "usage": usage()}

    async def usage(self) -> dict[str, float]:
        return usage()

    async def stop(self) -> None:
        await self.fleet.stop()


class ControllerService:
    """The controller process: `ControlPlane` plus the commands the benchmark needs."""

    def __init__(self, redis_url: str, resync_seconds: float) -> None:
        self.plane = ControlPlane(redis_url, resync_seconds=resync_seconds)

    async def start(self, hosts: int, timeout: float = 180.0) -> None:
        await self.plane.start()
        await self.plane.wait_hosts(hosts, timeout)

    async def submit(self, count: int, mix: Sequence[JobKind], seed: int, rate: float | None) -> None:
        await self.plane.submit(count, mix, seed=seed, rate=rate)

    async def wait_settled(self, settle_timeout: float) -> dict[str, Any]:
        settled = await self.plane.wait_settled(timeout=settle_timeout)
        placed = sum(1 for body in self.plane.kube.jobs() if (body.get("status") or {}).get("host"))
        return {"settled": settled, "placed": placed}

    async def report(self) -> dict[str, Any]:
        kube, reconciler = self.plane.kube, self.plane.reconciler
        return {
            "jobs": [asdict(r) for r in self.plane.records()],
            "status_writes": kube.status_writes,
            "host_writes": kube.host_writes,
            "unrouted": dict(kube.unrouted),
            "events": dict(kube.events),
            "standin_cpu": kube.cpu_seconds,
            "snapshot_reads": {
                "full": reconciler.snapshots.reads if reconciler else 0,
                "partial": reconciler.snapshots.partial_reads if reconciler else 0,
            },
            "usage": usage(),
        }

    async def usage(self) -> dict[str, float]:
        return {**usage(), "standin_cpu": self.plane.kube.cpu_seconds}

    async def stop(self) -> None:
        await self.plane.stop()


def _child_main(conn: Connection, kind: str, kwargs: dict[str, Any], log_path: str) -> None:
    logging.basicConfig(
        filename=log_path,
        level=os.environ.get("ANKLET_BENCH_LOG_LEVEL", "WARNING").upper(),
        format="%(asctime)s %(name)s %(levelname)s %(message)s",
    )
    service: AgentsService | ControllerService = (
        AgentsService(**kwargs) if kind == "agents" else ControllerService(**kwargs)
    )
    # ANKLET_BENCH_PROFILE=DIR: the controller runs under cProfile and leaves DIR/controller.pstats
    # (`python -m pstats` or snakeviz read it), to find where a row's controller CPU goes.
    profile_dir = os.environ.get("ANKLET_BENCH_PROFILE")
    if kind != "controller" or not profile_dir:
        asyncio.run(_serve(conn, service))
        return
    profiler = cProfile.Profile()
    profiler.enable()
    try:
        asyncio.run(_serve(conn, service))
    finally:
        profiler.disable()
        Path(profile_dir).mkdir(parents=True, exist_ok=True)
        profiler.dump_stats(str(Path(profile_dir) / "controller.pstats"))


async def _serve(conn: Connection, service: AgentsService | ControllerService) -> None:
    loop = asyncio.get_running_loop()
    inbox: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()

    def readable() -> None:
        try:
            inbox.put_nowait(conn.recv())
        except (EOFError, OSError):  # the parent is gone: stop
            loop.remove_reader(conn.fileno())
            inbox.put_nowait(("stop", {}))

    loop.add_reader(conn.fileno(), readable)
    running: set[asyncio.Task[None]] = set()

    async def handle(name: str, kwargs: dict[str, Any]) -> None:
        try:
            result = await getattr(service, name)(**kwargs)
            reply: tuple[str, Any] = ("ok", result)
        except Exception:
            reply = ("error", traceback.format_exc())
        with contextlib.suppress(OSError):
            conn.send(reply)

    while True:
        name, kwargs = await inbox.get()
        if name == "stop":
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)
            await handle("stop", {})
            return
        task = loop.create_task(handle(name, kwargs))
        running.add(task)
        task.add_done_callback(running.discard)


class ChildError(RuntimeError):
    pass


class Child:
    """The parent's handle on one child process."""

    def __init__(self, kind: str, kwargs: dict[str, Any], log_path: Path) -> None:
        ctx = multiprocessing.get_context("spawn")
        self.kind = kind
        self.conn, child_end = ctx.Pipe()
        self.process: BaseProcess = ctx.Process(
            target=_child_main,
            args=(child_end, kind, kwargs, str(log_path)),
            name=f"fleet-{kind}",
            daemon=True,
        )
        self.process.start()
        child_end.close()

    def call(self, method: str, timeout: float = 300.0, **kwargs: Any) -> Any:
        self.conn.send((method, kwargs))
        if not self.conn.poll(timeout):
            raise ChildError(f"{self.kind}.{method} gave no answer within {timeout} s")
        status, value = self.conn.recv()
        if status != "ok":
            raise ChildError(f"{self.kind}.{method} failed:\n{value}")
        return value

    def close(self, timeout: float = 30.0) -> None:
        """Stop the service, then make sure the process is gone."""
        if self.process.is_alive():
            with contextlib.suppress(ChildError, OSError, EOFError):
                self.call("stop", timeout=timeout)
            self.process.join(5)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(5)
        if self.process.is_alive():
            self.process.kill()
            self.process.join(5)
        self.conn.close()
