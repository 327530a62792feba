"""What the reconciler asks of a job's handler plugin, with a deadline on every call.

Handlers talk to a CI (GitHub's API behind the Actions handler), which can fail, rate-limit or
hang. None of that may stall other jobs: a failed call is logged and the job retried on a later
pass; a call that misses its deadline pauses its handler for a while, so every other job, of any
handler, keeps being scheduled.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from anklet import plugins
from anklet.models import AnkaJob, Phase
from anklet.redis_protocol import ControllerProtocol
from anklet.wire import DesiredVM, Observation, ObservedPhase

log = logging.getLogger("anklet.controller")

T = TypeVar("T")
# A handler call (a CI API behind it) gets this long; one that misses it pauses its handler.
HANDLER_CALL_TIMEOUT = 5.0
HANDLER_PAUSE = 15.0

_OBSERVED = {
    Phase.SUCCEEDED: ObservedPhase.SUCCEEDED,
    Phase.FAILED: ObservedPhase.FAILED,
    Phase.CANCELLED: ObservedPhase.CANCELLED,
}


class HandlerCalls:
    """Handler plugin calls for the reconciler; `retry_soon(uid, delay)` brings a job back
    after a call that failed or was skipped."""

    def __init__(
        self,
        proto: ControllerProtocol,
        retry_soon: Callable[[str, float], None],
        *,
        timeout: float = HANDLER_CALL_TIMEOUT,
        pause: float = HANDLER_PAUSE,
    ) -> None:
        self.proto = proto
        self.retry_soon = retry_soon
        self.timeout = timeout
        self.pause = pause
        self._paused: dict[str, float] = {}  # handler -> monotonic time its calls resume

    async def call(
        self, job: AnkaJob, call: Coroutine[Any, Any, T], *, reraise: tuple[type[BaseException], ...] = ()
    ) -> T | None:
        """The call's result, or None when it failed, timed out or its handler is paused (the job
        is then retried later, and one that waits for a verdict keeps waiting). A pass waits for
        its jobs' steps, and a CI client waiting out a rate limit can keep a call busy for
        minutes: hence the deadline, and the pause after a missed one."""
        name, now = job.spec.handler, time.monotonic()
        paused_until = self._paused.get(name, 0.0)
        if now < paused_until:
            call.close()
            self.retry_soon(job.metadata.uid, max(1.0, paused_until - now))
            if plugins.NotYet in reraise:
                raise plugins.NotYet()
            return None
        try:
            return await asyncio.wait_for(call, self.timeout)
        except reraise:
            raise
        except TimeoutError:
            self._paused[name] = time.monotonic() + self.pause
            log.warning(
                "handler %s did not answer within %.0f s (for %s/%s); its calls pause for %.0f s",
                name,
                self.timeout,
                job.metadata.namespace,
                job.metadata.name,
                self.pause,
            )
            self.retry_soon(job.metadata.uid, self.pause)
            if plugins.NotYet in reraise:
                raise plugins.NotYet() from None
            return None
        except Exception as exc:
            log.warning(
                "handler %s failed for %s/%s: %s: %s; retrying later",
                job.spec.handler,
                job.metadata.namespace,
                job.metadata.name,
                type(exc).__name__,
                exc,
            )
            self.retry_soon(job.metadata.uid, 5.0)
            return None

    async def recorded_stop(self, host: str, uid: str) -> plugins.Stop | None:
        """The handler's reason for a teardown, as recorded with the cancel request."""
        desired = await self.proto.desired(host, uid)
        if desired is None or desired.stop is None:
            return None
        s = desired.stop
        return plugins.Stop(reason=s.reason, message=s.message, phase=Phase(s.phase), retry=s.retry)

    async def interpret(
        self, job: AnkaJob, plugin: plugins.HandlerPlugin, obs: Observation, stop: plugins.Stop | None
    ) -> Observation:
        """Let the handler name the outcome of a finished attempt (e.g. from the CI's verdict).
        Raises `plugins.NotYet` while the handler waits for that verdict."""
        if not (obs.phase.is_terminal() and obs.vm_deleted) or obs.attempt != job.status.attempts:
            return obs
        if stop is not None and obs.phase == ObservedPhase.CANCELLED:
            phase = ObservedPhase.FAILED if stop.retry else _OBSERVED[stop.phase]
            return obs.model_copy(
                update={
                    "phase": phase,
                    "retryable": stop.retry,
                    "reason": stop.reason,
                    "message": stop.message,
                }
            )
        if obs.retryable or obs.phase == ObservedPhase.CANCELLED:
            return obs
        verdict = await self.call(job, plugin.judge(job, obs), reraise=(plugins.NotYet,))
        if verdict is None:
            return obs
        if verdict.phase is None:
            update = {"phase": ObservedPhase.FAILED, "retryable": True}
        else:
            update = {"phase": _OBSERVED[verdict.phase], "retryable": False}
        return obs.model_copy(update={**update, "reason": verdict.reason, "message": verdict.message})

    async def ensure_secrets(
        self, job: AnkaJob, plugin: plugins.HandlerPlugin, host: str, desired: DesiredVM, *, sizing_done: bool
    ) -> None:
        """Level-triggered: whenever a live attempt needs secrets and its host has none, make them.

        Not for an unsized attempt the host has not reported on yet: it will most likely hand
        the job back once it knows the size, and the secret (a runner registration) be wasted."""
        if not desired.workload.needs_secrets or desired.cancel:
            return
        if desired.cpu == 0 and desired.memory_mib == 0 and not sizing_done:
            return
        if await self.proto.has_secret(host, desired.uid, desired.attempt):
            return
        env = await self.call(job, plugin.secrets(job, vm_name=desired.vm_name, attempt=desired.attempt))
        if env is not None:
            await self.proto.put_secret(host, desired.uid, desired.attempt, env)
