"""The real kopf controller against the API emulator and a real redis-server.

The Mac is a scripted stand-in that speaks the host side of the Redis protocol (register,
read desired VMs, report observations), so each test decides exactly what the host reports
and when; the controller under test is the production code, unmodified.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import kopf
import pytest
import redis.asyncio as aioredis

from anklet import crd, keys, models
from anklet.dev.kube_emulator import KubeApiServer
from anklet.dev.redis_server import RedisServer
from anklet.redis_protocol import ControllerProtocol, HostProtocol, connect
from anklet.wire import DesiredVM, HostInfo, Observation, ObservedPhase, Workload
from tests.waiting import eventually

T = TypeVar("T")
JOBS = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/default/{models.PLURAL}"


class Cluster:
    def __init__(
        self,
        http: httpx.AsyncClient,
        redis: aioredis.Redis,
        start: Callable[[], contextlib.AbstractAsyncContextManager[None]],
    ) -> None:
        self.http, self.redis = http, redis
        self._start = start
        self._controller: contextlib.AbstractAsyncContextManager[None] | None = None

    async def start_controller(self) -> None:
        self._controller = self._start()
        await self._controller.__aenter__()

    async def stop_controller(self) -> None:
        if self._controller is not None:
            controller, self._controller = self._controller, None
            await controller.__aexit__(None, None, None)

    async def create(self, name: str, **spec: Any) -> dict[str, Any]:
        body = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": name},
            "spec": {
                "template": "tmpl",
                "handler": "script",
                "script": {"run": "true"},
                "resources": {"cpu": 2, "memoryMiB": 4096},
                **spec,
            },
        }
        body["spec"] = {k: v for k, v in body["spec"].items() if v is not None}
        response = await self.http.post(JOBS, json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def get(self, name: str) -> dict[str, Any] | None:
        response = await self.http.get(f"{JOBS}/{name}")
        if response.status_code == 404:
            return None
        body: dict[str, Any] = response.json()
        return body

    async def patch_spec(self, name: str, spec: dict[str, Any]) -> None:
        response = await self.http.patch(
            f"{JOBS}/{name}", json={"spec": spec}, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert response.status_code == 200, response.text

    async def delete(self, name: str) -> None:
        response = await self.http.delete(f"{JOBS}/{name}")
        assert response.status_code in (200, 202), response.text

    async def phase(self, name: str, phase: str, timeout: float = 15.0) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            job = await self.get(name)
            return job if job and (job.get("status") or {}).get("phase") == phase else None

        return await eventually(probe, timeout)


class ScriptedHost:
    """A stand-in Mac: registers and reports exactly what a test tells it to."""

    def __init__(self, redis: aioredis.Redis, name: str = "mac-1", **info: Any) -> None:
        self.proto = HostProtocol(redis, name)
        self.info = HostInfo(**{"name": name, "cpu": 8, "memory_mib": 16384, "vm_slots": 2, **info})

    async def register(self) -> ScriptedHost:
        await self.proto.register(self.info)
        return self

    async def desired_for(self, name: str, *, cancel: bool | None = None) -> DesiredVM:
        async def probe() -> DesiredVM | None:
            for d in (await self.proto.desired()).values():
                if d.name == name and (cancel is None or d.cancel == cancel):
                    return d
            return None

        return await eventually(probe)

    async def report(self, d: DesiredVM, phase: ObservedPhase, **extra: Any) -> None:
        await self.proto.report(
            Observation(
                uid=d.uid, attempt=d.attempt, host=self.info.name, phase=phase, vm_name=d.vm_name, **extra
            )
        )

    async def finish(
        self, d: DesiredVM, phase: ObservedPhase = ObservedPhase.SUCCEEDED, **extra: Any
    ) -> None:
        await self.report(d, phase, vm_deleted=True, **extra)


@contextlib.asynccontextmanager
async def controller(
    kubeconfig: Path, redis_url: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[None]:
    import controller.operator  # noqa: F401  (registers the handlers in kopf's default registry)

    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("ANKLET_KUBECONFIG", str(kubeconfig))
    monkeypatch.setenv("ANKLET_REDIS_URL", redis_url)
    monkeypatch.setenv("ANKLET_RESYNC_SECONDS", "2")
    monkeypatch.setenv("ANKLET_HOST_LOST_SECONDS", "1")
    stop, ready = asyncio.Event(), asyncio.Event()
    task = asyncio.create_task(
        kopf.operator(standalone=True, clusterwide=True, stop_flag=stop, ready_flag=ready)
    )
    await asyncio.wait_for(ready.wait(), 20)
    try:
        yield
    finally:
        stop.set()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await asyncio.wait_for(task, 20)


@contextlib.asynccontextmanager
async def make_cluster(
    tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    async with KubeApiServer() as api, httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        for definition in crd.all_crds():
            api.install_crd(definition)
        kubeconfig = tmp_path / "kubeconfig"
        api.write_kubeconfig(kubeconfig)
        c = Cluster(http, redis_client, lambda: controller(kubeconfig, redis_url, monkeypatch))
        await c.start_controller()
        try:
            yield c
        finally:
            await c.stop_controller()


@pytest.fixture
async def cluster(
    tmp_path: Path, redis_server: RedisServer, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Cluster]:
    async with make_cluster(tmp_path, redis_server.url, redis_client, monkeypatch) as c:
        yield c


async def test_pending_with_reason_then_scheduled_when_capacity_frees(cluster: Cluster) -> None:
    host = await ScriptedHost(cluster.redis, vm_slots=1).register()
    await cluster.create("first")
    first = await host.desired_for("first")
    scheduled = await cluster.phase("first", "Scheduled")
    assert scheduled["status"]["host"] == "mac-1" and scheduled["status"]["attempts"] == 1
    await cluster.create("second")
    waiting = await eventually(lambda: _with_reason(cluster, "second", "Unschedulable"))
    assert "1 no free VM slot" in waiting["status"]["message"]
    [condition] = waiting["status"]["conditions"]
    assert (condition["type"], condition["status"]) == ("Scheduled", "False")
    await host.finish(first, exit_code=0)
    assert (await cluster.phase("first", "Succeeded"))["status"]["exitCode"] == 0
    await host.desired_for("second")
    await cluster.phase("second", "Scheduled")


async def _with_reason(cluster: Cluster, name: str, reason: str) -> dict[str, Any] | None:
    job = await cluster.get(name)
    return job if job and (job.get("status") or {}).get("reason") == reason else None


async def test_host_observations_are_mirrored_forward_only(cluster: Cluster) -> None:
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("mirror")
    d = await host.desired_for("mirror")
    await host.report(d, ObservedPhase.PROVISIONING, stage="Cloning")
    await cluster.phase("mirror", "Provisioning")
    await host.report(d, ObservedPhase.RUNNING, stage="Running")
    running = await cluster.phase("mirror", "Running")
    assert running["status"]["startTime"]
    await host.report(d, ObservedPhase.PROVISIONING, stage="Starting")  # late and out of order
    await host.report(
        d, ObservedPhase.FAILED, exit_code=3, reason="ExitCode", output="boom"
    )  # VM not gone yet
    await asyncio.sleep(0.5)
    assert (await cluster.get("mirror"))["status"]["phase"] == "Running"  # type: ignore[index]
    await host.finish(d, ObservedPhase.FAILED, exit_code=3, reason="ExitCode", output="boom")
    failed = await cluster.phase("mirror", "Failed")
    assert (failed["status"]["exitCode"], failed["status"]["output"]) == (3, "boom")
    assert await host.proto.desired() == {}, "the reservation is released"


async def test_infrastructure_failures_retry_until_backoff_limit(cluster: Cluster) -> None:
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("flaky", backoffLimit=1)
    first = await host.desired_for("flaky")
    await host.finish(
        first, ObservedPhase.FAILED, reason="ProvisioningFailed", message="start failed", retryable=True
    )

    async def second_attempt() -> DesiredVM | None:
        d = (await host.proto.desired()).get(first.uid)
        return d if d and d.attempt == 2 else None

    second = await eventually(second_attempt)
    assert second.vm_name != first.vm_name
    await host.finish(
        second, ObservedPhase.FAILED, reason="ProvisioningFailed", message="start failed", retryable=True
    )
    failed = await cluster.phase("flaky", "Failed")
    assert failed["status"]["attempts"] == 2
    assert "backoffLimit 1 reached after 2 attempts" in failed["status"]["message"]


async def test_cancel_before_any_host_exists(cluster: Cluster) -> None:
    await cluster.create("lonely")
    waiting = await eventually(lambda: _with_reason(cluster, "lonely", "Unschedulable"))
    assert "0/0 hosts registered" in waiting["status"]["message"]
    await cluster.patch_spec("lonely", {"cancel": True})
    cancelled = await cluster.phase("lonely", "Cancelled")
    assert cancelled["status"].get("host") is None


async def test_cancel_while_running_waits_for_the_host(cluster: Cluster) -> None:
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("busy")
    d = await host.desired_for("busy")
    await host.report(d, ObservedPhase.RUNNING)
    await cluster.phase("busy", "Running")
    await cluster.patch_spec("busy", {"cancel": True})
    await host.desired_for("busy", cancel=True)
    assert (await cluster.get("busy"))["status"]["phase"] == "Running"  # type: ignore[index]
    await host.finish(d, ObservedPhase.CANCELLED)
    await cluster.phase("busy", "Cancelled")


async def test_delete_holds_the_finalizer_until_the_vm_is_gone(cluster: Cluster) -> None:
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("doomed")
    d = await host.desired_for("doomed")
    await host.report(d, ObservedPhase.RUNNING)
    await cluster.phase("doomed", "Running")
    await cluster.delete("doomed")
    await host.desired_for("doomed", cancel=True)
    still = await cluster.get("doomed")
    assert still is not None and still["metadata"].get("deletionTimestamp")
    await host.finish(d, ObservedPhase.CANCELLED)
    await eventually(lambda: _gone(cluster, "doomed"), timeout=20)


async def _gone(cluster: Cluster, name: str) -> bool:
    return await cluster.get(name) is None


async def test_invalid_handler_settings_fail_with_the_cause(cluster: Cluster) -> None:
    await ScriptedHost(cluster.redis).register()
    await cluster.create("noscript", script=None)
    failed = await cluster.phase("noscript", "Failed")
    assert failed["status"]["reason"] == "InvalidSpec"
    assert "spec.script is required" in failed["status"]["message"]
    await cluster.create("nohandler", handler="nosuch")
    failed = await cluster.phase("nohandler", "Failed")
    assert "unknown handler 'nosuch'" in failed["status"]["message"]


async def test_ttl_after_finished_deletes_the_job(cluster: Cluster) -> None:
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("ephemeral", ttlSecondsAfterFinished=1)
    d = await host.desired_for("ephemeral")
    await host.finish(d, exit_code=0)
    await cluster.phase("ephemeral", "Succeeded")
    await eventually(lambda: _gone(cluster, "ephemeral"), timeout=20)


async def test_controller_restart_catches_up_from_redis(cluster: Cluster) -> None:
    """What a host reports while no controller runs is applied when one starts again."""
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("resilient")
    d = await host.desired_for("resilient")
    await cluster.phase("resilient", "Scheduled")
    await cluster.stop_controller()
    await host.report(d, ObservedPhase.RUNNING)
    await host.finish(d, exit_code=0)
    await cluster.start_controller()
    done = await cluster.phase("resilient", "Succeeded")
    assert done["status"]["attempts"] == 1


async def test_redis_down_at_start_and_mid_run_loses_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The controller starts while Redis is down, rides out a restart mid-job (AOF keeps data)."""
    server = RedisServer(tmp_path / "redis", appendonly=True)
    client = connect(server.url)
    try:
        async with make_cluster(tmp_path, server.url, client, monkeypatch) as cluster:
            await cluster.create("patient")
            await asyncio.sleep(1.0)  # the controller is failing against a closed port meanwhile
            server.start()
            host = await ScriptedHost(client).register()
            d = await host.desired_for("patient")
            await host.report(d, ObservedPhase.RUNNING)
            await cluster.phase("patient", "Running")
            server.stop()
            await asyncio.sleep(1.0)
            server.start()
            await host.finish(d, exit_code=0)
            done = await cluster.phase("patient", "Succeeded", timeout=30)
            assert done["status"]["attempts"] == 1
        outage_lines = [
            r for r in caplog.records if r.levelname == "ERROR" and "retrying with backoff" in r.message
        ]
        assert outage_lines, "each outage is reported"
        assert len(outage_lines) <= 6, "one line per outage and loop, not one per attempt"
    finally:
        await client.aclose()
        server.stop()


