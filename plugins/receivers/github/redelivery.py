"""Find webhook deliveries we missed and ask GitHub to send them again.

GitHub does not retry a failed delivery by itself. The receiver answers 5xx whenever it could
not store an event (unlike the Go version, which answered 200 to everything, §9.5 item 34), so
"failed on GitHub" really means "maybe missed". On start and every `redelivery_interval_seconds`
a background task lists the hook's deliveries of the last `redelivery_hours`, and redelivers a
failed one only if its effect is still missing from Kubernetes:

1. `failed_deliveries` (pure, from the list alone): `workflow_job` deliveries with a status
   action, inside the window, not 2xx, whose event (guid) has no successful delivery; one per guid.
2. The scanner reads each candidate's payload, the AnkaJob it maps to, and — only when that
   AnkaJob is absent — the job's current status from the jobs API.
3. `plan` (pure) decides per candidate: redeliver when the AnkaJob is absent or records an
   earlier status; never when GitHub says the job already started or finished and we have no
   AnkaJob (a VM would serve nobody); and per job only the most advanced missing event, since
   its payload carries everything the earlier ones would have recorded.

Unlike the Go version it runs beside the HTTP server (never delaying /healthz or webhooks),
repeats periodically rather than only at start, and covers `in_progress` deliveries too. With
several receiver replicas only one scans per interval: each tick first claims the interval's
slot on a Lease (`scanlock`); a replica that does not get it skips (`result="skipped"`).
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from controller.kube import KubeError
from plugins.handlers.github.client import GitHubClient
from plugins.handlers.github.constants import STATUS_ORDER
from plugins.handlers.github.errors import GitHubError
from plugins.handlers.github.schemas import HookDelivery
from plugins.handlers.github.scope import Scope
from plugins.receivers.github import ankajobs
from plugins.receivers.github.events import (
    WORKFLOW_JOB,
    InvalidPayload,
    WorkflowJobEvent,
    anka_target,
    parse_workflow_job,
)
from plugins.receivers.github.metrics import ReceiverMetrics
from plugins.receivers.github.recorder import Recorder, StoredJob
from plugins.receivers.github.scanlock import ScanLock

log = logging.getLogger("anklet.receiver.github")

STARTED = frozenset({"in_progress", "completed"})
PAYLOAD_CACHE = 4096  # parsed payloads of deliveries seen in earlier scans (they never change)


def failed_deliveries(deliveries: Sequence[HookDelivery], *, since: datetime) -> list[HookDelivery]:
    """Failed `workflow_job` deliveries worth a look: one per event (guid), oldest first.

    A guid with any successful delivery was stored (the receiver answers 2xx only then). Of
    several failed attempts of one guid, the latest is kept: redelivering any of them sends the
    same event.
    """
    succeeded = {d.guid for d in deliveries if d.succeeded}
    latest: dict[str, HookDelivery] = {}
    for delivery in deliveries:
        if (
            delivery.event != WORKFLOW_JOB
            or delivery.action not in STATUS_ORDER
            or delivery.succeeded
            or delivery.guid in succeeded
            or delivery.delivered_at < since
        ):
            continue
        seen = latest.get(delivery.guid)
        if seen is None or (delivery.delivered_at, delivery.id) > (seen.delivered_at, seen.id):
            latest[delivery.guid] = delivery
    return sorted(latest.values(), key=lambda d: (d.delivered_at, d.id))


@dataclass(frozen=True)
class JobFacts:
    """What we know about one job attempt: its AnkaJob, and GitHub's status if the AnkaJob is absent."""

    stored: StoredJob
    github_status: str | None = None  # None: not asked or unknown


class Verdict(enum.StrEnum):
    REDELIVER = "redeliver"
    STORED = "stored"  # the AnkaJob already records this status or a later one
    SUPERSEDED = "superseded"  # a more advanced event of the same job is redelivered instead
    TOO_LATE = "too_late"  # no AnkaJob, and GitHub says the job already started or finished
    NOT_OURS = "not_ours"  # no anka-template label
    UNREADABLE = "unreadable"  # the payload is not a valid workflow_job event


def decide(event: WorkflowJobEvent, facts: JobFacts | None) -> Verdict:
    """One candidate on its own (before de-duplicating per job)."""
    if anka_target(event.workflow_job.labels) is None:
        return Verdict.NOT_OURS
    stored = facts.stored if facts is not None else StoredJob(exists=False)
    if stored.exists:
        return (
            Verdict.REDELIVER
            if ankajobs.rank(event.action) > ankajobs.rank(stored.status)
            else Verdict.STORED
        )
    if facts is not None and facts.github_status in STARTED:
        return Verdict.TOO_LATE
    return Verdict.REDELIVER


def plan(
    candidates: Sequence[tuple[HookDelivery, WorkflowJobEvent | None]], facts: Mapping[str, JobFacts]
) -> list[tuple[HookDelivery, Verdict]]:
    """A verdict for every candidate; per job at most one REDELIVER, the most advanced event."""
    verdicts: list[tuple[HookDelivery, Verdict]] = []
    chosen: dict[str, tuple[int, tuple[int, datetime, int]]] = {}  # job -> (index, how advanced)
    for delivery, event in candidates:
        if event is None:
            verdicts.append((delivery, Verdict.UNREADABLE))
            continue
        name = ankajobs.name_for(event)
        verdict = decide(event, facts.get(name))
        verdicts.append((delivery, verdict))
        if verdict is not Verdict.REDELIVER:
            continue
        here = (len(verdicts) - 1, (ankajobs.rank(event.action), delivery.delivered_at, delivery.id))
        previous = chosen.get(name)
        if previous is None:
            chosen[name] = here
        elif here[1] > previous[1]:
            verdicts[previous[0]] = (verdicts[previous[0]][0], Verdict.SUPERSEDED)
            chosen[name] = here
        else:
            verdicts[here[0]] = (delivery, Verdict.SUPERSEDED)
    return verdicts


