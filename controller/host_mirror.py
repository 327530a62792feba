"""AnkaHost objects kept in step with the Macs' Redis registrations, and the way back.

Agents register in Redis; the Kubernetes side is the operator's window on them. This adapter
writes each Mac's AnkaHost status (only when something meaningful changed), posts its Events
(registered, ready, lost, cordoned, draining) once each, carries the operator's spec (cordon,
labels, prePull) back to the host's Redis config, and tracks which hosts have been gone long
enough to count as lost. Every decision is a pure function in `controller.hosts`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

from pydantic import ValidationError

from anklet.logcontext import log_context
from anklet.models import AnkaHostSpec, AnkaHostStatus
from anklet.redis_protocol import ControllerProtocol, HostSnapshot
from anklet.wire import HostConfig
from controller import hosts
from controller.events import WARNING, Event, HostView, host_events
from controller.kube import KubeClient, KubeError
from controller.snapshots import SnapshotCache

log = logging.getLogger("anklet.controller")


class HostMirror:
    """The controller's view of the fleet's AnkaHosts and the writes that keep them current."""

    def __init__(
        self, proto: ControllerProtocol, kube: KubeClient, snapshots: SnapshotCache, *, lost_seconds: float
    ) -> None:
        self.proto = proto
        self.kube = kube
        self.snapshots = snapshots
        self.specs: dict[str, AnkaHostSpec] = {}
        self.statuses: dict[str, AnkaHostStatus] = {}
        self.loss = hosts.LossTracker(grace=lost_seconds)
        self.fleet: list[HostSnapshot] = []  # the last fleet read (the metrics' fleet gauges)
        self._views: dict[str, HostView] = {}  # what each AnkaHost's Events last said
        self._uids: dict[str, str] = {}
        self._configs: dict[str, HostConfig] = {}  # what each host's Redis config last got
        self._lost_reported: set[str] = set()
        self._failed = False

    def observe(self, body: Mapping[str, Any], *, deleted: bool = False) -> bool:
        """Take one AnkaHost watch event; True when the operator's spec changed (so placements
        may differ). A status-only change, mostly our own write echoing back, is not one:
        re-planning every pending job per AnkaHost write does not scale."""
        name = body.get("metadata", {}).get("name", "")
        if not name:
            return False
        if deleted:
            self.specs.pop(name, None)
            self.statuses.pop(name, None)
            self._views.pop(name, None)
            self._uids.pop(name, None)
            return True
        self._uids[name] = body.get("metadata", {}).get("uid", "")
        try:
            spec = AnkaHostSpec.model_validate(body.get("spec") or {})
            status = AnkaHostStatus.model_validate(body.get("status") or {})
        except ValidationError as exc:
            log.error("ignoring malformed AnkaHost %s: %s", name, exc)
            return False
        known = self.specs.get(name)
        self.specs[name], self.statuses[name] = spec, status
        return known != spec

    def take(self, snapshot: list[HostSnapshot], now: float) -> list[HostSnapshot]:
        """Record a fleet read (leases, gauges) and return what the scheduler sees of it: each
        registration with its AnkaHost's cordon and labels applied."""
        self.fleet = snapshot
        self.loss.update(snapshot, now)
        return [hosts.effective(s, self.specs.get(s.info.name)) for s in snapshot]

    async def mirror(self, job_names: Mapping[str, str], *, changed: set[str] | None) -> set[str]:
        """Bring AnkaHosts up to date with a fresh fleet read; the hosts lost by now.

        With `changed`, only those hosts' AnkaHosts are rebuilt (plus any whose readiness flipped
        or that have none yet): a release on one Mac must not cost a status build for every Mac.
        `job_names` maps job uids to namespace/name for the hosts' job lists."""
        snapshot = await self.snapshots.get()
        now = time.monotonic()
        self.take(snapshot, now)
        for snap in snapshot:
            previous = self.statuses.get(snap.info.name)
            unchanged = previous is not None and previous.ready == snap.ready
            if changed is not None and snap.info.name not in changed and unchanged:
                continue
            try:
                with log_context(host=snap.info.name):
                    await self._mirror_one(snap, job_names)
            except KubeError as exc:
                # Without the AnkaHost CRD (or its RBAC) hosts still schedule; say so once.
                if not self._failed:
                    log.error("cannot mirror hosts into AnkaHost objects: %s", exc)
                self._failed = True
        lost_now = self.loss.lost_hosts(now)
        for lost in sorted(lost_now - self._lost_reported):
            message = f"no heartbeat for {self.loss.grace:.0f} s: jobs not yet running move to other hosts"
            with log_context(host=lost):
                log.warning("host %s lost: %s", lost, message)
            await self.event(lost, Event("HostLost", message, WARNING))
        self._lost_reported = lost_now
        return lost_now

    async def _mirror_one(self, snap: HostSnapshot, job_names: Mapping[str, str]) -> None:
        name = snap.info.name
        previous = self.statuses.get(name)
        status = hosts.build_status(snap, jobs=hosts.job_names(snap, job_names), previous=previous)
        if name not in self.specs and (created := await self.kube.create_host(name)) is not None:
            log.info("AnkaHost %s created for a newly registered Mac", name)
            self.specs[name] = AnkaHostSpec()
            self._uids[name] = created.get("metadata", {}).get("uid", "")
            await self.event(name, Event("Registered", f"a Mac registered as {name}"))
        spec = self.specs.get(name)
        if spec is not None:
            config = HostConfig(pre_pull=spec.pre_pull, unschedulable=spec.unschedulable, labels=spec.labels)
            if self._configs.get(name) != config:
                await self.proto.put_host_config(name, config)
                self._configs[name] = config
        patch = hosts.status_patch(status, previous)
        if patch is not None:
            body = await self.kube.patch_host_status(name, patch)
            if body is not None:
                self.statuses[name] = AnkaHostStatus.model_validate(body.get("status") or {})
                uid = body.get("metadata", {}).get("uid", "")
                self._uids[name] = uid or self._uids.get(name, "")
            self._failed = False
        await self._transitions(name, status, previous, spec)

    async def _transitions(
        self, name: str, status: AnkaHostStatus, previous: AnkaHostStatus | None, spec: AnkaHostSpec | None
    ) -> None:
        """Post the AnkaHost's Events for what changed since its Events last spoke (so a write
        repeated from a stale view says nothing twice)."""
        after = HostView(
            ready=status.ready,
            cordoned=spec is not None and spec.unschedulable,
            draining=status.draining,
            vms=status.allocated.vm_slots,
        )
        before = self._views.get(name)
        if before is None and previous is not None:
            # First look in this process: compare with what the AnkaHost said (not the cordon:
            # what it was before is unknown, and a restart must not announce it again).
            before = HostView(
                ready=previous.ready,
                cordoned=after.cordoned,
                draining=previous.draining,
                vms=previous.allocated.vm_slots,
            )
        self._views[name] = after
        for event in host_events(before, after):
            logger = log.warning if event.type == WARNING else log.info
            logger("host %s: %s: %s", name, event.reason, event.message)
            await self.event(name, event)

    async def event(self, name: str, event: Event) -> None:
        await self.kube.host_event(
            name, self._uids.get(name, ""), reason=event.reason, message=event.message, type_=event.type
        )
