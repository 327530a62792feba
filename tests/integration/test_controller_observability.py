"""The controller's /metrics and Kubernetes Events, live: the real kopf controller against the API
emulator and a real redis-server, with a scripted Mac (as in test_controller.py), and the
metrics served the way `anklet controller` serves them (its registry in kopf's memo)."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import kopf
import pytest
import redis.asyncio as aioredis
from prometheus_client.metrics_core import Metric

from anklet import crd, keys, models
from anklet.dev.kube_emulator import KubeApiServer
from anklet.dev.redis_server import RedisServer
from anklet.metrics_server import start_metrics_server
from anklet.models import AnkaJob
from anklet.wire import ObservedPhase
from controller import phases
from controller.metrics import ControllerMetrics
from controller.reconciler import Reconciler
from tests.integration.test_controller import HOSTS, Cluster, ScriptedHost
from tests.metrics_rules import check, parse, value
from tests.waiting import eventually


@dataclass
class Observed:
    cluster: Cluster
    metrics_url: str
    memo: kopf.Memo

    @property
    def reconciler(self) -> Reconciler:
        reconciler: Reconciler = self.memo.reconciler
        return reconciler

    async def scrape(self) -> list[Metric]:
        response = await self.cluster.http.get(self.metrics_url)
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/plain")
        return parse(response.text)

    async def events(self, name: str, namespace: str = "default") -> list[dict[str, Any]]:
        """The Events about one object, oldest first."""
        response = await self.cluster.http.get(f"/api/v1/namespaces/{namespace}/events")
        assert response.status_code == 200, response.text
        items = [e for e in response.json()["items"] if e["involvedObject"]["name"] == name]
        return sorted(items, key=lambda e: int(e["metadata"].get("resourceVersion") or 0))

    async def reasons(self, name: str, namespace: str = "default") -> list[str]:
        return [e["reason"] for e in await self.events(name, namespace)]


@contextlib.asynccontextmanager
async def observed_controller(
    tmp_path: Path, redis_url: str, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Observed]:
    import controller.operator  # noqa: F401  (registers the handlers in kopf's default registry)

    async with KubeApiServer() as api, httpx.AsyncClient(base_url=api.url, timeout=10) as http:
        for definition in crd.all_crds():
            api.install_crd(definition)
        kubeconfig = tmp_path / "kubeconfig"
        api.write_kubeconfig(kubeconfig)
        monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("ANKLET_KUBECONFIG", str(kubeconfig))
        monkeypatch.setenv("ANKLET_REDIS_URL", redis_url)
        monkeypatch.setenv("ANKLET_RESYNC_SECONDS", "1")
        monkeypatch.setenv("ANKLET_HOST_LOST_SECONDS", "1")
        metrics = ControllerMetrics()
        server = await start_metrics_server(metrics.registry, "127.0.0.1", 0)
        memo = kopf.Memo(metrics=metrics)
        stop, ready = asyncio.Event(), asyncio.Event()
        task = asyncio.create_task(
            kopf.operator(standalone=True, clusterwide=True, stop_flag=stop, ready_flag=ready, memo=memo)
        )
        try:
            await asyncio.wait_for(ready.wait(), 20)
            cluster = Cluster(http, redis_client, contextlib.nullcontext)  # never restarted here
            yield Observed(cluster, server.url, memo)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(task, 20)
            await server.close()


@pytest.fixture
async def observed(
    tmp_path: Path, redis_server: RedisServer, redis_client: aioredis.Redis, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Observed]:
    async with observed_controller(tmp_path, redis_server.url, redis_client, monkeypatch) as o:
        yield o


async def test_metrics_during_and_after_a_scheduled_job(observed: Observed) -> None:
    cluster = observed.cluster
    host = await ScriptedHost(cluster.redis).register()
    created = await cluster.create("metered")
    uid = created["metadata"]["uid"]
    d = await host.desired_for("metered")
    await cluster.phase("metered", "Scheduled")

    async def scheduled_scrape() -> list[Metric] | None:
        families = await observed.scrape()
        return families if value(families, "anklet_fleet_vm_slots_used") == 1 else None

    families = await eventually(scheduled_scrape)
    assert check(families, forbidden_values=["metered", uid, d.vm_name], hosts=["mac-1"]) == []
    assert value(families, "anklet_jobs", phase="Scheduled") == 1
    assert value(families, "anklet_jobs", phase="Pending") == 0
    assert value(families, "anklet_job_scheduling_latency_seconds_count") == 1
    latency = value(families, "anklet_job_scheduling_latency_seconds_sum")
    assert latency is not None and 0 <= latency < 10
    assert value(families, "anklet_job_stage_duration_seconds_count", stage="queued") == 1
    assert (value(families, "anklet_scheduling_passes_total") or 0) >= 1
    assert (value(families, "anklet_scheduling_decisions_total", decision="placed") or 0) >= 1
    assert value(families, "anklet_hosts", state="ready") == 1
    assert value(families, "anklet_fleet_vm_slots") == 2
    assert value(families, "anklet_fleet_cpu_cores_allocated") == 2
    assert value(families, "anklet_fleet_memory_allocated_bytes") == 4096 * 2**20
    assert value(families, "anklet_host_vm_slots_used", host="mac-1") == 1

    await host.report(d, ObservedPhase.PROVISIONING, stage="Cloning")
    await cluster.phase("metered", "Provisioning")
    await host.report(d, ObservedPhase.RUNNING, stage="Running")
    await cluster.phase("metered", "Running")
    await host.finish(d, exit_code=0)
    await cluster.phase("metered", "Succeeded")

    async def finished_scrape() -> list[Metric] | None:
        families = await observed.scrape()
        return families if value(families, "anklet_jobs_finished_total", phase="Succeeded") == 1 else None

    families = await eventually(finished_scrape)
    assert check(families, forbidden_values=["metered", uid], hosts=["mac-1"]) == []
    for stage in ("queued", "scheduled", "provisioning", "running"):
        assert value(families, "anklet_job_stage_duration_seconds_count", stage=stage) == 1, stage
    assert value(families, "anklet_jobs", phase="Succeeded") == 1
    assert value(families, "anklet_job_scheduling_latency_seconds_count") == 1, "first attempt only"


async def test_pending_reasons_and_refusals_are_counted(observed: Observed) -> None:
    cluster = observed.cluster
    await ScriptedHost(cluster.redis, vm_slots=1).register()
    await cluster.create("first")
    await cluster.phase("first", "Scheduled")
    await cluster.create("second")

    async def waiting() -> list[Metric] | None:
        families = await observed.scrape()
        return families if value(families, "anklet_jobs_unschedulable", cause="no_vm_slot") == 1 else None

    families = await eventually(waiting)
    assert value(families, "anklet_jobs_pending", reason="unschedulable") == 1
    assert (value(families, "anklet_scheduling_decisions_total", decision="unschedulable") or 0) >= 1


async def test_each_transition_posts_one_event(observed: Observed) -> None:
    cluster = observed.cluster
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("eventful", backoffLimit=2)
    first = await host.desired_for("eventful")
    await cluster.phase("eventful", "Scheduled")
    scheduled_view = AnkaJob.model_validate(await cluster.get("eventful"))
    await host.finish(
        first, ObservedPhase.FAILED, reason="ProvisioningFailed", message="start failed", retryable=True
    )

    async def second_attempt() -> Any:
        d = (await host.proto.desired()).get(first.uid)
        return d if d and d.attempt == 2 else None

    second = await eventually(second_attempt)
    await host.report(second, ObservedPhase.PROVISIONING, stage="Pulling")
    await cluster.phase("eventful", "Provisioning")
    await host.report(second, ObservedPhase.RUNNING, stage="Running")
    running = await cluster.phase("eventful", "Running")

    # A write computed from a stale view (the job as it was at attempt 1's Scheduled) reaches the
    # API, but posts no second Event for a transition already announced.
    requeued = scheduled_view.status.model_copy(update={"phase": models.Phase.PENDING, "host": None})
    stale_view = scheduled_view.model_copy(update={"status": requeued})
    stale = phases.scheduled(requeued, host="mac-1", vm_name=second.vm_name, attempt=2, now=datetime.now(UTC))
    assert stale is not None
    await observed.reconciler._write(stale_view, stale)
    await observed.reconciler._write(stale_view, stale)  # and the same step twice
    restored = {"phase": "Running", "reason": "Running", "message": ""}
    await observed.reconciler._write(AnkaJob.model_validate(await cluster.get("eventful")), restored)

    await host.finish(second, exit_code=0)
    await cluster.phase("eventful", "Succeeded")
    await asyncio.sleep(2.5)  # two resync passes re-run every job's step: they post nothing new

    events = await observed.events("eventful")
    reasons = [e["reason"] for e in events]
    assert reasons == ["Scheduled", "Retrying", "Scheduled", "Provisioning", "Running", "Succeeded"], reasons
    by_reason = {e["reason"]: e for e in events}
    retry = by_reason["Retrying"]
    assert retry["type"] == "Warning"
    assert retry["message"] == "attempt 1 failed on mac-1: start failed; retrying (retry 1 of backoffLimit 2)"
    assert by_reason["Provisioning"]["message"].endswith("on mac-1 (Pulling)")
    assert by_reason["Running"]["message"] == f"attempt 2: workload running in VM {second.vm_name} on mac-1"
    assert all(e["involvedObject"]["uid"] == running["metadata"]["uid"] for e in events)
    assert all(e["involvedObject"]["kind"] == "AnkaJob" for e in events)


async def test_failures_post_the_status_reason(observed: Observed) -> None:
    cluster = observed.cluster
    host = await ScriptedHost(cluster.redis).register()
    await cluster.create("broken")
    d = await host.desired_for("broken")
    await host.report(d, ObservedPhase.RUNNING)
    await cluster.phase("broken", "Running")
    await host.finish(d, ObservedPhase.FAILED, exit_code=3, reason="ExitCode", message="workload exited 3")
    await cluster.phase("broken", "Failed")
    await cluster.create("noscript", script=None)
    await cluster.phase("noscript", "Failed")

    async def failed(name: str) -> dict[str, Any] | None:
        found = [e for e in await observed.events(name) if e["reason"] == "Failed"]
        return found[0] if found else None

    event = await eventually(lambda: failed("broken"))
    assert (event["type"], event["message"]) == ("Warning", "ExitCode: workload exited 3")
    invalid = await eventually(lambda: failed("noscript"))
    assert invalid["message"].startswith("InvalidSpec: ")
    assert await observed.reasons("noscript") == ["Failed"], "one Event, not one per layer"


async def test_ankahost_events_follow_its_life(observed: Observed) -> None:
    cluster = observed.cluster
    await ScriptedHost(cluster.redis).register()

    async def reasons(*want: str) -> list[str] | None:
        got = await observed.reasons("mac-1")
        return got if all(r in got for r in want) else None

    await eventually(lambda: reasons("Registered"))
    for cordoned, reason in ((True, "Cordoned"), (False, "Uncordoned")):
        response = await cluster.http.patch(
            f"{HOSTS}/mac-1", json={"spec": {"unschedulable": cordoned}},
            headers={"Content-Type": "application/merge-patch+json"},
        )  # fmt: skip
        assert response.status_code == 200, response.text
        await eventually(lambda reason=reason: reasons(reason))  # type: ignore[misc]
    await cluster.redis.delete(keys.host_lease("mac-1"))  # mac-1 stops heartbeating
    got = await eventually(lambda: reasons("NotReady", "HostLost"), timeout=30)
    assert got.count("Registered") == 1 and got.count("Cordoned") == 1 and got.count("NotReady") == 1
    events = await observed.events("mac-1")
    assert {e["involvedObject"]["kind"] for e in events} == {"AnkaHost"}
    assert {e["type"] for e in events if e["reason"] in ("NotReady", "HostLost")} == {"Warning"}
    families = await observed.scrape()
    assert value(families, "anklet_hosts", state="not_ready") == 1
