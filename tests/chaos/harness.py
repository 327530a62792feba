"""The chaos harness: a fresh dev stack per scenario, the invariant monitor, and fault helpers.

The stack runs on its own event loop in a thread (``StackThread`` from the e2e tests); the test
and the monitor run on pytest's loop and reach the stack only through its public surfaces: the
Kubernetes API, Redis, the simulators' files, the fake GitHub's control API, and the stack's
process controls (kill / restart a child). Timings are shortened so faults and recoveries fit
in seconds: the agents' own ``anka`` timeouts, the ready timeout, the resync and grace periods.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import os
import signal
import time
from collections.abc import AsyncIterator, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import httpx
import psutil
import redis.asyncio as aioredis
from redis.exceptions import RedisError

from anklet import keys, models
from anklet.dev.anka_sim import control
from anklet.dev.invariants import Monitor, Report, Target, checks
from anklet.dev.stack import DEV_OWNER, DEV_REPO, DevStack
from anklet.redis_protocol import connect
from tests.e2e.conftest import StackThread
from tests.waiting import eventually

T = TypeVar("T")

TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"  # "anklet", tag 2c4r: 2 CPU / 4 GiB, preinstalled
OTHER_TEMPLATE = "d792c6f6-198c-470f-9526-9c998efe7ab4"  # 4 CPU / 8 GiB, never preinstalled: pulled
SMALL_LABELS = ["self-hosted", f"anka-template:{TEMPLATE}", "anka-template-tag:2c4r"]
JOBS = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/default/{models.PLURAL}"
HOSTS = f"/apis/{models.GROUP}/{models.VERSION}/{models.HOST_PLURAL}"

# Every agent call to `anka` is bounded by these (seconds), so hung commands are killed quickly.
ANKA_TIMEOUTS = {
    "query": 8,
    "clone": 8,
    "start": 8,
    "stop": 8,
    "delete": 8,
    "mount": 8,
    "registry": 8,
    "check_download_size": 8,
    "pull": 30,
}


def chaos_stack(state_dir: Path, *, sentinel: bool = False) -> DevStack:
    """Two simulated Macs with the small template preinstalled, fast pulls (overlapping pulls
    corrupt the template, the real hazard), and short timers; with `sentinel`, Redis is a
    primary, a replica and three Sentinels."""
    return DevStack(
        hosts=2,
        state_dir=state_dir,
        time_scale=0.02,
        out=io.StringIO(),
        redis_appendonly=True,
        redis_sentinel=sentinel,
        sim_config={
            "preinstalled": [f"{TEMPLATE}:2c4r"],
            "pull_bytes_per_second": 2e9,
            "concurrent_pull": "corrupt",
        },
        agent_env={
            "ANKLET_AGENT_ANKA_TIMEOUTS": json.dumps(ANKA_TIMEOUTS),
            "ANKLET_AGENT_READY_TIMEOUT_SECONDS": "8",
            "ANKLET_AGENT_ORPHAN_GRACE_SECONDS": "2",
            "ANKLET_AGENT_RESYNC_SECONDS": "3",
        },
        controller_env={
            "ANKLET_RESYNC_SECONDS": "3",
            "ANKLET_GITHUB_HANDLER_API_CHECK_SECONDS": "3",
            "ANKLET_GITHUB_HANDLER_PICKUP_GRACE_SECONDS": "6",
            "ANKLET_GITHUB_HANDLER_ORPHAN_RUNNER_GRACE_SECONDS": "3",
        },
        receiver_env={"ANKLET_GITHUB_REDELIVERY_INTERVAL_SECONDS": "3"},
    )


@dataclass
class Chaos:
    """One scenario's system, with the monitor running and helpers to hurt it."""

    runner: StackThread
    http: httpx.AsyncClient
    redis: aioredis.Redis
    monitor: Monitor
    faults: list[str] = field(default_factory=list)
    report: Report | None = None

    @property
    def stack(self) -> DevStack:
        return self.runner.stack

    @property
    def hosts(self) -> list[str]:
        return list(self.stack.endpoints["hosts"])

    def home(self, host: str) -> Path:
        return Path(self.stack.endpoints["anka_homes"][host])

    def note(self, fault: str) -> None:
        """Name a fault this scenario injected (for the report table)."""
        if fault not in self.faults:
            self.faults.append(fault)

    async def on_stack(self, coro: Coroutine[Any, Any, T], timeout: float = 60) -> T:
        """Run ``coro`` on the stack's loop without blocking ours (the monitor keeps sampling)."""
        future = asyncio.run_coroutine_threadsafe(coro, self.runner.loop)
        return await asyncio.wait_for(asyncio.wrap_future(future), timeout)

    # ----- processes ----------------------------------------------------------------------------
    async def kill(self, name: str, sig: int = signal.SIGKILL) -> int:
        return await self.on_stack(self.stack.kill_child(name, sig))

    async def restart(self, name: str) -> None:
        await self.on_stack(self.stack.restart_child(name))

    async def crash_and_restart(self, name: str, down: float = 0.3) -> None:
        """SIGKILL a child, keep it down ``down`` seconds, start it again."""
        assert await self.kill(name) == -signal.SIGKILL
        await asyncio.sleep(down)
        await self.restart(name)

    def assert_children_alive(self) -> None:
        """No component died on its own (an exit, with any code, under chaos is a bug)."""
        self.stack.check_children()

    # ----- jobs ---------------------------------------------------------------------------------
    async def create(
        self, name: str, script: str = "echo ok", *, tag: str = "2c4r", template: str = TEMPLATE, **spec: Any
    ) -> dict[str, Any]:
        cpu, memory = (4, 8192) if template == OTHER_TEMPLATE else (2, 4096)
        fields: dict[str, Any] = {
            "template": template,
            "tag": tag if template == TEMPLATE else None,
            "handler": "script",
            "script": {"run": script},
            "resources": {"cpu": cpu, "memoryMiB": memory},
            "backoffLimit": 3,
            **spec,
        }
        body = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": name},
            "spec": {k: v for k, v in fields.items() if v is not None},
        }
        response = await self.http.post(JOBS, json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    async def job(self, name: str) -> dict[str, Any] | None:
        response = await self.http.get(f"{JOBS}/{name}")
        if response.status_code == 404:
            return None
        response.raise_for_status()
        body: dict[str, Any] = response.json()
        return body

    async def status(self, name: str) -> dict[str, Any]:
        job = await self.job(name)
        assert job is not None, f"ankajob/{name} is gone"
        return dict(job.get("status") or {})

    async def wait_phase(self, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            job = await self.job(name)
            status = (job or {}).get("status") or {}
            return status if status.get("phase") in phases else None

        return await eventually(probe, timeout)

    async def wait_object(self, name: str, timeout: float = 30) -> dict[str, Any]:
        return await eventually(lambda: self.job(name), timeout)

    # ----- the simulated Macs --------------------------------------------------------------------
    def calls(self, host: str) -> list[dict[str, Any]]:
        return control.read_calls(self.home(host))

    async def wait_call(
        self, verb: str, *, match: str = "anklet-vm-", also: str | None = None, timeout: float = 30
    ) -> str:
        """The host on which an ``anka <verb>`` call is in flight whose argv has an item containing
        ``match`` (and the item ``also``)."""

        async def probe() -> str | None:
            for host in self.hosts:
                for call in self.calls(host):
                    argv = [str(a) for a in call["argv"]]
                    if (
                        call["exit"] is None
                        and call["ts"] >= self.monitor.started  # not a killed call of an earlier scenario
                        and verb in argv
                        and any(match in a for a in argv)
                        and (also is None or also in argv)
                    ):
                        return host
            return None

        return await eventually(probe, timeout)

    def lingering_anka(self, older_than: float = 12.0) -> list[str]:
        """``anka`` processes still alive that started over ``older_than`` s ago: a hung command
        the agent's own timeouts failed to kill (pulls may legitimately take longer)."""
        found = []
        now = time.time()
        for host in self.hosts:
            home = self.home(host)
            for call in self.calls(host):
                argv = [str(a) for a in call["argv"]]
                if call["exit"] is not None or not call.get("pid") or now - call["ts"] < older_than:
                    continue
                if call["ts"] < self.monitor.started:
                    continue  # an earlier scenario's (checked then)
                if "pull" in argv:
                    continue
                with contextlib.suppress(psutil.Error):
                    proc = psutil.Process(int(call["pid"]))
                    if proc.status() != psutil.STATUS_ZOMBIE and proc.environ().get("ANKA_SIM_HOME") == str(
                        home
                    ):
                        found.append(
                            f"{host}: anka {' '.join(argv)} (pid {proc.pid}, {now - call['ts']:.0f} s)"
                        )
        return found

    def fault_everywhere(self, **rule: Any) -> None:
        for host in self.hosts:
            control.add_fault(self.home(host), **rule)

    def anklet_vms(self) -> dict[str, list[str]]:
        return {
            host: [
                vm["name"]
                for vm in control.read_state(self.home(host)).get("vms", {}).values()
                if str(vm["name"]).startswith("anklet-vm-")
            ]
            for host in self.hosts
        }

    # ----- scheduling -----------------------------------------------------------------------------
    async def _cordon(self, host: str, cordoned: bool) -> None:
        response = await self.http.patch(
            f"{HOSTS}/{host}",
            json={"spec": {"unschedulable": cordoned}},
            headers={"Content-Type": "application/merge-patch+json"},
        )
        response.raise_for_status()

        async def applied() -> bool:
            raw = await self.redis.get(keys.host_config(host))
            return raw is not None and bool(json.loads(raw).get("unschedulable")) == cordoned

        await eventually(applied, 20)

    @asynccontextmanager
    async def held(self) -> AsyncIterator[None]:
        """No job is placed inside the block (every host cordoned), so a test can learn the uids of
        the jobs it creates and aim faults at them before any host acts."""
        for host in self.hosts:
            await self._cordon(host, True)
        try:
            yield
        finally:
            for host in self.hosts:
                await self._cordon(host, False)

    # ----- GitHub ---------------------------------------------------------------------------------
    async def github_job(
        self, *, run_seconds: float = 1, labels: list[str] | None = None, **extra: Any
    ) -> int:
        body = {
            "owner": DEV_OWNER,
            "repo": DEV_REPO,
            "labels": labels or SMALL_LABELS,
            "run_seconds": run_seconds,
        }
        body.update(extra)
        response = await self.http.post(f"{self.stack.github.url}/_sim/workflow_jobs", json=body)
        response.raise_for_status()
        return int(response.json()["id"])

    async def github_state(self, job_id: int) -> dict[str, Any]:
        response = await self.http.get(f"{self.stack.github.url}/_sim/workflow_jobs/{job_id}")
        response.raise_for_status()
        data: dict[str, Any] = response.json()
        return data

    async def github_fault(self, fault: str, **params: Any) -> None:
        response = await self.http.post(
            f"{self.stack.github.url}/_sim/faults", json={"fault": fault, **params}
        )
        response.raise_for_status()

    async def github_cancel(self, job_id: int) -> int:
        response = await self.http.post(f"{self.stack.github.url}/_sim/workflow_jobs/{job_id}/cancel")
        return response.status_code

    # ----- lifecycle (ChaosSession) ----------------------------------------------------------------
    async def wait_ready(self, timeout: float = 60) -> None:
        """Every host registered with a live lease, and its AnkaHost created and uncordoned."""

        async def ready() -> bool:
            for host in self.hosts:
                if not await self.redis.exists(keys.host_lease(host)):
                    return False
                response = await self.http.get(f"{HOSTS}/{host}")
                if response.status_code != 200 or (response.json().get("spec") or {}).get("unschedulable"):
                    return False
            return True

        await eventually(ready, timeout)

    async def reset(self, timeout: float = 30) -> None:
        """Undo what a previous scenario left behind on purpose, then require a clean system."""
        group = self.stack.sentinels
        servers = group.servers if group is not None else [self.stack.redis]
        for server in servers:
            assert server is not None
            if server.process is not None and server.process.poll() is None:
                server.process.send_signal(signal.SIGCONT)
            elif group is None:
                await asyncio.to_thread(server.start)
        if group is not None:
            await asyncio.to_thread(group.revive)
        for host in self.hosts:
            control.clear_faults(self.home(host))
        await self.github_fault("clear")
        for child in list(self.stack.children):
            if child.process.returncode is not None:
                await self.restart(child.name)
        for host in self.hosts:
            response = await self.http.get(f"{HOSTS}/{host}")
            if response.status_code == 200 and (response.json().get("spec") or {}).get("unschedulable"):
                await self._cordon(host, False)
        response = await self.http.get(f"/apis/{models.GROUP}/{models.VERSION}/{models.PLURAL}")
        response.raise_for_status()
        for item in response.json().get("items", []):
            meta = item["metadata"]
            path = f"/apis/{models.GROUP}/{models.VERSION}/namespaces/{meta['namespace']}/{models.PLURAL}"
            await self.http.delete(f"{path}/{meta['name']}")

        async def clean() -> bool:
            listing = await self.http.get(f"/apis/{models.GROUP}/{models.VERSION}/{models.PLURAL}")
            if listing.json().get("items"):
                return False
            return not checks.check_orphans(await self.monitor.final_snapshot())

        await self.wait_ready(timeout)
        await eventually(clean, timeout)

    async def begin(self) -> Chaos:
        await self.monitor.start()
        return self

    async def close(self) -> None:
        await self.monitor.stop()
        await self.http.aclose()
        await self.redis.aclose()

    # ----- the verdict ----------------------------------------------------------------------------
    async def verdict(self, timeout: float = 60) -> Report:
        """Wait for quiescence, check every invariant, and fail the test on any violation."""
        self.report = await self.monitor.quiesce(timeout)
        print(f"\ninvariant report: {self.report}")  # shown with -s, and with the failure otherwise
        self.assert_children_alive()
        self.report.raise_for_violations()
        assert not self.lingering_anka(), f"anka commands nobody killed: {self.lingering_anka()}"
        return self.report


class ChaosSession:
    """One dev stack for every scenario of a session (a stack takes seconds to start on a busy
    2-core machine). Before each scenario it is reset (faults cleared, jobs deleted, every
    process running) and must reach a clean state, checked with the invariant checker itself;
    a stack that cannot be cleaned is replaced by a new one."""

    def __init__(self, root: Path, *, sentinel: bool = False) -> None:
        self.root = root
        self.sentinel = sentinel
        self.generation = 0
        self.runner: StackThread | None = None
        # Starting and stopping block; a thread of our own (not the loop's default executor), so a
        # stop that hangs can never hold up the test loop's shutdown.
        self._threads = ThreadPoolExecutor(max_workers=2, thread_name_prefix="chaos-stack")

    async def _boot(self) -> StackThread:
        self.generation += 1
        runner = StackThread(chaos_stack(self.root / f"dev-{self.generation}", sentinel=self.sentinel))
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._threads, runner.__enter__)
        except BaseException:
            await loop.run_in_executor(self._threads, runner.__exit__, None, None, None)  # no leaked children
            raise
        self.runner = runner
        return runner

    async def close(self) -> None:
        """Stop the stack; if that hangs, kill what is left rather than stall the session."""
        if self.runner is None:
            return
        runner, self.runner = self.runner, None
        pids = [c.process.pid for c in runner.stack.children if c.process.returncode is None]
        group = runner.stack.sentinels
        servers = [runner.stack.redis] if group is None else [*group.servers, *group.sentinels]
        stopping = asyncio.get_running_loop().run_in_executor(
            self._threads, runner.__exit__, None, None, None
        )
        try:
            await asyncio.wait_for(stopping, 40)
        except TimeoutError:
            print("chaos stack did not stop within 40 s; killing its processes")
            for pid in pids:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)
            for server in servers:
                if server is not None and server.process is not None:
                    server.process.kill()

    async def finish(self) -> None:
        """At the end of the package: stop the stack and let go of the threads."""
        await self.close()
        self._threads.shutdown(wait=False)

    async def fresh(self) -> Chaos:
        """A clean system with a started monitor, for one scenario."""
        if self.runner is not None:
            chaos = await _open(self.runner)
            try:
                await chaos.reset()
                return await chaos.begin()
            except (AssertionError, OSError, httpx.HTTPError, RedisError, TimeoutError) as exc:
                print(f"chaos stack could not be cleaned ({exc}); starting a new one")
                await chaos.close()
                await self.close()
        chaos = await _open(await self._boot())
        try:
            await chaos.wait_ready()
            return await chaos.begin()
        except BaseException:
            await chaos.close()
            raise


async def _open(runner: StackThread) -> Chaos:
    stack = runner.stack
    http = httpx.AsyncClient(base_url=stack.endpoints["kube_api"], timeout=30)
    client = connect(stack.endpoints["redis_url"], socket_timeout=5.0, retries=0)
    return Chaos(runner, http, client, Monitor(Target.from_endpoints(stack.endpoints), interval=0.2))


def elapsed_since(started: float) -> float:
    return round(time.monotonic() - started, 1)
