"""Shared fixtures: a real redis-server on a free loopback port, flushed before each test."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from hypothesis import HealthCheck, settings

from anklet.dev.redis_server import RedisServer
from anklet.redis_protocol import connect

# A controller started by a test (in-process or as a subprocess, which inherits this) serves no
# metrics unless the test asks for them on a loopback port: the production default, 0.0.0.0:9090,
# would leave loopback and make concurrent tests fight over one port.
os.environ.setdefault("ANKLET_METRICS_PORT", "0")
os.environ.setdefault("ANKLET_METRICS_HOST", "127.0.0.1")

# Hypothesis profiles (HYPOTHESIS_PROFILE): `ci` is derandomized so a CI run is reproducible (Hypothesis
# also picks it itself when $CI is set); `long` is for `make fuzz`, and tests sized with
# tests.fuzz.budget.examples() scale with its max_examples.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    database=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile(
    "long", max_examples=2000, deadline=None, suppress_health_check=[HealthCheck.too_slow]
)
if os.environ.get("HYPOTHESIS_PROFILE"):
    settings.load_profile(os.environ["HYPOTHESIS_PROFILE"])


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    server = RedisServer(Path(tmp_path_factory.mktemp("redis"))).start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def redis_client(redis_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = connect(redis_server.url)
    await client.flushall()
    try:
        yield client
    finally:
        await client.aclose()
