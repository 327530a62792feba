"""Webhook payloads in, facts out: signature check, `workflow_job` parsing, "is this job ours?".

Pure functions only, so every rule here is tested without a server. The receiver answers from
these decisions: a bad signature is 401, a body that is not a valid `workflow_job` event is
400, a job without an `anka-template:` label is acknowledged and ignored.
"""

from __future__ import annotations

import hashlib
import hmac
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from plugins.handlers.github.constants import STATUS_ORDER, TAG_LABEL_PREFIX, TEMPLATE_LABEL_PREFIX
from plugins.handlers.github.schemas import WorkflowJob

SIGNATURE_PREFIX = "sha256="
WORKFLOW_JOB = "workflow_job"
PING = "ping"
KNOWN_EVENTS = frozenset({WORKFLOW_JOB, PING})
MAX_NAME = 253  # template and tag must fit the AnkaJob spec's limits


class InvalidPayload(ValueError):
    """The body is not what its event header claims; the message says which field is wrong."""


def sign(secret: bytes, body: bytes) -> str:
    """The `X-Hub-Signature-256` value GitHub sends for this body."""
    return SIGNATURE_PREFIX + hmac.new(secret, body, hashlib.sha256).hexdigest()


def signature_valid(secret: bytes, body: bytes, header: str | None) -> bool:
    """HMAC-SHA256 over the raw body, compared in constant time."""
    if not header or not header.startswith(SIGNATURE_PREFIX):
        return False
    return hmac.compare_digest(sign(secret, body).encode(), header.strip().encode("utf-8", "replace"))


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Owner(_Lenient):
    login: str = Field(min_length=1)


class Repository(_Lenient):
    name: str = Field(min_length=1)
    owner: Owner


class WorkflowJobEvent(_Lenient):
    """The fields of a `workflow_job` webhook the receiver uses (GitHub's schema has many more)."""

    action: str = Field(min_length=1)
    workflow_job: WorkflowJob
    repository: Repository

    @property
    def owner(self) -> str:
        return self.repository.owner.login

    @property
    def repo(self) -> str:
        return self.repository.name

    @property
    def tracked(self) -> bool:
        """An action that moves the job's status (queued, waiting, in_progress, completed)."""
        return self.action in STATUS_ORDER


def decode_body(body: bytes, content_type: str) -> Any:
    """JSON, or GitHub's form encoding (`payload=<json>`) when the hook was set up that way."""
    try:
        if content_type.split(";", maxsplit=1)[0].strip().lower() == "application/x-www-form-urlencoded":
            fields = parse_qs(body.decode("utf-8"), strict_parsing=True)
            if len(fields.get("payload", [])) != 1:
                raise InvalidPayload("form body without a single 'payload' field")
            return json.loads(fields["payload"][0])
        return json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as exc:  # deep nesting
        if isinstance(exc, InvalidPayload):
            raise
        raise InvalidPayload(f"body is not valid JSON: {type(exc).__name__}") from None


def parse_workflow_job(payload: Any) -> WorkflowJobEvent:
    """Validate a decoded `workflow_job` payload; InvalidPayload names the offending fields."""
    if not isinstance(payload, Mapping):
        raise InvalidPayload("payload is not a JSON object")
    try:
        return WorkflowJobEvent.model_validate(payload)
    except ValidationError as exc:
        problems = exc.errors(include_input=False, include_url=False)
        fields = ", ".join(".".join(str(p) for p in problem["loc"]) for problem in problems[:5])
        raise InvalidPayload(f"not a valid workflow_job event ({fields})") from None


@dataclass(frozen=True)
class AnkaTarget:
    """What the job's labels ask for: an Anka template (UUID or name) and optionally a tag."""

    template: str
    tag: str | None = None


def _label_value(labels: Iterable[str], prefix: str) -> str | None:
    """Value after the first label starting with `prefix` (case-insensitive, like runs-on)."""
    for label in labels:
        if label[: len(prefix)].lower() == prefix:
            return label[len(prefix) :].strip()
    return None


def _usable(name: str) -> bool:
    """A template or tag an AnkaJob can carry: 1–253 printable characters (no control characters,
    no lone surrogates: JSON can spell those, but no valid AnkaJob spec can hold them)."""
    return 0 < len(name) <= MAX_NAME and name.isprintable()


def anka_target(labels: Iterable[str]) -> AnkaTarget | None:
    """The job is ours when a label is `anka-template:<template>` (with a usable template)."""
    labels = list(labels)
    template = _label_value(labels, TEMPLATE_LABEL_PREFIX)
    if template is None or not _usable(template):
        return None
    tag = _label_value(labels, TAG_LABEL_PREFIX)
    if tag is not None and not _usable(tag):
        return None  # a tag label that names no usable tag: running "latest" instead would surprise
    return AnkaTarget(template=template, tag=tag)


def wants_anka_but_no_template(labels: Iterable[str]) -> bool:
    """A tag label without a template label: worth a warning, since the job will never run here."""
    labels = list(labels)
    return anka_target(labels) is None and any(
        label.lower().startswith(("anka-template", TAG_LABEL_PREFIX)) for label in labels
    )
