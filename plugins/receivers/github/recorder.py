"""Store one webhook's effect on its AnkaJob: create it, or move its annotations forward.

Read, decide (`ankajobs.forward_decision`), write with the read resourceVersion as an optimistic
lock, and on a lost race read again. Concurrent deliveries for one job (two receiver replicas,
a redelivery crossing the original) therefore converge on the latest status instead of
overwriting each other. A Kubernetes failure raises StoreUnavailable: the receiver answers 5xx
so the delivery shows as failed on GitHub and the redelivery scan picks it up.
"""

from __future__ import annotations

import enum
import logging
from dataclasses import dataclass

from controller.kube import KubeError
from plugins.handlers.github.constants import ANNOTATION_STATUS
from plugins.receivers.github import ankajobs
from plugins.receivers.github.ankajobs import Change
from plugins.receivers.github.events import AnkaTarget, WorkflowJobEvent
from plugins.receivers.github.kube import AnkaJobStore, PatchResult

log = logging.getLogger("anklet.receiver.github")

MAX_RACES = 8  # lost optimistic-lock races before giving up (and answering 5xx)


class Outcome(enum.StrEnum):
    """The `result` label of the webhook counter, and the `result` of the JSON answer."""

    CREATED = "created"
    UPDATED = "updated"
    DUPLICATE = "duplicate"
    STALE = "stale"
    IGNORED = "ignored"


class StoreUnavailable(RuntimeError):
    """The Kubernetes API failed; the event was not stored."""


@dataclass(frozen=True)
class StoredJob:
    """What the receiver knows about an AnkaJob (for the redelivery scan)."""

    exists: bool
    status: str | None = None


class Recorder:
    def __init__(self, store: AnkaJobStore, namespace: str) -> None:
        self._store = store
        self.namespace = namespace

    async def record(self, event: WorkflowJobEvent, target: AnkaTarget, delivery: str | None) -> Outcome:
        name = ankajobs.name_for(event)
        try:
            for _ in range(MAX_RACES):
                current = await self._store.get(self.namespace, name)
                if current is None:
                    body = ankajobs.build_ankajob(event, target, namespace=self.namespace, delivery=delivery)
                    if await self._store.create(self.namespace, body):
                        log.info(
                            "created AnkaJob %s/%s for %s/%s job %d (%s)",
                            self.namespace,
                            name,
                            event.owner,
                            event.repo,
                            event.workflow_job.id,
                            event.action,
                        )
                        return Outcome.CREATED
                    continue  # created concurrently: compare with what is there now
                metadata = current.get("metadata", {})
                decision = ankajobs.forward_decision(metadata.get("annotations") or {}, event, delivery)
                if not decision.writes:
                    return Outcome.STALE if decision.change is Change.STALE else Outcome.DUPLICATE
                result = await self._store.patch_annotations(
                    self.namespace,
                    name,
                    decision.annotations,
                    resource_version=str(metadata.get("resourceVersion", "")),
                )
                if result is PatchResult.OK:
                    log.info(
                        "AnkaJob %s/%s: github status %s (%s)",
                        self.namespace,
                        name,
                        event.action,
                        decision.change,
                    )
                    return Outcome.UPDATED
                log.debug(
                    "AnkaJob %s/%s changed while recording %s (%s); retrying",
                    self.namespace,
                    name,
                    event.action,
                    result,
                )
        except KubeError as exc:
            raise StoreUnavailable(str(exc)) from exc
        raise StoreUnavailable(
            f"AnkaJob {self.namespace}/{name} kept changing; gave up after {MAX_RACES} attempts"
        )

    async def stored(self, name: str) -> StoredJob:
        """Whether the AnkaJob exists and which GitHub status it records (KubeError propagates)."""
        current = await self._store.get(self.namespace, name)
        if current is None:
            return StoredJob(exists=False)
        annotations = current.get("metadata", {}).get("annotations") or {}
        return StoredJob(exists=True, status=annotations.get(ANNOTATION_STATUS))
