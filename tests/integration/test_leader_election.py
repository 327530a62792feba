"""Two real `anklet controller --leader-election` processes against the API emulator and a real
redis-server: only the Lease holder acts; a SIGKILLed leader is replaced once its Lease expires
and the new leader carries on with the work; a SIGTERMed leader releases the Lease so the
standby takes over at once; a leader that finds its Lease taken exits non-zero at once.

The Mac is the scripted stand-in of test_controller.py, which reports exactly what each test
says, so every status change is the controller's doing.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
import redis.asyncio as aioredis

from anklet import crd, models
from anklet.dev.kube_emulator import KubeApiServer
from anklet.dev.redis_server import RedisServer
from anklet.wire import ObservedPhase
from tests.integration.test_controller import ScriptedHost
from tests.waiting import eventually

T = TypeVar("T")
NAMESPACE = "anklet-ha"  # the Lease's, from POD_NAMESPACE
LEASE = f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/anklet-controller"
JOBS = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/default/{models.PLURAL}"
LEADS = "leading: starting the operator"
EXIT_LOST_LEADERSHIP = 3


class Replica:
    def __init__(self, name: str, process: asyncio.subprocess.Process, log: Path) -> None:
        self.name, self.process, self.log_path = name, process, log

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def exited(self, timeout: float) -> int:
        return await asyncio.wait_for(self.process.wait(), timeout)


class Fleet:
    """The emulated API, Redis, and the controller replicas a test starts."""

    def __init__(
        self,
        api: KubeApiServer,
        http: httpx.AsyncClient,
        redis: aioredis.Redis,
        env: dict[str, str],
        tmp: Path,
    ) -> None:
        self.api, self.http, self.redis, self.env, self.tmp = api, http, redis, env, tmp
        self.replicas: list[Replica] = []

    async def start(self, name: str, *args: str, **timing: str) -> Replica:
        kubeconfig = self.tmp / "kubeconfig"
        log = self.tmp / f"{name}.log"
        env = {**self.env, "POD_NAME": name, **timing}
        with log.open("wb") as out:
            process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "anklet.cli",
                "controller",
                "--kubeconfig",
                str(kubeconfig),
                "--leader-election",
                *args,
                env=env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=asyncio.subprocess.STDOUT,
            )
        replica = Replica(name, process, log)
        self.replicas.append(replica)
        return replica

    async def holder(self) -> str | None:
        response = await self.http.get(LEASE)
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        holder: str | None = response.json()["spec"].get("holderIdentity")
        return holder

    async def lease(self) -> dict[str, Any]:
        response = await self.http.get(LEASE)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def leader(self, among: list[Replica], timeout: float = 30) -> Replica:
        """The replica that holds the Lease and has started its operator."""

        async def probe() -> Replica | None:
            holder = await self.holder()
            for replica in among:
                if replica.name == holder and LEADS in replica.log():
                    return replica
            return None

        return await eventually(probe, timeout)

    async def create_job(self, name: str) -> None:
        body = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": name},
            "spec": {
                "template": "tmpl",
                "handler": "script",
                "script": {"run": "true"},
                "resources": {"cpu": 2, "memoryMiB": 4096},
            },
        }
        response = await self.http.post(JOBS, json=body)
        assert response.status_code == 201, response.text

    async def job(self, name: str) -> dict[str, Any]:
        response = await self.http.get(f"{JOBS}/{name}")
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def phase(self, name: str, phase: str, timeout: float = 30) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            job = await self.job(name)
            return job if (job.get("status") or {}).get("phase") == phase else None

        return await eventually(probe, timeout)

    def events(self, name: str, reason: str) -> list[dict[str, Any]]:
        return [
            event
            for event in self.api.list_objects("v1/events", "default")
            if event["involvedObject"]["name"] == name and event["reason"] == reason
        ]


@pytest.fixture
async def fleet(
    tmp_path: Path, redis_server: RedisServer, redis_client: aioredis.Redis
) -> AsyncIterator[Fleet]:
    async with KubeApiServer() as api, httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        for definition in crd.all_crds():
            api.install_crd(definition)
        api.write_kubeconfig(tmp_path / "kubeconfig")
        response = await http.post("/api/v1/namespaces", json={"metadata": {"name": NAMESPACE}})
        assert response.status_code == 201, response.text
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("ANKLET_", "KUBERNETES_", "POD_")) and key != "KUBECONFIG"
        }
        env.update(
            ANKLET_REDIS_URL=redis_server.url,
            POD_NAMESPACE=NAMESPACE,
            ANKLET_RESYNC_SECONDS="2",
            ANKLET_METRICS_PORT="0",  # two replicas on one machine: no fixed port
            PYTHONUNBUFFERED="1",
        )
        fleet = Fleet(api, http, redis_client, env, tmp_path)
        try:
            yield fleet
        finally:
            for replica in fleet.replicas:
                if replica.process.returncode is None:
                    replica.process.kill()
                    with contextlib.suppress(TimeoutError):
                        await replica.exited(10)
        assert not api.failures


@contextlib.asynccontextmanager
async def heartbeating(host: ScriptedHost) -> AsyncIterator[ScriptedHost]:
    """Keep the stand-in Mac's Redis heartbeat alive for the length of the test."""

    async def beat() -> None:
        for _ in range(600):
            await host.proto.heartbeat()
            await asyncio.sleep(1)

    task = asyncio.create_task(beat())
    try:
        yield host
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def within(seconds: float, probe: Callable[[], Any]) -> float:
    """How long until `probe()` (awaited) is truthy; fails after `seconds`."""
    started = time.monotonic()
    await eventually(probe, seconds)
    return time.monotonic() - started