def to_redeliver(verdicts: Sequence[tuple[HookDelivery, Verdict]]) -> list[HookDelivery]:
    return [delivery for delivery, verdict in verdicts if verdict is Verdict.REDELIVER]


@dataclass(frozen=True)
class ScanReport:
    listed: int
    candidates: int
    redelivered: int


class RedeliveryScanner:
    """The periodic scan: list, read payloads and facts, plan, redeliver."""

    def __init__(
        self,
        github: GitHubClient,
        recorder: Recorder,
        *,
        scope: Scope,
        hook_id: int,
        hours: float,
        metrics: ReceiverMetrics,
        lock: ScanLock | None = None,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._github = github
        #: The slot other replicas compete for; None scans on every tick (a lone receiver).
        self.lock = lock
        self._recorder = recorder
        self._scope = scope
        self._hook_id = hook_id
        self._window = timedelta(hours=hours)
        self._metrics = metrics
        self._clock = clock
        self._payloads: OrderedDict[int, WorkflowJobEvent | None] = OrderedDict()

    async def run(self, interval: float) -> None:
        """Scan now and then every `interval` seconds until cancelled; a failed scan is retried next time."""
        while True:
            started = time.monotonic()
            try:
                await self.tick(interval)
            except (GitHubError, KubeError) as exc:
                self._metrics.redelivery_scans.labels(result="error").inc()
                log.warning("redelivery scan failed (next in %.0f s): %s", interval, exc)
            except Exception:  # a bug must not end the scanning for the life of the process
                self._metrics.redelivery_scans.labels(result="error").inc()
                log.exception("redelivery scan crashed (next in %.0f s)", interval)
            await asyncio.sleep(max(0.0, interval - (time.monotonic() - started)))

    async def tick(self, interval: float) -> ScanReport | None:
        """One round: claim the next `interval`'s slot, then scan; None when another replica
        holds it (or our own slot still runs), counted as a skipped scan."""
        if self.lock is not None and not await self.lock.claim(interval):
            self._metrics.redelivery_scans.labels(result="skipped").inc()
            log.debug(
                "redelivery scan skipped: the slot is held by %s (lease %s)",
                self.lock.holder or "another replica",
                self.lock.ref,
            )
            return None
        return await self.scan_once()

    async def scan_once(self) -> ScanReport:
        since = self._clock() - self._window
        deliveries = await self._github.list_hook_deliveries(self._scope, self._hook_id, since)
        candidates = failed_deliveries(deliveries, since=since)
        with_events = [(delivery, await self._payload(delivery)) for delivery in candidates]
        facts = await self._facts([event for _, event in with_events if event is not None])
        verdicts = plan(with_events, facts)
        redelivered = 0
        for delivery, verdict in verdicts:
            if verdict is not Verdict.REDELIVER:
                log.debug("delivery %d (%s): %s", delivery.id, delivery.action, verdict)
                continue
            try:
                await self._github.redeliver(self._scope, self._hook_id, delivery.id)
            except GitHubError as exc:
                log.warning("cannot redeliver delivery %d: %s", delivery.id, exc)
                continue
            redelivered += 1
            self._metrics.redeliveries.inc()
            log.info(
                "requested redelivery of delivery %d (%s, originally %d)",
                delivery.id,
                delivery.action,
                delivery.status_code,
            )
        self._metrics.redelivery_scans.labels(result="ok").inc()
        self._metrics.redelivery_last_success.set(time.time())
        report = ScanReport(listed=len(deliveries), candidates=len(candidates), redelivered=redelivered)
        log.log(
            logging.INFO if report.redelivered else logging.DEBUG,  # a scan that changed nothing is not news
            "redelivery scan: %d deliveries in the last %.0f h, %d failed, %d redelivered",
            report.listed,
            self._window.total_seconds() / 3600,
            report.candidates,
            report.redelivered,
        )
        return report

    async def _payload(self, delivery: HookDelivery) -> WorkflowJobEvent | None:
        if delivery.id in self._payloads:
            self._payloads.move_to_end(delivery.id)
            return self._payloads[delivery.id]
        detail = await self._github.get_delivery(self._scope, self._hook_id, delivery.id)
        try:
            event: WorkflowJobEvent | None = parse_workflow_job(detail.request.payload)
        except InvalidPayload as exc:
            log.info("delivery %d has no usable payload: %s", delivery.id, exc)
            event = None
        self._payloads[delivery.id] = event
        while len(self._payloads) > PAYLOAD_CACHE:
            self._payloads.popitem(last=False)
        return event

    async def _facts(self, events: Sequence[WorkflowJobEvent]) -> dict[str, JobFacts]:
        facts: dict[str, JobFacts] = {}
        for event in events:
            name = ankajobs.name_for(event)
            if name in facts or anka_target(event.workflow_job.labels) is None:
                continue
            stored = await self._recorder.stored(name)
            github_status = None
            if not stored.exists:
                try:
                    job = await self._github.get_job(event.owner, event.repo, event.workflow_job.id)
                    github_status = job.status
                except GitHubError as exc:
                    log.info(
                        "cannot read job %d from GitHub (%s); assuming it still waits",
                        event.workflow_job.id,
                        exc,
                    )
            facts[name] = JobFacts(stored=stored, github_status=github_status)
        return facts
