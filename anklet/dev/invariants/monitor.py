"""The invariant monitor: samples a running system, then checks it once it has gone quiet.

    async with Monitor(Target.from_file(Path(".state/dev/endpoints.json"))) as monitor:
        ...  # inject faults, submit jobs
        report = await monitor.quiesce(timeout=60)
    report.raise_for_violations()

While it runs, it samples every ``interval`` seconds (VMs per attempt from the simulators'
libraries, host allocations from Redis against the hosts' limits) and records every AnkaJob
status version from a watch. ``quiesce`` waits until every job is terminal (or waiting for
capacity with a reason) and nothing is left without an owner, then checks the whole history:
the samples, the simulators' call logs, the status versions, the Events and the final state.
A sample that cannot be read (Redis stopped on purpose) is counted as a gap, never a pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from types import TracebackType

import httpx
from redis.exceptions import RedisError

from anklet.dev.invariants import checks, collect
from anklet.dev.invariants.collect import Target
from anklet.dev.invariants.model import (
    INVARIANTS,
    FinalSnapshot,
    JobRecord,
    RedisState,
    Sample,
    StatusVersion,
    Violation,
)

log = logging.getLogger(__name__)


@dataclass
class Report:
    """What the monitor found: violations by invariant, and how much it looked at."""

    violations: list[Violation]
    samples: int
    gaps: int
    quiet_after: float | None
    jobs: tuple[JobRecord, ...] = ()
    calls: int = 0
    versions: int = 0
    checked: tuple[int, ...] = field(default_factory=lambda: tuple(INVARIANTS))

    def by_invariant(self) -> dict[int, list[Violation]]:
        found: dict[int, list[Violation]] = {n: [] for n in self.checked}
        for violation in self.violations:
            found.setdefault(violation.invariant, []).append(violation)
        return found

    def results(self) -> dict[int, str]:
        """Invariant → "ok" or "N violations", for reports and tables."""
        return {
            n: "ok" if not found else f"{len(found)} violation{'s' if len(found) > 1 else ''}"
            for n, found in self.by_invariant().items()
        }

    @property
    def ok(self) -> bool:
        return not self.violations and self.quiet_after is not None

    def __str__(self) -> str:
        quiet = "never went quiet" if self.quiet_after is None else f"quiet after {self.quiet_after:.1f} s"
        lines = [
            f"{len(self.jobs)} jobs, {self.samples} samples ({self.gaps} unreadable), "
            f"{self.versions} status versions, {self.calls} anka calls; {quiet}"
        ]
        for n, found in self.by_invariant().items():
            lines.append(f"  {n}. {INVARIANTS.get(n, '?')}: {'ok' if not found else ''}")
            lines.extend(f"       {v.subject}: {v.detail}" for v in found[:20])
            if len(found) > 20:
                lines.append(f"       … and {len(found) - 20} more")
        return "\n".join(lines)

    def raise_for_violations(self) -> None:
        if not self.ok:
            raise AssertionError(f"invariants violated:\n{self}")


async def cancel_and_wait(tasks: list[asyncio.Task[None]], *, rounds: int = 20, wait: float = 0.5) -> None:
    """Cancel `tasks` and wait for them, cancelling again while any is still running.

    On Python 3.11 `asyncio.wait_for` can swallow a cancellation that arrives just as its inner
    call finishes, so a loop that uses it may survive one `cancel()`; a plain gather would then
    wait forever. Bounded: after `rounds` the rest is left behind (and logged)."""
    pending = {t for t in tasks if not t.done()}
    for _ in range(rounds):
        if not pending:
            return
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=wait)
    if pending:
        log.warning("%d monitor task(s) ignored cancellation", len(pending))


class Monitor:
    """Samples continuously while open; ``quiesce`` waits for the system to settle and checks it.

    ``namespaces`` limits which AnkaJobs count for invariants 1 and 5 (None: all); ownership
    (invariant 4) always considers every job, as any live job may own a VM."""

    def __init__(
        self, target: Target, *, interval: float = 0.2, namespaces: Collection[str] | None = None
    ) -> None:
        self.target = target
        self.interval = interval
        self.namespaces = None if namespaces is None else frozenset(namespaces)
        self.history: list[StatusVersion] = []
        self.terminal_at: dict[str, float] = {}
        self.samples = 0
        self.gaps = 0
        self._violations: dict[tuple[int, str, str], Violation] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self._http = httpx.AsyncClient(base_url=target.kube_api, timeout=10)
        self._redis = collect.redis_client(target.redis_url)
        self._started = 0.0

    @property
    def started(self) -> float:
        """Wall-clock time the monitor started (0 before): where this scenario's history begins."""
        return self._started

    # ----- lifecycle --------------------------------------------------------------------------
    async def start(self) -> Monitor:
        self._started = collect.now()
        rv, jobs = await collect.list_jobs(self._http)
        for job in jobs:
            self._record(job)
        self._tasks = [
            asyncio.create_task(self._sample_loop(), name="invariants-sampler"),
            asyncio.create_task(self._watch_loop(rv), name="invariants-watch"),
        ]
        return self

    async def stop(self) -> None:
        await cancel_and_wait(self._tasks)
        self._tasks = []
        await self._http.aclose()
        await self._redis.aclose()

    async def __aenter__(self) -> Monitor:
        return await self.start()

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ----- continuous sampling ----------------------------------------------------------------
    def _add(self, violations: list[Violation]) -> None:
        for v in violations:
            self._violations.setdefault((v.invariant, v.subject, v.detail), v)

    def _in_scope(self, job: JobRecord) -> bool:
        return self.namespaces is None or job.namespace in self.namespaces

    def _record(self, job: JobRecord) -> None:
        at = collect.now()
        self.history.append(StatusVersion(at, job))
        if job.terminal:
            self.terminal_at.setdefault(job.uid, at)

    async def sample(self) -> Sample:
        """One reading; parts that cannot be read are None (and counted as a gap)."""
        at = collect.now()
        try:
            vms = collect.read_vms(self.target.anka_homes)
        except (OSError, ValueError):
            vms = None
        try:
            hosts = await asyncio.wait_for(collect.read_hosts(self._redis), 2.0)
        except (RedisError, OSError, TimeoutError, ValueError, KeyError):
            hosts = None
        return Sample(at, hosts, vms)

    async def _sample_loop(self) -> None:
        while True:
            reading = await self.sample()
            self.samples += 1
            if reading.hosts is None or reading.vms is None:
                self.gaps += 1
            self._add(checks.check_sample(reading))
            await asyncio.sleep(self.interval)

    async def _watch_loop(self, rv: str) -> None:
        while True:
            try:
                async for _kind, job in collect.watch_jobs(self._http, rv):
                    rv = str(job.resource_version or rv)
                    self._record(job)
            except LookupError:
                rv, jobs = await collect.list_jobs(self._http)
                for job in jobs:
                    self._record(job)
            except (httpx.HTTPError, ValueError) as exc:
                log.debug("job watch interrupted: %s", exc)
                await asyncio.sleep(self.interval)

    # ----- after quiescence ---------------------------------------------------------------------
    async def final_snapshot(self) -> FinalSnapshot:
        """The whole state, read now (raises when a source cannot be read)."""
        _, jobs = await collect.list_jobs(self._http)
        redis = await asyncio.wait_for(collect.read_redis_state(self._redis), 5.0)
        runners = None
        if self.target.github_api:
            runners = await collect.list_runners(self._http, self.target.github_api)
        return FinalSnapshot(
            at=collect.now(),
            jobs=tuple(jobs),
            vms=collect.read_vms(self.target.anka_homes),
            redis=redis,
            runners=runners,
        )

    def _settled(self, final: FinalSnapshot) -> bool:
        waiting_ok = all(
            job.terminal or (job.phase == "Pending" and job.host is None and job.reason == "Unschedulable")
            for job in final.jobs
            if self._in_scope(job)
        )
        return waiting_ok and not checks.check_orphans(final)

    async def quiesce(self, timeout: float, *, settle: float = 1.0) -> Report:
        """Wait (at most ``timeout`` s) until the system is settled twice ``settle`` s apart, then
        check everything; a system that never settles is checked as it is at the deadline."""
        loop = asyncio.get_running_loop()
        began = loop.time()
        deadline = began + timeout
        final: FinalSnapshot | None = None
        quiet_since: float | None = None
        quiet_after: float | None = None
        while True:
            try:
                final = await self.final_snapshot()
            except (httpx.HTTPError, RedisError, OSError, TimeoutError) as exc:
                log.debug("final snapshot unreadable: %s", exc)
                quiet_since = None
            else:
                if not self._settled(final):
                    quiet_since = None
                elif quiet_since is None:
                    quiet_since = loop.time()
                elif loop.time() - quiet_since >= settle:
                    quiet_after = quiet_since - began
                    break
            if loop.time() >= deadline:
                break
            await asyncio.sleep(0.25)
        if final is None:
            final = FinalSnapshot(collect.now(), (), (), RedisState())
            self._add([Violation(4, "system", "the final state could not be read", final.at)])
        return await self._report(final, quiet_after)

    async def _report(self, final: FinalSnapshot, quiet_after: float | None) -> Report:
        # Calls from before the monitor started belong to an earlier scenario on a reused stack.
        calls = [c for c in collect.read_calls(self.target.anka_homes) if c.start >= self._started]
        history = [v for v in self.history if self._in_scope(v.job)]
        latest: dict[str, JobRecord] = {}
        for version in sorted(history, key=lambda v: v.job.resource_version):
            latest[version.job.uid] = version.job
        jobs = [j for j in final.jobs if self._in_scope(j)]
        latest.update({j.uid: j for j in jobs})
        events = []
        with contextlib.suppress(httpx.HTTPError):
            events = await collect.list_events(self._http, {j.namespace for j in latest.values()})
        names = {v.job.uid: v.job.key for v in self.history}
        self._add(checks.check_calls(calls, self.terminal_at, names))
        self._add(checks.check_transitions(history))
        self._add(checks.check_events(latest.values(), events, final.at))
        self._add(checks.check_progress(jobs, final.at))
        self._add(checks.check_orphans(final))
        if quiet_after is None:
            # Bounded chaos: a job still busy (or stuck "retrying") at the deadline did not make it.
            self._add(
                [
                    Violation(
                        1,
                        j.key,
                        f"not finished when the system should be quiet: {j.phase} "
                        f"({j.reason or 'no reason'}: {j.message or 'no message'})",
                        final.at,
                    )
                    for j in jobs
                    if not j.terminal and j.reason != "Unschedulable"
                ]
            )
        return Report(
            violations=sorted(self._violations.values(), key=lambda v: (v.invariant, v.at)),
            samples=self.samples,
            gaps=self.gaps,
            quiet_after=quiet_after,
            jobs=tuple(jobs),
            calls=len(calls),
            versions=len(history),
        )
