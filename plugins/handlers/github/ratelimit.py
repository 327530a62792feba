"""What to do after one GitHub API attempt: the client's whole retry policy as pure functions.

The Go version slept *after* a successful call when the rate limit ran low and then executed the
same call again (duplicate registration tokens and cancels, §9.3 item 22). Here a decision is
taken only from an error response or a network failure; a success is final by construction
(`classify` answers OK for every status below 400, whatever the headers say).

GitHub's documented order for rate limits: honour `retry-after` when present; otherwise, with
`x-ratelimit-remaining: 0`, wait until `x-ratelimit-reset`; otherwise (a secondary limit)
wait at least a minute, growing exponentially while the limit persists.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from email.utils import parsedate_to_datetime

IDEMPOTENT_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_SECONDARY_MARKERS = ("secondary rate limit", "abuse detection")


class Reason(enum.StrEnum):
    """Why an attempt ended the way it did (also the `reason` label of the client's metrics)."""

    OK = "ok"
    PRIMARY_RATE_LIMIT = "primary_rate_limit"
    SECONDARY_RATE_LIMIT = "secondary_rate_limit"
    SERVER_ERROR = "server_error"
    NETWORK = "network"
    UNAUTHORIZED = "unauthorized"
    FORBIDDEN = "forbidden"
    NOT_FOUND = "not_found"
    CONFLICT = "conflict"
    UNPROCESSABLE = "unprocessable"
    CLIENT_ERROR = "client_error"


class NetworkFailure(enum.Enum):
    """How far a failed request got: decides whether repeating it is safe."""

    NOT_SENT = "not_sent"  # connect error / pool timeout: the server never saw it
    MAYBE_SENT = "maybe_sent"  # read/write error or timeout: it may have been processed


@dataclass(frozen=True)
class RetryPolicy:
    """Bounds of the client's patience; tests shrink the waits, production keeps the defaults."""

    max_attempts: int = 5  # per request, for 5xx and network errors
    backoff_base: float = 1.0  # seconds before the 2nd attempt; doubles per attempt
    backoff_cap: float = 60.0
    secondary_min_wait: float = 60.0  # GitHub: "wait at least one minute"
    max_rate_limit_waits: int = 3  # per request, primary and secondary together
    max_wait: float = 3900.0  # a primary limit resets within the hour; never sleep longer
    reset_margin: float = 1.0  # seconds added after x-ratelimit-reset, for clock skew


DEFAULT_POLICY = RetryPolicy()


@dataclass(frozen=True)
class RetryDecision:
    reason: Reason
    retry: bool = False
    delay: float = 0.0


def _header(headers: Mapping[str, str], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return value
    return None


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        value = float(text.strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _retry_after(text: str | None, now: float) -> float | None:
    """Seconds to wait from a `retry-after` header: delta-seconds or an HTTP date."""
    seconds = _number(text)
    if seconds is not None:
        return max(0.0, seconds)
    if not text:
        return None
    try:
        return max(0.0, parsedate_to_datetime(text).timestamp() - now)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def backoff_delay(attempt: int, policy: RetryPolicy) -> float:
    """Exponential: base, 2×base, 4×base … after attempts 1, 2, 3 …, capped."""
    return float(min(policy.backoff_cap, policy.backoff_base * 2.0 ** max(0, attempt - 1)))


def rate_limit_wait(
    status: int, headers: Mapping[str, str], body: str, *, waits: int, now: float, policy: RetryPolicy
) -> tuple[Reason, float] | None:
    """(kind, seconds) when a 403/429 is a rate limit; None for a plain permission error."""
    if status not in (403, 429):
        return None
    remaining = _header(headers, "x-ratelimit-remaining")
    exhausted = remaining is not None and remaining.strip() == "0"
    after = _retry_after(_header(headers, "retry-after"), now)
    if after is not None:
        return (Reason.PRIMARY_RATE_LIMIT if exhausted else Reason.SECONDARY_RATE_LIMIT), after
    if exhausted:
        reset = _number(_header(headers, "x-ratelimit-reset"))
        if reset is not None:
            return Reason.PRIMARY_RATE_LIMIT, max(0.0, reset - now) + policy.reset_margin
        return Reason.PRIMARY_RATE_LIMIT, policy.secondary_min_wait
    lowered = body.lower()
    if status == 429 or any(marker in lowered for marker in _SECONDARY_MARKERS):
        return Reason.SECONDARY_RATE_LIMIT, policy.secondary_min_wait * 2.0**waits
    return None


_FINAL_BY_STATUS = {
    401: Reason.UNAUTHORIZED,
    403: Reason.FORBIDDEN,
    404: Reason.NOT_FOUND,
    409: Reason.CONFLICT,
    422: Reason.UNPROCESSABLE,
}


def classify(
    status: int,
    headers: Mapping[str, str],
    body: str = "",
    *,
    attempt: int,
    rate_limit_waits: int = 0,
    now: float,
    policy: RetryPolicy = DEFAULT_POLICY,
) -> RetryDecision:
    """Decide about one HTTP response.

    `attempt` counts this request's attempts so far (1 for the first), `rate_limit_waits` how
    often it already waited for a rate limit. A rate-limit decision with `retry=False` still
    carries the wait GitHub asked for, so the caller can report it.
    """
    if status < 400:
        return RetryDecision(Reason.OK)
    limited = rate_limit_wait(status, headers, body, waits=rate_limit_waits, now=now, policy=policy)
    if limited is not None:
        reason, delay = limited
        patient = rate_limit_waits < policy.max_rate_limit_waits and delay <= policy.max_wait
        return RetryDecision(reason, retry=patient, delay=delay)
    if status >= 500:
        return RetryDecision(
            Reason.SERVER_ERROR, retry=attempt < policy.max_attempts, delay=backoff_delay(attempt, policy)
        )
    return RetryDecision(_FINAL_BY_STATUS.get(status, Reason.CLIENT_ERROR))


def classify_network_failure(
    failure: NetworkFailure, method: str, *, attempt: int, policy: RetryPolicy = DEFAULT_POLICY
) -> RetryDecision:
    """A request that got no response: repeat it only if it cannot have taken effect.

    A request that never reached the server is always safe to send again; one that may have
    been processed (the answer was lost) is repeated only for read-only methods.
    """
    safe = failure is NetworkFailure.NOT_SENT or method.upper() in IDEMPOTENT_METHODS
    return RetryDecision(
        Reason.NETWORK, retry=safe and attempt < policy.max_attempts, delay=backoff_delay(attempt, policy)
    )


def exhausted_reset(headers: Mapping[str, str]) -> float | None:
    """On a *successful* response that used the last request of the window: when it resets.

    The client then holds back further requests until that time instead of provoking a 403;
    the successful request itself is never repeated.
    """
    remaining = _header(headers, "x-ratelimit-remaining")
    if remaining is None or remaining.strip() != "0":
        return None
    return _number(_header(headers, "x-ratelimit-reset"))
