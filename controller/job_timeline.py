"""A job's history as people and dashboards see it: one Kubernetes Event per transition, and the
time each stage took (queued → scheduled → VM ready → running → finished) in the metrics.

Writes can repeat (a step run twice, a stale view, a restart), so Events go through a ledger
that posts each transition once; stage timings start when this process first saw the stage.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from anklet.models import AnkaJob, Phase
from controller.events import EventLedger, is_phase_change, job_events
from controller.kube import KubeClient
from controller.metrics import STAGES, ControllerMetrics, phase_started, queued_since


class JobTimeline:
    """Posts each job's Events once and times its stages."""

    def __init__(self, kube: KubeClient, metrics: ControllerMetrics, clock: Callable[[], datetime]) -> None:
        self.kube = kube
        self.metrics = metrics
        self.clock = clock
        self._ledger = EventLedger()  # transitions already posted as Events, per job uid
        self._since: dict[str, tuple[Phase, float]] = {}  # when each job entered its phase (Unix)

    def first_seen(self, job: AnkaJob) -> None:
        """A job new to this process: a fresh one starts its queueing stage at its creation."""
        if job.status.phase == Phase.PENDING and job.status.attempts == 0:
            first_seen = self.clock().timestamp()
            self._since[job.metadata.uid] = (
                Phase.PENDING,
                queued_since(job.metadata.creation_timestamp, first_seen),
            )

    def forget(self, uid: str) -> None:
        self._ledger.forget(uid)
        self._since.pop(uid, None)

    async def record(self, before: AnkaJob, after: AnkaJob) -> None:
        """Post the Events of the transition a write made, once each (the ledger drops what a
        repeated step or a stale view would post again), and time the stage that ended."""
        uid = after.metadata.uid
        for event in job_events(before.status, after.status, backoff_limit=after.spec.backoff_limit):
            if not self._ledger.fresh(uid, event.key):
                continue
            if is_phase_change(event):
                self._measure(before, after, event.reason)
            await self.kube.event(after, reason=event.reason, message=event.message, type_=event.type)

    def _measure(self, before: AnkaJob, after: AnkaJob, reason: str) -> None:
        uid, now = after.metadata.uid, self.clock().timestamp()
        left, entered = before.status.phase, after.status.phase
        created = before.metadata.creation_timestamp
        started = phase_started(before.status, self._since.get(uid), created=created)
        stage = STAGES.get(left)
        if stage is not None and started is not None and now >= started:
            self.metrics.stage_duration.labels(stage=stage).observe(now - started)
            if left == Phase.PENDING and entered == Phase.SCHEDULED and before.status.attempts == 0:
                self.metrics.scheduling_latency.observe(now - started)
        if entered.is_terminal():
            self.metrics.finished.labels(phase=entered.value).inc()
            self._since.pop(uid, None)
            return
        if entered == Phase.PENDING:
            self.metrics.retries.labels(reason=reason).inc()
        self._since[uid] = (entered, now)
