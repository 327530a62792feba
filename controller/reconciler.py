"""The controller's reconciler: one serial writer that converges AnkaJobs with what hosts report.

kopf feeds it every watch event (`observe`); Redis events from hosts mark single jobs dirty or
say that capacity changed. Each pass reads the facts, calls the pure decisions in
`controller.phases` and `controller.scheduling`, and applies the results idempotently. Being
the only writer of AnkaJob status removes every schedule-vs-cancel race inside one replica;
the atomic reservation in Redis removes them between replicas.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Set
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from redis.exceptions import RedisError

from anklet import plugins
from anklet.backoff import Backoff
from anklet.logcontext import job_fields, log_context
from anklet.models import AnkaHostSpec, AnkaJob, Phase
from anklet.redis_protocol import ControllerProtocol, HostSnapshot
from anklet.vmname import VMName
from anklet.wire import DesiredVM, ObservedPhase, Reservation, StopReason
from controller import phases, scheduling
from controller.backlog import Backlog, Waiting
from controller.concurrency import bounded
from controller.handler_calls import HandlerCalls
from controller.host_mirror import HostMirror
from controller.job_timeline import JobTimeline
from controller.kube import KubeClient, KubeError
from controller.metrics import ControllerMetrics, decision_label, refusal_label
from controller.resources import resolve_resources
from controller.snapshots import SnapshotCache
from controller.ttl import ExpiryQueue

log = logging.getLogger("anklet.controller")

T = TypeVar("T")

_IO_ERRORS = (RedisError, KubeError, httpx.HTTPError, OSError)


class _JobNames(Mapping[str, str]):
    """namespace/name by job uid, looked up when asked: a mirror of a few hosts names the few
    jobs on them, instead of building a name for every job the controller holds."""

    def __init__(self, jobs: Mapping[str, AnkaJob]) -> None:
        self._jobs = jobs

    def __getitem__(self, uid: str) -> str:
        meta = self._jobs[uid].metadata
        return f"{meta.namespace}/{meta.name}"

    def __iter__(self) -> Iterator[str]:
        return iter(self._jobs)

    def __len__(self) -> int:
        return len(self._jobs)


def _rv(body: Mapping[str, Any]) -> int:
    raw = body.get("metadata", {}).get("resourceVersion") or "0"
    try:
        return int(raw)
    except ValueError:
        return 0


# How often a waiting job's explanation is rewritten when only its host counts moved.
UNSCHEDULABLE_REFRESH = timedelta(seconds=30)


class Reconciler:
    """Holds the controller's view of AnkaJobs and converges each dirty one."""

    def __init__(
        self,
        proto: ControllerProtocol,
        kube: KubeClient,
        *,
        resync_seconds: float = 30.0,
        host_lost_seconds: float = 30.0,
        starvation_seconds: float = 600.0,
        clock: Callable[[], datetime] = lambda: datetime.now(UTC),
        metrics: ControllerMetrics | None = None,
    ) -> None:
        self.proto = proto
        self.kube = kube
        self.resync_seconds = resync_seconds
        self.starvation_seconds = starvation_seconds
        self.clock = clock
        self.jobs: dict[str, AnkaJob] = {}
        self._versions: dict[str, int] = {}
        self._dirty: set[str] = set()
        self._capacity_changed = True
        self._wake = asyncio.Event()
        self._settled: dict[str, asyncio.Event] = {}
        self._expiring = ExpiryQueue()  # finished jobs by when their TTL runs out
        self._backoff = Backoff(log, "controller")
        self._background: set[asyncio.Task[None]] = set()
        # Jobs whose decision a background write stage is applying: no other step touches them
        # until it is done (then they are reconciled again), so each job has one writer at a time.
        self._in_flight: set[str] = set()
        self._deferred: set[str] = set()  # in-flight jobs marked dirty meanwhile
        self._replan_after_stage = False  # a capacity change skipped in-flight jobs
        self._stage_error: Exception | None = None  # a failed write stage, raised in `run`'s backoff
        self._mirroring: asyncio.Task[None] | None = None
        self._explained: dict[str, datetime] = {}  # when we last wrote a waiting job's explanation
        self.backlog = Backlog()  # the jobs waiting for a host, in queue order
        self._last_full_pass = float("-inf")  # monotonic time of the last pass that decided every job
        self._sweeping: asyncio.Task[None] | None = None
        self._resync_due = False
        self._orphans: dict[str, float] = {}
        self.snapshots = SnapshotCache(proto.snapshot)  # one fleet read serves back-to-back passes
        self.ankahosts = HostMirror(proto, kube, self.snapshots, lost_seconds=host_lost_seconds)
        self._hosts_dirty = True
        self._hosts_touched: set[str] = set()  # hosts named by host events since the last mirror
        self._mirror_all = True
        self.handlers = HandlerCalls(proto, self._retry_soon)
        self.metrics = metrics if metrics is not None else ControllerMetrics()
        self.timeline = JobTimeline(kube, self.metrics, clock)
        self.metrics.bind(self)

    @property
    def host_specs(self) -> Mapping[str, AnkaHostSpec]:
        """The operator's AnkaHost specs (cordon, labels, prePull) by host name."""
        return self.ankahosts.specs

    @property
    def fleet(self) -> list[HostSnapshot]:
        """The last fleet read from Redis (the metrics' fleet gauges)."""
        return self.ankahosts.fleet

    # ----- inputs -------------------------------------------------------------------------
    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Take one watch event (from kopf) into the view; newer resourceVersions only."""
        uid = body.get("metadata", {}).get("uid", "")
        if not uid:
            return
        if deleted:
            self.jobs.pop(uid, None)
            self._explained.pop(uid, None)
            self.backlog.discard(uid)
            self._versions.pop(uid, None)
            self.timeline.forget(uid)
            self._capacity_changed = True
            self._wake.set()
            return
        rv = _rv(body)
        if rv and rv < self._versions.get(uid, 0):
            return
        try:
            job = AnkaJob.model_validate(dict(body))
        except ValidationError as exc:
            log.error("ignoring malformed AnkaJob %s: %s", body.get("metadata", {}).get("name"), exc)
            return
        if uid not in self.jobs:
            self.timeline.first_seen(job)
        self._store(uid, job, rv)
        self.mark(uid)

    def _store(self, uid: str, job: AnkaJob, rv: int) -> None:
        self.jobs[uid] = job
        self._versions[uid] = rv
        if self._wants_host(job):
            self.backlog.put(job)
        else:
            self.backlog.discard(uid)

    def observe_host(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Take one AnkaHost watch event: the operator's spec (cordon, labels, prePull)."""
        if not self.ankahosts.observe(body, deleted=deleted):
            return
        name = body.get("metadata", {}).get("name", "")
        self._hosts_dirty = True
        self._hosts_touched.add(name)
        self.capacity_changed()

    def mark(self, uid: str) -> None:
        self._dirty.add(uid)
        self._wake.set()

    def capacity_changed(self, host: str | None = None) -> None:
        """Re-plan pending jobs; capacity moved on `host` (only its view is read again) or anywhere."""
        self._capacity_changed = True
        self.snapshots.invalidate(host)
        self._wake.set()

    async def wait_settled(self, uid: str, timeout: float) -> bool:
        """For the finalizer: wait until the job is terminal (its VM is gone) or has none."""
        job = self.jobs.get(uid)
        if job is None or job.status.phase.is_terminal():
            return True
        event = self._settled.setdefault(uid, asyncio.Event())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(event.wait(), timeout)
        job = self.jobs.get(uid)
        return job is None or job.status.phase.is_terminal()

    # ----- loops --------------------------------------------------------------------------
    async def run(self) -> None:
        """Converge dirty jobs whenever woken; a timed full resync catches anything missed."""
        self._dirty.update(self.jobs)
        while True:
            timeout = self.resync_seconds
            if (deadline := self._expiring.next_deadline()) is not None:
                timeout = max(0.0, min(timeout, deadline - time.time()))
            if not self._dirty and not self._capacity_changed:
                try:
                    await asyncio.wait_for(self._wake.wait(), timeout)
                except TimeoutError:
                    self._dirty.update(self.jobs)
                    self._capacity_changed = True
                    self._resync_due = True
            self._wake.clear()
            self._collect_gc()
            dirty, self._dirty = self._dirty, set()
            capacity, self._capacity_changed = self._capacity_changed, False
            resync, self._resync_due = self._resync_due, False
            try:
                if self._stage_error is not None:
                    error, self._stage_error = self._stage_error, None
                    raise error
                await self.reconcile(dirty, capacity)
                # AnkaHosts after the jobs, in the background: mirroring many hosts must not delay
                # a placement. One mirror at a time; what changes meanwhile goes in the next one.
                if (self._hosts_dirty or resync) and (self._mirroring is None or self._mirroring.done()):
                    self._start_mirror(everything=resync)
                if resync:
                    await self.release_orphans()
                    # A sweep lists a CI's runners (all pages): in the background, one at a time.
                    if self._sweeping is None or self._sweeping.done():
                        self._sweeping = asyncio.get_running_loop().create_task(self.sweep_plugins())
                self._backoff.succeeded()
            except _IO_ERRORS as exc:
                self._dirty |= dirty
                self._capacity_changed |= capacity
                self._resync_due |= resync
                await self._backoff.failed(exc)

    def _start_mirror(self, *, everything: bool) -> None:
        self._hosts_dirty = False
        touched, self._hosts_touched = self._hosts_touched, set()
        everything, self._mirror_all = everything or self._mirror_all, False
        task = asyncio.get_running_loop().create_task(
            self.mirror_hosts(changed=None if everything else touched)
        )
        self._mirroring = task

        def done(task: asyncio.Task[None]) -> None:
            error = None if task.cancelled() else task.exception()
            if isinstance(error, Exception):
                self._stage_error = error  # through `run`'s backoff
                self._hosts_dirty = self._mirror_all = True
            if self._hosts_dirty:
                self._wake.set()

        task.add_done_callback(done)

    async def follow_host_events(self) -> None:
        """Turn host events from Redis into dirty marks; a full resync after every outage."""
        last = await self._retrying(self.proto.latest_event_id)
        self._dirty.update(self.jobs)
        backoff = Backoff(log, "host event stream")
        while True:
            try:
                last, events = await self.proto.read_events(
                    last, block_ms=int(min(self.resync_seconds, 10.0) * 1000)
                )
                if backoff.failing:
                    self._dirty.update(self.jobs)
                    self.capacity_changed()
                backoff.succeeded()
            except RedisError as exc:
                await backoff.failed(exc)
                continue
            for event in events:
                uid = event.get("uid")
                if event.get("kind") == "observed" and uid:
                    self.mark(uid)
                else:
                    self._hosts_dirty = True
                    if event.get("host"):
                        self._hosts_touched.add(event["host"])
                    else:
                        self._mirror_all = True
                    self.capacity_changed(event.get("host") or None)

    async def _retrying(self, fn: Callable[[], Any]) -> Any:
        backoff = Backoff(log, "redis")
        while True:
            try:
                result = await fn()
            except RedisError as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            return result

    async def mirror_hosts(self, *, changed: set[str] | None = None) -> None:
        """AnkaHosts follow the Macs' registrations (only the `changed` ones, unless None: a
        release on one Mac must not cost a status build for every Mac); the jobs of hosts
        whose lease stays gone are reconciled (they move or fail `HostLost`)."""
        lost_now = await self.ankahosts.mirror(_JobNames(self.jobs), changed=changed)
        if not lost_now:
            return
        for uid, job in self.jobs.items():
            if job.status.host in lost_now and not job.status.phase.is_terminal():
                self.mark(uid)

    async def sweep_plugins(self) -> None:
        """Let each handler remove its leftovers (e.g. runner registrations nothing owns)."""
        for name, plugin in plugins.handler_plugins().items():
            jobs = [j for j in self.jobs.values() if j.spec.handler == name]
            try:
                await plugin.sweep(jobs)
            except Exception as exc:
                log.warning("handler %s sweep failed: %s: %s", name, type(exc).__name__, exc)

    async def release_orphans(self) -> None:
        """Free reservations whose AnkaJob no longer exists (e.g. its finalizer was removed by
        hand). Only after two resyncs in a row, so a view still loading after a restart cannot
        free a live job's slot; the host then deletes the VM as nothing desires it."""
        now = time.monotonic()
        seen: dict[str, float] = {}
        for host in await self.proto.snapshot():
            for r in host.reservations:
                if r.uid in self.jobs:
                    continue
                first = self._orphans.get(r.uid, now)
                seen[r.uid] = first
                if now - first >= self.resync_seconds:
                    log.warning("releasing %s on %s: its AnkaJob no longer exists", r.uid, host.info.name)
                    await self.proto.release(host.info.name, r.uid, r.attempt)
                    self.capacity_changed(host.info.name)
        self._orphans = seen

    # ----- one pass -----------------------------------------------------------------------
    async def reconcile(self, dirty: set[str], capacity_changed: bool) -> None:
        pending: dict[str, AnkaJob] = {}

        async def one(uid: str, job: AnkaJob) -> None:
            if await self._scoped(job, self._reconcile_one(job)):
                pending[uid] = job

        # Jobs waiting for a host go first (dispatch latency is theirs to lose; reconciling them
        # costs no round trip), then everything else. Jobs are independent: a few are in flight
        # at once, so one job's Redis and API round trips do not wait behind every other's.
        self._deferred |= dirty & self._in_flight  # they come back when their stage ends
        current = {
            uid: job for uid in sorted(dirty - self._in_flight) if (job := self.jobs.get(uid)) is not None
        }
        waiting = {uid: job for uid, job in current.items() if self._wants_host(job)}
        await bounded(one(uid, job) for uid, job in waiting.items())
        if capacity_changed and not self._in_flight.isdisjoint(self.backlog.uids()):
            self._replan_after_stage = True  # in-flight jobs are skipped: plan them once they land
        if pending or (capacity_changed and len(self.backlog) > len(self._in_flight & self.backlog.uids())):
            # Only a capacity pass may skip jobs, and never one marked since: its reason may differ.
            await self._schedule(list(pending.values()), capacity=capacity_changed, changed=set(waiting))
        # Everything else (observations, cancels, lost hosts: Redis, API and CI round trips) runs
        # as a background stage, so a slow step (a CI API waiting out its rate limit) does not
        # hold back the next pass. A job it hands back to the queue comes back when it ends.
        others = {uid: job for uid, job in current.items() if uid not in waiting}
        if others:

            async def step(uid: str, job: AnkaJob) -> None:
                if await self._scoped(job, self._reconcile_one(job)):
                    self._deferred.add(uid)  # requeued (a retry, a lost host): plan it again

            self._start_stage(set(others), bounded(step(uid, job) for uid, job in others.items()))

    @staticmethod
    async def _scoped(job: AnkaJob, step: Awaitable[T]) -> T:
        """Run one job's step with the job in the log context of every line it writes."""
        status = job.status
        fields = job_fields(
            job.metadata.namespace,
            job.metadata.name,
            uid=job.metadata.uid,
            attempt=status.attempts,
            host=status.host,
            vm=status.vm_name,
        )
        with log_context(**fields):
            return await step

    @staticmethod
    def _wants_host(job: AnkaJob) -> bool:
        return (
            job.status.phase == Phase.PENDING
            and job.status.host is None
            and not job.spec.cancel
            and job.metadata.deletion_timestamp is None
        )

    async def _reconcile_one(self, job: AnkaJob) -> bool:
        """Converge one job; True when it waits for a host."""
        status, now = job.status, self.clock()
        plugin = plugins.handler_plugins().get(job.spec.handler)
        if plugin is not None:
            job = await self._mirror(job, plugin)
            status = job.status
        if status.phase.is_terminal():
            self._settle(job)
            self._plan_gc(job)
            return False
        try:
            plugin = plugins.handler(job.spec.handler)
        except plugins.UnknownPlugin as exc:
            await self._finish(job, Phase.FAILED, "InvalidSpec", str(exc))
            return False
        stop = await self.handlers.call(job, plugin.check(job))
        if stop is not None and stop.retry and status.host is None:
            stop = None  # nothing placed yet: nothing to retry
        cancelling = job.spec.cancel or job.metadata.deletion_timestamp is not None or stop is not None
        if status.host is None:
            if stop is not None:
                await self._finish(job, stop.phase, stop.reason, stop.message)
                return False
            if cancelling:
                await self._finish(job, Phase.CANCELLED, "Cancelled", "cancelled before a VM was created")
                return False
            try:
                plugin.validate(job.spec)
            except plugins.InvalidJob as exc:
                await self._finish(job, Phase.FAILED, "InvalidSpec", str(exc))
                return False
            return True
        host, uid = status.host, job.metadata.uid
        obs = await self.proto.observation(host, uid)
        if stop is None and obs is not None and obs.phase == ObservedPhase.CANCELLED:
            stop = await self.handlers.recorded_stop(host, uid)
        if obs is not None:
            try:
                obs = await self.handlers.interpret(job, plugin, obs, stop)
            except plugins.NotYet:
                return False
            outcome = phases.apply_observation(
                status,
                obs,
                backoff_limit=job.spec.backoff_limit,
                now=now,
                cancel_requested=cancelling or stop is not None,
            )
            before = job
            if outcome.patch is not None:
                job = await self._write(job, outcome.patch)
            if outcome.release:
                await self.proto.release(host, uid, obs.attempt)
                self.capacity_changed(host)
                if not job.status.phase.is_terminal():  # a retry: clean up after the ended attempt
                    self._background.add(asyncio.get_running_loop().create_task(self._cleanup(before)))
                return self._wants_host(job)
        if cancelling:
            recorded = None if stop is None else StopReason(**vars(stop))
            if not await self.proto.cancel(host, uid, stop=recorded) and obs is None and stop and stop.retry:
                job = await self._write(job, phases.requeue(status, reason=stop.reason, message=stop.message))
                await self.proto.release(host, uid, status.attempts)
                self.capacity_changed(host)
                return self._wants_host(job)
            if not await self.proto.cancel(host, uid) and obs is None:
                phase, reason, message = (
                    (stop.phase, stop.reason, stop.message)
                    if stop is not None
                    else (Phase.CANCELLED, "Cancelled", "cancelled; no VM was left on the host")
                )
                await self._finish(job, phase, reason, message)
                await self.proto.release(host, uid, status.attempts)
                self.capacity_changed(host)
            return False
        if self.ankahosts.loss.lost(host, time.monotonic()):
            patch = phases.host_lost(status, backoff_limit=job.spec.backoff_limit, now=now)
            if patch is not None:
                job = await self._write(job, patch)  # its Event: Failed (HostLost) or HostLost (retry)
            await self.proto.release(host, uid, status.attempts)
            self.capacity_changed(host)
            return self._wants_host(job)
        desired = await self.proto.desired(host, uid)
        if obs is None and desired is None:
            job = await self._write(
                job,
                phases.requeue(
                    status, reason=phases.RESERVATION_LOST, message="the host no longer holds the job"
                ),
            )
            return self._wants_host(job)
        if desired is not None and (obs is None or not obs.phase.is_terminal()):
            await self.handlers.ensure_secrets(job, plugin, host, desired, sizing_done=obs is not None)
        return False

    async def _mirror(self, job: AnkaJob, plugin: plugins.HandlerPlugin) -> AnkaJob:
        """Write the handler's own status fields when they differ from what status shows."""
        fields = plugin.status_fields(job)
        if not fields:
            return job
        current = job.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        changed = {k: v for k, v in fields.items() if current.get(k) != v}
        return await self._write(job, changed) if changed else job

    def _retry_soon(self, uid: str, delay: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self.mark, uid)

    async def _schedule(
        self, jobs: list[AnkaJob], *, capacity: bool = False, changed: Set[str] = frozenset()
    ) -> None:
        """One scheduling pass, timed and counted for the metrics."""
        started = time.perf_counter()
        try:
            await self._schedule_pass(jobs, capacity=capacity, changed=changed)
        finally:
            self.metrics.passes.inc()
            self.metrics.pass_duration.observe(time.perf_counter() - started)

    async def _schedule_pass(self, jobs: list[AnkaJob], *, capacity: bool, changed: Set[str]) -> None:
        """Plan `jobs` (with `capacity`: every waiting job), reserve the placements, then write
        statuses in the background.

        A capacity pass decides every waiting job once per UNSCHEDULABLE_REFRESH, which
        refreshes the host counts in their explanations. Between those, once the fleet has no
        free slot left, the jobs that already say why they wait (and were not `changed` since)
        are skipped (`scheduling.plan`'s `quiet`), and only the head of the backlog is read
        (`scheduling.plan_head`): a freed slot costs the jobs up to it, not the whole backlog."""
        skip = False
        if capacity:
            now = time.monotonic()
            skip = now - self._last_full_pass < UNSCHEDULABLE_REFRESH.total_seconds()
            if not skip:
                self._last_full_pass = now
        snapshot = self.ankahosts.take(await self.snapshots.get(), time.monotonic())
        sizes = await self.proto.template_sizes()
        wall = self.clock()
        wall_ts = wall.timestamp()
        by_uid: dict[str, AnkaJob] = {}
        built: dict[str, scheduling.JobRequest] = {}
        # A job's size depends only on its spec's resources, template and tag; without resources
        # it is looked up across every host's templates, so look each combination up once.
        resolved: dict[tuple[str, str | None, tuple[int, int] | None], tuple[int, int]] = {}

        def request(entry: Waiting) -> scheduling.JobRequest:
            known = built.get(entry.uid)
            if known is not None:
                return known
            job = entry.job
            spec = job.spec
            own = (spec.resources.cpu, spec.resources.memory_mib) if spec.resources is not None else None
            key = (spec.template, spec.tag, own)
            if key not in resolved:
                resolved[key] = resolve_resources(spec, snapshot, sizes)
            cpu, memory = resolved[key]
            by_uid[entry.uid] = job
            built[entry.uid] = scheduling.JobRequest(
                uid=entry.uid,
                attempts=job.status.attempts,
                cpu=cpu,
                memory_mib=memory,
                template=spec.template,
                tag=spec.tag,
                host_selector=spec.host_selector or {},
                queue=spec.queue,
                priority=spec.priority,
                waiting_seconds=entry.waiting(wall_ts),
                mounts=bool(spec.mounts),
            )
            return built[entry.uid]

        def quiet(r: scheduling.JobRequest) -> bool:
            return r.uid not in changed and r.uid not in self.backlog.unexplained()

        if skip:
            queued = self.backlog
            held = {r.uid for h in snapshot for r in h.reservations}
            always = {uid for uid in (changed | queued.unexplained() | held) if uid in queued}
            if self.starvation_seconds is not None:
                always |= {e.uid for e in queued.created_by(wall_ts - self.starvation_seconds)}
            must = sorted(
                (e for uid in always - self._in_flight if (e := queued.get(uid))), key=lambda e: e.key
            )

            def head(size: int) -> tuple[list[scheduling.JobRequest], bool]:
                entries, complete = queued.head(size, skip=self._in_flight)
                return [request(e) for e in entries], complete

            decisions = scheduling.plan_head(
                head,
                [request(e) for e in must],
                snapshot,
                quiet=quiet,
                starvation_seconds=self.starvation_seconds,
            )
        else:
            if capacity:
                entries = list(self.backlog.ordered(skip=self._in_flight))
            else:
                entries = sorted(
                    (self.backlog.get(j.metadata.uid) or Waiting.of(j) for j in jobs), key=lambda e: e.key
                )
            decisions = scheduling.plan(
                [request(e) for e in entries], snapshot, starvation_seconds=self.starvation_seconds
            )
        for _, decision in decisions:
            self.metrics.decisions.labels(decision=decision_label(decision)).inc()
        # Dispatch first: every placement of the pass is reserved (which wakes its host) before
        # any status is written, so a large pass does not keep the last host waiting for every
        # earlier job's status and Event writes. Each job's own order is unchanged (reserve, then
        # its status); jobs are independent, so both stages keep a few of them in flight at once.
        reserved: dict[str, tuple[DesiredVM, str] | Exception] = {}

        async def reserve(job: AnkaJob, request: scheduling.JobRequest, host: str) -> None:
            reserved[job.metadata.uid] = await self._scoped(job, self._reserve(job, request, host))

        await bounded(
            reserve(by_uid[r.uid], r, d.host) for r, d in decisions if isinstance(d, scheduling.Placement)
        )
        steps = [
            (r, d)
            for r, d in decisions
            # A waiting job whose status already gives this reason needs nothing: skip the step.
            if not (
                isinstance(d, scheduling.Unschedulable)
                and not d.permanent
                and not phases.unschedulable_write_due(
                    by_uid[r.uid].status,
                    d.message,
                    wall,
                    last_written=self._explained.get(r.uid),
                    refresh=UNSCHEDULABLE_REFRESH,
                )
            )
        ]
        log.debug(
            "pass: %d jobs decided, %d placed, %d to write, %d already in flight",
            len(decisions),
            len(reserved),
            len(steps),
            len(self._in_flight),
        )
        if not steps:
            return
        # The status and Event writes run as a background stage, so the next pass (a job that
        # arrived meanwhile, a freed slot) is planned and reserved without waiting behind them.
        self._start_stage(
            {r.uid for r, _ in steps},
            bounded(
                self._scoped(
                    by_uid[r.uid],
                    self._apply_decision(by_uid[r.uid], r, d, snapshot, reserved=reserved.get(r.uid)),
                )
                for r, d in steps
            ),
        )

    def _start_stage(self, uids: set[str], work: Coroutine[Any, Any, None]) -> None:
        """Run `work` (steps of the jobs `uids`) in the background; until it ends, those jobs are
        in flight: no other step touches them (one writer per job), marks on them are deferred."""
        self._in_flight |= uids
        stage = asyncio.get_running_loop().create_task(work)
        self._background.add(stage)
        stage.add_done_callback(lambda task: self._stage_done(task, uids))

    def _stage_done(self, task: asyncio.Task[None], uids: set[str]) -> None:
        """A stage ended. Its jobs that something marked meanwhile are reconciled again, and
        if a capacity change skipped any in-flight job, waiting jobs are re-planned; after a
        failure all of its jobs are reconciled again, and the error goes through `run`'s backoff as
        if the pass had written inline. (Re-marking every still-waiting job instead would keep a
        loop of passes and stages going by itself.)"""
        self._in_flight -= uids
        self._background.discard(task)
        error = None if task.cancelled() else task.exception()
        if isinstance(error, Exception):
            self._stage_error = error
            again = uids
        else:
            again = uids & self._deferred
        self._deferred -= uids
        if self._replan_after_stage:
            # A capacity change skipped some of these jobs: re-plan everything waiting, once.
            self._replan_after_stage = False
            self._capacity_changed = True
            self._wake.set()
        log.debug("write stage of %d jobs done; %d to reconcile again", len(uids), len(again))
        if again:
            self._dirty |= again
            self._wake.set()

    async def _apply_decision(
        self,
        job: AnkaJob,
        request: scheduling.JobRequest,
        decision: scheduling.Decision,
        snapshot: list[HostSnapshot],
        *,
        reserved: tuple[DesiredVM, str] | Exception | None = None,
    ) -> None:
        now = self.clock()
        if isinstance(decision, scheduling.Adopt):
            name = str(VMName(job.metadata.uid, decision.attempt))
            patch = phases.scheduled(
                job.status, host=decision.host, vm_name=name, attempt=decision.attempt, now=now
            )
            if patch is not None:
                await self._write(job, patch)
            return
        if isinstance(decision, scheduling.ReleaseStale):
            await self.proto.release(decision.host, job.metadata.uid, decision.attempt)
            self.capacity_changed(decision.host)
            return
        if isinstance(decision, scheduling.Unschedulable):
            if decision.permanent:
                await self._finish(job, Phase.FAILED, "Unschedulable", decision.message)
                return
            patch = phases.pending_unschedulable(job.status, decision.message, now)
            if patch is not None:
                self._explained[job.metadata.uid] = now
                await self._write(job, patch)  # its Event: Unschedulable, with the new reason
            return
        outcome = reserved if reserved is not None else await self._reserve(job, request, decision.host)
        if isinstance(outcome, Exception):
            await self._finish(job, Phase.FAILED, "InvalidSpec", str(outcome))
            return
        desired, result = outcome
        if result != "OK":
            return
        attempt, vm_name = desired.attempt, desired.vm_name
        patch = phases.scheduled(job.status, host=decision.host, vm_name=vm_name, attempt=attempt, now=now)
        if patch is not None:
            job = await self._write(job, patch)  # its Event: Scheduled
        # The host is already pulling and cloning; the secrets race it and usually win.
        await self.handlers.ensure_secrets(
            job, plugins.handler(job.spec.handler), decision.host, desired, sizing_done=False
        )

    async def _reserve(
        self, job: AnkaJob, request: scheduling.JobRequest, host: str
    ) -> tuple[DesiredVM, str] | Exception:
        """Reserve the job's next attempt on `host` (the host wakes at once): the desired VM and
        'OK' or the refusal; the handler's error when the job's workload cannot be built."""
        attempt = job.status.attempts + 1
        try:
            workload = plugins.handler(job.spec.handler).workload(job)
        except (plugins.UnknownPlugin, plugins.InvalidJob) as exc:
            return exc
        desired = DesiredVM(
            uid=job.metadata.uid,
            namespace=job.metadata.namespace,
            name=job.metadata.name,
            attempt=attempt,
            vm_name=str(VMName(job.metadata.uid, attempt)),
            template=job.spec.template,
            tag=job.spec.tag,
            cpu=request.cpu,
            memory_mib=request.memory_mib,
            handler=job.spec.handler,
            workload=workload,
            mounts=list(job.spec.mounts or []),
        )
        result = await self.proto.reserve(host, desired)
        if result != "OK":
            log.info("reservation of %s on %s refused (%s); rescheduling", job.metadata.name, host, result)
            self.metrics.reservations_refused.labels(reason=refusal_label(result)).inc()
            self.capacity_changed(host)
        else:
            self._hosts_touched.add(host)  # its AnkaHost shows the allocation at the next mirror
            self.snapshots.reserved(
                host,
                Reservation(uid=desired.uid, attempt=attempt, cpu=desired.cpu, memory_mib=desired.memory_mib),
            )
        return desired, result

    # ----- writes -------------------------------------------------------------------------
    async def _finish(self, job: AnkaJob, phase: Phase, reason: str, message: str) -> None:
        patch = phases.finished(job.status, phase, reason=reason, message=message, now=self.clock())
        if patch is not None:
            await self._write(job, patch)  # its Event: Succeeded, Failed or Cancelled

    async def _write(self, job: AnkaJob, patch: phases.Patch) -> AnkaJob:
        body = await self.kube.patch_status(job.metadata.namespace, job.metadata.name, patch)
        if body is None:
            return job
        updated = AnkaJob.model_validate(body)
        uid = job.metadata.uid
        if uid in self.jobs and _rv(body) >= self._versions.get(uid, 0):
            self._store(uid, updated, _rv(body))
        before, after = job.status.phase, updated.status.phase
        if before != after:
            log.info(
                "job %s/%s %s → %s (%s)",
                job.metadata.namespace,
                job.metadata.name,
                before.value,
                after.value,
                updated.status.message or "",
            )
            if after.is_terminal():
                self._background.add(asyncio.get_running_loop().create_task(self._cleanup(updated)))
                self._settle(updated)
                self._plan_gc(updated)
        await self.timeline.record(job, updated)
        return updated

    async def _cleanup(self, job: AnkaJob) -> None:
        with contextlib.suppress(plugins.UnknownPlugin):
            await self.handlers.call(job, plugins.handler(job.spec.handler).cleanup(job))

    def _settle(self, job: AnkaJob) -> None:
        event = self._settled.pop(job.metadata.uid, None)
        if event is not None:
            event.set()

    def _plan_gc(self, job: AnkaJob) -> None:
        self._expiring.plan(job)

    def _collect_gc(self) -> None:
        """Delete finished jobs whose TTL expired (the finalizer then lets them go at once)."""
        for uid in self._expiring.due(time.time()):
            job = self.jobs.get(uid)
            if job is not None and job.status.phase.is_terminal():
                self._background.add(asyncio.get_running_loop().create_task(self._delete(job)))
        self._background = {t for t in self._background if not t.done()}

    async def _delete(self, job: AnkaJob) -> None:
        log.info("deleting %s/%s: ttlSecondsAfterFinished expired", job.metadata.namespace, job.metadata.name)
        try:
            await self.kube.delete(job.metadata.namespace, job.metadata.name)
        except _IO_ERRORS as exc:
            log.warning("could not delete expired %s: %s; retrying in 10 s", job.metadata.name, exc)
            self._expiring.at(job.metadata.uid, time.time() + 10.0)
            self._wake.set()
