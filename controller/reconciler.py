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
import heapq
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import httpx
from pydantic import ValidationError
from redis.exceptions import RedisError

from anklet import plugins
from anklet.backoff import Backoff
from anklet.models import AnkaHostSpec, AnkaHostStatus, AnkaJob, Phase
from anklet.redis_protocol import ControllerProtocol, HostSnapshot
from anklet.vmname import VMName
from anklet.wire import DesiredVM, HostConfig, Observation, ObservedPhase, StopReason
from controller import hosts, phases, scheduling
from controller.kube import KubeClient, KubeError
from controller.resources import resolve_resources

log = logging.getLogger("anklet.controller")

T = TypeVar("T")
_OBSERVED = {
    Phase.SUCCEEDED: ObservedPhase.SUCCEEDED,
    Phase.FAILED: ObservedPhase.FAILED,
    Phase.CANCELLED: ObservedPhase.CANCELLED,
}

_IO_ERRORS = (RedisError, KubeError, httpx.HTTPError, OSError)


def _waiting(job: AnkaJob, now: datetime) -> float:
    created = job.metadata.creation_timestamp
    return max(0.0, (now - created).total_seconds()) if created is not None else 0.0


def _rv(body: Mapping[str, Any]) -> int:
    raw = body.get("metadata", {}).get("resourceVersion") or "0"
    try:
        return int(raw)
    except ValueError:
        return 0


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
        self._gc_heap: list[tuple[float, str]] = []
        self._backoff = Backoff(log, "controller")
        self._background: set[asyncio.Task[None]] = set()
        self._resync_due = False
        self._orphans: dict[str, float] = {}
        self._gc_planned: set[str] = set()
        self.host_specs: dict[str, AnkaHostSpec] = {}
        self.host_statuses: dict[str, AnkaHostStatus] = {}
        self.loss = hosts.LossTracker(grace=host_lost_seconds)
        self._hosts_dirty = True
        self._host_mirror_failed = False
        self._host_configs: dict[str, HostConfig] = {}

    # ----- inputs -------------------------------------------------------------------------
    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Take one watch event (from kopf) into the view; newer resourceVersions only."""
        uid = body.get("metadata", {}).get("uid", "")
        if not uid:
            return
        if deleted:
            self.jobs.pop(uid, None)
            self._versions.pop(uid, None)
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
        self.jobs[uid] = job
        self._versions[uid] = rv
        self.mark(uid)

    def observe_host(self, body: Mapping[str, Any], *, deleted: bool = False) -> None:
        """Take one AnkaHost watch event: the operator's spec (cordon, labels, prePull)."""
        name = body.get("metadata", {}).get("name", "")
        if not name:
            return
        if deleted:
            self.host_specs.pop(name, None)
            self.host_statuses.pop(name, None)
        else:
            try:
                self.host_specs[name] = AnkaHostSpec.model_validate(body.get("spec") or {})
                self.host_statuses[name] = AnkaHostStatus.model_validate(body.get("status") or {})
            except ValidationError as exc:
                log.error("ignoring malformed AnkaHost %s: %s", name, exc)
                return
        self._hosts_dirty = True
        self.capacity_changed()

    def mark(self, uid: str) -> None:
        self._dirty.add(uid)
        self._wake.set()

    def capacity_changed(self) -> None:
        self._capacity_changed = True
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
            if self._gc_heap:
                timeout = max(0.0, min(timeout, self._gc_heap[0][0] - time.time()))
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
                if self._hosts_dirty or resync:
                    self._hosts_dirty = False
                    await self.mirror_hosts()
                await self.reconcile(dirty, capacity)
                if resync:
                    await self.release_orphans()
                    await self.sweep_plugins()
                self._backoff.succeeded()
            except _IO_ERRORS as exc:
                self._dirty |= dirty
                self._capacity_changed |= capacity
                self._resync_due |= resync
                await self._backoff.failed(exc)

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
                    self.capacity_changed()

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

    async def mirror_hosts(self) -> None:
        """AnkaHosts follow the Macs' registrations; hosts whose lease stays gone are lost."""
        snapshot = await self.proto.snapshot()
        now = time.monotonic()
        was_lost = self.loss.lost_hosts(now)
        self.loss.update(snapshot, now)
        names = {uid: f"{j.metadata.namespace}/{j.metadata.name}" for uid, j in self.jobs.items()}
        for snap in snapshot:
            try:
                await self._mirror_host(snap, names)
            except KubeError as exc:
                # Without the AnkaHost CRD (or its RBAC) hosts still schedule; say so once.
                if not self._host_mirror_failed:
                    log.error("cannot mirror hosts into AnkaHost objects: %s", exc)
                self._host_mirror_failed = True
        for lost in self.loss.lost_hosts(now) - was_lost:
            log.warning("host %s lost: no heartbeat for %.0f s; moving its jobs", lost, self.loss.grace)
        lost_now = self.loss.lost_hosts(now)
        for uid, job in self.jobs.items():
            if job.status.host in lost_now and not job.status.phase.is_terminal():
                self.mark(uid)

    async def _mirror_host(self, snap: HostSnapshot, names: Mapping[str, str]) -> None:
        name = snap.info.name
        previous = self.host_statuses.get(name)
        status = hosts.build_status(snap, jobs=hosts.job_names(snap, names), previous=previous)
        if name not in self.host_specs and await self.kube.create_host(name) is not None:
            log.info("AnkaHost %s created for a newly registered Mac", name)
            self.host_specs[name] = AnkaHostSpec()
        spec = self.host_specs.get(name)
        if spec is not None:
            config = HostConfig(pre_pull=spec.pre_pull, unschedulable=spec.unschedulable, labels=spec.labels)
            if self._host_configs.get(name) != config:
                await self.proto.put_host_config(name, config)
                self._host_configs[name] = config
        patch = hosts.status_patch(status, previous)
        if patch is None:
            return
        body = await self.kube.patch_host_status(name, patch)
        if body is not None:
            self.host_statuses[name] = AnkaHostStatus.model_validate(body.get("status") or {})
        self._host_mirror_failed = False
        if previous is not None and previous.ready != status.ready:
            if status.ready:
                log.info("host %s is Ready", name)
            else:
                log.warning("host %s is NotReady: its heartbeat lease expired", name)

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
                    self.capacity_changed()
        self._orphans = seen

    # ----- one pass -----------------------------------------------------------------------
    async def reconcile(self, dirty: set[str], capacity_changed: bool) -> None:
        pending: dict[str, AnkaJob] = {}
        for uid in sorted(dirty):
            job = self.jobs.get(uid)
            if job is not None and await self._reconcile_one(job):
                pending[uid] = job
        if capacity_changed:
            for uid, job in self.jobs.items():
                if self._wants_host(job):
                    pending[uid] = job
        if pending:
            await self._schedule(list(pending.values()))

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
            await self._finish(job, Phase.FAILED, "InvalidSpec", str(exc), event_type="Warning")
            return False
        stop = await self._plugin_call(job, plugin.check(job))
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
                await self._finish(job, Phase.FAILED, "InvalidSpec", str(exc), event_type="Warning")
                return False
            return True
        host, uid = status.host, job.metadata.uid
        obs = await self.proto.observation(host, uid)
        if stop is None and obs is not None and obs.phase == ObservedPhase.CANCELLED:
            stop = await self._recorded_stop(host, uid)
        if obs is not None:
            try:
                obs = await self._interpret(job, plugin, obs, stop)
            except plugins.NotYet:
                return False
            outcome = phases.apply_observation(status, obs, backoff_limit=job.spec.backoff_limit, now=now)
            before = job
            if outcome.patch is not None:
                job = await self._write(job, outcome.patch)
            if outcome.release:
                await self.proto.release(host, uid, obs.attempt)
                self.capacity_changed()
                if not job.status.phase.is_terminal():  # a retry: clean up after the ended attempt
                    self._background.add(asyncio.get_running_loop().create_task(self._cleanup(before)))
                return self._wants_host(job)
        if cancelling:
            recorded = None if stop is None else StopReason(**vars(stop))
            if not await self.proto.cancel(host, uid, stop=recorded) and obs is None and stop and stop.retry:
                job = await self._write(job, phases.requeue(status, reason=stop.reason, message=stop.message))
                await self.proto.release(host, uid, status.attempts)
                self.capacity_changed()
                return self._wants_host(job)
            if not await self.proto.cancel(host, uid) and obs is None:
                phase, reason, message = (
                    (stop.phase, stop.reason, stop.message)
                    if stop is not None
                    else (Phase.CANCELLED, "Cancelled", "cancelled; no VM was left on the host")
                )
                await self._finish(job, phase, reason, message)
                await self.proto.release(host, uid, status.attempts)
                self.capacity_changed()
            return False
        if self.loss.lost(host, time.monotonic()):
            patch = phases.host_lost(status, backoff_limit=job.spec.backoff_limit, now=now)
            if patch is not None:
                job = await self._write(job, patch)
                await self.kube.event(
                    job, reason="HostLost", message=f"host {host} stopped heartbeating", type_="Warning"
                )
            await self.proto.release(host, uid, status.attempts)
            self.capacity_changed()
            return self._wants_host(job)
        desired = await self.proto.desired(host, uid)
        if obs is None and desired is None:
            job = await self._write(
                job,
                phases.requeue(status, reason="ReservationLost", message="the host no longer holds the job"),
            )
            return self._wants_host(job)
        if desired is not None and (obs is None or not obs.phase.is_terminal()):
            await self._ensure_secrets(job, plugin, host, desired, sizing_done=obs is not None)
        return False

    async def _recorded_stop(self, host: str, uid: str) -> plugins.Stop | None:
        """The handler's reason for a teardown, as recorded with the cancel request."""
        desired = await self.proto.desired(host, uid)
        if desired is None or desired.stop is None:
            return None
        s = desired.stop
        return plugins.Stop(reason=s.reason, message=s.message, phase=Phase(s.phase), retry=s.retry)

    async def _mirror(self, job: AnkaJob, plugin: plugins.HandlerPlugin) -> AnkaJob:
        """Write the handler's own status fields when they differ from what status shows."""
        fields = plugin.status_fields(job)
        if not fields:
            return job
        current = job.status.model_dump(mode="json", by_alias=True, exclude_none=True)
        changed = {k: v for k, v in fields.items() if current.get(k) != v}
        return await self._write(job, changed) if changed else job

    async def _interpret(
        self, job: AnkaJob, plugin: plugins.HandlerPlugin, obs: Observation, stop: plugins.Stop | None
    ) -> Observation:
        """Let the handler name the outcome of a finished attempt (e.g. from the CI's verdict)."""
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
        verdict = await self._plugin_call(job, plugin.judge(job, obs), reraise=(plugins.NotYet,))
        if verdict is None:
            return obs
        if verdict.phase is None:
            update = {"phase": ObservedPhase.FAILED, "retryable": True}
        else:
            update = {"phase": _OBSERVED[verdict.phase], "retryable": False}
        return obs.model_copy(update={**update, "reason": verdict.reason, "message": verdict.message})

    async def _ensure_secrets(
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
        env = await self._plugin_call(
            job, plugin.secrets(job, vm_name=desired.vm_name, attempt=desired.attempt)
        )
        if env is not None:
            await self.proto.put_secret(host, desired.uid, desired.attempt, env)

    async def _plugin_call(
        self, job: AnkaJob, call: Awaitable[T], *, reraise: tuple[type[BaseException], ...] = ()
    ) -> T | None:
        """A handler's I/O failing must not stall other jobs: log it, retry on a later pass."""
        try:
            return await call
        except reraise:
            raise
        except Exception as exc:
            log.warning(
                "handler %s failed for %s/%s: %s: %s; retrying later",
                job.spec.handler,
                job.metadata.namespace,
                job.metadata.name,
                type(exc).__name__,
                exc,
            )
            self._retry_soon(job.metadata.uid)
            return None

    def _retry_soon(self, uid: str, delay: float = 5.0) -> None:
        loop = asyncio.get_running_loop()
        loop.call_later(delay, self.mark, uid)

    async def _schedule(self, jobs: list[AnkaJob]) -> None:
        jobs.sort(
            key=lambda j: (j.metadata.creation_timestamp or datetime.min.replace(tzinfo=UTC), j.metadata.name)
        )
        raw = await self.proto.snapshot()
        self.loss.update(raw, time.monotonic())
        snapshot = [hosts.effective(s, self.host_specs.get(s.info.name)) for s in raw]
        sizes = await self.proto.template_sizes()
        wall = self.clock()
        requests = []
        by_uid = {}
        for job in jobs:
            cpu, memory = resolve_resources(job.spec, snapshot, sizes)
            requests.append(
                scheduling.JobRequest(
                    uid=job.metadata.uid,
                    attempts=job.status.attempts,
                    cpu=cpu,
                    memory_mib=memory,
                    template=job.spec.template,
                    tag=job.spec.tag,
                    host_selector=job.spec.host_selector or {},
                    queue=job.spec.queue,
                    priority=job.spec.priority,
                    waiting_seconds=_waiting(job, wall),
                    mounts=bool(job.spec.mounts),
                )
            )
            by_uid[job.metadata.uid] = job
        for request, decision in scheduling.plan(
            requests, snapshot, starvation_seconds=self.starvation_seconds
        ):
            job = by_uid[request.uid]
            await self._apply_decision(job, request, decision, snapshot)

    async def _apply_decision(
        self,
        job: AnkaJob,
        request: scheduling.JobRequest,
        decision: scheduling.Decision,
        snapshot: list[HostSnapshot],
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
            self.capacity_changed()
            return
        if isinstance(decision, scheduling.Unschedulable):
            if decision.permanent:
                await self._finish(job, Phase.FAILED, "Unschedulable", decision.message, event_type="Warning")
                return
            patch = phases.pending_unschedulable(job.status, decision.message, now)
            if patch is not None:
                await self._write(job, patch)
                await self.kube.event(job, reason="Unschedulable", message=decision.message, type_="Warning")
            return
        attempt = job.status.attempts + 1
        vm_name = str(VMName(job.metadata.uid, attempt))
        try:
            workload = plugins.handler(job.spec.handler).workload(job)
        except (plugins.UnknownPlugin, plugins.InvalidJob) as exc:
            await self._finish(job, Phase.FAILED, "InvalidSpec", str(exc), event_type="Warning")
            return
        desired = DesiredVM(
            uid=job.metadata.uid,
            namespace=job.metadata.namespace,
            name=job.metadata.name,
            attempt=attempt,
            vm_name=vm_name,
            template=job.spec.template,
            tag=job.spec.tag,
            cpu=request.cpu,
            memory_mib=request.memory_mib,
            handler=job.spec.handler,
            workload=workload,
            mounts=list(job.spec.mounts or []),
        )
        result = await self.proto.reserve(decision.host, desired)
        if result != "OK":
            log.info(
                "reservation of %s on %s refused (%s); rescheduling", job.metadata.name, decision.host, result
            )
            self.capacity_changed()
            return
        patch = phases.scheduled(job.status, host=decision.host, vm_name=vm_name, attempt=attempt, now=now)
        if patch is not None:
            job = await self._write(job, patch)
            await self.kube.event(
                job, reason="Scheduled", message=f"attempt {attempt} placed on {decision.host}"
            )
        # The host is already pulling and cloning; the secrets race it and usually win.
        await self._ensure_secrets(
            job, plugins.handler(job.spec.handler), decision.host, desired, sizing_done=False
        )

    # ----- writes -------------------------------------------------------------------------
    async def _finish(
        self, job: AnkaJob, phase: Phase, reason: str, message: str, event_type: str = "Normal"
    ) -> None:
        patch = phases.finished(job.status, phase, reason=reason, message=message, now=self.clock())
        if patch is not None:
            await self._write(job, patch)
            await self.kube.event(job, reason=reason, message=message, type_=event_type)

    async def _write(self, job: AnkaJob, patch: phases.Patch) -> AnkaJob:
        body = await self.kube.patch_status(job.metadata.namespace, job.metadata.name, patch)
        if body is None:
            return job
        updated = AnkaJob.model_validate(body)
        uid = job.metadata.uid
        if uid in self.jobs and _rv(body) >= self._versions.get(uid, 0):
            self.jobs[uid] = updated
            self._versions[uid] = _rv(body)
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
                if after != Phase.CANCELLED or before != Phase.PENDING:
                    await self.kube.event(
                        updated, reason=after.value, message=updated.status.message or after.value
                    )
                self._settle(updated)
                self._plan_gc(updated)
        return updated

    async def _cleanup(self, job: AnkaJob) -> None:
        with contextlib.suppress(plugins.UnknownPlugin):
            await self._plugin_call(job, plugins.handler(job.spec.handler).cleanup(job))

    def _settle(self, job: AnkaJob) -> None:
        event = self._settled.pop(job.metadata.uid, None)
        if event is not None:
            event.set()

    def _plan_gc(self, job: AnkaJob) -> None:
        ttl = job.spec.ttl_seconds_after_finished
        done = job.status.completion_time
        if ttl is None or done is None or job.metadata.uid in self._gc_planned:
            return
        self._gc_planned.add(job.metadata.uid)
        heapq.heappush(self._gc_heap, ((done + timedelta(seconds=ttl)).timestamp(), job.metadata.uid))

    def _collect_gc(self) -> None:
        """Delete finished jobs whose TTL expired (the finalizer then lets them go at once)."""
        due = []
        while self._gc_heap and self._gc_heap[0][0] <= time.time():
            uid = heapq.heappop(self._gc_heap)[1]
            self._gc_planned.discard(uid)
            due.append(uid)
        for uid in due:
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
            self._gc_planned.add(job.metadata.uid)
            heapq.heappush(self._gc_heap, (time.time() + 10.0, job.metadata.uid))
            self._wake.set()
