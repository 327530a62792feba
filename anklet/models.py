"""The AnkaJob resource as pydantic models: the one source of truth for its shape.

`crds/ankajob.yaml` is generated from these classes (`make crds`), the controller parses
watch bodies with them, and the dev stack's API emulator validates against the generated
schema, so a field added here reaches every layer at once.
"""

from __future__ import annotations

import enum
import types
from collections.abc import Mapping
from datetime import datetime
from typing import Annotated, Any, Union, get_args, get_origin

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.fields import FieldInfo

GROUP = "anklet.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
INT64_MAX = 2**63 - 1  # what a Kubernetes API server stores in an integer field
KIND = "AnkaJob"
PLURAL = "ankajobs"
SINGULAR = "ankajob"
SHORT_NAMES = ["aj"]


class Phase(enum.StrEnum):
    """Where an AnkaJob is in its life; only the controller moves it forward.

    Pending: accepted, waiting for a host. Scheduled: a host's capacity is reserved.
    Provisioning: the host is pulling/cloning/starting the VM. Running: the workload runs.
    Succeeded / Failed / Cancelled: terminal, and the VM is gone.
    """

    PENDING = "Pending"
    SCHEDULED = "Scheduled"
    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    def is_terminal(self) -> bool:
        return self in TERMINAL_PHASES

    def has_vm(self) -> bool:
        """True while a host may hold a VM (or be about to create one) for the job."""
        return self in (Phase.SCHEDULED, Phase.PROVISIONING, Phase.RUNNING)

    @property
    def rank(self) -> int:
        """Order used to apply observations forward only (terminal phases share the top)."""
        return _PHASE_RANK[self]


TERMINAL_PHASES = frozenset({Phase.SUCCEEDED, Phase.FAILED, Phase.CANCELLED})
_PHASE_RANK = {
    Phase.PENDING: 0,
    Phase.SCHEDULED: 1,
    Phase.PROVISIONING: 2,
    Phase.RUNNING: 3,
    Phase.SUCCEEDED: 4,
    Phase.FAILED: 4,
    Phase.CANCELLED: 4,
}

K8sName = Annotated[str, StringConstraints(min_length=1, max_length=253)]


class _Model(BaseModel):
    model_config = ConfigDict(populate_by_name=True, extra="forbid")


def _allows_none(annotation: Any) -> bool:
    """True if None is a valid value of the annotation (`X | None`, `Optional[X]`, `Any`)."""
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    origin = get_origin(annotation)
    if origin is Annotated:
        return _allows_none(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_allows_none(arg) for arg in get_args(annotation))
    return False


def _is_map_without_null_values(annotation: Any) -> bool:
    """True for `dict[K, V]` (also inside `... | None`) whose values V cannot be None."""
    origin = get_origin(annotation)
    if origin is Annotated:
        return _is_map_without_null_values(get_args(annotation)[0])
    if origin is Union or origin is types.UnionType:
        return any(_is_map_without_null_values(arg) for arg in get_args(annotation))
    return origin is dict and len(get_args(annotation)) == 2 and not _allows_none(get_args(annotation)[1])


def prune_nulls(data: Mapping[str, Any], fields: Mapping[str, FieldInfo]) -> dict[str, Any]:
    """`data` without the nulls kube-apiserver prunes before it defaults and validates.

    Why: the model must accept what kube-apiserver accepts and read it as the API server stores
    it. A YAML `priority:` line or `env: {A: }` entry is a JSON null; the API server drops the null
    of a field that is not `nullable: true` (the generated CRD has none) and then fills in the
    field's default, and drops a null map entry (`additionalProperties`). So here: a null for a
    field whose annotation does not allow None is dropped (pydantic then uses the default, or
    reports the required field as missing, as the API server does), and null entries of a
    `dict[str, str]` are dropped. Nulls the model's annotation allows (`tag: str | None`) stay
    and mean "absent" either way; null list items stay and are refused, as by the API server.

    Keys are matched by their wire name (the alias) only: the API server refuses `backoff_limit`
    as an unknown field, so the model must still see (and refuse) its null. Unknown keys are left
    for `extra="forbid"`. Returns a new dict; `data` is not changed.
    """
    by_wire_name = {field.alias or name: field for name, field in fields.items()}
    pruned: dict[str, Any] = {}
    for key, value in data.items():
        field = by_wire_name.get(key)
        if field is None:
            pruned[key] = value
        elif value is None and not _allows_none(field.annotation):
            continue
        elif isinstance(value, dict) and _is_map_without_null_values(field.annotation):
            pruned[key] = {k: v for k, v in value.items() if v is not None}
        else:
            pruned[key] = value
    return pruned


