"""The start-up wait for Redis: what it says about the target, and its pacing."""

from __future__ import annotations

from anklet.redis_startup import MAX_DELAY, describe, retry_delay


def test_describe_names_the_target_never_the_credentials() -> None:
    assert describe("redis://anklet:hunter2@redis.internal:6380/3") == "redis.internal:6380 db 3"
    assert describe("rediss://:pw@r/0") == "r:6379 db 0 (TLS)"
    assert describe("unix:///tmp/redis.sock") == "socket /tmp/redis.sock"
    assert "hunter2" not in describe("redis://u:hunter2@h:1/0")


def test_retry_delay_grows_is_capped_and_never_passes_the_deadline() -> None:
    delays = [retry_delay(n, remaining=100.0) for n in range(1, 10)]
    assert delays == sorted(delays) and delays[0] > 0
    assert max(delays) == MAX_DELAY
    assert retry_delay(9, remaining=0.3) == 0.3
