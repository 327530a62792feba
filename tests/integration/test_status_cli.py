"""The people-facing commands' API layer against the emulated API server over real HTTP: watches
that resume and re-list, `anklet jobs --watch`, `anklet explain` with Events, and drain progress.

The server runs on its own loop in a thread because the commands use a blocking client; each
test makes its changes from the test thread while the command runs in another.
"""

from __future__ import annotations

import asyncio
import io
import json
import pathlib
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from anklet import crd, hosts_cli, kubeapi, models, status_cli
from anklet.dev.kube_emulator import KubeApiServer

pytestmark = pytest.mark.timeout(60)

JOBS = kubeapi.jobs_path("default")
MERGE = {"Content-Type": "application/merge-patch+json"}
HISTORY = 20


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    server = KubeApiServer(history_size=HISTORY)
    for definition in crd.all_crds():
        server.install_crd(definition)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kube-api", daemon=True)
    thread.start()
    asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(timeout=30)
    try:
        yield server
    finally:
        asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result(timeout=30)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


@pytest.fixture
def kubeconfig(server: KubeApiServer, tmp_path: pathlib.Path) -> str:
    path = tmp_path / "kubeconfig"
    server.write_kubeconfig(path, namespace="default")
    return str(path)


@pytest.fixture
def http(kubeconfig: str) -> Iterator[httpx.Client]:
    with kubeapi.client(kubeconfig) as client:
        yield client


def create_job(http: httpx.Client, name: str, **status: Any) -> dict[str, Any]:
    body = {
        "apiVersion": models.API_VERSION,
        "kind": models.KIND,
        "metadata": {"name": name},
        "spec": {"template": "macos-14", "tag": "2c4r", "handler": "script", "script": {"run": "true"}},
    }
    created = kubeapi.request(http, "POST", JOBS, "create", json=body)
    if status:
        created = set_status(http, name, status)
    return created


def set_status(http: httpx.Client, name: str, status: dict[str, Any]) -> dict[str, Any]:
    return kubeapi.request(
        http, "PATCH", f"{JOBS}/{name}/status", "status", json={"status": status}, headers=MERGE
    )


