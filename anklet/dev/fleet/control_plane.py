"""The controller side of the fleet simulator: the real `Reconciler` with the real
`ControllerProtocol`, fed by the in-process Kubernetes stand-in instead of kopf + an API server.

The two tasks the operator starts in production (`Reconciler.run` and
`Reconciler.follow_host_events`) run here unchanged; only the watch and the status writes are
in memory (see `anklet.dev.fleet.kube_standin`). Jobs are submitted through the stand-in, so
their creation timestamps and the moment their status first says Scheduled are recorded where
they happen.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio as aioredis

from anklet.dev.fleet.kube_standin import KubeStandIn
from anklet.dev.fleet.lifecycle import cancel_all
from anklet.models import Phase
from anklet.redis_protocol import ControllerProtocol, connect
from controller.reconciler import Reconciler


@dataclass(frozen=True)
class JobKind:
    """One kind of job in a workload mix; `resources=None` means "the template tag's own size"."""

    weight: float
    template: str
    tag: str | None
    resources: tuple[int, int] | None

    def spec(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"template": self.template, "handler": "script", "script": {"run": "true"}}
        if self.tag is not None:
            spec["tag"] = self.tag
        if self.resources is not None:
            spec["resources"] = {"cpu": self.resources[0], "memoryMiB": self.resources[1]}
        return spec


def pick(mix: Sequence[JobKind], rng: random.Random) -> JobKind:
    return rng.choices(list(mix), weights=[k.weight for k in mix])[0]


@dataclass(frozen=True)
class JobRecord:
    """What the benchmark and the tests read back about one job."""

    uid: str
    name: str
    created: float
    scheduled: float | None
    phase: str
    host: str | None
    reason: str | None
    message: str | None
    attempts: int


class ControlPlane:
    """Reconciler + ControllerProtocol + KubeStandIn, started and stopped as one unit."""

    def __init__(self, redis_url: str, *, resync_seconds: float = 30.0) -> None:
        self.redis_url = redis_url
        self.resync_seconds = resync_seconds
        self.client: aioredis.Redis | None = None
        self.kube = KubeStandIn()
        self.reconciler: Reconciler | None = None
        self.proto: ControllerProtocol | None = None
        self._tasks: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        self.client = connect(self.redis_url)
        self.proto = ControllerProtocol(self.client)
        self.reconciler = Reconciler(self.proto, self.kube.client, resync_seconds=self.resync_seconds)
        self.kube.attach(self.reconciler)
        loop = asyncio.get_running_loop()
        self._tasks = [
            loop.create_task(self.reconciler.run(), name="reconciler"),
            loop.create_task(self.reconciler.follow_host_events(), name="host-events"),
        ]

    async def stop(self) -> None:
        await cancel_all(self._tasks)
        await self.kube.aclose()
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()

    def _check(self) -> None:
        for task in self._tasks:
            if task.done() and not task.cancelled() and task.exception() is not None:
                raise RuntimeError(f"controller task {task.get_name()} crashed") from task.exception()

    async def wait_hosts(self, count: int, timeout: float = 120.0) -> None:
        """Until the controller's own snapshot shows `count` ready hosts (bounded)."""
        assert self.proto is not None
        deadline = time.monotonic() + timeout
        while True:
            ready = sum(h.ready for h in await self.proto.snapshot())
            if ready >= count:
                return
            self._check()
            if time.monotonic() > deadline:
                raise TimeoutError(f"only {ready}/{count} hosts ready after {timeout} s")
            await asyncio.sleep(0.2)

    async def submit(
        self,
        count: int,
        mix: Sequence[JobKind],
        *,
        seed: int = 0,
        rate: float | None = None,
        prefix: str = "job",
    ) -> list[str]:
        """Create `count` AnkaJobs drawn from `mix`: as a burst (yielding to the loop after
        each, as a watch stream delivers events one by one) or at `rate` per second."""
        rng = random.Random(seed)
        start = time.monotonic()
        names = []
        for i in range(count):
            if rate:
                delay = start + i / rate - time.monotonic()
                await asyncio.sleep(max(0.0, delay))
            else:
                await asyncio.sleep(0)
            name = f"{prefix}-{i:06d}"
            self.kube.create(name, pick(mix, rng).spec())
            names.append(name)
        return names

    def cancel(self, name: str) -> None:
        self.kube.patch_spec(name, {"cancel": True})

    def records(self) -> list[JobRecord]:
        out = []
        for body in self.kube.jobs():
            meta: Mapping[str, Any] = body["metadata"]
            status: Mapping[str, Any] = body.get("status") or {}
            uid = meta["uid"]
            out.append(
                JobRecord(
                    uid=uid,
                    name=meta["name"],
                    created=self.kube.created_at[uid],
                    scheduled=self.kube.scheduled_at.get(uid),
                    phase=status.get("phase", Phase.PENDING.value),
                    host=status.get("host"),
                    reason=status.get("reason"),
                    message=status.get("message"),
                    attempts=int(status.get("attempts") or 0),
                )
            )
        return out

    @staticmethod
    def accounted(record: JobRecord) -> bool:
        """Placed, finished, or waiting with the scheduler's reason on its status."""
        if record.host is not None or Phase(record.phase).is_terminal():
            return True
        return record.reason == "Unschedulable"

    async def wait_settled(self, *, quiet: float = 0.3, timeout: float = 120.0) -> bool:
        """Until every job is accounted for and no status write happened for `quiet` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._check()
            if time.time() - self.kube.last_write >= quiet and self._all_accounted():
                return True
            await asyncio.sleep(0.1)
        return False

    def _all_accounted(self) -> bool:
        """`accounted` over the stored bodies without building records (this polls)."""
        for body in self.kube.jobs():
            status = body.get("status") or {}
            phase = status.get("phase", Phase.PENDING.value)
            waiting = status.get("host") is None and not Phase(phase).is_terminal()
            if waiting and status.get("reason") != "Unschedulable":
                return False
        return True
