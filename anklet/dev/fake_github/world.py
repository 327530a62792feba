"""GitHub's rules for runners and jobs: registration, assignment, progress, cancellation.

State transitions are synchronous methods (no awaits), called from request handlers and the
sweeper on one event loop; each one that changes a job calls ``on_job_event(action, job)`` at
that moment, so the webhook for a transition carries the job as it was then, even when its
delivery is delayed or reordered.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable

from anklet.dev.fake_github.faults import Faults
from anklet.dev.fake_github.state import (
    ACCOUNT_ID_START,
    DEFAULT_GROUP_ID,
    DEFAULT_GROUP_NAME,
    INSTALLATION_ID_START,
    JOB_ID_START,
    REPO_ID_START,
    RUN_ID_START,
    RUNNER_ID_START,
    SELF_HOSTED,
    Account,
    Installation,
    Job,
    Repository,
    Run,
    Runner,
    Scope,
    Step,
    counter,
)

JobEvent = Callable[[str, Job], None]
#: A job's conclusion as the conclusion of the step that was running (steps know fewer values).
STEP_CONCLUSION = {"success": "success", "neutral": "success", "cancelled": "cancelled", "skipped": "skipped"}


class Conflict(Exception):
    pass


class RunnerBusy(Exception):
    pass


class World:
    """All state of one fake GitHub, and the rules that move it."""

    def __init__(
        self,
        *,
        faults: Faults,
        heartbeat_timeout: float = 30.0,
        lost_runner_timeout: float = 120.0,
        installed_on: Iterable[str] | None = None,
    ) -> None:
        self.faults = faults
        self.heartbeat_timeout = heartbeat_timeout
        self.lost_runner_timeout = lost_runner_timeout
        self.on_job_event: JobEvent = lambda action, job: None
        self.accounts: dict[str, Account] = {}
        self.repos: dict[str, Repository] = {}
        self.installations: dict[str, Installation] = {}
        self.runners: dict[int, Runner] = {}
        self.jobs: dict[int, Job] = {}
        self.runs: dict[int, Run] = {}
        self._installed_everywhere = installed_on is None
        self._ids = {
            "account": counter(ACCOUNT_ID_START),
            "repo": counter(REPO_ID_START),
            "installation": counter(INSTALLATION_ID_START),
            "runner": counter(RUNNER_ID_START),
            "job": counter(JOB_ID_START),
            "run": counter(RUN_ID_START),
        }
        self._run_numbers: dict[str, int] = {}
        for login in installed_on or ():
            self._install(self.account(login), "Organization")

    # --- accounts, repositories, installations -------------------------------------------------

    def account(self, login: str) -> Account:
        key = login.lower()
        if key not in self.accounts:
            self.accounts[key] = Account(login=login, id=next(self._ids["account"]))
        return self.accounts[key]

    def repository(self, owner: str, name: str) -> Repository:
        """Every repository exists (the fake has no repository management); ids are stable."""
        key = f"{owner}/{name}".lower()
        if key not in self.repos:
            account = self.account(owner)
            self.repos[key] = Repository(
                id=next(self._ids["repo"]),
                owner=account.login,
                owner_id=account.id,
                name=name,
                created_at=time.time(),
            )
        return self.repos[key]

    def _install(self, account: Account, target_type: str) -> Installation:
        installation = Installation(
            id=next(self._ids["installation"]),
            account=account,
            target_type=target_type,
            created_at=time.time(),
        )
        self.installations[account.login.lower()] = installation
        return installation

    def installation_for(self, login: str, *, target_type: str = "Organization") -> Installation | None:
        """The App's installation on an account: created on first use when the App is "installed
        everywhere" (``installed_on=None``), else only the configured accounts have one."""
        found = self.installations.get(login.lower())
        if found is None and self._installed_everywhere:
            account = self.account(login)
            account.type = "Enterprise" if target_type == "Enterprise" else account.type
            found = self._install(account, target_type)
        return found

    def installation_by_id(self, installation_id: int) -> Installation | None:
        return next((i for i in self.installations.values() if i.id == installation_id), None)

    # --- runners -------------------------------------------------------------------------------

    def register_runner(
        self, scope: Scope, *, name: str, labels: list[str], group_id: int, work_folder: str
    ) -> Runner:
        if any(r.scope.key == scope.key and r.name == name for r in self.runners.values()):
            raise Conflict(f"Already exists - A runner with the name {name} already exists.")
        all_labels = [SELF_HOSTED, *[label for label in labels if label.lower() != SELF_HOSTED]]
        runner = Runner(
            id=next(self._ids["runner"]),
            name=name,
            scope=scope,
            labels=all_labels,
            group_id=group_id,
            group_name=DEFAULT_GROUP_NAME if group_id == DEFAULT_GROUP_ID else f"group-{group_id}",
            token=secrets.token_urlsafe(24),
            work_folder=work_folder,
            created_at=time.time(),
        )
        self.runners[runner.id] = runner
        return runner

    def scope_runners(self, scope: Scope) -> list[Runner]:
        return sorted((r for r in self.runners.values() if r.scope.key == scope.key), key=lambda r: r.id)

    def runner_in(self, scope: Scope, runner_id: int) -> Runner | None:
        runner = self.runners.get(runner_id)
        return runner if runner is not None and runner.scope.key == scope.key else None

    def runner_online(self, runner: Runner, now: float | None = None) -> bool:
        if runner.lost or not runner.connected or runner.last_contact is None:
            return False
        return runner.polls > 0 or (now or time.time()) - runner.last_contact < self.heartbeat_timeout

    def delete_runner(self, runner: Runner) -> None:
        """``DELETE .../runners/{id}``: refused while the runner runs a job (GitHub's 422)."""
        if runner.job_id is not None:
            raise RunnerBusy(
                f'Bad request - Runner "{runner.name}" is currently running a job and cannot be deleted.'
            )
        self._remove_runner(runner)

    def _remove_runner(self, runner: Runner) -> None:
        runner.removed = True
        self.runners.pop(runner.id, None)
        runner.wake.set()

    # --- workflow runs and jobs ----------------------------------------------------------------

    def create_job(
        self,
        repo: Repository,
        *,
        labels: list[str],
        name: str,
        workflow_name: str,
        run_seconds: float,
        conclusion: str,
        steps: list[str],
        run_id: int | None = None,
    ) -> Job:
        """A new queued job in a new run (or in ``run_id``'s), with its ``queued`` webhook."""
        now = time.time()
        run = self.runs.get(run_id) if run_id is not None else None
        if run is None:
            number = self._run_numbers.get(repo.full_name.lower(), 0) + 1
            self._run_numbers[repo.full_name.lower()] = number
            run = Run(
                id=next(self._ids["run"]),
                repo=repo,
                run_number=number,
                run_attempt=1,
                workflow_name=workflow_name,
                workflow_id=repo.id % 10_000_000 + 1,
                head_sha=secrets.token_hex(20),
                head_branch="main",
                created_at=now,
                updated_at=now,
            )
            self.runs[run.id] = run
        job = Job(
            id=next(self._ids["job"]),
            run_id=run.id,
            run_attempt=run.run_attempt,
            repo=repo,
            labels=list(labels),
            name=name,
            workflow_name=run.workflow_name,
            head_sha=run.head_sha,
            head_branch=run.head_branch,
            run_seconds=run_seconds,
            planned_conclusion=conclusion,
            step_names=["Set up job", *(steps or ["Run workload"]), "Complete job"],
            created_at=now,
            started_at=now,  # GitHub reports created_at as started_at until a runner starts the job
        )
        self.jobs[job.id] = job
        run.job_ids.append(job.id)
        run.updated_at = now
        self.on_job_event("queued", job)
        self.assign()
        return job

    def run_status(self, run: Run) -> tuple[str, str | None]:
        jobs = [self.jobs[i] for i in run.job_ids]
        if jobs and all(j.done for j in jobs):
            conclusions = {j.conclusion for j in jobs}
            for verdict in ("failure", "timed_out", "cancelled"):
                if verdict in conclusions:
                    return "completed", verdict
            return "completed", "skipped" if conclusions == {"skipped"} else "success"
        if any(j.status == "in_progress" for j in jobs):
            return "in_progress", None
        return "queued", None

    def cancel_job(self, job: Job) -> bool:
        """Cancel a job: a queued one completes as cancelled now; a running one is flagged and its
        runner told to stop (it then reports back). False when the job had already completed."""
        if job.done:
            return False
        if job.status == "queued":
            self._finish(job, "cancelled")
        elif not job.cancel_requested:
            job.cancel_requested = True
            runner = self.runners.get(job.runner_id or 0)
            if runner is not None:
                runner.wake.set()
        return True

    def cancel_run(self, run: Run) -> bool:
        """``POST .../runs/{id}/cancel``: cancels this run's unfinished jobs, never another run's."""
        if self.run_status(run)[0] == "completed":
            return False
        for job_id in run.job_ids:
            self.cancel_job(self.jobs[job_id])
        run.updated_at = time.time()
        return True

    # --- assignment and the runner protocol ----------------------------------------------------

    def assign(self) -> None:
        """Hand queued jobs (oldest first) to listening, idle runners whose scope covers the job's
        repository and whose labels are a superset of the job's."""
        for job in sorted((j for j in self.jobs.values() if j.status == "queued"), key=lambda j: j.id):
            for runner in sorted(self.runners.values(), key=lambda r: r.id):
                if (
                    runner.job_id is None
                    and runner.polls > 0
                    and not runner.starved
                    and not runner.lost
                    and runner.scope.covers(job.repo)
                    and runner.labels_cover(job.labels)
                ):
                    self._start(job, runner)
                    break

    def _start(self, job: Job, runner: Runner) -> None:
        now = time.time()
        runner.job_id = job.id
        job.status = "in_progress"
        job.started_at = now
        job.runner_id, job.runner_name = runner.id, runner.name
        job.runner_group_id, job.runner_group_name = runner.group_id, runner.group_name
        job.steps = [Step(name=n, number=i + 1) for i, n in enumerate(job.step_names)]
        self._progress(job, 1, now)
        self._touch_run(job, now)
        runner.wake.set()
        self.on_job_event("in_progress", job)

    def open_session(self, runner: Runner, *, version: str | None) -> None:
        """The runner process connected (``run.sh`` started with its JIT config)."""
        runner.connected = True
        runner.os = "macOS"
        runner.version = version
        runner.last_contact = time.time()
        if self.faults.take_never_take():
            runner.starved = True

    def touch(self, runner: Runner) -> None:
        runner.last_contact = time.time()

    def step(self, job: Job, number: int) -> None:
        """The runner moved on to step ``number`` (1-based)."""
        if not job.done:
            self._progress(job, number, time.time())

    @staticmethod
    def _progress(job: Job, number: int, now: float) -> None:
        for step in job.steps:
            if step.number < number and step.status != "completed":
                step.status, step.conclusion = "completed", "success"
                step.started_at = step.started_at or now
                step.completed_at = now
            elif step.number == number and step.status == "queued":
                step.status, step.started_at = "in_progress", now

    def complete(self, runner: Runner, job: Job, conclusion: str) -> None:
        """The runner finished its job: the job completes and the ephemeral runner is removed."""
        if not job.done:
            self._finish(job, "cancelled" if job.cancel_requested else conclusion)
        self._remove_runner(runner)

    def _finish(self, job: Job, conclusion: str) -> None:
        now = time.time()
        job.status, job.conclusion, job.completed_at = "completed", conclusion, now
        if job.runner_id is None:
            job.started_at = job.started_at or now
        for step in job.steps:
            if step.status == "completed":
                continue
            step.started_at = step.started_at or (now if step.status == "in_progress" else None)
            if step.status == "in_progress":
                step.conclusion = STEP_CONCLUSION.get(conclusion, "failure")
            else:
                step.conclusion = "success" if conclusion == "success" else "skipped"
            step.status, step.completed_at = "completed", now
        if conclusion == "failure" and job.steps and job.steps[-2].conclusion == "success":
            job.steps[-2].conclusion = "failure"  # a failed job has a failed step
        runner = self.runners.get(job.runner_id or 0)
        if runner is not None and runner.job_id == job.id:
            runner.job_id = None
        self._touch_run(job, now)
        self.on_job_event("completed", job)

    def _touch_run(self, job: Job, now: float) -> None:
        run = self.runs.get(job.run_id)
        if run is not None:
            run.updated_at = now

    def sweep(self, now: float | None = None) -> None:
        """Periodic: a runner silent for longer than the lost-runner timeout while holding a job
        loses it; GitHub fails the job ("lost communication with the server") and keeps the runner
        listed as offline until someone deletes it. Never auto-completes a job early."""
        now = now or time.time()
        for runner in list(self.runners.values()):
            if runner.job_id is None or runner.polls > 0 or runner.last_contact is None:
                continue
            if now - runner.last_contact > self.lost_runner_timeout:
                job = self.jobs[runner.job_id]
                runner.lost = True
                self._finish(job, "cancelled" if job.cancel_requested else "failure")