SHORT = {
    "ANKLET_LEADER_ELECTION_LEASE_DURATION_SECONDS": "4",
    "ANKLET_LEADER_ELECTION_RENEW_DEADLINE_SECONDS": "3",
    "ANKLET_LEADER_ELECTION_RETRY_PERIOD_SECONDS": "0.5",
}


async def test_only_the_leader_acts_and_the_standby_takes_over_after_a_crash(fleet: Fleet) -> None:
    replicas = [await fleet.start("replica-a", **SHORT), await fleet.start("replica-b", **SHORT)]
    leader = await fleet.leader(replicas)
    [standby] = [r for r in replicas if r is not leader]
    async with heartbeating(await ScriptedHost(fleet.redis).register()) as host:
        await fleet.create_job("ha-1")
        desired = await host.desired_for("ha-1")
        scheduled = await fleet.phase("ha-1", "Scheduled")
        assert scheduled["status"]["attempts"] == 1 and scheduled["status"]["host"] == "mac-1"
        await host.report(desired, ObservedPhase.RUNNING)
        await fleet.phase("ha-1", "Running")

        # The standby has been waiting all along: no operator, no writes.
        assert standby.process.returncode is None
        assert "standing by for lease anklet-ha/anklet-controller as" in standby.log()
        assert LEADS not in standby.log() and "kopf" not in standby.log()
        assert len(fleet.events("ha-1", "Scheduled")) == 1
        before = await fleet.lease()
        assert before["spec"]["holderIdentity"] == leader.name

        leader.process.kill()
        killed_at = time.monotonic()
        assert await leader.exited(10) == -signal.SIGKILL

        async def standby_holds() -> bool:
            return await fleet.holder() == standby.name

        took = await within(20, standby_holds)
        lease_s, retry_s = 4, 0.5
        assert lease_s - 2 * retry_s <= took <= lease_s + 2 * retry_s + 2, took  # waited for the expiry
        assert time.monotonic() - killed_at >= took
        after = await fleet.lease()
        assert after["spec"]["leaseTransitions"] == before["spec"]["leaseTransitions"] + 1
        assert after["spec"]["acquireTime"] != before["spec"]["acquireTime"]
        await fleet.leader([standby])

        # The new leader carries on with the same attempt: no second scheduling.
        await host.finish(desired, exit_code=0)
        done = await fleet.phase("ha-1", "Succeeded")
        assert done["status"]["attempts"] == 1 and done["status"]["exitCode"] == 0
        assert len(fleet.events("ha-1", "Scheduled")) == 1

        standby.process.send_signal(signal.SIGTERM)
        assert await standby.exited(30) == 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def liveness(http: httpx.AsyncClient, url: str) -> str | None:
    """Who answers the liveness probe: "standby" (ours), "operator" (kopf's), or None."""
    with contextlib.suppress(httpx.HTTPError):
        response = await http.get(url)
        if response.status_code == 200:
            return "standby" if response.json() == {"standby": True} else "operator"
    return None


