"""Leader election over a coordination.k8s.io/v1 Lease, with client-go's semantics.

Two controller replicas may run; only the holder of the Lease acts. The rules are client-go's
(`k8s.io/client-go/tools/leaderelection`), so the Lease reads the same in `kubectl get lease` and
mixes with Go tooling:

- a candidate acquires the Lease when it is absent, released (empty holderIdentity), or expired;
- "expired" is judged by the *local* monotonic clock: leaseDurationSeconds after the moment this
  process last saw the Lease change. The remote renewTime is never compared with the
  local clock, so clock skew between machines cannot make two leaders;
- every write carries the resourceVersion last read, so of two racing writers one gets 409;
- the leader renews every retry period and steps down when it has not renewed for the renew
  deadline (shorter than the lease duration, so it stops before anyone else may start).

The decisions are pure functions over plain data (`observe`, `decide`, `next_record`), tested
without I/O; `LeaderElector` is the thin async adapter that reads and writes the Lease.
"""

from __future__ import annotations

import asyncio
import dataclasses
import enum
import logging
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import httpx

from controller.kube import KubeClient, KubeError

log = logging.getLogger("anklet.controller.leader")

LEASE_API_VERSION = "coordination.k8s.io/v1"


@dataclasses.dataclass(frozen=True)
class Timing:
    """client-go's three durations, in seconds (defaults as client-go's: 15 / 10 / 2).

    lease_duration > renew_deadline > retry_period: the leader gives up (renew deadline) before
    a standby may take over (lease duration), and gets several renewal attempts before that.
    """

    lease_duration: float = 15.0
    renew_deadline: float = 10.0
    retry_period: float = 2.0

    def __post_init__(self) -> None:
        if not self.lease_duration > self.renew_deadline > self.retry_period > 0:
            raise ValueError(
                "leader election needs lease duration > renew deadline > retry period > 0, got "
                f"{self.lease_duration} / {self.renew_deadline} / {self.retry_period}"
            )

    @property
    def lease_seconds(self) -> int:
        """leaseDurationSeconds is an integer: rounding up keeps the guarantee above."""
        return math.ceil(self.lease_duration)


@dataclasses.dataclass(frozen=True)
class LeaseRecord:
    """The Lease's spec, the part that client-go compares to notice a change."""

    holder: str  # "" when released
    duration_seconds: int
    acquire_time: str | None = None
    renew_time: str | None = None
    transitions: int = 0


@dataclasses.dataclass(frozen=True)
class Observed:
    """What this process knows of the Lease: its record (None: no Lease object), the
    resourceVersion to write against, and the local monotonic time the record last changed."""

    record: LeaseRecord | None
    resource_version: str | None
    changed_at: float


class Action(enum.Enum):
    CREATE = "create"  # no Lease yet: create it holding it
    TAKE_OVER = "take over"  # another holder's lease expired or was released
    RENEW = "renew"  # this identity holds it
    WAIT = "wait"  # someone else holds a live lease
    STEP_DOWN = "step down"  # the leader lost the lease or could not renew in time


def observe(
    previous: Observed | None, record: LeaseRecord | None, resource_version: str | None, now: float
) -> Observed:
    """Fold one read of the Lease into what is known. The local clock restarts whenever the Lease
    was written since the last read: its record changed (client-go's test) or its
    resourceVersion did (so even a renewal with an unchanged renewTime, from a holder whose wall
    clock stands still, counts). The record's own timestamps are never read as times."""
    if previous is not None and (previous.record, previous.resource_version) == (record, resource_version):
        return previous
    return Observed(record, resource_version, now)


def lease_expired(observed: Observed, now: float) -> bool:
    """Free to take: absent, released, or unchanged for its whole duration as seen locally."""
    record = observed.record
    if record is None or not record.holder:
        return True
    return now >= observed.changed_at + max(record.duration_seconds, 0)


def leadership_expired(renewed_at: float | None, now: float, timing: Timing) -> bool:
    """The leader has not renewed within the renew deadline (`renewed_at`: local time at which
    its last successful write was sent; None when not leading)."""
    return renewed_at is not None and now - renewed_at >= timing.renew_deadline


