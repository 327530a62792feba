from __future__ import annotations

import pytest

from anklet.models import Phase
from plugins.handlers.github import constants
from plugins.handlers.github.decisions import (
    GitHubFacts,
    RunnerFacts,
    check,
    judge,
    never_picked_up,
    phase_for,
    runner_assets,
)

VM = "anklet-vm-u-a1"


@pytest.mark.parametrize(
    ("conclusion", "phase"),
    [("success", Phase.SUCCEEDED), ("neutral", Phase.SUCCEEDED), ("skipped", Phase.SUCCEEDED),
     ("cancelled", Phase.CANCELLED), ("failure", Phase.FAILED), ("timed_out", Phase.FAILED),
     (None, Phase.FAILED)],
)  # fmt: skip
def test_conclusions(conclusion: str | None, phase: Phase) -> None:
    assert phase_for(conclusion) == phase


@pytest.mark.parametrize(
    ("facts", "expected"),
    [
        pytest.param(GitHubFacts(status="queued"), None, id="queued-keeps-going"),
        pytest.param(GitHubFacts(status="in_progress", runner_name=VM), None, id="running-keeps-going"),
        pytest.param(GitHubFacts(status="completed", conclusion="success", runner_name=VM),
                     (Phase.SUCCEEDED, "GitHubSuccess"), id="ours-succeeded"),
        pytest.param(GitHubFacts(status="completed", conclusion="failure", runner_name=VM),
                     (Phase.FAILED, "GitHubFailure"), id="ours-failed"),
        pytest.param(GitHubFacts(status="completed", conclusion="cancelled"),
                     (Phase.CANCELLED, "GitHubJobCancelled"), id="cancelled-anywhere"),
        pytest.param(GitHubFacts(status="completed", conclusion="success", runner_name="other"),
                     (Phase.CANCELLED, "GitHubJobCompletedElsewhere"), id="elsewhere"),
    ],
)  # fmt: skip
def test_check(facts: GitHubFacts, expected: tuple[Phase, str] | None) -> None:
    stop = check(facts, vm_name=VM, running=False)
    assert (None if stop is None else (stop.phase, stop.reason)) == expected


@pytest.mark.parametrize(
    ("facts", "phase", "reason"),
    [
        pytest.param(GitHubFacts(status="queued"), None, "RunnerNeverPickedUp", id="never-picked-up-retries"),
        pytest.param(GitHubFacts(status="in_progress", runner_name="other"), Phase.CANCELLED,
                     "GitHubJobTakenElsewhere", id="taken-elsewhere"),
        pytest.param(GitHubFacts(status="in_progress", runner_name=VM), Phase.FAILED, "RunnerExited",
                     id="runner-died"),
        pytest.param(GitHubFacts(status="completed", conclusion="success", runner_name=VM), Phase.SUCCEEDED,
                     "GitHubSuccess", id="completed"),
    ],
)  # fmt: skip
def test_judge(facts: GitHubFacts, phase: Phase | None, reason: str) -> None:
    verdict = judge(facts, vm_name=VM, exit_code=0)
    assert (verdict.phase, verdict.reason) == (phase, reason)


def test_facts_from_annotations() -> None:
    facts = GitHubFacts.from_annotations(
        {constants.ANNOTATION_STATUS: "completed", constants.ANNOTATION_CONCLUSION: "success",
         constants.ANNOTATION_RUNNER: VM}
    )  # fmt: skip
    assert facts == GitHubFacts("completed", "success", VM) and facts.completed


def test_runner_assets_from_github_and_fake_release_shapes() -> None:
    sha_a, sha_x = "a" * 64, "b" * 64
    github = {
        "body": f"<!-- BEGIN SHA osx-arm64 -->{sha_a}<!-- END SHA osx-arm64 -->\n"
                f"<!-- BEGIN SHA osx-x64 -->{sha_x}<!-- END SHA osx-x64 -->",
        "assets": [
            {"name": "actions-runner-osx-arm64-2.330.0.tar.gz", "browser_download_url": "https://x/arm"},
            {"name": "actions-runner-osx-x64-2.330.0.tar.gz", "browser_download_url": "https://x/x64"},
            {"name": "actions-runner-linux-x64-2.330.0.tar.gz", "browser_download_url": "https://x/linux"},
        ],
    }  # fmt: skip
    assets = runner_assets(github)
    assert assets["arm64"].url == "https://x/arm" and assets["arm64"].sha256 == sha_a
    assert assets["x64"].sha256 == sha_x and set(assets) == {"arm64", "x64"}
    fake = {
        "assets": [{"name": "actions-runner-osx-x64-2.330.0.tar.gz", "url": "http://f/x", "sha256": sha_x}]
    }
    assert runner_assets(fake) == {"x64": assets["x64"].__class__(url="http://f/x", sha256=sha_x)}


ELSEWHERE = GitHubFacts(status="completed", conclusion="success", runner_name="anklet-vm-other-a1")


@pytest.mark.parametrize(
    ("runner", "stops"),
    [
        pytest.param(None, False, id="not-looked-up-yet-waits"),
        pytest.param(
            RunnerFacts(registered=True, online=True, busy=True), False, id="busy-with-a-swapped-job"
        ),
        pytest.param(RunnerFacts(registered=True, online=True, busy=False), True, id="idle-runner-stops"),
        pytest.param(RunnerFacts(registered=False), True, id="runner-gone-stops"),
    ],
)
def test_a_running_vm_is_never_stopped_while_its_runner_is_busy(
    runner: RunnerFacts | None, stops: bool
) -> None:
    """GitHub may give our runner another job with the same labels: never kill that one."""
    stop = check(ELSEWHERE, vm_name=VM, running=True, runner=runner)
    assert (stop is not None) == stops
    if stop is not None:
        assert (stop.phase, stop.reason) == (Phase.CANCELLED, "GitHubJobCompletedElsewhere")


def test_never_picked_up_needs_both_facts_for_the_whole_grace() -> None:
    queued, idle = GitHubFacts(status="queued"), RunnerFacts(registered=True, online=True, busy=False)
    since, stop = never_picked_up(queued, idle, idle_since=None, now=100.0, grace=60.0)
    assert (since, stop) == (100.0, None)
    since, stop = never_picked_up(queued, idle, idle_since=since, now=150.0, grace=60.0)
    assert stop is None
    busy = RunnerFacts(registered=True, online=True, busy=True)
    assert never_picked_up(queued, busy, idle_since=since, now=170.0, grace=60.0) == (None, None), "reset"
    _, stop = never_picked_up(queued, idle, idle_since=100.0, now=161.0, grace=60.0)
    assert stop is not None and stop.retry and stop.reason == "RunnerNeverPickedUp"
    running = GitHubFacts(status="in_progress", runner_name=VM)
    assert never_picked_up(running, idle, idle_since=100.0, now=500.0, grace=60.0) == (None, None)
