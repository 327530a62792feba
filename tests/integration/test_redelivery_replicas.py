"""Two receiver replicas share one redelivery scan slot (a Lease on the emulated Kubernetes API):
a missed webhook is redelivered once, not once per replica, and the slot passes on when its
holder stops. The fake GitHub records every delivery; everything runs on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import pathlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from pydantic import SecretStr

import anklet.crd
from anklet.dev.fake_github import FakeGitHub
from anklet.dev.kube_emulator import KubeApiServer
from anklet.dev.redis_server import free_port
from plugins.handlers.github.constants import ankajob_name
from plugins.handlers.github.settings import GitHubSettings
from plugins.receivers.github.config import ReceiverConfig, ReceiverSettings
from plugins.receivers.github.receiver import ReceiverApp
from plugins.receivers.github.scanlock import LEASE_NAME
from tests.waiting import eventually

pytestmark = pytest.mark.timeout(90)

SECRET = "webhook-s3cret"
TOKEN = "ghp_dev_token"
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"
LABELS = ["self-hosted", f"anka-template:{TEMPLATE}", "anka-template-tag:2c4r"]
INTERVAL = 1.0
LEASES = "coordination.k8s.io/v1/leases"


@pytest.fixture
async def kube(tmp_path: pathlib.Path) -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer() as server:
        server.install_crd(anklet.crd.build_crd())
        server.write_kubeconfig(tmp_path / "kubeconfig")
        yield server
        assert server.failures == []


def replica(kubeconfig: pathlib.Path, github_url: str, port: int = 0) -> ReceiverApp:
    receiver = ReceiverSettings(host="127.0.0.1", port=port, kubeconfig=str(kubeconfig), namespace="default")
    github = GitHubSettings(
        webhook_secret=SecretStr(SECRET),
        api_url=github_url,
        token=SecretStr(TOKEN),
        owner="acme",
        repo="app",
        hook_id=1,
        redelivery_interval_seconds=INTERVAL,
        backoff_base_seconds=0.01,
    )
    return ReceiverApp(ReceiverConfig(receiver=receiver, github=github))


def scans(app: ReceiverApp) -> dict[str, float]:
    """`anklet_receiver_redelivery_scans_total` by result, from the replica's /metrics text."""
    counts: dict[str, float] = {}
    for family in text_string_to_metric_families(app.metrics.exposition().decode()):
        for sample in family.samples:
            if sample.name == "anklet_receiver_redelivery_scans_total":
                counts[sample.labels["result"]] = sample.value
    return counts


def redeliveries(github: FakeGitHub, job_id: int) -> list[dict[str, Any]]:
    return [
        d
        for d in github.deliveries()
        if d["redelivery"] and d["request"]["payload"]["workflow_job"]["id"] == job_id
    ]


async def test_two_replicas_redeliver_a_missed_event_once_and_hand_the_slot_on(
    kube: KubeApiServer, tmp_path: pathlib.Path
) -> None:
    kubeconfig = tmp_path / "kubeconfig"
    async with FakeGitHub(webhook_url=None, webhook_secret=SECRET, tokens=[TOKEN]) as github:
        job = github.create_workflow_job("acme", "app", LABELS)  # no receiver yet: delivery fails
        await github.webhooks_idle()
        assert [d["status_code"] for d in github.deliveries()] == [0]
        port = free_port()
        github.set_webhook(f"http://127.0.0.1:{port}/webhooks/github", SECRET)
        a, b = replica(kubeconfig, github.url, port), replica(kubeconfig, github.url)
        async with contextlib.AsyncExitStack() as stack:
            # both replicas start at once, so both scan at start and race for the first slot
            await asyncio.gather(stack.enter_async_context(a), stack.enter_async_context(b))
            started = time.monotonic()
            name = ankajob_name(int(job["id"]), 1)

            async def stored() -> bool:
                return kube.get_object("anklet.dev/v1alpha1/ankajobs", "default", name) is not None

            await eventually(stored, 20)
            await asyncio.sleep(3 * INTERVAL)  # several more slots, each won by one replica
            await github.webhooks_idle()
            assert len(redeliveries(github, int(job["id"]))) == 1, github.deliveries()
            counts = [scans(a), scans(b)]
            ok = sum(c.get("ok", 0) for c in counts)
            elapsed = time.monotonic() - started
            assert ok >= 3, counts
            assert ok <= elapsed / (INTERVAL * 0.98) + 2, f"more than one scan per slot: {counts}"
            assert sum(c.get("skipped", 0) for c in counts) >= 3, counts
            assert sum(c.get("error", 0) for c in counts) == 0, counts

            # The holder stops; the other replica takes the slot over within about two intervals.
            lease = kube.get_object(LEASES, "default", LEASE_NAME)
            assert lease is not None
            holder = lease["spec"]["holderIdentity"]
            assert a.scanner is not None and b.scanner is not None
            assert a.scanner.lock is not None and b.scanner.lock is not None
            ids = {a.scanner.lock.identity: a, b.scanner.lock.identity: b}
            assert holder in ids
            leaving, staying = (a, b) if ids[holder] is a else (b, a)
            await leaving.stop()
            before = scans(staying).get("ok", 0)

            async def took_over() -> bool:
                return scans(staying).get("ok", 0) > before

            await eventually(took_over, 6 * INTERVAL)
            now_held = kube.get_object(LEASES, "default", LEASE_NAME)
            assert now_held is not None and now_held["spec"]["holderIdentity"] != holder
            assert now_held["spec"]["leaseTransitions"] >= 1
            assert len(redeliveries(github, int(job["id"]))) == 1
