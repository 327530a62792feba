"""The scheduler's correctness at fleet scale: 1,000 Macs, 2,000 jobs of mixed sizes.

Real parts: one `redis-server`, the production `Agent` per simulated Mac (BLPOP on its own
inbox), the real `Reconciler` and `ControllerProtocol` with the atomic Lua reservation. Stood
in: `anka` (the in-process model of `anklet.dev.fleet.anka_model`) and Kubernetes (the
in-process stand-in of `anklet.dev.fleet.kube_standin`). Everything runs in this test's loop.

Asserts behaviour, never time: while jobs are placed, finish and are cancelled, no host's
reservations in Redis ever exceed its VM slots, CPU or memory, no Mac ever has more VMs than
slots, no job is held on two hosts, and in the end every job was placed or says why not.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import random
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from anklet import keys
from anklet.dev.fleet.anka_model import ModelTemplate
from anklet.dev.fleet.control_plane import ControlPlane, JobKind, JobRecord
from anklet.dev.fleet.hosts import Fleet, FleetSettings, HostSpec
from anklet.dev.fleet.lifecycle import cancel_all
from anklet.dev.redis_server import RedisServer
from tests.waiting import eventually

HOSTS = 1000
JOBS = 2000
XCODE = ModelTemplate(
    uuid="84266873-da90-4e0d-903b-ed0233471f9f", name="xcode", tag="t1", cpu=4, memory_mib=8192
)
SMALL = ModelTemplate(
    uuid="5d6c8a10-3f4e-4b8e-9a53-0c1d2e3f4a5b", name="small", tag="v1", cpu=2, memory_mib=4096
)
# On 8-core / 16 GiB Macs: some pairs fit, some do not, 6c/14G nearly fills a Mac, 12c never fits.
MIX = (
    JobKind(0.40, XCODE.uuid, XCODE.tag, (2, 4096)),
    JobKind(0.20, XCODE.uuid, XCODE.tag, (4, 8192)),
    JobKind(0.15, SMALL.name, SMALL.tag, (6, 14336)),
    JobKind(0.15, XCODE.uuid, XCODE.tag, None),  # sized from the template the hosts report
    JobKind(0.08, SMALL.uuid, SMALL.tag, (3, 6144)),
    JobKind(0.02, XCODE.uuid, XCODE.tag, (12, 20480)),  # no Mac can ever fit it
)


class AllocationWatch:
    """Reads every host's reservations from Redis over and over and keeps every violation."""

    def __init__(self, redis: aioredis.Redis, hosts: list[HostSpec]) -> None:
        self.redis = redis
        self.hosts = hosts
        self.violations: list[str] = []
        self.samples = 0

    async def check(self) -> None:
        pipe = self.redis.pipeline(transaction=False)
        for host in self.hosts:
            pipe.hvals(keys.host_alloc(host.name))
        owners: dict[str, str] = {}
        for host, raw in zip(self.hosts, await pipe.execute(), strict=True):
            held = [json.loads(r) for r in raw]
            cpu, mem = sum(r["cpu"] for r in held), sum(r["memory_mib"] for r in held)
            if len(held) > host.vm_slots or cpu > host.cpu or mem > host.memory_mib:
                self.violations.append(f"{host.name}: {len(held)} VMs, {cpu} CPU, {mem} MiB")
            for r in held:
                if r["uid"] in owners:
                    self.violations.append(f"{r['uid']} held on {owners[r['uid']]} and {host.name}")
                owners[r["uid"]] = host.name
        self.samples += 1

    async def run(self) -> None:
        while True:
            await self.check()
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def fleet_and_controller(
    url: str, state: Path, specs: list[HostSpec]
) -> AsyncIterator[tuple[Fleet, ControlPlane]]:
    fleet = Fleet(url, specs, FleetSettings(local=(XCODE, SMALL), registry=(XCODE, SMALL), hold=True), state)
    plane = ControlPlane(url)
    try:
        await fleet.start()
        await fleet.wait_registered(timeout=30)
        await plane.start()
        await plane.wait_hosts(len(specs), timeout=30)
        yield fleet, plane
    finally:
        await plane.stop()
        await fleet.stop()


def explained(job: JobRecord) -> bool:
    """Placed (now or before it ended), or waiting / failed with the scheduler's reason."""
    if job.phase in ("Scheduled", "Provisioning", "Running", "Succeeded", "Cancelled"):
        return job.phase == "Cancelled" or job.attempts >= 1
    return job.reason == "Unschedulable" and job.phase in ("Pending", "Failed")


@pytest.mark.timeout(300)
async def test_a_thousand_macs_never_overbook_and_every_job_is_placed_or_explained(
    redis_server: RedisServer, redis_client: aioredis.Redis, tmp_path: Path
) -> None:
    specs = [HostSpec(name=f"mac-{i:04d}") for i in range(HOSTS)]
    watch = AllocationWatch(redis_client, specs)
    # The test's own deadline comes first, so a slow machine fails it with everything stopped.
    async with fleet_and_controller(redis_server.url, tmp_path / "hosts", specs) as (fleet, plane):
        watcher = asyncio.create_task(watch.run())
        try:
            async with asyncio.timeout(200):
                names = await plane.submit(JOBS, MIX, seed=7)
                assert await plane.wait_settled(timeout=90)
                first = {r.name: r for r in plane.records()}
                placed = [r for r in first.values() if r.host is not None]
                waiting = [r for r in first.values() if r.phase == "Pending"]
                assert placed and waiting, "the mix should both fill the fleet and leave a queue"

                # Churn: 300 workloads end, 40 running and 40 waiting jobs are cancelled.
                rng = random.Random(3)
                finished = fleet.finish(300, rng)
                for record in rng.sample(placed, 40) + rng.sample(waiting, 40):
                    plane.cancel(record.name)

                async def churned() -> bool:
                    done = [r for r in plane.records() if r.phase in ("Succeeded", "Cancelled")]
                    return len(done) >= finished + 40

                await eventually(churned, timeout=90)
                assert await plane.wait_settled(timeout=90)
                await watch.check()
        finally:
            # Cancelled until it is done: on 3.11 a single cancel() can be swallowed mid-command.
            assert await cancel_all([watcher]) == []
        records = plane.records()
        models = {name: host.model for name, host in fleet.hosts.items()}

    assert watch.samples > 5 and watch.violations == []
    by_host: dict[str, list[Any]] = {}
    for name, model in models.items():
        assert model.stats.peak_running <= 2, f"{name} ran {model.stats.peak_running} VMs at once"
        assert model.stats.peak_job_vms <= 2, f"{name} had {model.stats.peak_job_vms} job VMs at once"
        assert model.stats.refused_starts == 0, f"{name} refused a start: the 2-VM limit was hit"
        for vm in model.job_vms:
            by_host.setdefault(vm.rsplit("-a", 1)[0], []).append(name)
    assert all(len(hosts) == 1 for hosts in by_host.values()), "a job has VMs on two Macs"

    assert len(records) == len(names) == JOBS
    unexplained = [(r.name, r.phase, r.reason, r.message) for r in records if not explained(r)]
    assert unexplained == []
    never_fits = [r for r in records if r.phase == "Failed"]
    assert never_fits and all("can ever fit 12 CPU" in (r.message or "") for r in never_fits)
    for r in records:
        if r.phase == "Pending":
            assert (r.message or "").startswith(f"0/{HOSTS} hosts available:"), r.message
    running = [r for r in records if r.phase in ("Scheduled", "Provisioning", "Running")]
    assert running and all(r.host is not None for r in running)