class _SpecModel(_Model):
    """The spec as the CRD types it: strict, so the model refuses what the API server refuses
    ("5" for an integer, 1 or "true" for a boolean) instead of coercing it (tests/fuzz), and
    accepts the nulls it prunes (`prune_nulls`)."""

    model_config = ConfigDict(populate_by_name=True, extra="forbid", strict=True)

    @model_validator(mode="before")
    @classmethod
    def _prune_nulls_as_the_api_server_does(cls, data: Any) -> Any:
        return prune_nulls(data, cls.model_fields) if isinstance(data, dict) else data


class ScriptSpec(_SpecModel):
    """Settings of the `script` handler: a shell script run inside the VM."""

    run: Annotated[str, StringConstraints(min_length=1)] = Field(
        description="Shell script run inside the VM with bash -l as the VM's default user."
    )
    env: dict[str, str] = Field(default_factory=dict, description="Environment variables set for the script.")


class GitHubJobSpec(_SpecModel):
    """Which GitHub Actions job this AnkaJob serves (written by the GitHub receiver)."""

    owner: str = Field(description="Repository owner (user or organisation).")
    repo: str = Field(description="Repository name.")
    job_id: int = Field(alias="jobId", ge=1, le=INT64_MAX, description="workflow_job id.")
    run_id: int = Field(alias="runId", ge=1, le=INT64_MAX, description="workflow run id.")
    run_attempt: int = Field(default=1, alias="runAttempt", ge=1, le=INT64_MAX)
    labels: list[str] = Field(default_factory=list, description="The job's runs-on labels.")
    html_url: str | None = Field(default=None, alias="htmlUrl")
    workflow_name: str | None = Field(default=None, alias="workflowName")
    job_name: str | None = Field(default=None, alias="jobName")


class GitHubJobStatus(_Model):
    """What the controller learnt about the GitHub job (from webhooks and the jobs API)."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    status: str | None = Field(default=None, description="queued, waiting, in_progress or completed.")
    conclusion: str | None = Field(default=None, description="GitHub's conclusion once completed.")
    runner_name: str | None = Field(default=None, alias="runnerName")
    runner_id: int | None = Field(default=None, alias="runnerId")


class Resources(_SpecModel):
    """What one VM of the job needs from its host; the scheduler reserves exactly this."""

    cpu: int = Field(ge=1, le=512, description="CPU cores for the VM.")
    memory_mib: int = Field(
        alias="memoryMiB", ge=256, le=4 * 1024 * 1024, description="Memory for the VM in MiB."
    )


class AnkaJobSpec(_SpecModel):
    """What the user wants: one workload in one fresh VM cloned from an Anka template."""

    template: Annotated[str, StringConstraints(min_length=1, max_length=253)] = Field(
        description="Anka template UUID or name."
    )
    tag: Annotated[str, StringConstraints(min_length=1, max_length=253)] | None = Field(
        default=None, description="Template tag; the template's latest tag when absent."
    )
    handler: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,62}$")] = Field(
        description="Handler plugin that defines the workload (script, github, ...)."
    )
    script: ScriptSpec | None = Field(default=None, description="Settings of the script handler.")
    github: GitHubJobSpec | None = Field(
        default=None, description="Settings of the github handler (written by the GitHub receiver)."
    )
    resources: Resources | None = Field(
        default=None, description="CPU and memory per VM; default: the template tag's own."
    )
    host_selector: dict[str, str] | None = Field(
        default=None, alias="hostSelector", description="Labels a host must have."
    )
    queue: str | None = Field(
        default=None, max_length=63, description="Routing group; only hosts serving it are used."
    )
    mounts: list[str] | None = Field(
        default=None, description="Host-to-guest folder mounts as host_path[:guest_name]."
    )
    timeout_seconds: int | None = Field(
        default=None,
        alias="timeoutSeconds",
        ge=1,
        le=INT64_MAX,
        description="Upper bound for the workload's run.",
    )
    ttl_seconds_after_finished: int | None = Field(
        default=None,
        alias="ttlSecondsAfterFinished",
        ge=0,
        le=INT64_MAX,
        description="Delete the AnkaJob this long after it finished.",
    )
    priority: int = Field(
        default=0, ge=-1000, le=1000, description="Higher runs first; FIFO within one priority."
    )
    backoff_limit: int = Field(
        default=2,
        alias="backoffLimit",
        ge=0,
        le=100,
        description="Retries after infrastructure failures (not after the workload's own failure).",
    )
    cancel: bool = Field(default=False, description="Set true to cancel the job and tear its VM down.")


class ConditionStatus(enum.StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class Condition(_Model):
    """A Kubernetes-style condition: says *why* the job is where it is."""

    type: str
    status: ConditionStatus
    reason: str
    message: str = ""
    last_transition_time: datetime | None = Field(default=None, alias="lastTransitionTime")


class AnkaJobStatus(_Model):
    """What the controller observed; written only by the controller."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    phase: Phase = Field(default=Phase.PENDING, description="Where the job is in its life.")
    host: str | None = Field(default=None, description="Host the job is scheduled on.")
    vm_name: str | None = Field(default=None, alias="vmName", description="Name of the job's VM.")
    attempts: int = Field(default=0, ge=0, description="How many times the job was placed on a host.")
    exit_code: int | None = Field(default=None, alias="exitCode", description="Workload exit code.")
    reason: str | None = Field(default=None, description="Machine-readable cause of the phase.")
    message: str | None = Field(default=None, description="Human-readable cause of the phase.")
    output: str | None = Field(default=None, description="Tail of the workload's output.")
    start_time: datetime | None = Field(default=None, alias="startTime")
    completion_time: datetime | None = Field(default=None, alias="completionTime")
    observed_generation: int | None = Field(default=None, alias="observedGeneration")
    github: GitHubJobStatus | None = Field(default=None, description="State of the GitHub job.")
    conditions: list[Condition] = Field(default_factory=list)


