"""The real kubectl (1.32) against the emulated API server: what a developer types must work.

The server runs on its own loop in a thread (`serve_in_thread`) so that kubectl can be driven with
plain blocking subprocess calls; long-running kubectl commands (`-w`, `wait`, `delete` waiting for
finalizers) are started with Popen, observed with bounded waits, and always killed at the end.
"""

from __future__ import annotations

import os
import pathlib
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import yaml

from anklet.dev.kube_emulator import KubeApiServer, serve_in_thread

ROOT = pathlib.Path(__file__).parents[2]
CRD = yaml.safe_load((ROOT / "crds" / "ankajob.yaml").read_text())
JOBS = "anklet.dev/v1alpha1/ankajobs"

pytestmark = [
    pytest.mark.kubectl,
    pytest.mark.timeout(60),
    pytest.mark.skipif(shutil.which("kubectl") is None, reason="needs the kubectl binary on PATH"),
]


class Kubectl:
    """kubectl bound to one server's kubeconfig, with its discovery cache in a temp dir."""

    def __init__(self, tmp_path: pathlib.Path, server: KubeApiServer) -> None:
        self.kubeconfig = tmp_path / "kubeconfig"
        server.write_kubeconfig(self.kubeconfig)
        self.env = {**os.environ, "KUBECONFIG": str(self.kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache")}
        self.tmp_path = tmp_path
        self.processes: list[subprocess.Popen[str]] = []

    def __call__(
        self, *args: str, stdin: str | None = None, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            ["kubectl", *args],
            input=stdin,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=20,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {result.stderr}")
        return result

    def apply(self, obj: dict[str, Any], *args: str) -> subprocess.CompletedProcess[str]:
        return self("apply", "-f", "-", *args, stdin=yaml.safe_dump(obj))

    def start(self, *args: str) -> tuple[subprocess.Popen[str], queue.Queue[str]]:
        """A long-running kubectl whose stdout lines arrive in a queue (killed by the fixture)."""
        process = subprocess.Popen(
            ["kubectl", *args], env=self.env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
        )
        self.processes.append(process)
        lines: queue.Queue[str] = queue.Queue()
        assert process.stdout is not None
        stdout = process.stdout

        def pump() -> None:
            for line in stdout:
                lines.put(line)

        threading.Thread(target=pump, daemon=True).start()
        return process, lines


@pytest.fixture
def server() -> Iterator[KubeApiServer]:
    with serve_in_thread(crds=[CRD]) as server:
        yield server


@pytest.fixture
def kubectl(tmp_path: pathlib.Path, server: KubeApiServer) -> Iterator[Kubectl]:
    kubectl = Kubectl(tmp_path, server)
    try:
        yield kubectl
    finally:
        for process in kubectl.processes:
            process.kill()
            process.wait(timeout=10)


def job(name: str, **spec: Any) -> dict[str, Any]:
    return {
        "apiVersion": "anklet.dev/v1alpha1",
        "kind": "AnkaJob",
        "metadata": {"name": name, "labels": {"team": "ci"}},
        "spec": {"template": "macos-14", "handler": "script", "script": {"run": "true"}, **spec},
    }


def next_line(lines: queue.Queue[str], predicate: Callable[[str], bool], timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while (remaining := deadline - time.monotonic()) > 0:
        try:
            line = lines.get(timeout=remaining)
        except queue.Empty:
            break
        if predicate(line):
            return line
    raise AssertionError("kubectl printed no such line in time")


def poll(condition: Callable[[], Any], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.05)


def test_version_reports_a_server_without_skew(kubectl: Kubectl) -> None:
    result = kubectl("version")
    assert "Server Version: v1.32" in result.stdout
    assert "WARNING" not in result.stderr


def test_apply_creates_updates_and_applies_server_side(kubectl: Kubectl, server: KubeApiServer) -> None:
    assert "ankajob.anklet.dev/job1 created" in kubectl.apply(job("job1")).stdout
    created = server.get_object(JOBS, "default", "job1")
    assert created is not None
    assert created["metadata"]["uid"] and created["metadata"]["generation"] == 1
    assert created["spec"]["backoffLimit"] == 2  # the schema's default, applied on create
    assert "unchanged" in kubectl.apply(job("job1")).stdout
    assert "configured" in kubectl.apply(job("job1", tag="v2")).stdout
    updated = server.get_object(JOBS, "default", "job1")
    assert updated is not None and updated["spec"]["tag"] == "v2" and updated["metadata"]["generation"] == 2

    assert "serverside-applied" in kubectl.apply(job("job2"), "--server-side").stdout
    assert "serverside-applied" in kubectl.apply(job("job2", tag="v3"), "--server-side").stdout
    applied = server.get_object(JOBS, "default", "job2")
    assert applied is not None and applied["spec"]["tag"] == "v3"


def test_create_of_an_invalid_object_is_refused(kubectl: Kubectl, server: KubeApiServer) -> None:
    bad = job("bad1", resources={"cpu": "lots", "memoryMiB": 1024})
    del bad["spec"]["template"]
    result = kubectl("create", "-f", "-", stdin=yaml.safe_dump(bad), check=False)
    assert result.returncode != 0
    assert 'The AnkaJob "bad1" is invalid' in result.stderr
    assert "* spec.template: Required value" in result.stderr
    assert "spec.resources.cpu in body must be of type integer" in result.stderr
    assert server.get_object(JOBS, "default", "bad1") is None


def test_unknown_fields_are_refused_by_default_and_pruned_on_request(
    kubectl: Kubectl, server: KubeApiServer
) -> None:
    sloppy = job("job1", bogus=1)
    refused = kubectl("apply", "-f", "-", stdin=yaml.safe_dump(sloppy), check=False)
    assert refused.returncode != 0
    assert 'strict decoding error: unknown field "spec.bogus"' in refused.stderr
    warned = kubectl("apply", "--validate=warn", "-f", "-", stdin=yaml.safe_dump(sloppy))
    assert 'Warning: unknown field "spec.bogus"' in warned.stderr
    stored = server.get_object(JOBS, "default", "job1")
    assert stored is not None and "bogus" not in stored["spec"]


def test_get_prints_the_crds_printer_columns(kubectl: Kubectl, server: KubeApiServer) -> None:
    kubectl.apply(job("job1"))
    other = job("job2")
    other["metadata"]["labels"] = {"team": "web"}
    kubectl.apply(other)
    status = '{"status": {"phase": "Running", "host": "mac1", "exitCode": 3, "reason": "Slow"}}'
    kubectl("patch", "aj", "job1", "--subresource=status", "--type=merge", "-p", status)

    plain = kubectl("get", "ankajobs").stdout.splitlines()
    assert plain[0].split() == ["NAME", "PHASE", "HOST", "TEMPLATE", "TAG", "AGE"]
    assert re.fullmatch(r"job1\s+Running\s+mac1\s+macos-14\s+\d+s", plain[1].strip())

    def ageless(lines: list[str]) -> list[str]:
        return [re.sub(r"\s\d+s$", " AGE", line) for line in lines]  # it may tick between two calls

    assert ageless(kubectl("get", "aj").stdout.splitlines()) == ageless(plain)
    wide = kubectl("get", "aj", "-o", "wide").stdout.splitlines()
    assert wide[0].split() == ["NAME", "PHASE", "HOST", "TEMPLATE", "TAG", "EXIT", "REASON", "AGE"]
    assert wide[1].split()[:6] == ["job1", "Running", "mac1", "macos-14", "3", "Slow"]
    every = kubectl("get", "aj", "-A").stdout.splitlines()
    assert every[0].split()[:2] == ["NAMESPACE", "NAME"] and every[1].split()[:2] == ["default", "job1"]
    labelled = kubectl("get", "aj", "-l", "team=web").stdout.splitlines()
    assert [line.split()[0] for line in labelled[1:]] == ["job2"]
    single = kubectl("get", "aj", "job1").stdout.splitlines()
    assert single[0].split()[0] == "NAME" and single[1].split()[:3] == ["job1", "Running", "mac1"]

    document = yaml.safe_load(kubectl("get", "aj", "job1", "-o", "yaml").stdout)
    assert document["kind"] == "AnkaJob" and document["status"]["phase"] == "Running"
    assert "Active" in kubectl("get", "namespaces").stdout


def test_status_subresource_patch_changes_only_status(kubectl: Kubectl, server: KubeApiServer) -> None:
    kubectl.apply(job("job1"))
    patch = '{"status": {"phase": "Running"}, "spec": {"template": "ignored"}}'
    kubectl("patch", "aj", "job1", "--subresource=status", "--type=merge", "-p", patch)
    kubectl("patch", "aj", "job1", "--type=merge", "-p", '{"status": {"phase": "Failed"}}')
    obj = server.get_object(JOBS, "default", "job1")
    assert obj is not None
    assert obj["status"]["phase"] == "Running" and obj["spec"]["template"] == "macos-14"
    assert obj["metadata"]["generation"] == 1


def test_watch_prints_a_line_per_change(kubectl: Kubectl) -> None:
    kubectl.apply(job("job1"))
    _, lines = kubectl.start("get", "aj", "-w", "--request-timeout=30s")
    next_line(lines, lambda line: line.startswith("NAME"))
    next_line(lines, lambda line: line.startswith("job1"))
    kubectl(
        "patch", "aj", "job1", "--subresource=status", "--type=merge", "-p", '{"status":{"phase":"Running"}}'
    )
    assert next_line(lines, lambda line: "Running" in line).split()[0] == "job1"
    kubectl.apply(job("job2"))
    next_line(lines, lambda line: line.startswith("job2"))


def test_describe_shows_the_objects_events_only(kubectl: Kubectl, server: KubeApiServer) -> None:
    kubectl.apply(job("job1"))
    kubectl.apply(job("job2"))
    for name, reason in (("job1", "Scheduled"), ("job2", "Elsewhere")):
        involved = server.get_object(JOBS, "default", name)
        assert involved is not None
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": "test-"},
            "involvedObject": {
                "apiVersion": involved["apiVersion"],
                "kind": "AnkaJob",
                "name": name,
                "namespace": "default",
                "uid": involved["metadata"]["uid"],  # kubectl describe selects on it
            },
            "reason": reason,
            "message": f"{name} went somewhere",
            "type": "Normal",
        }
        kubectl("create", "-f", "-", stdin=yaml.safe_dump(event))
    described = kubectl("describe", "aj", "job1").stdout
    assert "Name:         job1" in described
    events = described.split("Events:", 1)[1]
    assert "Scheduled" in events and "job1 went somewhere" in events
    assert "Elsewhere" not in events


def test_delete_waits_until_the_finalizer_is_removed(kubectl: Kubectl, server: KubeApiServer) -> None:
    held = job("job1")
    held["metadata"]["finalizers"] = ["anklet.dev/test"]
    kubectl.apply(held)
    deleting, lines = kubectl.start("delete", "aj", "job1", "--timeout=30s")
    poll(
        lambda: (
            (server.get_object(JOBS, "default", "job1") or {}).get("metadata", {}).get("deletionTimestamp")
        )
    )
    next_line(lines, lambda line: "deleted" in line)
    assert deleting.poll() is None  # still waiting for the finalizer
    kubectl("patch", "aj", "job1", "--type=json", "-p", '[{"op": "remove", "path": "/metadata/finalizers"}]')
    assert deleting.wait(timeout=15) == 0
    assert server.get_object(JOBS, "default", "job1") is None


def test_wait_for_a_status_phase(kubectl: Kubectl, server: KubeApiServer) -> None:
    kubectl.apply(job("job1"))
    condition = "--for=jsonpath={.status.phase}=Succeeded"
    waiting, lines = kubectl.start("wait", condition, "aj/job1", "--timeout=10s")
    poll(lambda: server.active_watches(JOBS))  # the change must arrive through its watch
    kubectl(
        "patch",
        "aj",
        "job1",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status":{"phase":"Succeeded"}}',
    )
    assert waiting.wait(timeout=15) == 0
    assert "condition met" in next_line(lines, lambda line: "condition met" in line)
    assert "condition met" in kubectl("wait", condition, "aj/job1", "--timeout=10s").stdout  # already true


def test_explain_reads_the_crd_schema(kubectl: Kubectl) -> None:
    explained = kubectl("explain", "ankajob.spec").stdout
    assert "KIND:       AnkaJob" in explained
    assert "Anka template UUID or name." in explained
    assert re.search(r"template\s+<string>\s+-required-", explained)


def test_replace_with_a_stale_resource_version_conflicts(kubectl: Kubectl, tmp_path: pathlib.Path) -> None:
    kubectl.apply(job("job1"))
    current = yaml.safe_load(kubectl("get", "aj", "job1", "-o", "yaml").stdout)
    kubectl.apply(job("job1", tag="v2"))  # moves the resourceVersion on
    current["spec"]["tag"] = "v3"
    (tmp_path / "stale.yaml").write_text(yaml.safe_dump(current))
    result = kubectl("replace", "-f", str(tmp_path / "stale.yaml"), check=False)
    assert result.returncode != 0
    assert "Conflict" in result.stderr and "the object has been modified" in result.stderr

    fresh = yaml.safe_load(kubectl("get", "aj", "job1", "-o", "yaml").stdout)
    fresh["spec"]["tag"] = "v3"
    (tmp_path / "fresh.yaml").write_text(yaml.safe_dump(fresh))
    assert "replaced" in kubectl("replace", "-f", str(tmp_path / "fresh.yaml")).stdout


def test_cli_serves_until_sigterm(tmp_path: pathlib.Path) -> None:
    kubeconfig = tmp_path / "cli-kubeconfig"
    command = [
        sys.executable,
        "-m",
        "anklet.dev.kube_emulator",
        "--port",
        "0",
        "--kubeconfig",
        str(kubeconfig),
        "--crd",
        str(ROOT / "crds" / "ankajob.yaml"),
    ]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        assert process.stdout is not None
        url = process.stdout.readline().strip()
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        env = {**os.environ, "KUBECONFIG": str(kubeconfig), "KUBECACHEDIR": str(tmp_path / "cache")}
        listed = subprocess.run(
            ["kubectl", "get", "aj"], env=env, capture_output=True, text=True, timeout=20, check=False
        )
        assert listed.returncode == 0 and "No resources found in default namespace." in listed.stderr
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        process.kill()
        process.wait(timeout=10)
