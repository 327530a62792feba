"""At start, wait a bounded time for Redis, then give up with one line (exit 2).

Once running, every process rides out Redis outages with backoff (`anklet.backoff`). At start
that would hide a wrong URL, a firewall or a dead server behind a process that looks alive, so
the first contact gets a budget (``redis.connect_timeout_seconds``): Redis coming up a little
after the process (a pod started alongside it) is fine; never reaching it is a fatal error that
the supervisor (launchd, Kubernetes) shows, and restarts.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from urllib.parse import urlsplit

import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, AuthorizationError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from anklet import redis_cluster, redis_sentinel

#: Refusals that no retry changes (redis-py makes them ConnectionErrors, hence listed first).
FINAL = (AuthenticationError, AuthorizationError)
#: Failures worth another try within the budget; anything else is final too.
RETRYABLE = (RedisConnectionError, RedisTimeoutError, OSError, asyncio.TimeoutError)
FIRST_DELAY = 0.2
MAX_DELAY = 5.0
MIN_ATTEMPT_SECONDS = 0.5


class RedisUnreachable(Exception):
    """Redis did not answer within the start budget; the message is one log line."""


def describe(url: str) -> str:
    """Where the URL points, as ``host:port db N``: never the URL itself, which is a secret (and
    masked in logs as a whole, so quoting it would hide where the process tried to connect)."""
    if redis_sentinel.is_sentinel_url(url):
        try:
            return redis_sentinel.parse(url).describe()
        except ValueError:
            return "the configured Sentinels"
    if redis_cluster.is_cluster_url(url):
        try:
            return redis_cluster.parse(url).describe()
        except ValueError:
            return "the configured cluster"
    try:
        parts = urlsplit(url)
        if parts.scheme == "unix":
            return f"socket {parts.path}" if parts.path else "a unix socket"
        host = parts.hostname or "?"
        port = parts.port or 6379
    except ValueError:
        return "the configured URL"
    database = parts.path.lstrip("/") or "0"
    tls = " (TLS)" if parts.scheme == "rediss" else ""
    return f"{host}:{port} db {database}{tls}"


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def retry_delay(failures: int, remaining: float) -> float:
    """Exponential from FIRST_DELAY, capped, and never past the end of the budget."""
    return max(0.0, min(MAX_DELAY, FIRST_DELAY * 2.0 ** max(0, failures - 1), remaining))


async def wait_for_redis(
    client: aioredis.Redis,
    url: str,
    budget: float,
    *,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Return once Redis answers PING; RedisUnreachable when it has not within `budget` seconds.

    Bounded in time: each attempt gets at most what is left of the budget (at least
    MIN_ATTEMPT_SECONDS, so a budget of 0 still means one real try).
    """
    deadline = clock() + budget
    failures = 0
    reason = ""
    while True:
        remaining = deadline - clock()
        attempt = max(remaining, MIN_ATTEMPT_SECONDS)
        try:
            await asyncio.wait_for(client.ping(), timeout=attempt)
            return
        except FINAL as exc:
            raise RedisUnreachable(
                f"Redis at {describe(url)} refused the connection: {_reason(exc)}"
            ) from None
        except RETRYABLE as exc:
            failures += 1
            if not isinstance(exc, asyncio.TimeoutError):
                reason = _reason(exc)  # a refusal says more than the timeout that may follow it
            elif not reason:
                reason = f"no answer within {attempt:.1f} s"
            remaining = deadline - clock()
            if remaining <= 0:
                raise RedisUnreachable(
                    f"cannot reach Redis at {describe(url)} within {budget:g} s "
                    f"(redis.connect_timeout_seconds; {failures} attempts): {reason}"
                ) from None
            await asyncio.sleep(retry_delay(failures, remaining))
        except Exception as exc:  # e.g. AuthenticationError, a TLS handshake refused: no point retrying
            raise RedisUnreachable(
                f"Redis at {describe(url)} refused the connection: {_reason(exc)}"
            ) from None
