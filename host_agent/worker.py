"""One job attempt on this host: template → clone → start → ready → mount → run → delete.

A worker reports each stage, turns every failure into an outcome with a reason (retryable for
infrastructure faults, final for the workload's own verdict), and always deletes its VM before
it reports the terminal result with ``vm_deleted=True``. The workload runs under a detached
supervisor (``host_agent.detached``) whose record outlives the agent, so a worker resumed after an
agent crash reports the workload's real result, or waits for it, instead of running it again.

Host-to-guest mounts (the host's, then the job's) are resolved before anything is pulled, so a
job asking for a folder this host lacks fails at once, and applied with ``anka mount`` once the
VM is ready; a mount that fails deletes the VM like any provisioning failure.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from redis.exceptions import RedisError

from anklet.wire import DesiredVM, Observation, ObservedPhase
from host_agent.anka import (
    AnkaAlreadyExists,
    AnkaDriver,
    AnkaError,
    AnkaNotFound,
    AnkaTimeout,
    RunResult,
    VMInfo,
    env_script,
)
from host_agent.detached import DetachedRuns, result_of
from host_agent.mounts import MountError, MountSpec, resolve_mounts
from host_agent.reporter import Reporter
from host_agent.runstate import ResumeRun, resume_run
from host_agent.templates import TemplateSize, TemplateStore, TemplateUnavailable

log = logging.getLogger("anklet.agent")

GUEST_DISCONNECTED = 125


@dataclass(frozen=True)
class WorkerConfig:
    host: str
    ready_timeout: float
    ready_poll: float
    output_tail: int
    #: The host's own mounts (``ANKLET_AGENT_MOUNTS``), applied before the job's.
    mounts: tuple[str, ...] = ()
    #: Why this host cannot mount (old Anka, Intel); ``None`` when it can.
    mount_refusal: str | None = None


@dataclass(frozen=True)
class Result:
    phase: ObservedPhase
    reason: str
    message: str
    retryable: bool = False
    exit_code: int | None = None
    output: str | None = None


def classify_exit(exit_code: int, timed_out: bool, timeout: int | None) -> tuple[ObservedPhase, str, bool]:
    """The workload's exit → (phase, reason, retryable). Only a lost guest link is retried."""
    if timed_out:
        return ObservedPhase.FAILED, "Timeout", False
    if exit_code == 0:
        return ObservedPhase.SUCCEEDED, "Succeeded", False
    if exit_code == GUEST_DISCONNECTED:
        return ObservedPhase.FAILED, "GuestDisconnected", True
    return ObservedPhase.FAILED, "ExitCode", False


