from __future__ import annotations

import logging

import pytest

from anklet.backoff import Backoff


async def test_one_error_line_per_outage_and_one_on_recovery(caplog: pytest.LogCaptureFixture) -> None:
    backoff = Backoff(logging.getLogger("t"), "redis", base=0.001, cap=0.002)
    with caplog.at_level(logging.DEBUG, logger="t"):
        for _ in range(5):
            await backoff.failed(ConnectionError("refused"))
        backoff.succeeded()
        backoff.succeeded()
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    recoveries = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(errors) == 1 and "redis: ConnectionError: refused" in errors[0].getMessage()
    assert len(recoveries) == 1 and "5 failed attempts" in recoveries[0].getMessage()
    assert not backoff.failing


@pytest.mark.parametrize(("failures", "expected"), [(1, 0.2), (2, 0.4), (3, 0.8), (10, 10.0), (60, 10.0)])
def test_delay_grows_exponentially_up_to_the_cap(failures: int, expected: float) -> None:
    backoff = Backoff(logging.getLogger("t"), "x", base=0.2, cap=10.0, jitter=0.0)
    backoff.failures = failures
    assert backoff.delay() == pytest.approx(expected)
