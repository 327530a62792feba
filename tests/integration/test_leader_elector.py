"""The Lease adapter (controller/leader.py) and the standby/leader runner (controller/ha.py)
against the API emulator, in this process: acquisition, waiting, release, conflicts, losing the
Lease to someone else, and stepping down within the renew deadline when the API goes away or
stops answering."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import httpx
import pytest

from anklet.dev.kube_emulator import KubeApiServer
from controller.ha import LeaseKeeper, run_elected
from controller.kube import KubeClient
from controller.leader import ElectionConfig, LeaderElector, Timing
from tests.waiting import eventually

TIMING = Timing(lease_duration=3, renew_deadline=2, retry_period=0.2)
LEASE = "/apis/coordination.k8s.io/v1/namespaces/default/leases/anklet-controller"


def config(identity: str, timing: Timing = TIMING) -> ElectionConfig:
    return ElectionConfig(namespace="default", name="anklet-controller", identity=identity, timing=timing)


@pytest.fixture
async def api() -> AsyncIterator[KubeApiServer]:
    async with KubeApiServer() as server:
        yield server
        assert not server.failures


@contextlib.asynccontextmanager
async def client(url: str) -> AsyncIterator[KubeClient]:
    kube = KubeClient(httpx.AsyncClient(base_url=url, timeout=10))
    try:
        yield kube
    finally:
        await kube.aclose()


async def lease(url: str) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=url, timeout=10) as http:
        response = await http.get(LEASE)
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body


async def test_one_leader_the_other_waits_and_a_release_hands_over(api: KubeApiServer) -> None:
    async with client(api.url) as ka, client(api.url) as kb:
        a, b = LeaderElector(ka, config("a")), LeaderElector(kb, config("b"))
        stop = asyncio.Event()
        assert await asyncio.wait_for(a.acquire(stop), 5)
        created = (await lease(api.url))["spec"]
        assert created["holderIdentity"] == "a" and created["leaseDurationSeconds"] == 3
        assert created["leaseTransitions"] == 0 and created["acquireTime"] == created["renewTime"]

        waiting = asyncio.create_task(b.acquire(stop))
        stop_holding = asyncio.Event()
        holding = asyncio.create_task(a.hold(stop_holding))
        await asyncio.sleep(TIMING.lease_duration + 1)  # a renews, so b must not take over
        assert not waiting.done() and not holding.done()
        renewed = (await lease(api.url))["spec"]
        assert renewed["holderIdentity"] == "a" and renewed["renewTime"] > created["renewTime"]
        assert renewed["acquireTime"] == created["acquireTime"]

        stop_holding.set()
        assert await asyncio.wait_for(holding, 2) is True  # stopped while still leading
        released_at = time.monotonic()
        assert await a.release()
        assert await asyncio.wait_for(waiting, 5)
        assert time.monotonic() - released_at < TIMING.retry_period + 1  # not a whole lease duration
        taken = (await lease(api.url))["spec"]
        assert taken["holderIdentity"] == "b" and taken["leaseTransitions"] == 1


async def test_a_stale_write_is_refused(api: KubeApiServer) -> None:
    async with client(api.url) as kube:
        assert await LeaderElector(kube, config("a")).acquire(asyncio.Event())
        current = await lease(api.url)
        current["spec"]["holderIdentity"] = "b"
        assert await kube.replace_lease("default", "anklet-controller", current) is not None
        current["spec"]["holderIdentity"] = "c"  # same (now stale) resourceVersion
        assert await kube.replace_lease("default", "anklet-controller", current) is None
        assert await kube.create_lease("default", current) is None  # exists already
        assert (await lease(api.url))["spec"]["holderIdentity"] == "b"


async def test_acquire_gives_up_when_stopped(api: KubeApiServer) -> None:
    async with client(api.url) as ka, client(api.url) as kb:
        assert await LeaderElector(ka, config("a")).acquire(asyncio.Event())
        stop = asyncio.Event()
        waiting = asyncio.create_task(LeaderElector(kb, config("b")).acquire(stop))
        await asyncio.sleep(0.5)
        stop.set()
        assert await asyncio.wait_for(waiting, 2) is False


async def steal(url: str, kube: KubeClient, holder: str, attempts: int = 20) -> bool:
    """Write another holder into the Lease while its leader keeps renewing it: a renewal between
    the read and the write makes the write stale (409), so read again, as a real contender would."""
    for _ in range(attempts):
        stolen = await lease(url)
        stolen["spec"]["holderIdentity"] = holder
        if await kube.replace_lease("default", "anklet-controller", stolen) is not None:
            return True
    return False


async def test_the_leader_steps_down_when_someone_else_holds_the_lease(api: KubeApiServer) -> None:
    async with client(api.url) as kube:
        elector = LeaderElector(kube, config("a"))
        assert await elector.acquire(asyncio.Event())
        holding = asyncio.create_task(elector.hold(asyncio.Event()))
        assert await steal(api.url, kube, "intruder")
        assert await asyncio.wait_for(holding, TIMING.retry_period + 2) is False
        assert not elector.leading


async def timed_hold(elector: LeaderElector) -> float:
    """Seconds from the last successful renewal until `hold` gave up (asserting it did)."""
    assert await asyncio.wait_for(elector.hold(asyncio.Event()), TIMING.renew_deadline + 3) is False
    assert elector.observed is not None
    return time.monotonic()


async def test_the_leader_steps_down_within_the_renew_deadline_when_the_api_is_gone() -> None:
    api = KubeApiServer()
    await api.__aenter__()
    async with client(api.url) as kube:
        elector = LeaderElector(kube, config("a"))
        assert await elector.acquire(asyncio.Event())
        holding = asyncio.create_task(timed_hold(elector))
        await asyncio.sleep(0.5)
        await api.__aexit__(None, None, None)
        assert elector.renewed_at is not None
        last_renewal = elector.renewed_at
        gave_up = await holding
        assert TIMING.renew_deadline - 0.1 <= gave_up - last_renewal <= TIMING.renew_deadline + 1


async def silent_server() -> tuple[asyncio.Server, str]:
    """Accepts connections and never answers: an API server that hangs."""

    async def swallow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError):
            await reader.read()
        writer.close()

    server = await asyncio.start_server(swallow, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


async def test_a_hanging_api_cannot_stretch_leadership_past_the_renew_deadline(api: KubeApiServer) -> None:
    silent, silent_url = await silent_server()
    try:
        async with client(api.url) as kube, client(silent_url) as hanging:
            elector = LeaderElector(kube, config("a"))
            assert await elector.acquire(asyncio.Event())
            elector._client = hanging  # from now on every request hangs (httpx would wait 10 s)
            assert elector.renewed_at is not None
            last_renewal = elector.renewed_at
            gave_up = await timed_hold(elector)
            assert gave_up - last_renewal <= TIMING.renew_deadline + 0.5
    finally:
        silent.close()
        await silent.wait_closed()


# controller/ha.py: the keeper thread and the standby → leader runner.


class Operator:
    """Stands in for kopf: records that it ran and runs until its stop flag is raised."""

    def __init__(self) -> None:
        self.started = asyncio.Event()

    async def __call__(self, stop: asyncio.Event, ready: asyncio.Event) -> int:
        self.started.set()
        ready.set()
        await stop.wait()
        return 0


def keeper(url: str, identity: str, lost: list[str]) -> LeaseKeeper:
    connect: Callable[[], KubeClient] = lambda: KubeClient(httpx.AsyncClient(base_url=url, timeout=10))  # noqa: E731
    return LeaseKeeper(config(identity), connect, on_lost=lost.append)


async def test_run_elected_stands_by_then_leads_then_releases(api: KubeApiServer) -> None:
    lost: list[str] = []
    first, second = Operator(), Operator()
    stop_first, stop_second = asyncio.Event(), asyncio.Event()
    leader = asyncio.create_task(run_elected(keeper(api.url, "a", lost), first, stop_first))
    await asyncio.wait_for(first.started.wait(), 5)
    standby = asyncio.create_task(run_elected(keeper(api.url, "b", lost), second, stop_second))
    await asyncio.sleep(1)
    assert not second.started.is_set()  # a standby does nothing but wait

    stop_first.set()  # SIGTERM: the operator stops, then the Lease is released
    assert await asyncio.wait_for(leader, 5) == 0
    assert (await lease(api.url))["spec"]["holderIdentity"] in ("", "b")
    await asyncio.wait_for(second.started.wait(), TIMING.retry_period + 2)
    assert (await lease(api.url))["spec"]["holderIdentity"] == "b"

    stop_second.set()
    assert await asyncio.wait_for(standby, 5) == 0
    assert lost == []


async def test_run_elected_stopped_while_standing_by(api: KubeApiServer) -> None:
    lost: list[str] = []
    async with client(api.url) as kube:
        assert await LeaderElector(kube, config("a")).acquire(asyncio.Event())
        operator, stop = Operator(), asyncio.Event()
        standby = asyncio.create_task(run_elected(keeper(api.url, "b", lost), operator, stop))
        await asyncio.sleep(0.5)
        stop.set()
        assert await asyncio.wait_for(standby, 5) == 0
        assert not operator.started.is_set() and lost == []
        assert (await lease(api.url))["spec"]["holderIdentity"] == "a"


async def test_the_keeper_reports_a_lost_lease(api: KubeApiServer) -> None:
    lost: list[str] = []
    operator, stop = Operator(), asyncio.Event()
    running = asyncio.create_task(run_elected(keeper(api.url, "a", lost), operator, stop))
    await asyncio.wait_for(operator.started.wait(), 5)
    async with client(api.url) as kube:
        assert await steal(api.url, kube, "intruder")

    async def reported() -> bool:
        return lost == ["default/anklet-controller"]

    await eventually(reported, TIMING.retry_period + 3)
    stop.set()
    assert await asyncio.wait_for(running, 5) == 0


async def test_the_standby_probe_answers_until_the_replica_leads(api: KubeApiServer) -> None:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    lost: list[str] = []
    async with client(api.url) as kube:
        assert await LeaderElector(kube, config("a")).acquire(asyncio.Event())
        operator, stop = Operator(), asyncio.Event()
        standby = asyncio.create_task(
            run_elected(
                keeper(api.url, "b", lost), operator, stop, liveness=f"http://127.0.0.1:{port}/healthz"
            )
        )
        async with httpx.AsyncClient(timeout=5) as http:

            async def probe() -> dict[str, Any] | None:
                with contextlib.suppress(httpx.HTTPError):
                    response = await http.get(f"http://127.0.0.1:{port}/healthz")
                    return dict(response.json()) if response.status_code == 200 else None
                return None

            assert await eventually(probe, 5) == {"standby": True}
        stop.set()
        assert await asyncio.wait_for(standby, 5) == 0