def poll(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


class Background:
    """Runs a command in a thread and keeps its result (or exception) for the test to check."""

    def __init__(self, fn: Callable[[], int]) -> None:
        self.result: int | BaseException | None = None

        def run() -> None:
            try:
                self.result = fn()
            except BaseException as exc:
                self.result = exc

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def join(self, timeout: float = 30) -> int | BaseException | None:
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "the command did not end in time"
        return self.result


def test_kubeconfig_comes_from_the_flag_then_the_environment() -> None:
    assert kubeapi.kubeconfig_path("a", {"KUBECONFIG": "b"}) == "a"
    assert kubeapi.kubeconfig_path(None, {"KUBECONFIG": "b"}) == "b"
    assert kubeapi.kubeconfig_path(None, {}) is None


def test_no_cluster_configuration_is_a_clear_error(tmp_path: pathlib.Path) -> None:
    with pytest.raises(kubeapi.ApiError, match="no usable Kubernetes configuration"):
        kubeapi.client(str(tmp_path / "missing"))


def test_the_default_namespace_is_the_contexts(server: KubeApiServer, tmp_path: pathlib.Path) -> None:
    path = tmp_path / "ci-kubeconfig"
    server.write_kubeconfig(path, namespace="ci")
    assert kubeapi.default_namespace(str(path), {}) == "ci"
    assert kubeapi.default_namespace(None, {"KUBECONFIG": str(path)}) == "ci"
    assert kubeapi.default_namespace(str(tmp_path / "missing"), {}) == "default"


def test_follow_reports_changes_after_the_listing_and_ends_at_its_deadline(http: httpx.Client) -> None:
    create_job(http, "before")
    _, rv = kubeapi.list_objects(http, JOBS, "list")
    create_job(http, "after")
    set_status(http, "after", {"phase": "Running"})
    kubeapi.request(http, "DELETE", f"{JOBS}/before", "delete")
    started = time.monotonic()
    changes = list(kubeapi.follow(http, JOBS, "watch", resource_version=rv, deadline=started + 2))
    assert [(c.type, c.object["metadata"]["name"]) for c in changes] == [
        ("ADDED", "after"),
        ("MODIFIED", "after"),
        ("DELETED", "before"),
    ]
    assert 1.5 < time.monotonic() - started < 10


def test_follow_resumes_from_its_resource_version_when_a_window_ends(
    http: httpx.Client, server: KubeApiServer, kubeconfig: str
) -> None:
    _, rv = kubeapi.list_objects(http, JOBS, "list")
    seen: list[str] = []

    def watch() -> int:
        deadline = time.monotonic() + 5
        for change in kubeapi.follow(http, JOBS, "watch", resource_version=rv, deadline=deadline, window=1):
            seen.append(f"{change.type} {change.object['metadata']['name']}")
        return 0

    with kubeapi.client(kubeconfig) as other:
        watcher = Background(watch)
        poll(lambda: server.active_watches(f"{models.API_VERSION}/{models.PLURAL}") >= 1)
        time.sleep(1.5)  # past the first one-second window: the next change arrives on a resumed watch
        create_job(other, "late")
        assert watcher.join() == 0
    assert seen == ["ADDED late"], "exactly once: resumed from the last resourceVersion, not replayed"


def test_follow_relists_when_its_resource_version_is_too_old(http: httpx.Client) -> None:
    create_job(http, "kept")
    _, rv = kubeapi.list_objects(http, JOBS, "list")
    for i in range(HISTORY + 5):  # push the listing's resourceVersion out of the server's history
        set_status(http, "kept", {"attempts": i + 1})
    changes = kubeapi.follow(http, JOBS, "watch", resource_version=rv, deadline=time.monotonic() + 2)
    first = next(changes)
    assert first.type == "RELISTED"
    assert [item["status"]["attempts"] for item in first.items] == [HISTORY + 5]
    assert list(changes) == []


def test_jobs_watch_prints_the_jobs_then_a_line_per_change(
    http: httpx.Client, server: KubeApiServer, kubeconfig: str
) -> None:
    create_job(http, "seeded", phase="Pending")
    out = io.StringIO()
    watcher = Background(
        lambda: status_cli.run_watch(
            http,
            namespace="default",
            phase=None,
            output="table",
            out=out,
            color=False,
            deadline=time.monotonic() + 4,
        )
    )
    with kubeapi.client(kubeconfig) as other:
        poll(lambda: server.active_watches(f"{models.API_VERSION}/{models.PLURAL}") >= 1)
        set_status(other, "seeded", {"phase": "Pending", "observedGeneration": 1})  # invisible
        set_status(
            other, "seeded", {"phase": "Scheduled", "host": "mac-1", "attempts": 1, "reason": "Scheduled"}
        )
        assert watcher.join() == 0
    lines = out.getvalue().splitlines()
    assert lines[0].split() == [
        "NAMESPACE",
        "NAME",
        "PHASE",
        "HOST",
        "TEMPLATE:TAG",
        "ATTEMPTS",
        "AGE",
        "REASON",
    ]
    assert lines[1].split()[:6] == ["default", "seeded", "Pending", "-", "macos-14:2c4r", "0"]
    assert lines[2].split()[:6] == ["default", "seeded", "Scheduled", "mac-1", "macos-14:2c4r", "1"]
    assert len(lines) == 3, "the no-op status write printed nothing"
    assert lines[2].index("Scheduled") == lines[0].index("PHASE"), "aligned under the header"


def test_jobs_watch_as_json_lines(http: httpx.Client, server: KubeApiServer, kubeconfig: str) -> None:
    create_job(http, "one")
    out = io.StringIO()
    watcher = Background(
        lambda: status_cli.run_watch(
            http,
            namespace=None,
            phase=None,
            output="json",
            out=out,
            color=False,
            deadline=time.monotonic() + 3,
        )
    )
    with kubeapi.client(kubeconfig) as other:
        poll(lambda: server.active_watches(f"{models.API_VERSION}/{models.PLURAL}") >= 1)
        kubeapi.request(other, "DELETE", f"{JOBS}/one", "delete")
        assert watcher.join() == 0
    events = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [(e["type"], e["job"]["name"]) for e in events] == [("ADDED", "one"), ("DELETED", "one")]


def test_explain_reads_the_job_and_its_events(http: httpx.Client) -> None:
    job = create_job(http, "stuck")
    created = job["metadata"]["creationTimestamp"]
    message = "0/2 hosts available: 2 labels do not match hostSelector"
    condition = {
        "type": "Scheduled",
        "status": "False",
        "reason": "Unschedulable",
        "message": message,
        "lastTransitionTime": created,
    }
    set_status(http, "stuck", {"phase": "Pending", "reason": "Unschedulable", "conditions": [condition]})
    involved = {"kind": "AnkaJob", "name": "stuck", "namespace": "default", "uid": job["metadata"]["uid"]}
    for name, obj in (("stuck", involved), ("other", {**involved, "name": "other", "uid": "x"})):
        kubeapi.request(
            http,
            "POST",
            kubeapi.events_path("default"),
            "event",
            json={
                "metadata": {"generateName": f"{name}."},
                "involvedObject": obj,
                "reason": "Unschedulable",
                "message": message,
                "type": "Warning",
                "firstTimestamp": created,
                "lastTimestamp": created,
                "count": 1,
            },
        )
    out = io.StringIO()
    now = datetime.now(UTC)
    status_cli.run_explain(
        http, namespace="default", name="stuck", output="json", out=out, color=False, now=now
    )
    record = json.loads(out.getvalue())
    assert record["diagnosis"]["hints"] == ["relax spec.hostSelector, or label a host (AnkaHost spec.labels)"]
    assert [(e["reason"], e["source"]) for e in record["timeline"]] == [
        ("Created", "status"),
        ("Unschedulable", "-"),
    ], "only this job's Event, which stands in for the condition's entry"
    with pytest.raises(kubeapi.ApiError, match="ankajob default/nope: not found"):
        status_cli.run_explain(
            http, namespace="default", name="nope", output="table", out=out, color=False, now=now
        )


# ----- drain --------------------------------------------------------------------------------


def create_host(http: httpx.Client, name: str, *, vms: int, jobs: list[str]) -> None:
    body = {
        "apiVersion": models.API_VERSION,
        "kind": models.HOST_KIND,
        "metadata": {"name": name},
        "spec": {},
    }
    kubeapi.request(http, "POST", kubeapi.HOSTS_PATH, "create host", json=body)
    set_host_status(http, name, vms=vms, jobs=jobs)


def set_host_status(http: httpx.Client, name: str, *, vms: int, jobs: list[str]) -> None:
    status = {
        "ready": True,
        "capacity": {"vmSlots": 2, "cpu": 8, "memoryMiB": 16384},
        "allocated": {"vmSlots": vms, "cpu": 2 * vms, "memoryMiB": 4096 * vms},
        "jobs": jobs,
    }
    kubeapi.request(
        http,
        "PATCH",
        f"{kubeapi.HOSTS_PATH}/{name}/status",
        "host status",
        json={"status": status},
        headers=MERGE,
    )


@pytest.mark.parametrize("tty", [True, False])
def test_drain_shows_the_jobs_left_until_the_host_is_empty(
    http: httpx.Client, server: KubeApiServer, kubeconfig: str, tty: bool
) -> None:
    create_host(http, "mac-1", vms=2, jobs=["ci/a", "ci/b"])
    out = Terminal() if tty else io.StringIO()
    drainer = Background(lambda: hosts_cli.drain(http, "mac-1", timeout=20, out=out))
    with kubeapi.client(kubeconfig) as other:
        poll(lambda: server.active_watches(f"{models.API_VERSION}/{models.HOST_PLURAL}") >= 1)
        set_host_status(other, "mac-1", vms=1, jobs=["ci/b"])
        set_host_status(other, "mac-1", vms=1, jobs=["ci/b"])  # no change: no line
        set_host_status(other, "mac-1", vms=0, jobs=[])
        assert drainer.join() == 0
    host = server.get_object(f"{models.API_VERSION}/{models.HOST_PLURAL}", None, "mac-1")
    assert host is not None and host["spec"]["unschedulable"] is True
    progress = [
        "ankahost/mac-1: 2 jobs left (2 VMs): ci/a, ci/b",
        "ankahost/mac-1: 1 job left (1 VM): ci/b",
    ]
    if tty:
        expected = "ankahost/mac-1 cordoned\n" + "".join("\r\x1b[K" + p for p in progress) + "\n"
    else:
        expected = "ankahost/mac-1 cordoned\n" + "".join(p + "\n" for p in progress)
    assert out.getvalue() == expected + "ankahost/mac-1 drained\n"


def test_drain_gives_up_at_its_timeout(http: httpx.Client) -> None:
    create_host(http, "mac-2", vms=1, jobs=["ci/a"])
    out = io.StringIO()
    started = time.monotonic()
    assert hosts_cli.drain(http, "mac-2", timeout=1.5, out=out) == 1
    assert time.monotonic() - started < 10
    assert out.getvalue().splitlines()[-1] == "ankahost/mac-2: still 1 VM(s) after 2 s"


def test_hosts_list_has_kubectls_columns_plus_templates(http: httpx.Client) -> None:
    create_host(http, "mac-3", vms=1, jobs=["ci/a"])
    out = io.StringIO()
    assert hosts_cli.list_hosts(http, out) == 0
    header, row = out.getvalue().splitlines()
    assert header.split() == ["NAME", "READY", "VMS", "CPU", "MEMORY", "TEMPLATES", "AGE"]
    assert row.split()[:2] == ["mac-3", "true"] and "\x1b[" not in row
    out = io.StringIO()
    hosts_cli.list_hosts(http, out, output="json")
    assert json.loads(out.getvalue())["items"][0]["jobs"] == ["ci/a"]


def test_ctrl_c_stops_following_a_drain_and_leaves_the_host_cordoned(
    http: httpx.Client, server: KubeApiServer, kubeconfig: str
) -> None:
    create_host(http, "mac-4", vms=1, jobs=["ci/a"])
    drain = subprocess.Popen(
        [sys.executable, "-m", "anklet.cli", "hosts", "drain", "mac-4", "--kubeconfig", kubeconfig],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        poll(lambda: server.active_watches(f"{models.API_VERSION}/{models.HOST_PLURAL}") >= 1, timeout=30)
        drain.send_signal(signal.SIGINT)
        stdout, stderr = drain.communicate(timeout=30)
    finally:
        if drain.poll() is None:
            drain.kill()
            drain.wait(timeout=10)
    assert drain.returncode == 1 and "Traceback" not in stderr
    assert stdout.splitlines() == [
        "ankahost/mac-4 cordoned",
        "ankahost/mac-4: 1 job left (1 VM): ci/a",
        "ankahost/mac-4: stopped following with 1 VM(s) left; it stays cordoned",
    ]
