"""Redis behind Sentinel, on real servers: a primary, a replica and three Sentinels on loopback.

Every process connects with a ``redis+sentinel://`` URL; after a failover the same client
reaches the new primary, and the per-host users of `anklet hosts credentials` (which Redis does
not replicate) exist on every node, so a Mac still logs in after the replica is promoted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from anklet import acl, keys
from anklet.dev.sentinel_group import SentinelGroup
from anklet.redis_protocol import ControllerProtocol, HostProtocol, connect
from anklet.redis_startup import wait_for_redis
from anklet.wire import HostInfo
from tests.integration.redis_users import credentials
from tests.waiting import eventually


@pytest.fixture
def group(tmp_path: Path) -> Iterator[SentinelGroup]:
    g = SentinelGroup(tmp_path / "redis", appendonly=False).start()
    try:
        yield g
    finally:
        g.stop()


def info(name: str) -> HostInfo:
    return HostInfo(name=name, cpu=8, memory_mib=16384, vm_slots=2, arch="arm64", anka_version="3.9.1")


async def failover(group: SentinelGroup) -> int:
    """A Sentinel-driven failover (SENTINEL FAILOVER); the new primary's port."""
    old = group.primary().port
    sentinel = redis.Redis(port=group.sentinels[0].port, decode_responses=True)
    with sentinel:
        sentinel.execute_command("SENTINEL", "FAILOVER", "anklet")

    async def moved() -> int | None:
        port = group.primary().port
        return port if port != old else None

    return await eventually(moved, 30)


async def test_the_same_client_follows_a_failover(group: SentinelGroup) -> None:
    client = connect(group.url)
    try:
        await wait_for_redis(client, group.url, 5)
        host = HostProtocol(client, "mac-1")
        await host.register(info("mac-1"))
        assert await host.heartbeat()
        new_port = await failover(group)
        # A demoted primary answers READONLY; the client drops it and asks the Sentinels again.
        await eventually(lambda: _beats(host), 30)
        direct = redis.Redis(port=new_port, decode_responses=True)
        with direct:
            assert direct.exists(keys.host_info("mac-1")) and direct.exists(keys.host_lease("mac-1"))
        [snap] = await ControllerProtocol(client).snapshot()
        assert snap.info.name == "mac-1" and snap.ready
    finally:
        await client.aclose()


async def _beats(host: HostProtocol) -> bool:
    try:
        return await host.heartbeat()
    except redis.RedisError:
        return False


async def test_host_users_are_written_to_every_node_and_survive_a_failover(
    group: SentinelGroup,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = credentials(group.url, "mac-1", capsys=capsys, caplog=caplog, monkeypatch=monkeypatch)
    assert issued.rc == 0, issued.log
    assert issued.url.startswith("redis+sentinel://anklet-host-mac-1:") and issued.url.endswith("/anklet/0")
    assert "on 2 Redis servers" in issued.log
    assert issued.password not in issued.log
    for server in group.servers:
        node = redis.Redis(port=server.port, decode_responses=True)
        with node:
            assert node.acl_getuser(acl.host_user("mac-1")) is not None, f"no user on port {server.port}"
    agent = connect(issued.url)
    try:
        host = HostProtocol(agent, "mac-1")
        await host.register(info("mac-1"))
        await failover(group)
        await eventually(lambda: _beats(host), 30)
        with pytest.raises(redis.exceptions.NoPermissionError):
            await agent.get(keys.host_info("mac-2"))  # still confined to its own keys
    finally:
        await agent.aclose()
