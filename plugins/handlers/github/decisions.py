"""GitHub handler policy as pure functions: what GitHub's facts mean for an AnkaJob.

Inputs are plain values (the receiver's annotations, a job as the REST API shows it, the
AnkaJob's phase and VM name); outputs are the plugin API's `Stop` / `Verdict`. No I/O, no clock.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass

from anklet.models import Phase
from anklet.plugins import Stop, Verdict
from plugins.handlers.github import constants

# GitHub conclusions that mean the job did what it should (neutral and skipped are not failures).
_GOOD = {"success", "neutral", "skipped"}


@dataclass(frozen=True)
class GitHubFacts:
    """What we know of the GitHub job, from webhooks (annotations) or the jobs API."""

    status: str | None = None
    conclusion: str | None = None
    runner_name: str | None = None

    @classmethod
    def from_annotations(cls, annotations: Mapping[str, str]) -> GitHubFacts:
        return cls(
            status=annotations.get(constants.ANNOTATION_STATUS),
            conclusion=annotations.get(constants.ANNOTATION_CONCLUSION) or None,
            runner_name=annotations.get(constants.ANNOTATION_RUNNER) or None,
        )

    @property
    def completed(self) -> bool:
        return self.status == "completed"


def phase_for(conclusion: str | None) -> Phase:
    if conclusion in _GOOD:
        return Phase.SUCCEEDED
    if conclusion == "cancelled":
        return Phase.CANCELLED
    return Phase.FAILED


@dataclass(frozen=True)
class RunnerFacts:
    """Our runner as the runners API shows it (absent: it finished a job, or never registered)."""

    registered: bool
    online: bool = False
    busy: bool = False


def check(
    facts: GitHubFacts, *, vm_name: str | None, running: bool, runner: RunnerFacts | None = None
) -> Stop | None:
    """End the AnkaJob as soon as GitHub says its job is over, unless that would kill a job.

    `running`: our VM's runner has started. GitHub may hand our runner *another* queued job with
    the same labels (and ours to another runner), so when the job finished elsewhere while our
    runner runs, we stop only once the runners API shows ours is not busy (`runner`; None = not
    looked up yet, which means: keep waiting).
    """
    if not facts.completed:
        return None
    conclusion = facts.conclusion or "unknown"
    ours = vm_name is not None and facts.runner_name == vm_name
    if ours:
        if conclusion == "cancelled":
            return Stop(reason="GitHubJobCancelled", message="the GitHub job was cancelled")
        return Stop(
            reason=f"GitHub{conclusion.title().replace('_', '')}",
            message=f"the GitHub job completed with conclusion {conclusion}",
            phase=phase_for(conclusion),
        )
    if running and (runner is None or (runner.registered and runner.busy)):
        return None
    if conclusion == "cancelled":
        return Stop(reason="GitHubJobCancelled", message="the GitHub job was cancelled")
    where = f" on runner {facts.runner_name}" if facts.runner_name else ""
    return Stop(
        reason="GitHubJobCompletedElsewhere",
        message=f"the GitHub job completed ({conclusion}){where} without this VM",
        phase=Phase.CANCELLED,
    )


def never_picked_up(
    facts: GitHubFacts, runner: RunnerFacts, *, idle_since: float | None, now: float, grace: float
) -> tuple[float | None, Stop | None]:
    """GitHub lost the job: it stays queued while our runner is online and idle.

    Evidence, not one registration timeout: the clock starts only when both facts are seen
    together and resets as soon as either changes. Returns (new idle_since, Stop to retry).
    """
    if facts.status not in ("queued", "waiting") or not (
        runner.registered and runner.online and not runner.busy
    ):
        return None, None
    since = now if idle_since is None else idle_since
    if now - since < grace:
        return since, None
    return since, Stop(
        reason="RunnerNeverPickedUp",
        message=f"the GitHub job stayed {facts.status} {now - since:.0f} s while this VM's runner was idle",
        phase=Phase.PENDING,
        retry=True,
    )


def judge(facts: GitHubFacts, *, vm_name: str, exit_code: int | None) -> Verdict:
    """The runner in our VM exited: what GitHub says decides the AnkaJob's phase."""
    if facts.completed:
        stop = check(facts, vm_name=vm_name, running=False)
        assert stop is not None
        return Verdict(phase=stop.phase, reason=stop.reason, message=stop.message)
    if facts.status in ("queued", "waiting", None):
        return Verdict(
            phase=None,
            reason="RunnerNeverPickedUp",
            message=f"the runner exited ({exit_code}) with the GitHub job still {facts.status or 'unknown'}",
        )
    if facts.runner_name and facts.runner_name != vm_name:
        return Verdict(
            phase=Phase.CANCELLED,
            reason="GitHubJobTakenElsewhere",
            message=f"the GitHub job runs on {facts.runner_name}, not on this VM",
        )
    return Verdict(
        phase=Phase.FAILED,
        reason="RunnerExited",
        message=f"the runner exited ({exit_code}) while the GitHub job was still in progress",
    )


_SHA_MARKER = re.compile(r"<!--\s*BEGIN SHA (?P<platform>[\w-]+)\s*-->(?P<sha>[0-9a-f]{64})<!--\s*END SHA")


@dataclass(frozen=True)
class RunnerAsset:
    url: str
    sha256: str


def runner_assets(release: Mapping[str, object]) -> dict[str, RunnerAsset]:
    """macOS runner downloads by arch (arm64, x64) from a release description.

    Accepts GitHub's release object (checksums published in the body between
    ``BEGIN SHA osx-<arch>`` markers) and the fake GitHub's form (``sha256`` on each asset).
    """
    body = str(release.get("body") or "")
    published = {m["platform"]: m["sha"] for m in _SHA_MARKER.finditer(body)}
    found: dict[str, RunnerAsset] = {}
    assets = release.get("assets")
    for asset in assets if isinstance(assets, list) else []:
        if not isinstance(asset, dict):
            continue
        name = str(asset.get("name", ""))
        match = re.match(r"actions-runner-osx-(arm64|x64)-[\d.]+\.tar\.gz$", name)
        if match is None:
            continue
        arch = match[1]
        sha = asset.get("sha256") or published.get(f"osx-{arch}")
        url = asset.get("browser_download_url") or asset.get("url")
        if isinstance(sha, str) and isinstance(url, str):
            found[arch] = RunnerAsset(url=url, sha256=sha)
    return found