class Worker:
    def __init__(
        self,
        desired: DesiredVM,
        *,
        anka: AnkaDriver,
        templates: TemplateStore,
        reporter: Reporter,
        config: WorkerConfig,
        on_done: Callable[[], Awaitable[None]],
        stopping: Callable[[], bool] = lambda: False,
        withdrawn: Callable[[], bool] = lambda: False,
        secrets: Callable[[str, int], Awaitable[dict[str, str] | None]] | None = None,
        learn_size: Callable[[list[str], str | None, int, int], Awaitable[None]] | None = None,
        runs: DetachedRuns | None = None,
    ) -> None:
        self.d = desired
        self.anka = anka
        self.templates = templates
        self.reporter = reporter
        self.config = config
        self.on_done = on_done
        self.stopping = stopping
        #: True once the controller's record of this attempt vanished (not a cancel request).
        self.withdrawn = withdrawn
        self.secrets = secrets
        self.learn_size = learn_size
        #: Workloads run through detached supervisors whose results outlive this agent; without
        #: (the in-memory fleet model), ``anka run`` is our child and dies with us.
        self.runs = runs
        self.started_at: float | None = None

    def _report(self, phase: ObservedPhase, stage: str, **extra: Any) -> None:
        self.reporter.put(
            Observation(
                uid=self.d.uid,
                attempt=self.d.attempt,
                host=self.config.host,
                phase=phase,
                vm_name=self.d.vm_name,
                stage=stage,
                started_at=self.started_at,
                **extra,
            )
        )

    async def run(
        self, *, resume: bool = False, prior: Observation | None = None, known: Sequence[VMInfo] = ()
    ) -> None:
        # The template backs this attempt's VM until the VM is deleted: never evict it meanwhile.
        with self.templates.claim(self.d.template):
            await self._run(resume=resume, prior=prior, known=known)

    async def _run(self, *, resume: bool, prior: Observation | None, known: Sequence[VMInfo]) -> None:
        try:
            result = await self._attempt(resume=resume, prior=prior, known=known)
        except asyncio.CancelledError:
            ended = None if self.cancel_requested() else self._ended_run()
            if ended is not None:
                # Stopped just as the workload ended on its own: its result is the truth, and
                # reporting "retry" instead would run a finished job again.
                result = ended
            elif self.stopping():
                result = Result(
                    ObservedPhase.FAILED,
                    "AgentStopped",
                    "the host agent stopped before the job finished; VM deleted",
                    retryable=True,
                )
            elif self.withdrawn():
                result = Result(
                    ObservedPhase.FAILED,
                    "ReservationLost",
                    "the job's record on this host vanished (Redis lost it?); VM deleted",
                    retryable=True,
                )
            else:
                result = Result(ObservedPhase.CANCELLED, "Cancelled", "cancelled; VM deleted")
            await asyncio.shield(self.finish(result))
            raise
        await asyncio.shield(self.finish(result))

    def cancel_requested(self) -> bool:
        """The controller asked for this teardown (neither an agent stop nor a vanished record)."""
        return not self.stopping() and not self.withdrawn()

    def _ended_run(self) -> Result | None:
        """The result the workload's supervisor recorded, if the workload ended on its own
        (not killed at our request while we were being cancelled)."""
        record = self.runs.record(self.d.vm_name) if self.runs is not None else None
        return None if record is None or record.killed else self._verdict(result_of(record))

    async def finish(self, result: Result) -> None:
        """Report the result, delete the VM, then confirm: terminal + vm_deleted."""
        fields = {
            "reason": result.reason,
            "message": result.message,
            "retryable": result.retryable,
            "exit_code": result.exit_code,
            "output": result.output,
            "finished_at": time.time(),
        }
        self._report(result.phase, "Deleting", **fields)
        if await delete_vm(self.anka, self.d.vm_name):
            if self.runs is not None:
                self.runs.forget(self.d.vm_name)
            self._report(result.phase, "Finished", vm_deleted=True, **fields)
        await self.on_done()

    async def _teach(self, size: TemplateSize) -> bool:
        """Record a template's size for the scheduler; False (go on unsized) if Redis is away."""
        assert self.learn_size is not None
        try:
            await self.learn_size(size.names, self.d.tag, size.cpu, size.memory_mib)
        except (RedisError, OSError) as exc:
            log.warning("could not record the size of %s: %s", self.d.template, exc)
            return False
        return True

    async def _attempt(self, *, resume: bool, prior: Observation | None, known: Sequence[VMInfo]) -> Result:
        d = self.d
        if resume:
            resumed = await self._resume_run(prior)
            if resumed is not None:
                return resumed
        mounts = self._mounts()
        if isinstance(mounts, Result):
            return mounts
        if not resume and d.cpu == 0 and d.memory_mib == 0 and self.learn_size is not None:
            size = await self.templates.size(d.template, d.tag, known=known)
            if size is not None and await self._teach(size):
                return Result(
                    ObservedPhase.FAILED,
                    "TemplateSized",
                    f"{d.template}:{d.tag or 'latest'} needs {size.cpu} CPU / {size.memory_mib} MiB; "
                    "placing the job again with that size",
                    retryable=True,
                )
        try:
            if not resume:
                self._report(ObservedPhase.PROVISIONING, "Pulling")
                await self.templates.ensure(d.template, d.tag, known=known)
                self._report(ObservedPhase.PROVISIONING, "Cloning")
                try:
                    async with self.templates.using(d.template):
                        await self.anka.clone(d.template, d.vm_name, tag=d.tag)
                except AnkaAlreadyExists:
                    log.info("VM %s already exists; adopting it", d.vm_name)
            self._report(ObservedPhase.PROVISIONING, "Starting")
            info = await self.anka.show(d.vm_name)
            if info.status == "failed":
                raise AnkaError(f"{d.vm_name} is in state failed")
            if info.status != "running":
                await self.anka.start(d.vm_name)
            await self.anka.wait_ready(
                d.vm_name, timeout=self.config.ready_timeout, interval=self.config.ready_poll
            )
        except TemplateUnavailable as exc:
            return Result(ObservedPhase.FAILED, exc.reason, str(exc), retryable=exc.retryable)
        except AnkaNotFound as exc:
            return Result(
                ObservedPhase.FAILED, "VMVanished", f"VM disappeared during provisioning: {exc}", True
            )
        except AnkaTimeout as exc:
            return Result(ObservedPhase.FAILED, "ProvisioningTimeout", str(exc), retryable=True)
        except AnkaError as exc:
            return Result(ObservedPhase.FAILED, "ProvisioningFailed", str(exc), retryable=True)
        failed = await self._mount(mounts)
        if failed is not None:
            return failed
        w = d.workload
        env = dict(w.env)
        if w.needs_secrets:
            secret = await self.secrets(d.uid, d.attempt) if self.secrets is not None else None
            if secret is None:
                return Result(
                    ObservedPhase.FAILED,
                    "SecretsMissing",
                    "the controller did not provide this run's secrets in time",
                    retryable=True,
                )
            env.update(secret)
        timeout = float(w.timeout_seconds) if w.timeout_seconds else None
        limit = min(w.output_limit, self.config.output_tail)
        try:
            if self.runs is None:
                self._running()
                run = await self.anka.run(d.vm_name, w.script, env=env, timeout=timeout, output_limit=limit)
            else:
                payload = env_script(w.script, env).encode()
                run = await self.runs.run(
                    d.vm_name, payload, timeout=timeout, output_limit=limit, on_started=self._running
                )
        except AnkaError as exc:
            return Result(ObservedPhase.FAILED, "RunFailed", str(exc), retryable=True)
        return self._verdict(run)

    def _running(self) -> None:
        self.started_at = time.time()
        self._report(ObservedPhase.RUNNING, "Running")

    async def _resume_run(self, prior: Observation | None) -> Result | None:
        """After a restart: the workload's real result if it ran (or still runs) under a
        supervisor; ``None`` when it never started and provisioning should carry on."""
        reported_running = prior is not None and prior.phase == ObservedPhase.RUNNING
        vm = self.d.vm_name
        # Liveness first: a supervisor seen gone has written its record (if any) already.
        alive = self.runs is not None and self.runs.supervisor_pid(vm) is not None
        record = self.runs.record(vm) if self.runs is not None else None
        decision = resume_run(record=record, supervisor_alive=alive, reported_running=reported_running)
        if decision == ResumeRun.PROVISION:
            return None
        if prior is not None and prior.started_at is not None:
            self.started_at = prior.started_at
        run: RunResult | None = None
        if decision == ResumeRun.REPORT:
            assert record is not None
            log.info("the workload of %s ended while the agent was away: exit %d", vm, record.exit_code)
            run = result_of(record)
        elif decision == ResumeRun.REATTACH:
            assert self.runs is not None
            if not reported_running:
                self._running()
            run = await self.runs.attach(vm)
        if run is None:
            return Result(
                ObservedPhase.FAILED,
                "AgentRestarted",
                "the host agent restarted while the workload ran and its result is lost; retrying",
                retryable=True,
            )
        return self._verdict(run)

    def _verdict(self, run: RunResult) -> Result:
        """The workload's exit → the attempt's result (final, except a lost guest link)."""
        w = self.d.workload
        phase, reason, retryable = classify_exit(run.exit_code, run.timed_out, w.timeout_seconds)
        if run.timed_out:
            message = f"workload exceeded timeoutSeconds={w.timeout_seconds} and was killed"
        elif run.exit_code == GUEST_DISCONNECTED:
            message = "anka run exited 125: the link to the guest was lost"
        else:
            message = f"workload exited {run.exit_code}"
        return Result(phase, reason, message, retryable, exit_code=run.exit_code, output=run.output)

    def _mounts(self) -> list[MountSpec] | Result:
        """The VM's mounts, resolved on this host, or the final failure that they cannot be."""
        wanted = [*self.config.mounts, *self.d.mounts]
        if not wanted:
            return []
        if self.config.mount_refusal is not None:
            return Result(
                ObservedPhase.FAILED,
                "MountsUnsupported",
                f"host-to-guest mounts requested ({', '.join(wanted)}), but {self.config.mount_refusal}",
            )
        try:
            return resolve_mounts(wanted)
        except MountError as exc:
            return Result(ObservedPhase.FAILED, "MountFailed", str(exc))

    async def _mount(self, mounts: list[MountSpec]) -> Result | None:
        """``anka mount`` each folder into the ready VM; a mount already there (resume) is kept."""
        if mounts:
            self._report(ObservedPhase.PROVISIONING, "Mounting")
        for spec in mounts:
            try:
                await self.anka.mount(self.d.vm_name, spec.arg)
            except AnkaAlreadyExists:
                continue
            except AnkaError as exc:
                return Result(
                    ObservedPhase.FAILED,
                    "MountFailed",
                    f"mounting {spec.host_path} at {spec.guest_path}: {exc}",
                    retryable=True,
                )
            log.info("mounted %s into %s at %s", spec.host_path, self.d.vm_name, spec.guest_path)
        return None


async def delete_vm(anka: AnkaDriver, vm_name: str, *, attempts: int = 3) -> bool:
    """Delete a VM (a missing VM counts as deleted); True once it is gone."""
    for attempt in range(1, attempts + 1):
        try:
            await asyncio.shield(anka.delete(vm_name))
            return True
        except AnkaNotFound:
            return True
        except AnkaError as exc:
            log.warning("deleting %s failed (attempt %d/%d): %s", vm_name, attempt, attempts, exc)
            await asyncio.sleep(min(5.0, 0.5 * 2**attempt))
    return False