async def test_reservations_without_an_ankajob_are_released(cluster: Cluster) -> None:
    """A slot held for a job that no longer exists (finalizer removed by hand) is freed by resync."""
    host = await ScriptedHost(cluster.redis, vm_slots=1).register()
    ghost = DesiredVM(
        uid="ghost",
        namespace="default",
        name="ghost",
        attempt=1,
        vm_name="anklet-vm-ghost-a1",
        template="t",
        cpu=1,
        memory_mib=1,
        handler="script",
        workload=Workload(script="true"),
    )
    assert await ControllerProtocol(cluster.redis).reserve("mac-1", ghost) == "OK"

    async def released() -> bool:
        return "ghost" not in await host.proto.desired()

    await eventually(released, timeout=20)
    await cluster.create("after-ghost")
    await host.desired_for("after-ghost")


HOSTS = f"/apis/{models.GROUP}/{models.VERSION}/{models.HOST_PLURAL}"


async def _host(cluster: Cluster, name: str) -> dict[str, Any] | None:
    response = await cluster.http.get(f"{HOSTS}/{name}")
    if response.status_code != 200:
        return None
    body: dict[str, Any] = response.json()
    return body


async def test_registered_macs_appear_as_ankahosts_with_live_figures(cluster: Cluster) -> None:
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("placed")
    await host.desired_for("placed")

    async def mirrored() -> dict[str, Any] | None:
        obj = await _host(cluster, "mac-1")
        return obj if obj and (obj.get("status") or {}).get("vms") == "1/2" else None

    obj = await eventually(mirrored)
    status = obj["status"]
    assert status["ready"] is True and status["cpu"] == "2/8" and status["memory"] == "4/16 GiB"
    assert status["jobs"] == ["default/placed"]
    assert status["conditions"][0]["type"] == "Ready" and status["conditions"][0]["status"] == "True"


