"""`anklet dev`: the whole system on one machine, with no Mac, cluster or GitHub.

The emulated Kubernetes API runs in this process; Redis, the controller and one agent per
simulated Mac run as child processes exactly as they would in production (the agents drive the
simulated `anka` executable found first on their PATH). Everything listens on 127.0.0.1 only.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import signal
import sys
import tempfile
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import yaml

from anklet import crd, models
from anklet.dev.redis_server import RedisServer, RedisUnavailable, free_port
from anklet.dev.sentinel_group import SentinelGroup

# The repository the dev stack's fake GitHub jobs belong to (the receiver's redelivery scope).
DEV_OWNER = "anklet-dev"
DEV_REPO = "demo"
DEV_HOOK_ID = 1
DEMO_GITHUB_LABELS = [
    "self-hosted",
    "anka-template:84266873-da90-4e0d-903b-ed0233471f9f",
    "anka-template-tag:6c14r",
]


class DevStackError(RuntimeError):
    pass


@dataclass
class _Child:
    name: str
    process: asyncio.subprocess.Process
    log_path: Path
    argv: list[str]
    env: dict[str, str]


@dataclass
class DevStack:
    hosts: int = 2
    state_dir: Path | None = None
    time_scale: float = 0.02
    host_cpu: int = 8
    host_memory_mib: int = 16 * 1024
    out: Any = field(default=sys.stdout)
    # For tests that need other timings or faults (tests/chaos): extra environment per process
    # kind, config.json overrides for every simulated Mac, and Redis with an append-only file.
    controller_env: dict[str, str] = field(default_factory=dict)
    receiver_env: dict[str, str] = field(default_factory=dict)
    agent_env: dict[str, str] = field(default_factory=dict)
    sim_config: dict[str, Any] = field(default_factory=dict)
    redis_appendonly: bool = False
    # Redis as production runs it for high availability: primary, replica, three Sentinels;
    # the processes get a redis+sentinel:// URL (see anklet.redis_sentinel).
    redis_sentinel: bool = False

    def __post_init__(self) -> None:
        self._own_dir = self.state_dir is None
        self.dir = self.state_dir or Path(tempfile.mkdtemp(prefix="anklet-dev-"))
        self.children: list[_Child] = []
        self.redis: RedisServer | None = None  # the primary (at start, with Sentinel)
        self.sentinels: SentinelGroup | None = None
        self.redis_url = ""
        self.api: Any = None
        self.endpoints: dict[str, Any] = {}
        self.github: Any = None
        self.webhook_url = ""
        self.webhook_secret = ""
        self.github_token = ""

    def say(self, message: str) -> None:
        print(f"[anklet dev {time.strftime('%H:%M:%S')}] {message}", file=self.out, flush=True)

    # ----- lifecycle ------------------------------------------------------------------------
    async def start(self) -> dict[str, Any]:
        from anklet.dev.anka_sim import install_shim
        from anklet.dev.kube_emulator import KubeApiServer

        self.dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "logs").mkdir(exist_ok=True)
        try:
            if self.redis_sentinel:
                self.sentinels = SentinelGroup(self.dir / "redis", appendonly=self.redis_appendonly).start()
                self.redis, self.redis_url = self.sentinels.servers[0], self.sentinels.url
            else:
                self.redis = RedisServer(self.dir / "redis", appendonly=self.redis_appendonly).start()
                self.redis_url = self.redis.url
        except RedisUnavailable as exc:
            raise DevStackError(str(exc)) from exc
        self.api = KubeApiServer()
        await self.api.__aenter__()
        kubeconfig = self.dir / "kubeconfig"
        self.api.write_kubeconfig(kubeconfig)
        for definition in crd.all_crds():
            self.api.install_crd(definition)
        bin_dir = self.dir / "bin"
        bin_dir.mkdir(exist_ok=True)
        install_shim(bin_dir)
        base_env = {
            **os.environ,
            "ANKLET_REDIS_URL": self.redis_url,
            "KUBECONFIG": str(kubeconfig),
            "PYTHONUNBUFFERED": "1",
        }
        github_env = await self._start_github()
        metrics: dict[str, str] = {}  # process name → its /metrics URL, each on a free loopback port
        metrics_port = free_port()
        metrics["controller"] = f"http://127.0.0.1:{metrics_port}/metrics"
        await self._spawn(
            "controller",
            [sys.executable, "-m", "anklet.cli", "controller", "--kubeconfig", str(kubeconfig)],
            {
                **base_env,
                **github_env,
                "ANKLET_RESYNC_SECONDS": "10",
                "ANKLET_METRICS_HOST": "127.0.0.1",
                "ANKLET_METRICS_PORT": str(metrics_port),
                **self.controller_env,
            },
        )
        receiver_port = free_port()
        self.webhook_url = f"http://127.0.0.1:{receiver_port}/webhooks/github"
        await self._spawn(
            "receiver",
            [sys.executable, "-m", "anklet.cli", "receiver"],
            {
                **base_env,
                **github_env,
                "ANKLET_RECEIVER_HOST": "127.0.0.1",
                "ANKLET_RECEIVER_PORT": str(receiver_port),
                "ANKLET_RECEIVER_NAMESPACE": "default",
                "ANKLET_RECEIVER_KUBECONFIG": str(kubeconfig),
                **self.receiver_env,
            },
        )
        self.github.set_webhook(self.webhook_url, self.webhook_secret)
        metrics["receiver"] = self.webhook_url.replace("/webhooks/github", "/metrics")
        for i in range(1, self.hosts + 1):
            name = f"mac-{i}"
            home = self.dir / "hosts" / name
            (home / "anka").mkdir(parents=True, exist_ok=True)
            if self.sim_config:
                from anklet.dev.anka_sim import control

                control.write_config(home / "anka", **self.sim_config)
            metrics_port = free_port()
            metrics[name] = f"http://127.0.0.1:{metrics_port}/metrics"
            env = {
                **base_env,
                "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                "ANKA_SIM_HOME": str(home / "anka"),
                "ANKA_SIM_TIME_SCALE": str(self.time_scale),
                "ANKLET_AGENT_NAME": name,
                "ANKLET_AGENT_CPU": str(self.host_cpu),
                "ANKLET_AGENT_MEMORY_MIB": str(self.host_memory_mib),
                "ANKLET_AGENT_READY_POLL_SECONDS": str(max(0.05, 2.0 * self.time_scale)),
                "ANKLET_AGENT_ORPHAN_GRACE_SECONDS": "5",
                "ANKLET_AGENT_SHUTDOWN_GRACE_SECONDS": "2",
                # The simulated Mac's disk is the simulator's, not this machine's: an absolute buffer.
                "ANKLET_AGENT_TEMPLATE_DISK_BUFFER_BYTES": str(20 * 2**30),
                "ANKLET_AGENT_METRICS_HOST": "127.0.0.1",
                "ANKLET_AGENT_METRICS_PORT": str(metrics_port),
                **self.agent_env,
            }
            argv = [sys.executable, "-m", "anklet.cli", "agent", "--state-dir", str(home), "--arch", "arm64"]
            await self._spawn(name, argv, env)
        self.endpoints = {
            "kube_api": self.api.url,
            "kubeconfig": str(kubeconfig),
            "redis_url": self.redis_url,
            "webhook_url": self.webhook_url,
            "webhook_secret": self.webhook_secret,
            "github_api": self.github.url,
            "github_owner": DEV_OWNER,
            "github_repo": DEV_REPO,
            "metrics": metrics,
            "logs": str(self.dir / "logs"),
            "hosts": [f"mac-{i}" for i in range(1, self.hosts + 1)],
            "anka_homes": {
                f"mac-{i}": str(self.dir / "hosts" / f"mac-{i}" / "anka") for i in range(1, self.hosts + 1)
            },
        }
        (self.dir / "endpoints.json").write_text(json.dumps(self.endpoints, indent=2))
        return self.endpoints

    async def _start_github(self) -> dict[str, str]:
        """The fake GitHub in this process; returns the settings the controller and receiver need."""
        from anklet.dev.fake_github import FakeGitHub

        self.webhook_secret = secrets.token_hex(20)
        token = self.github_token = f"ghp_dev_{secrets.token_hex(16)}"
        self.github = FakeGitHub(webhook_secret=self.webhook_secret, tokens=[token], hook_id=DEV_HOOK_ID)
        await self.github.__aenter__()
        return {
            "ANKLET_GITHUB_API_URL": self.github.url,
            "ANKLET_GITHUB_TOKEN": token,
            "ANKLET_GITHUB_OWNER": DEV_OWNER,
            "ANKLET_GITHUB_REPO": DEV_REPO,
            "ANKLET_GITHUB_HOOK_ID": str(DEV_HOOK_ID),
            "ANKLET_GITHUB_WEBHOOK_SECRET": self.webhook_secret,
            "ANKLET_GITHUB_REDELIVERY_INTERVAL_SECONDS": "10",
            "ANKLET_GITHUB_HANDLER_RUNNER_RELEASE_URL": f"{self.github.url}/_sim/releases/latest",
            # Faster fallbacks than production, so missed webhooks show within a demo's time.
            "ANKLET_GITHUB_HANDLER_API_CHECK_SECONDS": "5",
            "ANKLET_GITHUB_HANDLER_PICKUP_GRACE_SECONDS": "10",
            "ANKLET_GITHUB_HANDLER_ORPHAN_RUNNER_GRACE_SECONDS": "10",
        }

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> _Child:
        log_path = self.dir / "logs" / f"{name}.log"
        log_file = log_path.open("ab")
        process = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=log_file, stderr=log_file
        )
        log_file.close()
        child = _Child(name, process, log_path, argv, env)
        self.children.append(child)
        return child

    def _child(self, name: str) -> _Child:
        for child in self.children:
            if child.name == name:
                return child
        raise DevStackError(f"no child process named {name}")

    async def kill_child(self, name: str, sig: int = signal.SIGTERM) -> int:
        """Signal one process (e.g. SIGKILL a simulated Mac's agent) and wait for it to exit."""
        child = self._child(name)
        if child.process.returncode is None:
            child.process.send_signal(sig)
        return await asyncio.wait_for(child.process.wait(), 30)

    async def restart_child(self, name: str) -> None:
        """Start a stopped process again with the same command line and environment."""
        child = self._child(name)
        if child.process.returncode is None:
            raise DevStackError(f"{name} is still running")
        self.children.remove(child)
        await self._spawn(name, child.argv, child.env)

    def check_children(self) -> None:
        for child in self.children:
            if child.process.returncode is not None:
                tail = child.log_path.read_text(errors="replace")[-2000:]
                raise DevStackError(f"{child.name} exited with {child.process.returncode}; log tail:\n{tail}")

    async def stop(self) -> None:
        for child in self.children:
            if child.process.returncode is None:
                child.process.terminate()
        for child in self.children:
            try:
                await asyncio.wait_for(child.process.wait(), 10)
            except TimeoutError:
                child.process.kill()
                await child.process.wait()
        self.children.clear()
        if self.api is not None:
            await self.api.__aexit__(None, None, None)
            self.api = None
        if self.github is not None:
            await self.github.__aexit__(None, None, None)
            self.github = None
        if self.sentinels is not None:
            self.sentinels.stop()
            self.sentinels = None
        if self.redis is not None:
            self.redis.stop()
            self.redis = None

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[DevStack]:
        try:
            await self.start()
            yield self
        finally:
            await asyncio.shield(self.stop())

    # ----- modes ----------------------------------------------------------------------------
    async def serve(self) -> int:
        async with self.running():
            self.say(f"state in {self.dir}")
            self.say(f"kubectl --kubeconfig {self.endpoints['kubeconfig']} get ankajobs")
            self.say(f"endpoints: {self.dir / 'endpoints.json'}; Ctrl-C stops everything")
            while True:
                self.check_children()
                await asyncio.sleep(1.0)

    async def demo(self, examples: Path, *, timeout: float) -> int:
        jobs = load_examples(examples)
        if not jobs:
            raise DevStackError(f"no AnkaJob examples found in {examples}")
        async with self.running():
            self.say(f"{self.hosts} simulated Macs, state in {self.dir}")
            async with httpx.AsyncClient(base_url=self.endpoints["kube_api"], timeout=30) as http:
                for job in jobs:
                    response = await http.post(_collection(job), json=job)
                    if response.status_code >= 300:
                        self.say(f"applying {job['metadata']['name']} failed: {response.text[:300]}")
                        return 1
                    self.say(f"applied ankajob/{job['metadata']['name']}")
                gh_job = await self._queue_github_job(http)
                expected = [*jobs, _expected_github(gh_job)]
                try:
                    results = await asyncio.wait_for(self._follow(http, expected), timeout)
                except TimeoutError:
                    self.say(f"timed out after {timeout:.0f} s; logs in {self.dir / 'logs'}")
                    return 1
                results["github job completed/success, no runner left"] = await self._github_clean(gh_job)
        failed = [name for name, ok in results.items() if not ok]
        self.say("demo " + ("passed" if not failed else f"FAILED: {', '.join(failed)}"))
        return 0 if not failed else 1

    async def _queue_github_job(self, http: httpx.AsyncClient) -> dict[str, Any]:
        """A GitHub Actions job with Anka labels, queued on the fake GitHub (which sends the webhook)."""
        body = {"owner": DEV_OWNER, "repo": DEV_REPO, "labels": DEMO_GITHUB_LABELS, "run_seconds": 2,
                "name": "build", "workflow_name": "ci"}  # fmt: skip
        response = await http.post(f"{self.github.url}/_sim/workflow_jobs", json=body)
        response.raise_for_status()
        job: dict[str, Any] = response.json()
        self.say(f"queued GitHub job {job['id']} on {DEV_OWNER}/{DEV_REPO} with labels {DEMO_GITHUB_LABELS}")
        return job

    async def _github_clean(self, job: dict[str, Any]) -> bool:
        """The GitHub side after the demo: the job completed successfully and no runner is left."""
        final = self.github.job(job["id"]) or {}
        runners = self.github.runners()
        ok = final.get("status") == "completed" and final.get("conclusion") == "success" and not runners
        self.say(
            f"GitHub job {job['id']}: {final.get('status')}/{final.get('conclusion')}, "
            f"runner {final.get('runner_name')}; runners still registered: {len(runners)}"
        )
        return ok

    async def _follow(self, http: httpx.AsyncClient, jobs: list[dict[str, Any]]) -> dict[str, bool]:
        """Watch the jobs until each is terminal; True where the phase is the expected one."""
        expected = {j["metadata"]["name"]: _expectation(j) for j in jobs}
        seen: dict[str, str] = {}
        results: dict[str, bool] = {}
        namespace = jobs[0]["metadata"].get("namespace", "default")
        path = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{namespace}/{models.PLURAL}"
        rv = "0"
        while len(results) < len(expected):
            self.check_children()
            params = {"watch": "true", "resourceVersion": rv, "timeoutSeconds": "5"}
            async with http.stream("GET", path, params=params) as stream:
                async for line in stream.aiter_lines():
                    if not line.strip():
                        continue
                    event = json.loads(line)
                    obj = event.get("object", {})
                    rv = obj.get("metadata", {}).get("resourceVersion", rv)
                    name = obj.get("metadata", {}).get("name")
                    if name not in expected or event.get("type") not in ("ADDED", "MODIFIED"):
                        continue
                    status = obj.get("status") or {}
                    phase = status.get("phase", "Pending")
                    detail = f"{phase} host={status.get('host') or '-'} {status.get('message') or ''}".strip()
                    if seen.get(name) != detail:
                        seen[name] = detail
                        self.say(f"{name}: {detail}")
                    if phase in ("Succeeded", "Failed", "Cancelled") and name not in results:
                        want_phase, want_exit = expected[name]
                        ok = phase == want_phase and (
                            want_exit is None or status.get("exitCode") == want_exit
                        )
                        results[name] = ok
                        verdict = "as expected" if ok else "UNEXPECTED"
                        self.say(f"{name}: {verdict} (wanted {want_phase}, exit {want_exit})")
                    if len(results) == len(expected):
                        break
        return results


def _expected_github(job: dict[str, Any]) -> dict[str, Any]:
    """The AnkaJob the receiver creates for a queued GitHub job, with what the demo expects."""
    from plugins.handlers.github.constants import ankajob_name

    name = ankajob_name(int(job["id"]), int(job.get("run_attempt", 1)))
    return {"metadata": {"name": name, "annotations": {"anklet.dev/expected-phase": "Succeeded"}}}


def _collection(job: dict[str, Any]) -> str:
    namespace = job["metadata"].get("namespace", "default")
    return f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{namespace}/{models.PLURAL}"


def _expectation(job: dict[str, Any]) -> tuple[str, int | None]:
    annotations = job["metadata"].get("annotations", {})
    raw_exit = annotations.get("anklet.dev/expected-exit-code")
    return annotations.get("anklet.dev/expected-phase", "Succeeded"), int(raw_exit) if raw_exit else None


def load_examples(directory: Path) -> list[dict[str, Any]]:
    jobs = []
    for path in sorted(directory.glob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if isinstance(doc, dict) and doc.get("kind") == models.KIND:
                jobs.append(doc)
    return jobs
