"""The GitHub client's retry policy, as pure decisions (no I/O, no clock)."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from plugins.handlers.github.ratelimit import (
    NetworkFailure,
    Reason,
    RetryDecision,
    RetryPolicy,
    backoff_delay,
    classify,
    classify_network_failure,
    exhausted_reset,
)

NOW = 1_700_000_000.0
POLICY = RetryPolicy(max_attempts=4, backoff_base=1.0, backoff_cap=10.0, secondary_min_wait=60.0)


def decide(status: int, headers: dict[str, str] | None = None, body: str = "", **kw: int) -> RetryDecision:
    return classify(
        status,
        headers or {},
        body,
        attempt=kw.get("attempt", 1),
        rate_limit_waits=kw.get("waits", 0),
        now=NOW,
        policy=POLICY,
    )


@pytest.mark.parametrize(
    ("status", "headers", "body", "reason", "retry", "delay"),
    [
        pytest.param(
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 30)},
            "",
            Reason.PRIMARY_RATE_LIMIT,
            True,
            31.0,
            id="primary-403-waits-until-reset-plus-margin",
        ),
        pytest.param(
            429,
            {"X-RateLimit-Remaining": "0", "X-RateLimit-Reset": str(int(NOW) + 5)},
            "",
            Reason.PRIMARY_RATE_LIMIT,
            True,
            6.0,
            id="primary-429-headers-are-case-insensitive",
        ),
        pytest.param(
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) - 100)},
            "",
            Reason.PRIMARY_RATE_LIMIT,
            True,
            1.0,
            id="primary-reset-in-the-past-waits-only-the-margin",
        ),
        pytest.param(
            403, {"retry-after": "7"}, "", Reason.SECONDARY_RATE_LIMIT, True, 7.0, id="secondary-retry-after"
        ),
        pytest.param(
            403,
            {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW) + 999), "retry-after": "3"},
            "",
            Reason.PRIMARY_RATE_LIMIT,
            True,
            3.0,
            id="retry-after-wins-over-reset",
        ),
        pytest.param(
            403,
            {"x-ratelimit-remaining": "4000"},
            '{"message": "You have exceeded a secondary rate limit."}',
            Reason.SECONDARY_RATE_LIMIT,
            True,
            60.0,
            id="secondary-message-waits-a-minute",
        ),
        pytest.param(429, {}, "", Reason.SECONDARY_RATE_LIMIT, True, 60.0, id="bare-429-is-a-rate-limit"),
        pytest.param(
            403,
            {"x-ratelimit-remaining": "4999"},
            '{"message": "Resource not accessible by integration"}',
            Reason.FORBIDDEN,
            False,
            0.0,
            id="permission-403-is-final",
        ),
        pytest.param(500, {}, "", Reason.SERVER_ERROR, True, 1.0, id="500-backs-off"),
        pytest.param(502, {}, "", Reason.SERVER_ERROR, True, 1.0, id="502-backs-off"),
        pytest.param(401, {}, "", Reason.UNAUTHORIZED, False, 0.0, id="401-final"),
        pytest.param(404, {}, "", Reason.NOT_FOUND, False, 0.0, id="404-final"),
        pytest.param(409, {}, "", Reason.CONFLICT, False, 0.0, id="409-final"),
        pytest.param(422, {}, "", Reason.UNPROCESSABLE, False, 0.0, id="422-final"),
        pytest.param(400, {}, "", Reason.CLIENT_ERROR, False, 0.0, id="400-final"),
        pytest.param(201, {"x-ratelimit-remaining": "0"}, "", Reason.OK, False, 0.0, id="success-is-final"),
    ],
)
def test_one_response(
    status: int, headers: dict[str, str], body: str, reason: Reason, retry: bool, delay: float
) -> None:
    decision = decide(status, headers, body)
    assert (decision.reason, decision.retry) == (reason, retry)
    assert decision.delay == pytest.approx(delay)


def test_server_errors_back_off_exponentially_and_give_up_after_max_attempts() -> None:
    delays = [decide(503, attempt=n).delay for n in range(1, 4)]
    assert delays == [1.0, 2.0, 4.0]
    assert not decide(503, attempt=POLICY.max_attempts).retry
    assert backoff_delay(20, POLICY) == POLICY.backoff_cap


def test_a_persisting_secondary_limit_waits_longer_each_time_then_gives_up() -> None:
    waits = [decide(429, waits=n).delay for n in range(POLICY.max_rate_limit_waits)]
    assert waits == [60.0, 120.0, 240.0]
    final = decide(429, waits=POLICY.max_rate_limit_waits)
    assert final.reason is Reason.SECONDARY_RATE_LIMIT and not final.retry


def test_a_wait_longer_than_the_maximum_is_not_taken() -> None:
    far = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(NOW + POLICY.max_wait + 100))}
    decision = decide(403, far)
    assert decision.reason is Reason.PRIMARY_RATE_LIMIT and not decision.retry
    assert decision.delay > POLICY.max_wait


def test_retry_after_as_an_http_date() -> None:
    decision = decide(429, {"Retry-After": "Tue, 14 Nov 2023 22:13:40 GMT"})  # NOW + 20 s
    assert decision.retry and decision.delay == pytest.approx(20.0)


@pytest.mark.parametrize(
    ("failure", "method", "retry"),
    [
        (NetworkFailure.NOT_SENT, "POST", True),
        (NetworkFailure.NOT_SENT, "GET", True),
        (NetworkFailure.MAYBE_SENT, "GET", True),
        (NetworkFailure.MAYBE_SENT, "POST", False),
        (NetworkFailure.MAYBE_SENT, "DELETE", False),
    ],
)
def test_network_failures_repeat_only_requests_that_cannot_have_taken_effect(
    failure: NetworkFailure, method: str, retry: bool
) -> None:
    assert classify_network_failure(failure, method, attempt=1, policy=POLICY).retry is retry
    assert not classify_network_failure(failure, method, attempt=POLICY.max_attempts, policy=POLICY).retry


def test_exhausted_reset_only_when_the_window_is_used_up() -> None:
    assert exhausted_reset({"x-ratelimit-remaining": "0", "x-ratelimit-reset": "123"}) == 123.0
    assert exhausted_reset({"x-ratelimit-remaining": "1", "x-ratelimit-reset": "123"}) is None
    assert exhausted_reset({}) is None


_remaining = st.one_of(st.none(), st.sampled_from(["0", "1", "4999", " 0 ", "-1", "x", ""]))
_reset = st.one_of(st.none(), st.integers(int(NOW) - 10_000, int(NOW) + 10_000).map(str), st.just("soon"))
_retry_after = st.one_of(st.none(), st.integers(-5, 5000).map(str), st.sampled_from(["", "later", "1.5"]))
_body = st.sampled_from(
    ["", '{"message":"Bad credentials"}', "secondary rate limit", "abuse detection mechanism"]
)


def _headers(remaining: str | None, reset: str | None, retry_after: str | None) -> dict[str, str]:
    pairs = {"x-ratelimit-remaining": remaining, "x-ratelimit-reset": reset, "retry-after": retry_after}
    return {key: value for key, value in pairs.items() if value is not None}


@given(
    status=st.sampled_from([200, 201, 204, 302, 403, 429]),
    remaining=_remaining,
    reset=_reset,
    retry_after=_retry_after,
    body=_body,
    waits=st.integers(0, 5),
)
def test_rate_limit_decisions_are_sane_for_any_header_combination(
    status: int, remaining: str | None, reset: str | None, retry_after: str | None, body: str, waits: int
) -> None:
    headers = _headers(remaining, reset, retry_after)
    decision = decide(status, headers, body, waits=waits)
    assert decision.delay >= 0
    if status < 400:
        # a successful answer is final, whatever its headers say: never sent twice
        assert decision.reason is Reason.OK and not decision.retry
        return
    if decision.retry:
        assert decision.delay <= POLICY.max_wait
        assert waits < POLICY.max_rate_limit_waits
    if status == 429:
        assert decision.reason in (Reason.PRIMARY_RATE_LIMIT, Reason.SECONDARY_RATE_LIMIT)
    exhausted = remaining is not None and remaining.strip() == "0"
    if exhausted:
        assert decision.reason is Reason.PRIMARY_RATE_LIMIT
    has_retry_after = (
        retry_after is not None and retry_after.strip().lstrip("-").replace(".", "", 1).isdigit()
    )
    if has_retry_after:
        assert decision.delay == pytest.approx(max(0.0, float(retry_after or 0)))
    elif exhausted and reset is not None and reset.isdigit():
        assert decision.delay == pytest.approx(max(0.0, int(reset) - NOW) + POLICY.reset_margin)
    if (
        status == 403
        and not exhausted
        and not has_retry_after
        and "rate limit" not in body
        and "abuse" not in body
    ):
        assert decision.reason is Reason.FORBIDDEN and not decision.retry