def decide(observed: Observed, now: float, identity: str, timing: Timing, renewed_at: float | None) -> Action:
    """The next step of the election for `identity`, given the Lease as last read.

    `renewed_at` is None while this process is not leading; otherwise the local time at which
    its last successful acquire/renew was sent.
    """
    leading = renewed_at is not None
    if leading and leadership_expired(renewed_at, now, timing):
        return Action.STEP_DOWN
    record = observed.record
    if record is None:
        return Action.CREATE  # as client-go: also when the leader finds its Lease deleted
    if record.holder == identity:
        return Action.RENEW  # also a restarted process with the same identity (the old one is gone)
    if leading:
        return Action.STEP_DOWN  # someone else holds it, or it was cleared under us
    return Action.TAKE_OVER if lease_expired(observed, now) else Action.WAIT


def next_record(action: Action, observed: Observed, identity: str, timing: Timing, wall: str) -> LeaseRecord:
    """The record to write for CREATE / TAKE_OVER / RENEW (`wall`: the current time, MicroTime).

    As client-go: a holder keeps acquireTime and leaseTransitions on renewal; a new holder
    sets acquireTime and counts one transition.
    """
    previous = observed.record
    if action is Action.CREATE or previous is None:
        return LeaseRecord(identity, timing.lease_seconds, wall, wall, 0)
    if action is Action.RENEW:
        return dataclasses.replace(
            previous, holder=identity, duration_seconds=timing.lease_seconds, renew_time=wall
        )
    if action is Action.TAKE_OVER:
        return LeaseRecord(identity, timing.lease_seconds, wall, wall, previous.transitions + 1)
    raise ValueError(f"{action.value} writes nothing")


def released_record(record: LeaseRecord, wall: str) -> LeaseRecord:
    """What a leader writes when it shuts down (client-go's ReleaseOnCancel): no holder and a
    one-second duration, so a standby takes over on its next try instead of after the lease."""
    return LeaseRecord("", 1, wall, wall, record.transitions)


