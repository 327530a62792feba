"""The host agent: registers the Mac, then converges its VMs to what the controller desires.

It blocks on its Redis inbox (or a slow resync timer), lists what is really on the host, and
for every job attempt looks up one action in `host_agent.converge.TABLE`. The host is the truth
about which VMs exist: after a restart the agent adopts or cleans up what it finds instead of
starting over, and it never creates a second VM for an attempt.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from redis.exceptions import RedisError

from anklet.backoff import Backoff
from anklet.logcontext import job_fields, log_context
from anklet.redis_protocol import HostProtocol
from anklet.vmname import NotManagedByAnklet, VMName
from anklet.wire import DesiredVM, HostInfo, Observation, ObservedPhase
from host_agent.anka import AnkaDriver, AnkaError, VMInfo
from host_agent.converge import Action, Desire, Outcome, decide
from host_agent.detached import DetachedRuns
from host_agent.facts import HostFacts
from host_agent.metrics import AgentMetrics
from host_agent.mounts import unsupported_reason
from host_agent.prepull import PrePuller
from host_agent.reporter import Reporter
from host_agent.templates import DiskBudget, TemplateStore
from host_agent.worker import Worker, WorkerConfig, delete_vm

log = logging.getLogger("anklet.agent")


@dataclass(frozen=True)
class AgentConfig:
    name: str
    state_dir: Path
    resync_seconds: float = 10.0
    heartbeat_seconds: float = 5.0
    orphan_grace_seconds: float = 30.0
    ready_timeout: float = 180.0
    ready_poll: float = 2.0
    output_tail: int = 16_384
    shutdown_grace: float = 30.0
    secret_timeout: float = 120.0
    mounts: tuple[str, ...] = ()
    disk_buffer_percent: float = 10.0
    disk_buffer_bytes: int | None = None


def outcome_of(obs: Observation | None, key: VMName) -> Outcome:
    if obs is None or obs.attempt != key.attempt or not obs.phase.is_terminal():
        return Outcome.NONE
    return Outcome.DONE if obs.vm_deleted else Outcome.PENDING_DELETE


class Agent:
    def __init__(
        self,
        config: AgentConfig,
        proto: HostProtocol,
        anka: AnkaDriver,
        facts: HostFacts,
        *,
        metrics: AgentMetrics | None = None,
        runs: DetachedRuns | None = None,
    ) -> None:
        self.config = config
        #: Workload supervisors and their records (under the state dir): a job's result
        #: survives an agent crash, so a restart reports it rather than running the job again.
        self.runs = runs
        self.proto = proto
        self.anka = anka
        self.facts = facts
        self.reporter = Reporter(proto)
        # Templates on disk: pulls leave the disk buffer free, evicting only templates that no
        # desired VM or running worker uses; the controller's prePull list is evicted last.
        self._desired_templates: set[str] = set()
        self.templates = TemplateStore(
            anka,
            config.state_dir / "pull.lock",
            on_change=self.refresh_registration,
            on_pull=self._announce_pull,
            budget=DiskBudget.for_path(
                config.state_dir, percent=config.disk_buffer_percent, absolute=config.disk_buffer_bytes
            ),
            in_use=lambda: self._desired_templates,
            pinned=lambda: self.prepull.pinned(),  # noqa: PLW0108 (self.prepull comes next)
            observer=metrics,
        )
        self.prepull = PrePuller(proto.host_config, self.templates, retry_seconds=config.resync_seconds)
        self.tasks: dict[VMName, asyncio.Task[None]] = {}
        self._orphans: dict[str, float] = {}
        self._withdrawn: set[VMName] = set()  # tasks stopped because their desired record vanished
        self._slot_waits: set[VMName] = set()  # desired VMs waiting for a slot (logged once)
        self._next_run_sweep = float("-inf")  # monotonic time of the next sweep of stale run files
        self._info: HostInfo | None = None
        self._backoff = Backoff(log, "host agent")
        self._stop = asyncio.Event()
        self._tick = asyncio.Event()
        # What the last converge saw, for the metrics' gauges.
        self.vms_running = 0
        self.vms_desired = 0
        if metrics is not None:
            metrics.bind(self)

    @property
    def vm_slots(self) -> int:
        return self._info.vm_slots if self._info is not None else 0

    @property
    def jobs_active(self) -> int:
        return sum(
            1 for task in self.tasks.values() if not task.done() and not task.get_name().startswith("delete")
        )

    # ----- registration ---------------------------------------------------------------------
    async def refresh_registration(self) -> None:
        self._info = await self._facts()
        with contextlib.suppress(RedisError, OSError):
            await self.proto.register(self._info)

    async def _facts(self) -> HostInfo:
        info = await self.facts.collect(self.config.name, await self.templates.local())
        return info.model_copy(update={"pulling": self.templates.pulling})

    async def _announce_pull(self) -> None:
        """A pull started: register the same facts with it (no `anka` calls), so the AnkaHost
        shows what the Mac is busy with; the registration after the pull drops it."""
        if self._info is None:
            return
        self._info = self._info.model_copy(update={"pulling": self.templates.pulling})
        with contextlib.suppress(RedisError, OSError):
            await self.proto.register(self._info)

    async def _register(self) -> None:
        backoff = Backoff(log, "registering with redis")
        self._info = await self._facts()
        while True:
            try:
                await self.proto.register(self._info)
                self.reporter.seed(await self.proto.observed())
            except (RedisError, OSError) as exc:
                await backoff.failed(exc)
                continue
            backoff.succeeded()
            log.info(
                "registered host %s: %d CPU, %d MiB, %d VM slots, anka %s",
                self._info.name,
                self._info.cpu,
                self._info.memory_mib,
                self._info.vm_slots,
                self._info.anka_version,
            )
            return

    async def _heartbeat(self) -> None:
        backoff = Backoff(log, "heartbeat")
        while True:
            try:
                registered = await self.proto.heartbeat()
                # Level-triggered: a pull's start or end whose registration was cut short (its
                # job cancelled mid-write) is shown correctly within a heartbeat.
                stale = self._info is not None and self._info.pulling != self.templates.pulling
                if self._info is not None and (backoff.failing or not registered or stale):
                    if not registered:
                        log.warning(
                            "host %s: registration missing from Redis; registering again", self._info.name
                        )
                    if stale:
                        self._info = self._info.model_copy(update={"pulling": self.templates.pulling})
                    await self.proto.register(self._info)
                backoff.succeeded()
            except (RedisError, OSError) as exc:
                await backoff.failed(exc)
                continue
            await asyncio.sleep(self.config.heartbeat_seconds)

    # ----- main loop ------------------------------------------------------------------------
    def request_stop(self) -> None:
        """Graceful stop (SIGTERM): take no new work, let running jobs finish within the grace."""
        if not self._stop.is_set():
            log.info(
                "stopping: no new work; waiting up to %.0f s for running jobs", self.config.shutdown_grace
            )
        self._stop.set()

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    async def run(self) -> None:
        with log_context(host=self.config.name):  # every line of this agent names its host
            await self._run()

    async def _run(self) -> None:
        await self._register()
        helpers = [
            asyncio.create_task(self._heartbeat(), name="heartbeat"),
            asyncio.create_task(self.reporter.run(), name="reporter"),
        ]
        try:
            while not self._stop.is_set():
                try:
                    await self.converge()
                    self._backoff.succeeded()
                    await self._wait_for_work()
                except (RedisError, OSError, AnkaError) as exc:
                    await self._backoff.failed(exc)
            await self._drain()
        finally:
            await self.prepull.close()
            for task in helpers:
                task.cancel()
            await asyncio.gather(*helpers, return_exceptions=True)

    async def _wait_for_work(self) -> None:
        """Block on the inbox (or the resync timer), but return at once when a stop is requested."""
        wakeup = asyncio.create_task(self.proto.wait_for_wakeup(self.config.resync_seconds))
        stop = asyncio.create_task(self._stop.wait())
        try:
            await asyncio.wait({wakeup, stop}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            stop.cancel()
            if not wakeup.done():
                wakeup.cancel()
            await asyncio.gather(wakeup, stop, return_exceptions=True)
        if wakeup.done() and not wakeup.cancelled() and wakeup.exception() is not None:
            raise wakeup.exception()  # type: ignore[misc]

    async def _drain(self) -> None:
        """Wait for running jobs; past the grace, stop them (each deletes its VM and reports
        a retryable failure, so the controller runs the job elsewhere); then deregister."""
        running = [t for t in self.tasks.values() if not t.done()]
        if running:
            _, late = await asyncio.wait(running, timeout=self.config.shutdown_grace)
            for task in late:
                task.cancel()
            await asyncio.gather(*late, return_exceptions=True)
        if not await self.reporter.wait_flushed(10.0):
            log.error("could not deliver every report to redis before stopping; they are lost")
        with contextlib.suppress(RedisError, OSError):
            await self.proto.deregister()

    async def wait_for_secret(self, uid: str, attempt: int) -> dict[str, str] | None:
        """The attempt's secrets, waiting (on inbox wake-ups, not a timer) up to the secret timeout."""
        deadline = time.monotonic() + self.config.secret_timeout
        while True:
            tick = self._tick
            with contextlib.suppress(RedisError, OSError):
                secret = await self.proto.secret(uid, attempt)
                if secret is not None:
                    return secret
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(tick.wait(), min(remaining, self.config.resync_seconds))

    async def converge(self) -> None:
        """One level-triggered pass over every job attempt known from any source."""
        self._tick.set()
        self._tick = asyncio.Event()
        desired = await self.proto.desired()
        self._desired_templates = {d.template for d in desired.values()}
        vms = await self.anka.list_vms()
        self._reap()
        owned: dict[VMName, VMInfo] = {}
        for vm in vms:
            with contextlib.suppress(NotManagedByAnklet):
                owned[VMName.parse(vm.name)] = vm
        self.vms_running = sum(1 for vm in owned.values() if vm.status == "running")
        self.vms_desired = len(desired)
        wanted = {VMName(d.uid, d.attempt): d for d in desired.values()}
        reported = {
            VMName(o.uid, o.attempt): o for o in self.reporter.latest.values() if o.host == self.config.name
        }
        keys = set(wanted) | set(owned) | set(self.tasks) | set(reported)
        for key in sorted(keys):
            d = wanted.get(key)
            desire = Desire.ABSENT if d is None else (Desire.CANCEL if d.cancel else Desire.RUN)
            obs = self.reporter.latest.get(key.uid)
            action = decide(
                desire=desire, task=key in self.tasks, vm=key in owned, outcome=outcome_of(obs, key)
            )
            await self._act(action, key, d, obs, vms)
        self._orphans = {name: t for name, t in self._orphans.items() if any(str(k) == name for k in owned)}
        self._withdrawn &= set(self.tasks)
        self._slot_waits &= set(wanted)
        self._sweep_runs(vms, desired.values())
        self.prepull.tick(vms)  # background pre-pulls; never waits

    def _sweep_runs(self, vms: list[VMInfo], desired: Iterable[DesiredVM]) -> None:
        """Remove run files that nothing will read again (``host_agent.runsweep``).

        Part of converge, like the orphan-VM sweep, but at most once per resync interval: a busy
        agent converges on every wake-up, and the directory need not be scanned that often.
        """
        now = time.monotonic()
        if self.runs is None or now < self._next_run_sweep:
            return
        self._next_run_sweep = now + self.config.resync_seconds
        live = {vm.name for vm in vms} | {d.vm_name for d in desired} | {str(k) for k in self.tasks}
        try:
            self.runs.sweep(live)
        except OSError as exc:  # housekeeping must never stall converging
            log.warning("could not sweep the runs directory %s: %s", self.runs.directory, exc)

    def _reap(self) -> None:
        for key, task in list(self.tasks.items()):
            if task.done():
                del self.tasks[key]
                if not task.cancelled() and task.exception() is not None:
                    log.error("task for %s crashed: %r", key, task.exception())

    async def _act(
        self, action: Action, key: VMName, d: DesiredVM | None, obs: Observation | None, vms: list[VMInfo]
    ) -> None:
        if action == Action.NOTHING:
            return
        if action == Action.START and not self._slot_free(key, vms):
            return  # converge runs again when a VM here is deleted (the worker pokes it)
        if action in (Action.START, Action.RESUME):
            assert d is not None
            worker = Worker(
                d,
                anka=self.anka,
                templates=self.templates,
                reporter=self.reporter,
                config=WorkerConfig(
                    host=self.config.name,
                    ready_timeout=self.config.ready_timeout,
                    ready_poll=self.config.ready_poll,
                    output_tail=self.config.output_tail,
                    mounts=self.config.mounts,
                    mount_refusal=self._mount_refusal(),
                ),
                on_done=self._poke,
                stopping=lambda: self.stopping,
                withdrawn=lambda: key in self._withdrawn,
                secrets=self.wait_for_secret,
                learn_size=self.proto.record_template_size,
                runs=self.runs,
            )
            resume = action == Action.RESUME
            fields = job_fields(d.namespace, d.name, uid=d.uid, attempt=d.attempt, vm=d.vm_name)
            with log_context(**fields):  # the worker's task inherits the job's log context
                log.info("%s %s (job %s/%s attempt %d)", action.value, key, d.namespace, d.name, d.attempt)
                self.tasks[key] = asyncio.create_task(
                    worker.run(resume=resume, prior=obs, known=vms), name=str(key)
                )
        elif action == Action.STOP_TASK:
            if d is None:
                log.warning("stopping %s: its desired record is gone (not a cancel request)", key)
                self._withdrawn.add(key)
            else:
                log.info("cancelling %s: cancel requested", key)
            self.tasks[key].cancel()
        elif action == Action.DELETE_VM:
            if d is None and obs is None and not self._orphan_due(str(key)):
                return
            with log_context(uid=key.uid, attempt=key.attempt, vm=str(key)):
                self.tasks[key] = asyncio.create_task(
                    self._delete_and_report(key, d, obs), name=f"delete {key}"
                )
        elif action == Action.REPORT_DONE:
            assert obs is not None
            self.reporter.put(obs.model_copy(update={"vm_deleted": True, "stage": "Finished"}))
        elif action == Action.REPORT_CANCELLED:
            assert d is not None
            self.reporter.put(self._cancelled(key))
        elif action == Action.FORGET and obs is not None and obs.attempt == key.attempt:
            self.reporter.drop(key.uid)
            with contextlib.suppress(RedisError, OSError):
                await self.proto.forget(key.uid)

    def _slot_free(self, key: VMName, vms: list[VMInfo]) -> bool:
        """Whether a new VM fits this Mac's VM slots, counting what is really here.

        Redis's reservations normally guarantee it; this guards the moment they are wrong (Redis
        lost writes: a new job is reserved while a withdrawn VM is still being deleted), so the
        Mac never holds more VMs than it may (macOS allows two)."""
        if self._info is None:
            return True
        here: set[VMName] = set(self.tasks)
        for vm in vms:
            with contextlib.suppress(NotManagedByAnklet):
                here.add(VMName.parse(vm.name))
        here.discard(key)
        if len(here) < self._info.vm_slots:
            self._slot_waits.discard(key)
            return True
        if key not in self._slot_waits:
            self._slot_waits.add(key)
            log.warning("%s waits: all %d VM slots of this Mac are taken", key, self._info.vm_slots)
        return False

    def _mount_refusal(self) -> str | None:
        info = self._info
        return None if info is None else unsupported_reason(info.anka_version, info.arch)

    def _orphan_due(self, name: str) -> bool:
        first = self._orphans.setdefault(name, time.monotonic())
        return time.monotonic() - first >= self.config.orphan_grace_seconds

    def _cancelled(self, key: VMName) -> Observation:
        return Observation(
            uid=key.uid,
            attempt=key.attempt,
            host=self.config.name,
            phase=ObservedPhase.CANCELLED,
            vm_name=str(key),
            stage="Finished",
            vm_deleted=True,
            reason="Cancelled",
            message="cancelled; VM deleted",
            finished_at=time.time(),
        )

    async def _delete_and_report(self, key: VMName, d: DesiredVM | None, obs: Observation | None) -> None:
        log.info("deleting VM %s", key)
        if self.runs is not None:
            self.runs.signal(str(key), signal.SIGTERM)  # a workload nobody waits for any more
        if not await delete_vm(self.anka, str(key)):
            return
        if self.runs is not None:
            self.runs.forget(str(key))
        if obs is not None and obs.attempt == key.attempt and obs.phase.is_terminal():
            self.reporter.put(obs.model_copy(update={"vm_deleted": True, "stage": "Finished"}))
        elif d is not None and d.cancel:
            self.reporter.put(self._cancelled(key))
        await self._poke()

    async def _poke(self) -> None:
        """Wake our own loop (through the inbox) after a task ends."""
        with contextlib.suppress(RedisError, OSError):
            await self.proto.poke()
