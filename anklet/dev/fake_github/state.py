"""The fake's data model: repositories, installations, runners, workflow runs and jobs.

Plain dataclasses, mutated only on the server's event loop (so no locks). Ids start at
realistic magnitudes: job, run and delivery ids are above 2**32 as GitHub's are today, so a
client that stores them in 32-bit integers fails here rather than in production.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass, field
from typing import NamedTuple

JOB_ID_START = 40_000_000_001
RUN_ID_START = 14_000_000_001
RUNNER_ID_START = 1001
REPO_ID_START = 800_000_001
ACCOUNT_ID_START = 9_000_001
INSTALLATION_ID_START = 60_000_001
DELIVERY_ID_START = 90_000_000_001

DEFAULT_GROUP_ID = 1
DEFAULT_GROUP_NAME = "Default"
#: The read-only label GitHub gives every self-hosted runner.
SELF_HOSTED = "self-hosted"
CONCLUSIONS = ("success", "failure", "cancelled", "neutral", "skipped", "timed_out")


def counter(start: int) -> itertools.count[int]:
    return itertools.count(start)


class Scope(NamedTuple):
    """Where a runner is registered: ``repo`` (``owner/name``), ``org`` or ``enterprise``."""

    kind: str
    name: str

    @property
    def key(self) -> tuple[str, str]:
        return self.kind, self.name.lower()

    def covers(self, repo: Repository) -> bool:
        """Whether a runner of this scope may take a job of ``repo`` (runner-group access is not
        modelled: an org runner serves every repository of the org, an enterprise runner all)."""
        if self.kind == "repo":
            return self.name.lower() == repo.full_name.lower()
        if self.kind == "org":
            return self.name.lower() == repo.owner.lower()
        return self.kind == "enterprise"


@dataclass
class Account:
    login: str
    id: int
    type: str = "Organization"


@dataclass
class Repository:
    id: int
    owner: str
    owner_id: int
    name: str
    created_at: float

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class Installation:
    id: int
    account: Account
    target_type: str
    created_at: float


@dataclass
class Step:
    name: str
    number: int
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None


@dataclass
class Job:
    id: int
    run_id: int
    run_attempt: int
    repo: Repository
    labels: list[str]
    name: str
    workflow_name: str
    head_sha: str
    head_branch: str
    run_seconds: float
    planned_conclusion: str
    step_names: list[str]
    created_at: float
    status: str = "queued"
    conclusion: str | None = None
    started_at: float | None = None
    completed_at: float | None = None
    runner_id: int | None = None
    runner_name: str | None = None
    runner_group_id: int | None = None
    runner_group_name: str | None = None
    steps: list[Step] = field(default_factory=list)
    cancel_requested: bool = False

    @property
    def done(self) -> bool:
        return self.status == "completed"


@dataclass
class Run:
    id: int
    repo: Repository
    run_number: int
    run_attempt: int
    workflow_name: str
    workflow_id: int
    head_sha: str
    head_branch: str
    created_at: float
    updated_at: float
    job_ids: list[int] = field(default_factory=list)


@dataclass
class Runner:
    """A registered (JIT) runner. ``polls`` counts the runner's open long-polls: GitHub only hands
    a job to a runner that is listening, so a runner process that died never gets one."""

    id: int
    name: str
    scope: Scope
    labels: list[str]
    group_id: int
    group_name: str
    token: str
    work_folder: str
    created_at: float
    os: str = "unknown"
    version: str | None = None
    connected: bool = False
    last_contact: float | None = None
    polls: int = 0
    job_id: int | None = None
    starved: bool = False
    lost: bool = False
    removed: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def labels_cover(self, wanted: list[str]) -> bool:
        """GitHub's rule: the runner's labels are a superset of the job's (case-insensitive)."""
        have = {label.lower() for label in self.labels}
        return all(label.lower() in have for label in wanted)