def micro_time(moment: datetime) -> str:
    """The Lease's MicroTime format, e.g. 2026-01-02T03:04:05.123456Z."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def record_from_lease(lease: dict[str, Any]) -> LeaseRecord:
    """The record of a Lease object (missing or malformed numbers read as 0: expired at once)."""
    spec = lease.get("spec") or {}
    return LeaseRecord(
        holder=str(spec.get("holderIdentity") or ""),
        duration_seconds=_int(spec.get("leaseDurationSeconds")),
        acquire_time=spec.get("acquireTime"),
        renew_time=spec.get("renewTime"),
        transitions=_int(spec.get("leaseTransitions")),
    )


def lease_object(
    namespace: str, name: str, record: LeaseRecord, resource_version: str | None
) -> dict[str, Any]:
    """The Lease to PUT or POST; the resourceVersion makes the write conditional."""
    metadata: dict[str, Any] = {"name": name, "namespace": namespace}
    if resource_version:
        metadata["resourceVersion"] = resource_version
    spec: dict[str, Any] = {
        "holderIdentity": record.holder,
        "leaseDurationSeconds": record.duration_seconds,
        "leaseTransitions": record.transitions,
    }
    if record.acquire_time:
        spec["acquireTime"] = record.acquire_time
    if record.renew_time:
        spec["renewTime"] = record.renew_time
    return {"apiVersion": LEASE_API_VERSION, "kind": "Lease", "metadata": metadata, "spec": spec}


@dataclasses.dataclass(frozen=True)
class ElectionConfig:
    namespace: str
    name: str
    identity: str
    timing: Timing = Timing()

    @property
    def lease_ref(self) -> str:
        return f"{self.namespace}/{self.name}"


_IO_ERRORS = (KubeError, httpx.HTTPError, OSError, TimeoutError)


class LeaderElector:
    """Reads and writes the Lease on a timer; every decision is `decide`'s.

    The loops wait on an event with the retry period as timeout: the timer is the protocol
    itself (a lease is kept alive by renewing it), and the event ends the wait on shutdown.
    """

    def __init__(
        self,
        client: KubeClient,
        config: ElectionConfig,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client, self.config = client, config
        self._clock, self._wall = clock, wall
        self.observed: Observed | None = None
        self.renewed_at: float | None = None
        self._last_problem = ""
        self._last_holder: str | None = None

    @property
    def leading(self) -> bool:
        return self.renewed_at is not None

    async def step(self) -> Action:
        """One round: read the Lease, decide, and write if the decision says so.

        A write that loses a race (409) leaves the state as it was; the next round reads again.
        """
        config, timing = self.config, self.config.timing
        lease = await self._client.get_lease(config.namespace, config.name)
        record = record_from_lease(lease) if lease is not None else None
        rv = (lease or {}).get("metadata", {}).get("resourceVersion")
        self.observed = observe(self.observed, record, rv, self._clock())
        action = decide(self.observed, self._clock(), config.identity, timing, self.renewed_at)
        if action is Action.STEP_DOWN:
            self.renewed_at = None
            return action
        if action is Action.WAIT:
            self._note_holder(record)
            return action
        wanted = next_record(action, self.observed, config.identity, timing, micro_time(self._wall()))
        body = lease_object(config.namespace, config.name, wanted, self.observed.resource_version)
        sent_at = self._clock()  # others see the write no earlier than this: the safe side
        if action is Action.CREATE:
            written = await self._client.create_lease(config.namespace, body)
        else:
            written = await self._client.replace_lease(config.namespace, config.name, body)
        if written is None:
            log.debug("lease %s: %s lost a race (conflict)", config.lease_ref, action.value)
            return action
        self.observed = observe(
            self.observed,
            record_from_lease(written),
            written["metadata"].get("resourceVersion"),
            self._clock(),
        )
        self.renewed_at = sent_at
        return action

    async def acquire(self, stop: asyncio.Event) -> bool:
        """Wait until this process holds the Lease (True) or `stop` is set (False)."""
        timing = self.config.timing
        while not stop.is_set():
            await self._attempt(timing.renew_deadline)
            if self.leading:
                log.info("acquired lease %s as %s", self.config.lease_ref, self.config.identity)
                return True
            if await _wait(stop, timing.retry_period):
                break
        return False

    async def hold(self, stop: asyncio.Event) -> bool:
        """Renew every retry period while leading; True when `stop` is set (still leading),
        False as soon as leadership is lost (someone else holds the Lease, or no renewal
        succeeded within the renew deadline)."""
        timing = self.config.timing
        while self.leading:
            if await _wait(stop, timing.retry_period):
                return True
            assert self.renewed_at is not None
            remaining = timing.renew_deadline - (self._clock() - self.renewed_at)
            if remaining > 0:
                action = await self._attempt(remaining)
                if action is Action.STEP_DOWN:
                    break
            if leadership_expired(self.renewed_at, self._clock(), timing):
                self.renewed_at = None
        holder = self.observed.record.holder if self.observed and self.observed.record else None
        log.error(
            "lost lease %s (holder now: %s; last problem: %s)",
            self.config.lease_ref,
            holder or "nobody",
            self._last_problem or "none",
        )
        return False

    async def release(self) -> bool:
        """Give the Lease up on shutdown so a standby takes over at once; True if released.

        Conditional on the last resourceVersion: if anyone wrote since, it is no longer ours.
        """
        observed, config = self.observed, self.config
        if not self.leading or observed is None or observed.record is None:
            return False
        self.renewed_at = None
        body = lease_object(
            config.namespace,
            config.name,
            released_record(observed.record, micro_time(self._wall())),
            observed.resource_version,
        )
        try:
            async with asyncio.timeout(config.timing.renew_deadline):
                written = await self._client.replace_lease(config.namespace, config.name, body)
        except _IO_ERRORS as exc:
            log.warning("could not release lease %s: %s", config.lease_ref, _describe(exc))
            return False
        if written is None:
            return False
        log.info("released lease %s", config.lease_ref)
        return True

    async def _attempt(self, timeout: float) -> Action | None:
        """`step` bounded in time; I/O failures are logged once per distinct problem."""
        try:
            async with asyncio.timeout(timeout):
                action = await self.step()
        except asyncio.CancelledError:
            current = asyncio.current_task()
            if current is not None and current.cancelling():
                raise
            problem = "request cancelled"  # not us being cancelled: count it as a failed attempt
        except _IO_ERRORS as exc:
            problem = _describe(exc)
        else:
            if self._last_problem:
                log.info("lease %s reachable again", self.config.lease_ref)
                self._last_problem = ""
            return action
        if problem != self._last_problem:
            log.warning(
                "lease %s: %s (retrying every %ss)",
                self.config.lease_ref,
                problem,
                self.config.timing.retry_period,
            )
            self._last_problem = problem
        return None

    def _note_holder(self, record: LeaseRecord | None) -> None:
        holder = record.holder if record else None
        if holder != self._last_holder:
            self._last_holder = holder
            log.info("standby: lease %s is held by %s", self.config.lease_ref, holder or "nobody")


async def _wait(stop: asyncio.Event, seconds: float) -> bool:
    """Wait `seconds` or until `stop` is set; True when stopped."""
    try:
        async with asyncio.timeout(seconds):
            await stop.wait()
    except TimeoutError:
        return False
    return True


def _describe(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "the API server did not answer in time"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
