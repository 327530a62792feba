"""The start-up wait against a real redis-server: up, late, never, and refusing us."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from anklet.dev.redis_server import RedisServer, free_port
from anklet.redis_protocol import connect
from anklet.redis_startup import RedisUnreachable, wait_for_redis


async def test_a_running_server_answers_at_once(redis_server: RedisServer) -> None:
    client = connect(redis_server.url)
    try:
        started = time.monotonic()
        await wait_for_redis(client, redis_server.url, 5.0)
        assert time.monotonic() - started < 1.0
    finally:
        await client.aclose()


async def test_a_server_that_comes_up_within_the_budget_is_waited_for(tmp_path: Path) -> None:
    server = RedisServer(tmp_path / "late")
    client = connect(server.url)

    async def start_late() -> None:
        await asyncio.sleep(0.8)
        await asyncio.to_thread(server.start)

    try:
        starter = asyncio.create_task(start_late())
        await wait_for_redis(client, server.url, 15.0)
        await starter
    finally:
        await client.aclose()
        server.stop()


async def test_no_server_gives_up_when_the_budget_is_spent() -> None:
    port = free_port()
    url = f"redis://anklet:hunter2@127.0.0.1:{port}/0"
    client = connect(url)
    try:
        started = time.monotonic()
        with pytest.raises(RedisUnreachable) as caught:
            await wait_for_redis(client, url, 1.0)
        elapsed = time.monotonic() - started
    finally:
        await client.aclose()
    assert 1.0 <= elapsed < 4.0
    message = str(caught.value)
    assert f"cannot reach Redis at 127.0.0.1:{port} db 0 within 1 s" in message
    assert "ConnectionError" in message and "hunter2" not in message


async def test_a_wrong_password_is_final_at_once(tmp_path: Path) -> None:
    with RedisServer(tmp_path / "locked") as server:
        admin = connect(server.url)
        await admin.config_set("requirepass", "right-password")
        await admin.aclose()
        url = f"redis://:wrong-password@127.0.0.1:{server.port}/0"
        client = connect(url)
        try:
            started = time.monotonic()
            with pytest.raises(RedisUnreachable, match="refused the connection: AuthenticationError"):
                await wait_for_redis(client, url, 30.0)
            assert time.monotonic() - started < 5.0, "credentials do not get better with retries"
        finally:
            await client.aclose()
