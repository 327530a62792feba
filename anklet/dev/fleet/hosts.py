"""Many simulated Macs in one process: real `host_agent.agent.Agent`s over in-process Anka models.

Each simulated host is the production agent, unmodified: it registers, heartbeats, blocks on
its own Redis inbox with BLPOP, converges through the same table and runs the same `Worker`.
Only the `anka` binary is replaced (by `anklet.dev.fleet.anka_model.AnkaModel`) and the
agents of one process share one Redis connection pool instead of one pool each: a blocked
BLPOP still holds its own connection, so the protocol is exactly the production one, but idle
agents do not each keep spare connections open. Agent starts are spread over a short window
so that heartbeats and resyncs are not synchronised across the fleet, as they are not on real
Macs that booted at different times.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import resource
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import redis.asyncio as aioredis

from anklet import keys
from anklet.dev.fleet.anka_model import AnkaModel, Latencies, ModelTemplate
from anklet.dev.fleet.lifecycle import cancel_all
from anklet.redis_protocol import HostProtocol, connect
from host_agent.agent import Agent, AgentConfig
from host_agent.facts import HostFacts

log = logging.getLogger("anklet.fleet")

# Connections a host may hold at once from the shared pool: its BLPOP, plus a heartbeat, a
# report and a converge read that can overlap it.
CONNECTIONS_PER_HOST = 4


@dataclass(frozen=True)
class HostSpec:
    """One simulated Mac's shape (the defaults are an 8-core / 16 GiB Apple-silicon Mac mini)."""

    name: str
    cpu: int = 8
    memory_mib: int = 16 * 1024
    vm_slots: int = 2
    labels: Mapping[str, str] = field(default_factory=dict)
    queues: tuple[str, ...] = ()


@dataclass(frozen=True)
class FleetSettings:
    """What every simulated host shares: its templates on disk, Anka latencies, agent timings."""

    local: tuple[ModelTemplate, ...] = ()
    registry: tuple[ModelTemplate, ...] = ()
    latencies: Latencies = field(default_factory=Latencies)
    hold: bool = False
    resync_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    start_spread_seconds: float = 1.0
    seed: int = 0


def raise_fd_limit(needed: int) -> int:
    """Raise this process's soft open-files limit towards `needed` (never above the hard limit)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = needed if hard == resource.RLIM_INFINITY else min(needed, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class SimulatedHost:
    """One Mac: its Anka model, its production agent and the task running it."""

    def __init__(self, spec: HostSpec, client: aioredis.Redis, settings: FleetSettings, state: Path) -> None:
        self.spec = spec
        home = state / spec.name
        home.mkdir(parents=True, exist_ok=True)
        self.model = AnkaModel(
            local=settings.local,
            registry=settings.registry,
            vm_limit=spec.vm_slots,
            latencies=settings.latencies,
            hold=settings.hold,
        )
        facts = HostFacts(
            anka=self.model,
            disk_path=home,
            arch="arm64",
            cpu=spec.cpu,
            memory_mib=spec.memory_mib,
            vm_slots=spec.vm_slots,
            labels=dict(spec.labels),
            queues=list(spec.queues),
        )
        config = AgentConfig(
            name=spec.name,
            state_dir=home,
            resync_seconds=settings.resync_seconds,
            heartbeat_seconds=settings.heartbeat_seconds,
            ready_poll=0.05,
            shutdown_grace=0.0,
        )
        self.agent = Agent(config, HostProtocol(client, spec.name), self.model, facts)
        self.task: asyncio.Task[None] | None = None


class Fleet:
    """Start, observe and stop many simulated hosts against one Redis."""

    def __init__(
        self, redis_url: str, hosts: Sequence[HostSpec], settings: FleetSettings, state_dir: Path
    ) -> None:
        self.redis_url = redis_url
        self.specs = list(hosts)
        self.settings = settings
        self.state_dir = state_dir
        self.hosts: dict[str, SimulatedHost] = {}
        self.client: aioredis.Redis | None = None

    async def start(self) -> None:
        raise_fd_limit(len(self.specs) * CONNECTIONS_PER_HOST + 256)
        client = self.client = connect(self.redis_url)
        # One pool for the whole process; every blocked BLPOP still owns one connection of it.
        client.connection_pool.max_connections = len(self.specs) * CONNECTIONS_PER_HOST + 64
        self.state_dir.mkdir(parents=True, exist_ok=True)
        rng = random.Random(self.settings.seed)
        spread = self.settings.start_spread_seconds
        loop = asyncio.get_running_loop()
        for spec in self.specs:
            host = SimulatedHost(spec, client, self.settings, self.state_dir)
            self.hosts[spec.name] = host
            delay = rng.uniform(0.0, spread) if spread > 0 else 0.0
            host.task = loop.create_task(self._run_later(host, delay), name=f"agent {spec.name}")

    @staticmethod
    async def _run_later(host: SimulatedHost, delay: float) -> None:
        await asyncio.sleep(delay)
        await host.agent.run()

    async def wait_registered(self, timeout: float = 120.0) -> None:
        """Until every host holds a live lease in Redis (bounded by `timeout`)."""
        assert self.client is not None
        deadline = asyncio.get_running_loop().time() + timeout
        names = list(self.hosts)
        while True:
            pipe = self.client.pipeline(transaction=False)
            for name in names:
                pipe.exists(keys.host_lease(name))
            alive = await pipe.execute()
            names = [n for n, ok in zip(names, alive, strict=True) if not ok]
            if not names:
                return
            crashed = [h.spec.name for h in self.hosts.values() if h.task is not None and h.task.done()]
            if crashed:
                raise RuntimeError(f"agents exited early: {crashed[:5]}")
            if asyncio.get_running_loop().time() > deadline:
                raise TimeoutError(f"{len(names)} hosts not registered after {timeout} s: {names[:5]}")
            await asyncio.sleep(0.1)

    def finish(self, count: int, rng: random.Random) -> int:
        """Let `count` held workloads (spread over hosts at random) exit 0; returns how many."""
        held = [(name, vm) for name, h in self.hosts.items() for vm in h.model.holding()]
        rng.shuffle(held)
        done = 0
        for name, vm in held[:count]:
            done += self.hosts[name].model.finish(vm)
        return done

    def dispatched(self) -> int:
        """Job VMs that saw at least one Anka command, fleet-wide."""
        return sum(len(h.model.stats.first_command) for h in self.hosts.values())

    async def stop(self) -> None:
        """Cancel every agent and every job task it runs, then close the pool."""
        left = await cancel_all(h.task for h in self.hosts.values() if h.task is not None)
        left += await cancel_all(t for h in self.hosts.values() for t in h.agent.tasks.values())
        if left:
            log.error("%d simulated-host tasks did not stop: %s", len(left), left[:5])
        if self.client is not None:
            with contextlib.suppress(Exception):
                await self.client.aclose()
            self.client = None
