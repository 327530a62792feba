"""One redelivery scan per interval across all receiver replicas: a slot claimed on a Lease.

With N replicas (the production HPA runs 2 to 6) every replica would list the hook's deliveries
and could ask GitHub to redeliver one failed delivery N times. So each replica, on each tick,
first claims the interval's *scan slot*; the one that wins scans, the others skip.

Why a Kubernetes Lease and not a Redis ``SET NX PX``: the receiver has no Redis client and must
not get one. Redis is the link to the Macs (DESIGN.md), the receiver's NetworkPolicy lets it
reach only the API server and GitHub, and a manifest test holds it to that. It already talks to
the API server, so a ``coordination.k8s.io/v1`` Lease in its namespace (``LEASE_NAME``) carries
the slot, read and written with ``controller.leader``'s helpers and ``KubeClient``'s lease calls.

The semantics are those of ``SET key token NX PX <interval>``:

- a claim writes the Lease: a create, or a replace conditional on the resourceVersion just read,
  so of two replicas racing for one slot exactly one succeeds (the other gets 409 and skips);
- a claim is never released early, so the next scan is one interval later, whichever replica
  gets it. The replica that claimed keeps the slot while it lives (its own timer ends first);
  another takes over about one interval after it stops;
- expiry is judged as in ``controller.leader``: by the local monotonic clock, never by comparing
  the Lease's renewTime with the local wall clock, so clock skew between nodes cannot put two
  scans in one slot. A replica's own claim lasts ``slot`` seconds from the start of the tick that
  made it; another replica's claim lasts its ``leaseDurationSeconds`` from the moment this
  process first saw that version of the Lease.

``decide`` and ``claim_record`` are pure; ``ScanLock`` is the thin adapter.
"""

from __future__ import annotations

import enum
import logging
import math
import os
import secrets
import socket
import time
from collections.abc import Callable
from datetime import UTC, datetime

import httpx

from controller.kube import KubeClient, KubeError
from controller.leader import LeaseRecord, Observed, lease_object, micro_time, observe, record_from_lease

log = logging.getLogger("anklet.receiver.github")

#: The Lease that carries the redelivery scan's slot, in the receiver's namespace. One name for
#: every receiver there: receivers watching different hooks belong in different namespaces.
LEASE_NAME = "anklet-receiver-redelivery"

#: A slot counts as over this fraction of its length early. Timers fire on time only roughly: a
#: replica whose tick came a few milliseconds before its own slot ended would otherwise skip a
#: whole interval. 2 % of an interval is far above that jitter, and a scan a little early does no
#: harm (the slot de-duplicates scans; it is not a rate limit).
TIMER_SLACK = 0.02


class Claim(enum.StrEnum):
    CREATE = "create"  # no Lease yet: create it, holding the slot
    TAKE = "take"  # the current slot is over: write ourselves in
    SKIP = "skip"  # a slot still runs (another replica's, or our own)


def decide(observed: Observed, now: float, *, identity: str, claimed_at: float | None, slot: float) -> Claim:
    """Whether to claim the slot now.

    ``observed``: the Lease as this process knows it (``controller.leader.observe``); ``now``:
    the local monotonic clock after the read; ``claimed_at``: the local time at the start of the
    tick in which this process last claimed (None: it never did); ``slot``: our interval.
    """
    record = observed.record
    if record is None:
        return Claim.CREATE
    if not record.holder:
        return Claim.TAKE  # cleared by hand: free
    if record.holder == identity and claimed_at is not None:
        ends = claimed_at + slot * (1 - TIMER_SLACK)
    else:  # another replica's claim (or one by an earlier process with our identity)
        ends = observed.changed_at + max(record.duration_seconds, 0) * (1 - TIMER_SLACK)
    return Claim.TAKE if now >= ends else Claim.SKIP


def claim_record(previous: LeaseRecord | None, identity: str, slot: float, wall: str) -> LeaseRecord:
    """The Lease's spec for a claim. Like a leader's renewal, a replica claiming again keeps
    acquireTime and leaseTransitions; a new holder sets acquireTime and counts one transition.
    leaseDurationSeconds is an integer: rounding up keeps other replicas on the safe side."""
    seconds = max(1, math.ceil(slot))
    if previous is not None and previous.holder == identity:
        return LeaseRecord(identity, seconds, previous.acquire_time or wall, wall, previous.transitions)
    transitions = 0 if previous is None else previous.transitions + 1
    return LeaseRecord(identity, seconds, wall, wall, transitions)


def default_identity() -> str:
    """Unique per process: the pod's name (the hostname in a pod), pid and a random tag. The tag
    tells apart a restarted container (pid 1 again, same pod) and two receivers in one process."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(3)}"


class ScanLock:
    """Claims the redelivery scan's slot on the Lease; every decision is ``decide``'s."""

    def __init__(
        self,
        client: KubeClient,
        namespace: str,
        *,
        name: str = LEASE_NAME,
        identity: str | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._client = client
        self.namespace, self.name = namespace, name
        self.identity = identity or default_identity()
        self._clock, self._wall = clock, wall
        self._observed: Observed | None = None
        self._claimed_at: float | None = None

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.name}"

    @property
    def holder(self) -> str | None:
        """Who holds the slot, as last seen (None: no Lease, or not read yet)."""
        record = self._observed.record if self._observed is not None else None
        return record.holder if record is not None else None

    async def claim(self, slot: float) -> bool:
        """True when this replica won the slot of the next ``slot`` seconds and should scan now;
        False when a slot still runs or another replica won the race. KubeError when the API
        server cannot be asked (then nobody knows: the caller scans nothing and counts an error)."""
        begun = self._clock()
        try:
            return await self._claim(begun, slot)
        except httpx.HTTPError as exc:
            raise KubeError(0, f"{type(exc).__name__}: cannot reach the Kubernetes API") from exc

    async def _claim(self, begun: float, slot: float) -> bool:
        lease = await self._client.get_lease(self.namespace, self.name)
        record = record_from_lease(lease) if lease is not None else None
        version = (lease or {}).get("metadata", {}).get("resourceVersion")
        self._observed = observe(self._observed, record, version, self._clock())
        claim = decide(
            self._observed, self._clock(), identity=self.identity, claimed_at=self._claimed_at, slot=slot
        )
        if claim is Claim.SKIP:
            return False
        wanted = claim_record(record, self.identity, slot, micro_time(self._wall()))
        body = lease_object(self.namespace, self.name, wanted, version)
        if claim is Claim.CREATE:
            written = await self._client.create_lease(self.namespace, body)
        else:
            written = await self._client.replace_lease(self.namespace, self.name, body)
        if written is None:  # 409: another replica claimed this slot first
            return False
        self._claimed_at = begun
        self._observed = observe(
            self._observed,
            record_from_lease(written),
            written.get("metadata", {}).get("resourceVersion"),
            self._clock(),
        )
        return True
