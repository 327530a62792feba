"""The manifests' RBAC against what the controller and the receiver really ask the API for.

The production overlay is rendered, and its Deployments are started the way the kubelet would
start them — the container's args after the Dockerfile's ENTRYPOINT, its env built from the
Secrets and the generated ConfigMap — as local processes against the API emulator, a real
redis-server, the fake GitHub and one simulated Mac. Each process authenticates with its own
ServiceAccount's identity (a bearer token in its kubeconfig, where a pod would use the mounted
token), so the emulator's request recorder knows who asked for what. The flow covers what a
cluster sees: leader election between two controller replicas, script jobs that succeed, fail,
get cancelled, get deleted while running and expire by TTL, a GitHub job from webhook to runner,
a Mac registering as an AnkaHost and being cordoned. Then:

- every request each component made is allowed by its Roles (else it would get 403 in a cluster);
- every verb each Role grants was used by some request (least privilege), apart from the small
  allow-list below, each with the reason the flow cannot show it;
- the processes answer the probes the manifests declare, and stay inside their memory limits.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import json
import os
import re
import secrets
import signal
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest

from anklet import models
from anklet.dev import kustomize
from anklet.dev.fake_github import FakeGitHub
from anklet.dev.kube.audit import Access
from anklet.dev.kube.podenv import PodContext, container_argv, container_env
from anklet.dev.kube.rbac import Authorizer, Grant, Rule, service_account_user
from anklet.dev.kube_emulator import KubeApiServer
from anklet.dev.redis_server import RedisServer, free_port
from plugins.handlers.github.constants import ankajob_name
from tests.waiting import eventually

ROOT = Path(__file__).resolve().parents[2]
OVERLAY = ROOT / "manifests" / "overlays" / "production"
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"
USER_NAMESPACE = "team-a"  # where people submit AnkaJobs: the controller must cover any namespace
ADMIN = "kubernetes-admin"  # the test's own identity (kubectl's, in a real cluster)
OWNER, REPO, HOOK_ID = "acme", "app", 1
GROUP, VERSION = models.GROUP, models.VERSION

# (component, apiGroup, resource, verb) → why the Role grants it although the flow never uses it.
# Empty today: `run_flow` exercises every granted verb, including the Lease's get/create/update
# (two replicas elect a leader). What the recordings showed kopf itself needs: CRD list/watch
# (resource discovery), ankajobs/ankahosts list/watch (its watches), ankajobs patch (finalizer and
# progress annotations) and discovery documents, which every authenticated user may read. It does
# not list or watch namespaces (only namespace patterns need that; we run cluster-wide).
# Add an entry only for a verb that a rare path needs, with the reason; a stale entry fails below.
ALLOWED_UNUSED: dict[tuple[str, str, str, str], str] = {}


@dataclasses.dataclass
class Component:
    """One Deployment's container, as this test runs it."""

    name: str  # the container name: controller, receiver
    namespace: str
    service_account: str
    deployment: dict[str, Any]

    @property
    def user(self) -> str:
        return service_account_user(self.namespace, self.service_account)

    @property
    def container(self) -> dict[str, Any]:
        containers: list[dict[str, Any]] = self.deployment["spec"]["template"]["spec"]["containers"]
        return containers[0]

    @property
    def replicas(self) -> int:
        return int(self.deployment["spec"].get("replicas", 1))


@dataclasses.dataclass
class Recording:
    accesses: dict[Access, int]
    dropped: int
    components: dict[str, Component]
    objects: list[dict[str, Any]]
    health: dict[str, int]  # process → HTTP status of its probe path
    rss: dict[str, tuple[int, int]]  # process → (peak RSS seen, memory limit), bytes
    failures: list[str]  # 500s inside the emulator
    outcomes: dict[str, str]  # job → final phase (or "deleted")


def _entrypoint() -> list[str]:
    """The Dockerfile's exec-form ENTRYPOINT (what runs before the container's args)."""
    text = (ROOT / "Dockerfile").read_text()
    entrypoints = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", text, re.MULTILINE)
    assert entrypoints, "the Dockerfile has no exec-form ENTRYPOINT"
    entry: list[str] = json.loads(entrypoints[-1])
    return entry


