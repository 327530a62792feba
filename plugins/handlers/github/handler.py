"""The `github` handler (controller side): one ephemeral JIT runner per AnkaJob attempt.

GitHub credentials live here only. When an attempt is placed, the handler asks GitHub for a JIT
runner configuration named after the attempt's VM and hands it to that host alone (as a per-run
secret); inside the VM `vm/run-runner.bash` installs the runner and runs it for exactly one job.
What GitHub reports (webhooks recorded as annotations by the receiver, or the jobs API) decides
how the AnkaJob ends; the decisions themselves are in `decisions.py`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Collection, Mapping
from importlib import resources
from typing import Any, ClassVar

import httpx
from pydantic import Field
from pydantic_settings import SettingsConfigDict

from anklet.config_file import FileSettings
from anklet.models import AnkaJob, AnkaJobSpec, Phase
from anklet.plugins import Handler, InvalidJob, NotYet, Stop, Verdict
from anklet.vmname import PREFIX as VM_PREFIX
from anklet.wire import Observation, Workload
from plugins.handlers.github import constants, decisions
from plugins.handlers.github.client import GitHubClient
from plugins.handlers.github.errors import GitHubError, NotFound, RunnerNameExists
from plugins.handlers.github.scope import Scope
from plugins.handlers.github.settings import GitHubSettings

log = logging.getLogger("anklet.github")

RUN_RUNNER = resources.files("plugins.handlers.github").joinpath("vm/run-runner.bash").read_text()

DEFAULT_RELEASE_URL = "https://api.github.com/repos/actions/runner/releases/latest"


class GitHubHandlerSettings(FileSettings):
    """Handler-only settings (env prefix `ANKLET_GITHUB_HANDLER_`; file: plugins.github)."""

    model_config = SettingsConfigDict(env_prefix="ANKLET_GITHUB_HANDLER_", extra="ignore")
    config_section: ClassVar[str] = "plugins.github"

    runner_scope: str = Field(
        default="repo", pattern="^(repo|org|enterprise)$", description="where JIT runners are registered"
    )
    runner_release_url: str = Field(
        default=DEFAULT_RELEASE_URL, description="release description with the runner downloads and checksums"
    )
    release_cache_seconds: float = Field(default=3600.0, ge=0)
    api_check_seconds: float = Field(
        default=300.0,
        gt=0,
        description="at most this often per stuck job, ask the jobs/runners API (missed webhooks)",
    )
    pickup_grace_seconds: float = Field(
        default=120.0,
        gt=0,
        description="a job queued while our runner idles this long is retried in a new VM",
    )
    orphan_runner_grace_seconds: float = Field(
        default=600.0, ge=0, description="runners named anklet-vm-* that no job owns are deleted after this"
    )
    cancel_unsatisfiable: bool = Field(
        default=False, description="cancel the workflow run of a job no host can ever run (off by default)"
    )


class GitHubHandler(Handler):
    name = "github"

    def __init__(self) -> None:
        self._client: GitHubClient | None = None
        self._settings: GitHubSettings | None = None
        self._handler_settings: GitHubHandlerSettings | None = None
        self._release: tuple[float, dict[str, decisions.RunnerAsset]] | None = None
        self._lock = asyncio.Lock()
        self._last_api_check: dict[str, float] = {}
        self._idle_since: dict[str, float] = {}
        self._orphan_runners: dict[tuple[Scope, str], float] = {}

    # ----- wiring (lazy: settings are read in the controller process, not at import) ----------
    def _config(self) -> tuple[GitHubSettings, GitHubHandlerSettings]:
        if self._settings is None or self._handler_settings is None:
            self._settings = GitHubSettings()
            self._handler_settings = GitHubHandlerSettings()
        return self._settings, self._handler_settings

    async def client(self) -> GitHubClient:
        async with self._lock:
            if self._client is None:
                settings, _ = self._config()
                self._client = GitHubClient.from_settings(settings)
            return self._client

    def scope_for(self, spec: AnkaJobSpec) -> Scope:
        settings, handler = self._config()
        github = spec.github
        assert github is not None
        if handler.runner_scope == "org":
            return Scope.organization(github.owner)
        if handler.runner_scope == "enterprise":
            if not settings.enterprise:
                raise InvalidJob("runner_scope enterprise needs ANKLET_GITHUB_ENTERPRISE")
            return Scope.for_enterprise(settings.enterprise)
        return Scope.repository(github.owner, github.repo)

    # ----- the plugin API -----------------------------------------------------------------------
    def validate(self, spec: AnkaJobSpec) -> None:
        if spec.github is None:
            raise InvalidJob("spec.github is required for handler 'github' (the receiver writes it)")

    def workload(self, job: AnkaJob) -> Workload:
        self.validate(job.spec)
        return Workload(script=RUN_RUNNER, timeout_seconds=job.spec.timeout_seconds, needs_secrets=True)

    async def secrets(self, job: AnkaJob, *, vm_name: str, attempt: int) -> Mapping[str, str]:
        github = job.spec.github
        assert github is not None
        client = await self.client()
        scope = self.scope_for(job.spec)
        settings, _ = self._config()
        # GitHub gives every self-hosted runner its default labels; only custom ones are registered.
        labels = [label for label in github.labels if label.lower() != "self-hosted"]
        try:
            jit = await client.generate_jitconfig(
                scope, vm_name, labels, runner_group_id=settings.runner_group_id
            )
        except RunnerNameExists:
            # An earlier call for this attempt succeeded but its answer was lost: the config is
            # only ever returned once, so replace that runner with a fresh one.
            await self._delete_runner(client, scope, vm_name)
            jit = await client.generate_jitconfig(
                scope, vm_name, labels, runner_group_id=settings.runner_group_id
            )
        env = {constants.JIT_CONFIG_ENV: jit.encoded_jit_config.get_secret_value()}
        for arch, asset in (await self._runner_assets()).items():
            env[f"ANKLET_RUNNER_URL_{arch.upper()}"] = asset.url
            env[f"ANKLET_RUNNER_SHA256_{arch.upper()}"] = asset.sha256
        log.info("registered JIT runner %s for %s/%s", vm_name, job.metadata.namespace, job.metadata.name)
        return env

    async def check(self, job: AnkaJob) -> Stop | None:
        """Webhook facts first; the jobs and runners APIs (rate-limited per job) fill the gaps."""
        github = job.spec.github
        if github is None:
            return None
        running = job.status.phase == Phase.RUNNING
        vm_name = job.status.vm_name
        facts = decisions.GitHubFacts.from_annotations(job.metadata.annotations)
        stop = decisions.check(facts, vm_name=vm_name, running=running)
        healthy = facts.status == "in_progress" and facts.runner_name == vm_name
        if stop is not None or healthy or not self._api_check_due(job):
            return stop
        client = await self.client()
        if not facts.completed:
            remote = await client.get_job(github.owner, github.repo, github.job_id)
            facts = decisions.GitHubFacts(remote.status, remote.conclusion, remote.runner_name)
        if not running or vm_name is None:
            return decisions.check(facts, vm_name=vm_name, running=False)
        found = await client.find_runner(self.scope_for(job.spec), vm_name)
        runner = decisions.RunnerFacts(
            registered=found is not None,
            online=found is not None and found.status == "online",
            busy=found is not None and found.busy,
        )
        stop = decisions.check(facts, vm_name=vm_name, running=True, runner=runner)
        if stop is not None:
            return stop
        since, stop = decisions.never_picked_up(
            facts,
            runner,
            idle_since=self._idle_since.get(vm_name),
            now=time.monotonic(),
            grace=self._config()[1].pickup_grace_seconds,
        )
        if since is None:
            self._idle_since.pop(vm_name, None)
        else:
            self._idle_since[vm_name] = since  # per attempt: a retry's VM starts afresh
        return stop

    def _api_check_due(self, job: AnkaJob) -> bool:
        """Only for jobs whose webhooks look missing: at most once per interval, and only after
        the job has been seen for one interval (webhooks normally arrive within seconds)."""
        now = time.monotonic()
        last = self._last_api_check.setdefault(job.metadata.uid, now)
        if now - last < self._config()[1].api_check_seconds:
            return False
        self._last_api_check[job.metadata.uid] = now
        return True

    async def judge(self, job: AnkaJob, obs: Observation) -> Verdict | None:
        github = job.spec.github
        if github is None:
            return None
        facts = decisions.GitHubFacts.from_annotations(job.metadata.annotations)
        if not facts.completed:
            # The completed webhook may be late or lost: ask the jobs API (the fallback).
            try:
                remote = await (await self.client()).get_job(github.owner, github.repo, github.job_id)
            except GitHubError as exc:
                raise NotYet(f"cannot read the GitHub job: {exc}") from exc
            facts = decisions.GitHubFacts(
                status=remote.status, conclusion=remote.conclusion, runner_name=remote.runner_name
            )
        return decisions.judge(facts, vm_name=obs.vm_name, exit_code=obs.exit_code)

    def status_fields(self, job: AnkaJob) -> Mapping[str, object] | None:
        """status.github mirrors what the receiver recorded from GitHub's webhooks."""
        facts = decisions.GitHubFacts.from_annotations(job.metadata.annotations)
        if job.spec.github is None or facts.status is None:
            return None
        github = {"status": facts.status, "conclusion": facts.conclusion, "runnerName": facts.runner_name}
        return {"github": {k: v for k, v in github.items() if v is not None}}

    async def cleanup(self, job: AnkaJob) -> None:
        """An ephemeral runner unregisters itself after its job; one that never ran must go.
        With `cancel_unsatisfiable`, a job no host can run gets its workflow run cancelled."""
        github = job.spec.github
        self._last_api_check.pop(job.metadata.uid, None)
        self._idle_since = {k: v for k, v in self._idle_since.items() if job.metadata.uid not in k}
        if github is None:
            return
        client = await self.client()
        if job.status.vm_name is not None:
            await self._delete_runner(client, self.scope_for(job.spec), job.status.vm_name)
        unsatisfiable = job.status.reason in ("Unschedulable", "TemplateNotFound", "InvalidSpec")
        if unsatisfiable and self._config()[1].cancel_unsatisfiable and job.status.phase == Phase.FAILED:
            log.warning(
                "cancelling workflow run %s of %s/%s: job %s cannot run on any host (%s)",
                github.run_id,
                github.owner,
                github.repo,
                github.job_id,
                job.status.message,
            )
            await client.cancel_run(github.owner, github.repo, github.run_id)

    async def sweep(self, jobs: Collection[AnkaJob]) -> None:
        """Delete runners named like our VMs that no live AnkaJob attempt owns, after a grace."""
        _, handler = self._config()
        live = {j.status.vm_name for j in jobs if j.status.vm_name and not j.status.phase.is_terminal()}
        scopes = {self.scope_for(j.spec) for j in jobs if j.spec.github is not None}
        configured = self._config()[0].scope()
        if configured is not None:
            scopes.add(configured)
        client = await self.client()
        now = time.monotonic()
        seen: dict[tuple[Scope, str], float] = {}
        for scope in scopes:
            for runner in await client.list_runners(scope):
                if not runner.name.startswith(VM_PREFIX) or runner.name in live or runner.busy:
                    continue
                key = (scope, runner.name)
                seen[key] = first = self._orphan_runners.get(key, now)
                if now - first >= handler.orphan_runner_grace_seconds:
                    log.warning("deleting orphan runner %s (%s): no AnkaJob owns it", runner.name, scope)
                    await client.delete_runner(scope, runner.id)
                    seen.pop(key)
        self._orphan_runners = seen

    # ----- helpers ------------------------------------------------------------------------------
    async def _delete_runner(self, client: GitHubClient, scope: Scope, name: str) -> None:
        runner = await client.find_runner(scope, name)
        if runner is None:
            return
        try:
            await client.delete_runner(scope, runner.id)
            log.info("deleted runner %s (%s)", name, scope)
        except NotFound:
            return

    async def _runner_assets(self) -> dict[str, decisions.RunnerAsset]:
        _, handler = self._config()
        now = time.monotonic()
        if self._release is not None and now - self._release[0] < handler.release_cache_seconds:
            return self._release[1]
        async with httpx.AsyncClient(timeout=30.0, follow_redirects=True) as http:
            response = await http.get(handler.runner_release_url, headers={"Accept": "application/json"})
            response.raise_for_status()
            release: dict[str, Any] = response.json()
        assets = decisions.runner_assets(release)
        if not assets:
            log.warning(
                "no macOS runner downloads in %s; VMs must cache the runner", handler.runner_release_url
            )
        self._release = (now, assets)
        return assets
