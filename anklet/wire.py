"""Data that crosses Redis between the controller and the host agents.

These are plain pydantic models serialised as JSON; both sides import them, so a change of
shape is a change in one place. Nothing here carries a secret: per-run secrets travel in
their own host-scoped keys with a TTL.
"""

from __future__ import annotations

import enum
from typing import Annotated

from pydantic import BaseModel, ConfigDict, Field


class _Wire(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class TemplateInfo(_Wire):
    """A template tag present on a host's disk, with the VM size it defines."""

    uuid: str
    name: str
    tag: str | None = None
    cpu: int | None = None
    memory_mib: int | None = None
    image_size: int | None = None


class PullInfo(_Wire):
    """The template pull in progress on a host (there is at most one), for operators to watch:
    a pull is tens of GiB and can take an hour."""

    template: str
    tag: str | None = None
    size_bytes: int = 0  # to download (anka registry check-download-size); 0 when unknown
    started_at: float = 0.0  # epoch seconds


class HostInfo(_Wire):
    """What an agent registers: capacity, facts, and routing labels of one Mac."""

    name: str
    arch: str = "arm64"
    cpu: int = Field(ge=1)
    memory_mib: int = Field(ge=1)
    disk_total: int = 0
    disk_free: int = 0
    vm_slots: int = Field(ge=0, default=2)
    overcommit: bool = False
    schedulable: bool = True
    labels: dict[str, str] = Field(default_factory=dict)
    queues: list[str] = Field(default_factory=list)
    anka_version: str = ""
    license_type: str = ""
    license_status: str = ""
    agent_version: str = ""
    templates: list[TemplateInfo] = Field(default_factory=list)
    pulling: PullInfo | None = None


class HostConfig(_Wire):
    """What the controller wants of one host, beyond its jobs (``keys.host_config``).

    Written by the controller as camelCase JSON; the agent acts on ``pre_pull`` (templates to keep
    on disk, ``"<template>[:<tag>]"``). ``unschedulable`` and ``labels`` are for the controller.
    """

    model_config = ConfigDict(populate_by_name=True)

    pre_pull: list[str] = Field(default_factory=list, alias="prePull")
    unschedulable: bool = False
    labels: dict[str, str] = Field(default_factory=dict)


class Reservation(_Wire):
    """Capacity held on a host for one job attempt."""

    uid: str
    attempt: int
    cpu: int
    memory_mib: int


class Workload(_Wire):
    """What the agent runs inside the VM, resolved by the job's handler plugin."""

    script: str
    env: dict[str, str] = Field(default_factory=dict)
    timeout_seconds: int | None = None
    output_limit: int = 16_384
    needs_secrets: bool = False


class StopReason(_Wire):
    """Why the controller asked for the VM to go (kept with the request, so the outcome can be
    named correctly even if the condition that caused it has vanished by then)."""

    reason: str
    message: str
    phase: str = "Cancelled"
    retry: bool = False


class DesiredVM(_Wire):
    """One VM the controller wants on a host: enough for the agent to act alone."""

    uid: str
    namespace: str
    name: str
    attempt: int = Field(ge=1)
    vm_name: str
    template: str
    tag: str | None = None
    cpu: int
    memory_mib: int
    handler: str
    workload: Workload
    mounts: list[str] = Field(default_factory=list)
    cancel: bool = False
    stop: StopReason | None = None


class ObservedPhase(enum.StrEnum):
    """Progress of one job attempt as its host sees it."""

    PROVISIONING = "Provisioning"
    RUNNING = "Running"
    SUCCEEDED = "Succeeded"
    FAILED = "Failed"
    CANCELLED = "Cancelled"

    def is_terminal(self) -> bool:
        return self in (ObservedPhase.SUCCEEDED, ObservedPhase.FAILED, ObservedPhase.CANCELLED)


class Observation(_Wire):
    """The agent's report about one job attempt; terminal reports come only after the VM is gone."""

    uid: str
    attempt: int
    host: str
    phase: ObservedPhase
    vm_name: str
    stage: str = ""
    vm_deleted: bool = False
    exit_code: int | None = None
    output: str | None = None
    reason: str | None = None
    message: str | None = None
    retryable: bool = False
    started_at: float | None = None
    finished_at: float | None = None
    seq: Annotated[int, Field(ge=0)] = 0