def _command(argv: list[str]) -> list[str]:
    """The console script `anklet` as this interpreter runs it."""
    assert argv and argv[0] == "anklet", f"unexpected entrypoint {argv}"
    return [sys.executable, "-m", "anklet.cli", *argv[1:]]


def _memory_limit(container: dict[str, Any]) -> int:
    raw = str(container["resources"]["limits"]["memory"])
    units = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30}
    for suffix, factor in units.items():
        if raw.endswith(suffix):
            return int(raw[: -len(suffix)]) * factor
    return int(raw)


def _probe_path(container: dict[str, Any]) -> str:
    path: str = container["livenessProbe"]["httpGet"]["path"]
    return path


class Flow:
    """The processes, the fake GitHub and the API, and the steps a cluster's life takes."""

    def __init__(self, tmp: Path, redis: RedisServer, objects: list[dict[str, Any]]) -> None:
        self.tmp, self.redis, self.objects = tmp, redis, objects
        self.api = KubeApiServer(record=True)
        self.github: FakeGitHub | None = None
        self.http: httpx.AsyncClient | None = None
        self.processes: dict[str, asyncio.subprocess.Process] = {}
        self.logs: dict[str, Path] = {}
        self.health_urls: dict[str, str] = {}
        self.rss: dict[str, tuple[int, int]] = {}
        # The Secrets the README tells an operator to create (values made up for the test).
        self.secrets = {
            "anklet-redis": {"url": redis.url},
            "anklet-github": {
                "webhook-secret": secrets.token_hex(20),
                "token": f"ghp_test_{secrets.token_hex(16)}",
            },
        }
        self.components = {
            c.name: c for c in (self._component(d) for d in objects if d["kind"] == "Deployment")
        }

    @staticmethod
    def _component(deployment: dict[str, Any]) -> Component:
        spec = deployment["spec"]["template"]["spec"]
        return Component(
            name=spec["containers"][0]["name"],
            namespace=deployment["metadata"]["namespace"],
            service_account=spec["serviceAccountName"],
            deployment=deployment,
        )

    # ----- the cluster ---------------------------------------------------------------------------
    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[Flow]:
        async with self.api:
            admin = self.api.recorder.token_for(ADMIN)
            headers = {"Authorization": f"Bearer {admin}"}
            async with httpx.AsyncClient(base_url=self.api.url, headers=headers, timeout=30) as http:
                self.http = http
                self.github = FakeGitHub(webhook_secret="", tokens=[self.secrets["anklet-github"]["token"]])
                await self.github.__aenter__()
                try:
                    await self._apply_cluster_objects()
                    yield self
                except BaseException:
                    self._print_log_tails()  # pytest shows them with the failure
                    raise
                finally:
                    await self._stop_processes()
                    await self.github.__aexit__(None, None, None)

    def _print_log_tails(self) -> None:
        for name, log in self.logs.items():
            lines = log.read_text(errors="replace").splitlines()[-15:]
            print(f"----- {name} (last {len(lines)} lines of {log})", *lines, sep="\n")

    async def _apply_cluster_objects(self) -> None:
        """What `kubectl apply -k` creates first: the Namespace(s) and the CRDs, from the manifests."""
        assert self.http is not None
        for obj in self.objects:
            if obj["kind"] == "Namespace":
                await self._create("/api/v1/namespaces", obj)
            elif obj["kind"] == "CustomResourceDefinition":
                await self._create("/apis/apiextensions.k8s.io/v1/customresourcedefinitions", obj)
        namespace = {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": USER_NAMESPACE}}
        await self._create("/api/v1/namespaces", namespace)

    async def _create(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        assert self.http is not None
        response = await self.http.post(path, json=body)
        assert response.status_code == 201, response.text
        created: dict[str, Any] = response.json()
        return created

    def _config_maps(self) -> dict[str, dict[str, str]]:
        """The overlay's generated ConfigMaps plus what an operator writes into anklet.env."""
        assert self.github is not None
        additions = {
            "ANKLET_GITHUB_API_URL": self.github.url,
            "ANKLET_GITHUB_OWNER": OWNER,
            "ANKLET_GITHUB_REPO": REPO,
            "ANKLET_GITHUB_HOOK_ID": str(HOOK_ID),
            "ANKLET_GITHUB_HANDLER_RUNNER_RELEASE_URL": f"{self.github.url}/_sim/releases/latest",
            "ANKLET_GITHUB_REDELIVERY_INTERVAL_SECONDS": "5",  # faster, to see the scan's calls
            "ANKLET_RESYNC_SECONDS": "5",
        }
        maps = {}
        for obj in self.objects:
            if obj["kind"] == "ConfigMap":
                maps[obj["metadata"]["name"]] = {**obj.get("data", {}), **additions}
        return maps

    # ----- processes -----------------------------------------------------------------------------
    def _pod_command(self, component: Component, index: int) -> tuple[list[str], dict[str, str]]:
        """argv and env of one replica, as the kubelet builds them, then pointed at this machine."""
        pod = PodContext(
            name=f"{component.deployment['metadata']['name']}-{index}",
            namespace=component.namespace,
            service_account=component.service_account,
            secrets=self.secrets,
            config_maps=self._config_maps(),
        )
        env = container_env(component.container, pod)
        argv = [*_entrypoint(), *container_argv(component.container, env)]
        kubeconfig = self.tmp / f"{component.name}.kubeconfig"
        if not kubeconfig.exists():
            self.api.write_kubeconfig(kubeconfig, namespace=component.namespace, user=component.user)
        # Differences from a pod, and only these: no in-cluster token (a kubeconfig with the
        # ServiceAccount's identity instead) and loopback addresses on free ports (several
        # replicas share this machine's ports: probes, metrics, the receiver's listener).
        port = free_port()
        health = f"http://127.0.0.1:{port}{_probe_path(component.container)}"
        if component.name == "controller":
            env["ANKLET_KUBECONFIG"] = str(kubeconfig)
            env["ANKLET_METRICS_HOST"], env["ANKLET_METRICS_PORT"] = "127.0.0.1", str(free_port())
            argv = [re.sub(r"^http://0\.0\.0\.0:\d+", f"http://127.0.0.1:{port}", a) for a in argv]
            assert any(health == a for a in argv), f"no liveness endpoint on {health} in {argv}"
        else:
            env.update(
                ANKLET_RECEIVER_KUBECONFIG=str(kubeconfig),
                ANKLET_RECEIVER_HOST="127.0.0.1",
                ANKLET_RECEIVER_PORT=str(port),
            )
        self.health_urls[f"{component.name}-{index}"] = health
        base = {"PATH": os.environ.get("PATH", ""), "HOME": str(self.tmp), "PYTHONUNBUFFERED": "1"}
        return _command(argv), {**base, **env}

    async def start_component(self, name: str, replicas: int | None = None) -> None:
        component = self.components[name]
        for index in range(replicas or component.replicas):
            argv, env = self._pod_command(component, index)
            await self._spawn(f"{name}-{index}", argv, env)

    async def start_mac(self, name: str = "mac-1") -> None:
        """One simulated Mac: the real agent driving the simulated `anka` (as in `anklet dev`)."""
        from anklet.dev.anka_sim import install_shim

        home = self.tmp / "hosts" / name
        (home / "anka").mkdir(parents=True, exist_ok=True)
        bin_dir = self.tmp / "bin"
        bin_dir.mkdir(exist_ok=True)
        install_shim(bin_dir)
        env = {
            "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
            "HOME": str(self.tmp),
            "PYTHONUNBUFFERED": "1",
            "ANKLET_REDIS_URL": self.redis.url,
            "ANKA_SIM_HOME": str(home / "anka"),
            "ANKA_SIM_TIME_SCALE": "0.02",
            "ANKLET_AGENT_NAME": name,
            "ANKLET_AGENT_CPU": "8",
            "ANKLET_AGENT_MEMORY_MIB": "16384",
            "ANKLET_AGENT_READY_POLL_SECONDS": "0.05",
            "ANKLET_AGENT_SHUTDOWN_GRACE_SECONDS": "2",
            "ANKLET_AGENT_TEMPLATE_DISK_BUFFER_BYTES": str(20 * 2**30),
        }
        argv = [sys.executable, "-m", "anklet.cli", "agent", "--state-dir", str(home), "--arch", "arm64"]
        await self._spawn(name, argv, env)

    async def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> None:
        log = self.logs[name] = self.tmp / f"{name}.log"
        with log.open("ab") as out:
            self.processes[name] = await asyncio.create_subprocess_exec(
                *argv, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
            )

    def check_processes(self) -> None:
        for name, process in self.processes.items():
            if process.returncode is not None:
                tail = self.logs[name].read_text(errors="replace")[-3000:]
                raise AssertionError(f"{name} exited with {process.returncode}:\n{tail}")

    def sample_memory(self) -> None:
        for name, process in self.processes.items():
            component = self.components.get(name.rsplit("-", 1)[0])
            if component is None or process.returncode is not None:
                continue
            with contextlib.suppress(psutil.Error):
                rss = psutil.Process(process.pid).memory_info().rss
                peak = max(rss, self.rss.get(name, (0, 0))[0])
                self.rss[name] = (peak, _memory_limit(component.container))

    async def _stop_processes(self) -> None:
        for process in self.processes.values():
            if process.returncode is None:
                process.send_signal(signal.SIGTERM)
        for process in self.processes.values():
            try:
                await asyncio.wait_for(process.wait(), 20)
            except TimeoutError:
                process.kill()
                await process.wait()

    async def health(self) -> dict[str, int]:
        async with httpx.AsyncClient(timeout=5) as client:
            return {name: (await client.get(url)).status_code for name, url in self.health_urls.items()}

    # ----- what people and GitHub do --------------------------------------------------------------
    def jobs_path(self, namespace: str, name: str = "") -> str:
        path = f"/apis/{GROUP}/{VERSION}/namespaces/{namespace}/{models.PLURAL}"
        return f"{path}/{name}" if name else path

    async def submit(self, name: str, run: str, **spec: Any) -> None:
        body = {
            "apiVersion": models.API_VERSION,
            "kind": models.KIND,
            "metadata": {"name": name},
            "spec": {
                "template": TEMPLATE,
                "tag": "2c4r",
                "handler": "script",
                "script": {"run": run},
                **spec,
            },
        }
        await self._create(self.jobs_path(USER_NAMESPACE), body)

    async def job(self, namespace: str, name: str) -> dict[str, Any] | None:
        assert self.http is not None
        response = await self.http.get(self.jobs_path(namespace, name))
        if response.status_code == 404:
            return None
        assert response.status_code == 200, response.text
        body: dict[str, Any] = response.json()
        return body

    async def phase(self, namespace: str, name: str, *phases: str, timeout: float = 60) -> dict[str, Any]:
        async def probe() -> dict[str, Any] | None:
            self.check_processes()
            self.sample_memory()
            job = await self.job(namespace, name)
            return job if job and (job.get("status") or {}).get("phase") in phases else None

        return await eventually(probe, timeout)

    async def gone(self, namespace: str, name: str, timeout: float = 60) -> bool:
        async def probe() -> bool:
            self.check_processes()
            return await self.job(namespace, name) is None

        return await eventually(probe, timeout)

    async def merge_patch(self, path: str, patch: dict[str, Any]) -> None:
        assert self.http is not None
        response = await self.http.patch(
            path, json=patch, headers={"Content-Type": "application/merge-patch+json"}
        )
        assert response.status_code == 200, response.text

    async def host(self, name: str) -> dict[str, Any] | None:
        assert self.http is not None
        response = await self.http.get(f"/apis/{GROUP}/{VERSION}/{models.HOST_PLURAL}/{name}")
        if response.status_code != 200:
            return None
        body: dict[str, Any] = response.json()
        return body if (body.get("status") or {}).get("ready") else None

    async def github_job(self, labels: list[str]) -> dict[str, Any]:
        assert self.github is not None and self.http is not None
        body = {"owner": OWNER, "repo": REPO, "labels": labels, "run_seconds": 1}
        response = await self.http.post(f"{self.github.url}/_sim/workflow_jobs", json=body)
        assert response.status_code in (200, 201), response.text
        created: dict[str, Any] = response.json()
        return created


async def run_flow(tmp: Path, redis: RedisServer, objects: list[dict[str, Any]]) -> Recording:
    flow = Flow(tmp, redis, objects)
    outcomes: dict[str, str] = {}
    async with flow.running():
        assert flow.github is not None
        receiver_secret = flow.secrets["anklet-github"]["webhook-secret"]
        await flow.start_component("controller")  # both replicas: one leads, one stands by
        await flow.start_component("receiver", replicas=1)  # replicas do the same calls; spare the CPU
        webhook_url = flow.health_urls["receiver-0"].replace("/healthz", "/webhooks/github")
        flow.github.set_webhook(webhook_url, receiver_secret)
        await flow.start_mac()

        # The Mac registers: the leader creates its AnkaHost and mirrors its status.
        await eventually(lambda: flow.host("mac-1"), 90)
        ns = USER_NAMESPACE
        # The Mac has two VM slots: two short jobs first, then two that run until stopped.
        await flow.submit("hello", "echo hello", ttlSecondsAfterFinished=3)
        await flow.submit("fails", "exit 3")
        hello, fails = await asyncio.gather(
            flow.phase(ns, "hello", "Succeeded", "Failed"), flow.phase(ns, "fails", "Failed", "Succeeded")
        )
        outcomes["fails"] = fails["status"]["phase"]
        await flow.gone(ns, "hello", timeout=90)  # ttlSecondsAfterFinished: the controller deletes it
        outcomes["hello"] = f"{hello['status']['phase']}, then deleted"
        await flow.submit("cancel-me", "sleep 60")
        await flow.submit("delete-me", "sleep 60")
        await flow.phase(ns, "cancel-me", "Running")
        await flow.merge_patch(flow.jobs_path(ns, "cancel-me"), {"spec": {"cancel": True}})
        outcomes["cancel-me"] = (await flow.phase(ns, "cancel-me", "Cancelled", "Failed"))["status"]["phase"]
        await flow.phase(ns, "delete-me", "Running")
        assert flow.http is not None
        response = await flow.http.delete(flow.jobs_path(ns, "delete-me"))
        assert response.status_code in (200, 202), response.text
        await flow.gone(ns, "delete-me")  # once the Mac confirms its VM is gone (finalizer)
        outcomes["delete-me"] = "deleted"

        # GitHub: the webhook reaches the receiver, which creates the AnkaJob in its namespace.
        gh = await flow.github_job(["self-hosted", f"anka-template:{TEMPLATE}", "anka-template-tag:2c4r"])
        gh_name = ankajob_name(int(gh["id"]), int(gh.get("run_attempt", 1)))
        receiver_ns = flow.components["receiver"].namespace
        done = await flow.phase(receiver_ns, gh_name, "Succeeded", "Failed", timeout=120)
        outcomes[gh_name] = done["status"]["phase"]

        # An operator cordons the Mac and lifts it again (the controller follows AnkaHost specs).
        host_path = f"/apis/{GROUP}/{VERSION}/{models.HOST_PLURAL}/mac-1"
        await flow.merge_patch(host_path, {"spec": {"unschedulable": True}})
        await flow.merge_patch(host_path, {"spec": {"unschedulable": False}})
        flow.sample_memory()
        health = await flow.health()
        flow.check_processes()
    # Read after the processes stopped: what a shutdown does (releasing the Lease) counts too.
    recorder = flow.api.recorder
    return Recording(
        accesses=recorder.accesses(),
        dropped=recorder.dropped,
        components=flow.components,
        objects=objects,
        health=health,
        rss=dict(flow.rss),
        failures=list(flow.api.failures),
        outcomes=outcomes,
    )


@pytest.fixture(scope="module")
def recording(redis_server: RedisServer, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Recording]:
    objects = kustomize.render(OVERLAY)
    yield asyncio.run(run_flow(tmp_path_factory.mktemp("rbac"), redis_server, objects))


def _describe(accesses: Iterator[Access] | list[Access]) -> str:
    return "\n".join(
        f"  {a.verb} {a.api_group or 'core'}/{a.resource}{'/' + a.subresource if a.subresource else ''}"
        f" ns={a.namespace or '-'} name={a.name or '-'}{a.path}"
        for a in accesses
    )


def _item_key(component: str, item: Rule) -> tuple[str, str, str, str]:
    group = item.api_groups[0] if item.api_groups else ""
    resource = item.resources[0] if item.resources else (item.non_resource_urls or ("",))[0]
    return component, group, resource, item.verbs[0]


def test_the_flow_did_what_a_cluster_sees(recording: Recording) -> None:
    assert recording.failures == []
    assert recording.dropped == 0
    gh = [name for name in recording.outcomes if name.startswith("gh-")]
    assert recording.outcomes == {
        "fails": "Failed",
        "cancel-me": "Cancelled",
        "delete-me": "deleted",
        "hello": "Succeeded, then deleted",
        gh[0]: "Succeeded",
    }


def test_only_known_identities_called_the_api(recording: Recording) -> None:
    users = {a.user for a in recording.accesses}
    expected = {c.user for c in recording.components.values()} | {ADMIN}
    assert users == expected, f"unexpected callers: {users - expected}; silent: {expected - users}"


@pytest.mark.parametrize("component", ["controller", "receiver"])
def test_every_call_is_granted(recording: Recording, component: str) -> None:
    authorizer = Authorizer(recording.objects)
    user = recording.components[component].user
    denied = sorted(a for a in recording.accesses if a.user == user and not authorizer.allows(a))
    assert not denied, f"{component} would get 403 Forbidden for:\n{_describe(denied)}"


@pytest.mark.parametrize("component", ["controller", "receiver"])
def test_every_grant_is_used(recording: Recording, component: str) -> None:
    authorizer = Authorizer(recording.objects)
    user = recording.components[component].user
    unused = authorizer.unused(user, recording.accesses)
    unexplained = [
        f"  {grant.source}: {_item_key(component, item)}"
        for grant, item in unused
        if _item_key(component, item) not in ALLOWED_UNUSED
    ]
    assert not unexplained, f"{component} is granted more than it uses:\n" + "\n".join(unexplained)


def test_the_allow_list_is_current(recording: Recording) -> None:
    """Each allow-listed verb is still granted and still unused (else the entry must go)."""
    unused: set[tuple[str, str, str, str]] = set()
    for name, component in recording.components.items():
        authorizer = Authorizer(recording.objects)
        pairs: list[tuple[Grant, Rule]] = authorizer.unused(component.user, recording.accesses)
        unused |= {_item_key(name, item) for _, item in pairs}
    stale = sorted(set(ALLOWED_UNUSED) - unused)
    assert not stale, f"allow-listed but used (or no longer granted): {stale}"


def test_every_replica_answers_its_probe(recording: Recording) -> None:
    assert recording.health and set(recording.health.values()) == {200}, recording.health
    assert {name.rsplit("-", 1)[0] for name in recording.health} == {"controller", "receiver"}


def test_processes_stay_inside_their_memory_limits(recording: Recording) -> None:
    assert recording.rss
    heavy = {name: (peak, limit) for name, (peak, limit) in recording.rss.items() if peak > limit * 0.75}
    assert not heavy, f"peak RSS above 75% of the limit (bytes): {heavy}"