async def test_a_cordoned_host_gets_no_new_jobs(cluster: Cluster) -> None:
    await ScriptedHost(cluster.redis).register()
    await eventually(lambda: _host(cluster, "mac-1"))
    response = await cluster.http.patch(
        f"{HOSTS}/mac-1", json={"spec": {"unschedulable": True}},
        headers={"Content-Type": "application/merge-patch+json"},
    )  # fmt: skip
    assert response.status_code == 200, response.text
    await asyncio.sleep(0.5)
    await cluster.create("blocked")
    waiting = await eventually(lambda: _with_reason(cluster, "blocked", "Unschedulable"))
    assert "1 host unschedulable" in waiting["status"]["message"]


async def test_a_lost_host_moves_waiting_jobs_and_fails_running_ones(
    cluster: Cluster, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await ScriptedHost(cluster.redis, "mac-1", vm_slots=2).register()
    await cluster.create("early")
    await cluster.create("later")
    running = await first.desired_for("early")
    waiting = await first.desired_for("later")
    await first.report(running, ObservedPhase.RUNNING)
    await cluster.phase("early", "Running")
    second = await ScriptedHost(cluster.redis, "mac-2").register()
    await cluster.redis.delete(keys.host_lease("mac-1"))  # mac-1 stops heartbeating
    failed = await cluster.phase("early", "Failed", timeout=30)
    assert failed["status"]["reason"] == "HostLost"
    moved = await second.desired_for("later")
    assert moved.attempt == waiting.attempt + 1
    assert await first.proto.desired() == {}, "the lost host's reservations are released"
