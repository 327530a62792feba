"""controller.handler_calls: a handler's failures and slowness cost its own jobs a retry, never
the other jobs a wait; a handler's verdict or stop reason becomes the attempt's outcome."""

from __future__ import annotations

import asyncio
from typing import Any, cast

import pytest

from anklet import plugins
from anklet.models import AnkaJob, Phase
from anklet.redis_protocol import ControllerProtocol
from anklet.wire import Observation, ObservedPhase
from controller.handler_calls import HandlerCalls


def job(handler: str = "script", attempts: int = 1) -> AnkaJob:
    return AnkaJob.model_validate(
        {
            "metadata": {"name": "j", "uid": "u1", "creationTimestamp": "2026-11-25T12:00:00Z"},
            "spec": {"template": "t", "handler": handler, "script": {"run": "true"}},
            "status": {"phase": "Running", "attempts": attempts},
        }
    )


def calls(timeout: float = 0.2, pause: float = 60.0) -> tuple[HandlerCalls, list[tuple[str, float]]]:
    retries: list[tuple[str, float]] = []
    proto = cast(ControllerProtocol, None)  # not touched by these calls
    handler = HandlerCalls(
        proto, lambda uid, delay: retries.append((uid, delay)), timeout=timeout, pause=pause
    )
    return handler, retries


async def answer(value: Any) -> Any:
    return value


async def hang() -> None:
    await asyncio.sleep(3600)


async def fail() -> None:
    raise RuntimeError("GitHub said 502")


async def test_a_call_returns_its_answer() -> None:
    handler, retries = calls()
    assert await handler.call(job(), answer(42)) == 42
    assert retries == []


async def test_a_failed_call_is_retried_later(caplog: pytest.LogCaptureFixture) -> None:
    handler, retries = calls()
    assert await handler.call(job(), fail()) is None
    assert retries == [("u1", 5.0)]
    assert "handler script failed for default/j: RuntimeError: GitHub said 502; retrying later" in caplog.text


async def test_a_call_past_its_deadline_pauses_only_its_handler() -> None:
    handler, retries = calls(timeout=0.05, pause=60.0)
    assert await handler.call(job(), hang()) is None
    assert retries == [("u1", 60.0)]
    skipped = answer("never awaited")
    assert await handler.call(job(), skipped) is None  # paused: not even started
    assert skipped.cr_frame is None, "the skipped call is closed, not left pending"
    assert retries[1][0] == "u1" and 1.0 <= retries[1][1] <= 60.0
    assert await handler.call(job("github"), answer("other handler")) == "other handler"


async def test_a_paused_handler_keeps_a_verdict_waiting() -> None:
    handler, _ = calls(timeout=0.05)
    with pytest.raises(plugins.NotYet):
        await handler.call(job(), hang(), reraise=(plugins.NotYet,))
    with pytest.raises(plugins.NotYet):
        await handler.call(job(), answer(None), reraise=(plugins.NotYet,))


def finished(phase: ObservedPhase, *, attempt: int = 1, retryable: bool = False) -> Observation:
    return Observation(
        uid="u1",
        attempt=attempt,
        host="mac-1",
        phase=phase,
        vm_name="v",
        vm_deleted=True,
        retryable=retryable,
    )


class Judge(plugins.Handler):
    def __init__(self, verdict: plugins.Verdict | None) -> None:
        self.verdict = verdict
        self.asked = 0

    async def judge(self, job: AnkaJob, obs: Observation) -> plugins.Verdict | None:
        self.asked += 1
        return self.verdict


async def test_the_handlers_verdict_names_the_outcome() -> None:
    handler, _ = calls()
    passed = Judge(plugins.Verdict(Phase.SUCCEEDED, "Succeeded", "the CI says the job passed"))
    obs = await handler.interpret(job(), passed, finished(ObservedPhase.FAILED), None)
    assert (obs.phase, obs.retryable, obs.reason) == (ObservedPhase.SUCCEEDED, False, "Succeeded")
    retry = Judge(plugins.Verdict(None, "RunnerLost", "the runner never took the job"))
    obs = await handler.interpret(job(), retry, finished(ObservedPhase.SUCCEEDED), None)
    assert (obs.phase, obs.retryable, obs.reason) == (ObservedPhase.FAILED, True, "RunnerLost")


async def test_only_a_finished_current_attempt_is_judged() -> None:
    handler, _ = calls()
    judge = Judge(plugins.Verdict(Phase.SUCCEEDED, "Succeeded", "ok"))
    stale = finished(ObservedPhase.FAILED, attempt=1)
    assert await handler.interpret(job(attempts=2), judge, stale, None) is stale
    running = Observation(uid="u1", attempt=1, host="mac-1", phase=ObservedPhase.RUNNING, vm_name="v")
    assert await handler.interpret(job(), judge, running, None) is running
    retrying = finished(ObservedPhase.FAILED, retryable=True)
    assert await handler.interpret(job(), judge, retrying, None) is retrying
    assert judge.asked == 0


async def test_a_recorded_stop_names_a_cancelled_attempt() -> None:
    handler, _ = calls()
    judge = Judge(None)
    upstream = plugins.Stop(reason="CancelledUpstream", message="cancelled on GitHub", phase=Phase.CANCELLED)
    obs = await handler.interpret(job(), judge, finished(ObservedPhase.CANCELLED), upstream)
    assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.CANCELLED, "CancelledUpstream", False)
    again = plugins.Stop(reason="RunnerLost", message="re-run", phase=Phase.FAILED, retry=True)
    obs = await handler.interpret(job(), judge, finished(ObservedPhase.CANCELLED), again)
    assert (obs.phase, obs.retryable) == (ObservedPhase.FAILED, True)
    assert judge.asked == 0
