"""Redis Cluster, on real servers: three primaries on loopback sharing the slots.

Every atomic step of the protocol touches one host's hash-tagged keys (one slot); fleet reads
and shared keys span slots. The whole protocol, a real agent running a job, and the per-host
users (written to every node) are exercised through a ``redis+cluster://`` URL.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis
import redis.asyncio as aioredis

from anklet import acl, keys
from anklet.dev.cluster_group import ClusterGroup
from anklet.redis_protocol import ControllerProtocol, HostProtocol, connect
from anklet.redis_startup import wait_for_redis
from anklet.wire import HostConfig, HostInfo, Observation, ObservedPhase
from tests.integration.redis_users import credentials
from tests.integration.test_agent import Mac, job, outcome, registered


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ClusterGroup]:
    group = ClusterGroup(Path(tmp_path_factory.mktemp("cluster"))).start()
    try:
        yield group
    finally:
        group.stop()


@pytest.fixture
async def client(cluster: ClusterGroup) -> AsyncIterator[aioredis.Redis]:
    c = connect(cluster.url)
    await wait_for_redis(c, cluster.url, 10)
    await c.flushall()
    try:
        yield c
    finally:
        await c.aclose()


def info(name: str) -> HostInfo:
    return HostInfo(name=name, cpu=8, memory_mib=16384, vm_slots=2, arch="arm64", anka_version="3.9.1")


def slot_of(key: str) -> int:
    return redis.cluster.key_slot(key.encode())


async def test_the_protocol_runs_on_a_cluster(cluster: ClusterGroup, client: aioredis.Redis) -> None:
    hosts = [f"mac-{i}" for i in range(6)]
    # The hosts' keys spread over the nodes: reads and pipelines really cross slots.
    assert len({slot_of(keys.host_info(h)) * 3 // 16384 for h in hosts}) > 1
    ctl = ControllerProtocol(client)
    last = await ctl.latest_event_id()
    for name in hosts:
        proto = HostProtocol(client, name)
        await proto.register(info(name))
        assert await proto.heartbeat()
    assert sorted(s.info.name for s in await ctl.snapshot() if s.ready) == hosts
    d = job("cluster-job", "echo hi")
    assert await ctl.reserve("mac-3", d) == "OK"
    assert (
        await ctl.reserve("mac-3", d.model_copy(update={"uid": "x2", "vm_name": "anklet-vm-x2-a1"})) == "OK"
    )
    refused = d.model_copy(update={"uid": "x3", "vm_name": "anklet-vm-x3-a1"})
    assert await ctl.reserve("mac-3", refused) == "no_vm_slot"  # the Lua script saw both
    host = HostProtocol(client, "mac-3")
    assert set(await host.desired()) == {"cluster-job", "x2"}
    await ctl.put_secret("mac-3", d.uid, d.attempt, {"TOKEN": "t"})  # a MULTI on one slot
    assert await host.secret(d.uid, d.attempt) == {"TOKEN": "t"}
    await ctl.put_host_config("mac-3", HostConfig(pre_pull=["t:1"]))
    assert (await host.host_config()) == HostConfig(pre_pull=["t:1"])
    assert await host.wait_for_wakeup(1)
    await host.report(
        Observation(uid=d.uid, attempt=1, host="mac-3", phase=ObservedPhase.RUNNING, vm_name=d.vm_name)
    )
    assert (await ctl.observation("mac-3", d.uid)) is not None
    _, events = await ctl.read_events(last, block_ms=100)
    assert {"kind": "observed", "host": "mac-3", "uid": d.uid}.items() <= events[-1].items()
    assert await ctl.cancel("mac-3", d.uid)
    await ctl.release("mac-3", d.uid, 1)
    assert set(await host.desired()) == {"x2"} and await host.secret(d.uid, 1) is None
    await host.record_template_size(["t"], "1", 2, 4096)
    assert await ctl.template_sizes() == {"t:1": (2, 4096)}


async def test_a_real_agent_runs_a_job_through_the_cluster(
    cluster: ClusterGroup, client: aioredis.Redis, tmp_path: Path
) -> None:
    mac = Mac(tmp_path, cluster.url).start()
    try:
        ctl = ControllerProtocol(client)
        await registered(ctl)
        d = job("via-cluster", 'echo "$GREETING"')
        assert await ctl.reserve("mac-1", d) == "OK"
        obs = await outcome(ctl, d)
        assert (obs.phase, obs.exit_code) == (ObservedPhase.SUCCEEDED, 0) and "hi there" in (obs.output or "")
    finally:
        mac.stop()


async def test_host_users_are_written_to_every_node(
    cluster: ClusterGroup,
    client: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = credentials(cluster.url, "mac-1", capsys=capsys, caplog=caplog, monkeypatch=monkeypatch)
    try:
        assert issued.rc == 0, issued.log
        assert (
            issued.url.startswith("redis+cluster://anklet-host-mac-1:") and "on 3 Redis servers" in issued.log
        )
        for server in cluster.servers:
            with redis.Redis(port=server.port, decode_responses=True) as node:
                assert node.acl_getuser(acl.host_user("mac-1")) is not None
        agent = connect(issued.url)
        try:
            host = HostProtocol(agent, "mac-1")
            await host.register(info("mac-1"))  # keys on whichever node owns {h:mac-1}
            assert await host.heartbeat()
            with pytest.raises(redis.exceptions.NoPermissionError):
                await agent.get(keys.host_desired("mac-2"))
        finally:
            await agent.aclose()
    finally:
        for server in cluster.servers:
            with redis.Redis(port=server.port, decode_responses=True) as node:
                node.acl_deluser(acl.host_user("mac-1"))
