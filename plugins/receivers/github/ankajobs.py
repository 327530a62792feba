"""How a `workflow_job` webhook maps onto an AnkaJob: the manifest to create, the annotations to patch.

The receiver never writes status (the controller owns it); it records what GitHub said in
annotations, forward only along `STATUS_ORDER` (queued < waiting < in_progress < completed).
Webhooks arrive duplicated, late and out of order, so every decision compares the event with
what is stored: a later status replaces an earlier one, an earlier one changes nothing, and the
same status may only fill in a field that is still missing. Pure functions, no I/O.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from anklet import models
from plugins.handlers.github.constants import (
    ANNOTATION_CONCLUSION,
    ANNOTATION_DELIVERY,
    ANNOTATION_RUNNER,
    ANNOTATION_STATUS,
    LABEL_JOB_ID,
    LABEL_REPOSITORY,
    LABEL_RUN_ID,
    STATUS_ORDER,
    ankajob_name,
    label_value,
)
from plugins.receivers.github.events import AnkaTarget, WorkflowJobEvent

HANDLER = "github"
MAX_DELIVERY_ANNOTATION = 100


def name_for(event: WorkflowJobEvent) -> str:
    job = event.workflow_job
    return ankajob_name(job.id, job.run_attempt)


def rank(status: str | None) -> int:
    """Position in STATUS_ORDER; -1 for no or an unknown status (anything is forward from it)."""
    return STATUS_ORDER.get(status or "", -1)


def recorded_facts(event: WorkflowJobEvent, delivery: str | None) -> dict[str, str]:
    """Every annotation this event can set: status, and conclusion/runner/delivery when known."""
    job = event.workflow_job
    facts = {ANNOTATION_STATUS: event.action}
    if event.action == "completed" and job.conclusion:
        facts[ANNOTATION_CONCLUSION] = job.conclusion
    if job.runner_name:
        facts[ANNOTATION_RUNNER] = job.runner_name
    if delivery:
        facts[ANNOTATION_DELIVERY] = delivery[:MAX_DELIVERY_ANNOTATION]
    return facts


def build_ankajob(
    event: WorkflowJobEvent, target: AnkaTarget, *, namespace: str, delivery: str | None
) -> dict[str, Any]:
    """The AnkaJob for this job attempt, already carrying the event's status.

    Created from whichever event arrives first: if that is `completed`, the object says so from
    the start and the controller ends it without a VM, so a late `queued` cannot start one.
    The spec is validated against the model, so a webhook can never produce an invalid object.
    """
    job = event.workflow_job
    github: dict[str, Any] = {
        "owner": event.owner,
        "repo": event.repo,
        "jobId": job.id,
        "runId": job.run_id,
        "runAttempt": job.run_attempt,
        "labels": list(job.labels),
    }
    for key, value in (("htmlUrl", job.html_url), ("workflowName", job.workflow_name), ("jobName", job.name)):
        if value:
            github[key] = value
    spec: dict[str, Any] = {"template": target.template, "handler": HANDLER, "github": github}
    if target.tag:
        spec["tag"] = target.tag
    models.AnkaJobSpec.model_validate(spec)
    return {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {
            "name": name_for(event),
            "namespace": namespace,
            "labels": {
                LABEL_JOB_ID: str(job.id),
                LABEL_RUN_ID: str(job.run_id),
                LABEL_REPOSITORY: label_value(f"{event.owner}/{event.repo}"),
            },
            "annotations": recorded_facts(event, delivery),
        },
        "spec": spec,
    }


class Change(enum.StrEnum):
    """What an event does to a stored AnkaJob's annotations."""

    ADVANCE = "advance"  # a later status: recorded with its details
    FILL = "fill"  # the same status, adding a detail that was missing (e.g. the runner name)
    DUPLICATE = "duplicate"  # the same status, nothing new
    STALE = "stale"  # an earlier status than the stored one: ignored


@dataclass(frozen=True)
class Decision:
    change: Change
    annotations: dict[str, str] = field(default_factory=dict)

    @property
    def writes(self) -> bool:
        return bool(self.annotations)


def forward_decision(stored: Mapping[str, str], event: WorkflowJobEvent, delivery: str | None) -> Decision:
    """Annotations to merge into an existing AnkaJob for this event (forward only)."""
    new, old = rank(event.action), rank(stored.get(ANNOTATION_STATUS))
    facts = recorded_facts(event, delivery)
    if new > old:
        return Decision(Change.ADVANCE, facts)
    if new < old:
        return Decision(Change.STALE)
    missing = {
        key: value
        for key, value in facts.items()
        if key in (ANNOTATION_CONCLUSION, ANNOTATION_RUNNER) and not stored.get(key)
    }
    return Decision(Change.FILL, missing) if missing else Decision(Change.DUPLICATE)