async def test_sigterm_releases_the_lease_and_the_standby_takes_over_at_once(fleet: Fleet) -> None:
    slow_expiry = {**SHORT, "ANKLET_LEADER_ELECTION_LEASE_DURATION_SECONDS": "30"}
    probes = {name: f"http://127.0.0.1:{free_port()}/healthz" for name in ("replica-a", "replica-b")}
    replicas = [await fleet.start(name, "--liveness", probe, **slow_expiry) for name, probe in probes.items()]
    leader = await fleet.leader(replicas)
    [standby] = [r for r in replicas if r is not leader]
    await asyncio.sleep(1)  # the standby has seen the Lease held, so only a release frees it early

    async def standby_holds() -> bool:
        return await fleet.holder() == standby.name

    async with httpx.AsyncClient(timeout=5) as http:
        # Both answer the kubelet's liveness probe: the standby itself, the leader through kopf.
        assert await eventually(lambda: liveness(http, probes[standby.name]), 10) == "standby"
        assert await eventually(lambda: liveness(http, probes[leader.name]), 10) == "operator"

        leader.process.send_signal(signal.SIGTERM)
        took = await within(20, standby_holds)
        assert took < 5, took  # released at once; an expiry would take 30 s
        assert await leader.exited(30) == 0
        assert "released lease anklet-ha/anklet-controller" in leader.log()
        await fleet.leader([standby])

        async def kopf_answers() -> bool:  # the standby's own probe gave the port over to kopf's
            return await liveness(http, probes[standby.name]) == "operator"

        await eventually(kopf_answers, 10)

    async with heartbeating(await ScriptedHost(fleet.redis).register()) as host:
        await fleet.create_job("ha-2")  # the new leader acts
        await host.desired_for("ha-2")
        assert (await fleet.phase("ha-2", "Scheduled"))["status"]["attempts"] == 1
    standby.process.send_signal(signal.SIGTERM)
    assert await standby.exited(30) == 0


async def test_a_standby_stops_cleanly_on_sigterm(fleet: Fleet) -> None:
    replicas = [await fleet.start("replica-a", **SHORT), await fleet.start("replica-b", **SHORT)]
    leader = await fleet.leader(replicas)
    [standby] = [r for r in replicas if r is not leader]

    async def standing_by() -> bool:
        return "standby: lease anklet-ha/anklet-controller is held by" in standby.log()

    await eventually(standing_by, 20)
    standby.process.send_signal(signal.SIGTERM)
    assert await standby.exited(10) == 0
    assert await fleet.holder() == leader.name and leader.process.returncode is None


async def test_a_leader_whose_lease_is_taken_exits_at_once(fleet: Fleet) -> None:
    replica = await fleet.start("replica-a", **SHORT)
    await fleet.leader([replica])
    for _ in range(20):  # a renewal between the read and the write makes the write stale (409)
        stolen = await fleet.lease()
        stolen["spec"]["holderIdentity"] = "intruder"
        response = await fleet.http.put(LEASE, json=stolen)
        if response.status_code != 409:
            break
    assert response.status_code == 200, response.text
    taken_at = time.monotonic()
    assert await replica.exited(10) == EXIT_LOST_LEADERSHIP
    assert time.monotonic() - taken_at < 0.5 + 2  # one retry period, plus the exit
    assert "lost leadership of lease anklet-ha/anklet-controller" in replica.log()


async def test_bad_durations_are_refused(fleet: Fleet) -> None:
    replica = await fleet.start("replica-a", ANKLET_LEADER_ELECTION_RENEW_DEADLINE_SECONDS="20")
    assert await replica.exited(20) == 2
    assert "lease duration > renew deadline > retry period" in replica.log()
    assert await fleet.holder() is None
