"""The fields Anklet reads from GitHub's REST responses and webhook payloads, as pydantic models.

Shapes follow GitHub's OpenAPI descriptions (`reference/github/*.json`); unknown fields are
ignored so GitHub adding fields never breaks us, and the fields we rely on are validated so a
malformed answer fails loudly at the boundary instead of deep in a handler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr

INT64_MAX = 2**63 - 1  # GitHub's ids are int64, and so are Kubernetes integers


class _Lenient(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class RunnerLabel(_Lenient):
    name: str
    id: int | None = None
    type: str | None = None


class Runner(_Lenient):
    """A self-hosted runner (`GET .../actions/runners`)."""

    id: int
    name: str
    os: str = ""
    status: str = ""
    busy: bool = False
    ephemeral: bool | None = None
    runner_group_id: int | None = None
    labels: list[RunnerLabel] = Field(default_factory=list)


class RunnerList(_Lenient):
    total_count: int = 0
    runners: list[Runner]


@dataclass(frozen=True)
class JitConfig:
    """A just-in-time runner registration; the config is a credential, hence SecretStr."""

    runner_id: int
    runner_name: str
    encoded_jit_config: SecretStr = field(repr=False)


class JitConfigResponse(_Lenient):
    runner: Runner
    encoded_jit_config: SecretStr


class WorkflowJob(_Lenient):
    """A workflow job, as the jobs API and the `workflow_job` webhook describe it.

    Ids are int64 (GitHub's and Kubernetes' integers): a larger one is malformed input, refused
    here rather than by the API server when the AnkaJob is written.
    """

    id: int = Field(ge=1, le=INT64_MAX)
    run_id: int = Field(ge=1, le=INT64_MAX)
    run_attempt: int = Field(default=1, ge=1, le=INT64_MAX)
    status: str
    conclusion: str | None = None
    name: str = ""
    labels: list[str]
    runner_id: int | None = None
    runner_name: str | None = None
    html_url: str | None = None
    workflow_name: str | None = None
    head_branch: str | None = None


class WorkflowRun(_Lenient):
    id: int
    status: str | None = None
    conclusion: str | None = None
    run_attempt: int | None = None
    html_url: str | None = None


class HookDelivery(_Lenient):
    """One delivery attempt of a webhook (`GET .../hooks/{id}/deliveries`)."""

    id: int
    guid: str
    delivered_at: datetime
    redelivery: bool = False
    status: str = ""
    status_code: int
    event: str
    action: str | None = None
    installation_id: int | None = None
    repository_id: int | None = None

    @property
    def succeeded(self) -> bool:
        return 200 <= self.status_code < 300


class DeliveryRequest(_Lenient):
    headers: dict[str, Any] | None = None
    payload: dict[str, Any] | None = None


class HookDeliveryDetail(HookDelivery):
    """A delivery with the request GitHub sent (`GET .../deliveries/{id}`)."""

    request: DeliveryRequest = Field(default_factory=DeliveryRequest)


class Installation(_Lenient):
    id: int = Field(ge=1)


class InstallationToken(_Lenient):
    token: SecretStr
    expires_at: datetime