class ObjectMeta(BaseModel):
    """The parts of Kubernetes metadata the controller reads."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    name: str
    namespace: str = "default"
    uid: str = ""
    generation: int = 0
    creation_timestamp: datetime | None = Field(default=None, alias="creationTimestamp")
    deletion_timestamp: datetime | None = Field(default=None, alias="deletionTimestamp")
    labels: dict[str, str] = Field(default_factory=dict)
    annotations: dict[str, str] = Field(default_factory=dict)


class AnkaJob(BaseModel):
    """A whole AnkaJob object as read from the API."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    api_version: str = Field(default=API_VERSION, alias="apiVersion")
    kind: str = KIND
    metadata: ObjectMeta
    spec: AnkaJobSpec
    status: AnkaJobStatus = Field(default_factory=AnkaJobStatus)


HOST_KIND = "AnkaHost"
HOST_PLURAL = "ankahosts"
HOST_SINGULAR = "ankahost"
HOST_SHORT_NAMES = ["ah"]


class AnkaHostSpec(_Model):
    """What operators want of a Mac; the agent registers the Mac, the controller creates this."""

    unschedulable: bool = Field(default=False, description="Cordon: no new jobs; running ones finish.")
    labels: dict[str, str] = Field(default_factory=dict, description="Extra scheduling labels.")
    pre_pull: list[str] = Field(
        default_factory=list, alias="prePull", description="template[:tag] to pull ahead of demand."
    )


class HostCapacity(_Model):
    vm_slots: int = Field(default=0, alias="vmSlots")
    cpu: int = 0
    memory_mib: int = Field(default=0, alias="memoryMiB")
    disk_bytes: int | None = Field(default=None, alias="diskBytes")


class HostTemplate(_Model):
    uuid: str
    name: str
    tag: str | None = None
    image_size: int | None = Field(default=None, alias="imageSize")


class HostPull(_Model):
    """A template pull in progress on the host."""

    template: str
    tag: str | None = None
    size_bytes: int = Field(
        default=0, alias="sizeBytes", ge=0, le=2**63 - 1, description="To download; 0 unknown."
    )
    started_at: datetime | None = Field(default=None, alias="startedAt")


class AnkaHostStatus(_Model):
    """Live figures of a Mac, mirrored by the controller from the agent's heartbeats."""

    model_config = ConfigDict(populate_by_name=True, extra="ignore")

    ready: bool = Field(default=False, description="The agent's heartbeat lease is live.")
    capacity: HostCapacity = Field(default_factory=HostCapacity)
    allocated: HostCapacity = Field(default_factory=HostCapacity)
    vms: str = Field(default="0/0", description="VM slots used/max (printer column).")
    cpu: str = Field(default="0/0", description="Cores allocated/total (printer column).")
    memory: str = Field(default="0/0", description="Memory allocated/total in GiB (printer column).")
    jobs: list[str] = Field(default_factory=list, description="namespace/name of jobs placed here.")
    templates: list[HostTemplate] = Field(default_factory=list)
    pulling: HostPull | None = Field(default=None, description="The template pull in progress, if any.")
    arch: str | None = None
    anka_version: str | None = Field(default=None, alias="ankaVersion")
    license_type: str | None = Field(default=None, alias="licenseType")
    agent_version: str | None = Field(default=None, alias="agentVersion")
    draining: bool = Field(default=False, description="The host itself asked for no new work.")
    last_heartbeat: datetime | None = Field(default=None, alias="lastHeartbeat")
    conditions: list[Condition] = Field(default_factory=list)
