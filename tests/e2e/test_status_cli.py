"""`anklet status`, `anklet jobs` and `anklet explain` on the dev stack, as a person runs them.

The jobs live in their own namespace so the counts do not depend on the other e2e tests: one
succeeds, one fails with exit code 3, and one asks for a host label no Mac has, so it waits
Pending with the scheduler's reason for as long as it exists.
"""

from __future__ import annotations

import itertools
import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest
import yaml

from anklet.dev.stack import DevStack
from tests.e2e.conftest import Kubectl
from tests.e2e.test_dev_stack import TEMPLATE, job_yaml

NS = "cli-views"
WAITING = "0/2 hosts available: 2 labels do not match hostSelector"


def anklet(stack: DevStack, *args: str, env: dict[str, str] | None = None, timeout: float = 60) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "anklet.cli", *args, "--kubeconfig", stack.endpoints["kubeconfig"]],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )
    assert result.returncode == 0, f"anklet {' '.join(args)} failed ({result.returncode}): {result.stderr}"
    return result.stdout


def explain(stack: DevStack, name: str) -> dict[str, Any]:
    record: dict[str, Any] = json.loads(anklet(stack, "explain", name, "-n", NS, "-o", "json"))
    return record


def wait_for(probe: Any, timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = probe()
        if value:
            return value
        assert time.monotonic() < deadline, f"not reached in {timeout} s: {value!r}"
        time.sleep(0.5)


@pytest.fixture(scope="module")
def jobs(stack: DevStack, kubectl: Kubectl) -> Iterator[None]:
    kubectl("apply", "-f", "-", stdin=f"apiVersion: v1\nkind: Namespace\nmetadata: {{name: {NS}}}\n")
    manifests = [
        job_yaml("ok", "echo all good"),
        job_yaml("broken", "echo about to fail; exit 3"),
        job_yaml("stuck", "true", hostSelector={"macos": "99"}),
    ]
    for manifest in manifests:
        kubectl("apply", "-n", NS, "-f", "-", stdin=manifest)
    for name, phase in (("ok", "Succeeded"), ("broken", "Failed")):
        kubectl("wait", f"--for=jsonpath={{.status.phase}}={phase}", f"ankajob/{name}", "-n", NS,
                "--timeout=90s", timeout=100)  # fmt: skip
    kubectl("wait", "--for=jsonpath={.status.reason}=Unschedulable", "ankajob/stuck", "-n", NS,
            "--timeout=60s", timeout=70)  # fmt: skip
    yield
    kubectl("delete", "ankajobs", "--all", "-n", NS, "--timeout=60s", timeout=70)


def test_status_summarises_the_fleet_and_says_why_the_oldest_pending_job_waits(
    stack: DevStack, jobs: None
) -> None:
    text = anklet(stack, "status", "-n", NS)
    lines = {line.split("  ")[0]: line for line in text.splitlines()}
    # PULLS appears while a Mac pulls a template (other tests on this stack pre-pull some).
    assert set(lines) - {"PULLS"} == {
        "HOSTS",
        "VM SLOTS",
        "CPU",
        "MEMORY",
        f"JOBS ({NS})",
        "OLDEST PENDING",
    }, text
    assert "2 total" in lines["HOSTS"] and "16 cores" in lines["CPU"]
    assert lines[f"JOBS ({NS})"].split(None, 2)[2] == "1 Pending, 1 Succeeded, 1 Failed"
    assert f"{NS}/stuck, waiting" in lines["OLDEST PENDING"]
    assert f"Unschedulable: {WAITING}" in lines["OLDEST PENDING"]
    # $KUBECONFIG works like --kubeconfig, and -o json carries the same figures for scripts.
    env = {**os.environ, "KUBECONFIG": stack.endpoints["kubeconfig"]}
    out = subprocess.run(
        [sys.executable, "-m", "anklet.cli", "status", "-n", NS, "-o", "json"],
        capture_output=True, text=True, timeout=60, env=env, check=True,
    ).stdout  # fmt: skip
    summary = json.loads(out)
    assert summary["hosts"]["total"] == 2 and summary["vmSlots"]["total"] == 4
    assert summary["cpu"]["total"] == 16 and summary["memoryMiB"]["total"] == 32768
    assert {k: v for k, v in summary["jobs"].items() if v} == {"Pending": 1, "Succeeded": 1, "Failed": 1}
    assert summary["oldestPending"]["name"] == "stuck" and summary["oldestPending"]["message"] == WAITING


def test_jobs_lists_namespace_name_phase_host_template_attempts_age_reason(
    stack: DevStack, jobs: None
) -> None:
    lines = anklet(stack, "jobs", "-n", NS).splitlines()
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
    rows = {cols[1]: cols for cols in (line.split() for line in lines[1:])}
    assert set(rows) == {"ok", "broken", "stuck"}
    assert rows["ok"][2] == "Succeeded" and rows["ok"][3] in stack.endpoints["hosts"]
    assert rows["ok"][4] == f"{TEMPLATE}:2c4r" and rows["ok"][5] == "1"
    assert rows["broken"][2] == "Failed" and rows["broken"][7] == "ExitCode"
    assert (
        rows["stuck"][2:4] == ["Pending", "-"]
        and rows["stuck"][5] == "0"
        and rows["stuck"][7] == "Unschedulable"
    )
    pending = json.loads(anklet(stack, "jobs", "-A", "--phase", "pending", "-o", "json"))["items"]
    assert [j["name"] for j in pending if j["namespace"] == NS] == ["stuck"]
    assert all(j["phase"] == "Pending" for j in pending)


def test_explain_says_why_a_pending_job_waits_and_what_would_help(stack: DevStack, jobs: None) -> None:
    text = anklet(stack, "explain", "stuck", "-n", NS)
    assert f"AnkaJob {NS}/stuck" in text
    assert f": {WAITING}." in text and "\nPending for " in text
    assert "→ relax spec.hostSelector, or label a host (AnkaHost spec.labels)" in text
    record = wait_for(lambda: (r := explain(stack, "stuck")) and len(r["timeline"]) >= 2 and r)
    timeline = record["timeline"]
    assert timeline[0]["reason"] == "Created"
    waiting = [e for e in timeline if e["reason"] == "Unschedulable"]
    assert waiting and waiting[0]["type"] == "Warning" and waiting[0]["message"] == WAITING


def test_explain_a_failed_job_gives_reason_exit_code_output_and_timeline(stack: DevStack, jobs: None) -> None:
    text = anklet(stack, "explain", "broken", "-n", NS)
    assert "Failed after 1 attempt: ExitCode:" in text
    assert "  exit:     3\n" in text and "  | about to fail\n" in text
    record = explain(stack, "broken")
    reasons = [e["reason"] for e in record["timeline"]]
    assert reasons[0] == "Created" and reasons[-1] == "Failed", reasons
    assert "Scheduled" in reasons
    times = [e["time"] for e in record["timeline"]]
    assert times == sorted(times), "in time order"
    ok = yaml.safe_load(anklet(stack, "explain", "ok", "-n", NS, "-o", "yaml"))
    assert ok["diagnosis"]["phase"] == "Succeeded" and ok["diagnosis"]["summary"].startswith(
        "Succeeded on mac-"
    )
    assert [e["reason"] for e in ok["timeline"]][-1] == "Succeeded"


def test_an_unknown_job_is_a_clear_error(stack: DevStack, jobs: None) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "anklet.cli", "explain", "nope", "-n", NS,
         "--kubeconfig", stack.endpoints["kubeconfig"]],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "ankajob cli-views/nope: not found" in result.stderr
    assert "Traceback" not in result.stderr


def test_jobs_watch_prints_a_line_per_change_until_ctrl_c(
    stack: DevStack, kubectl: Kubectl, jobs: None
) -> None:
    watch = subprocess.Popen(
        [sys.executable, "-m", "anklet.cli", "jobs", "-n", NS, "--watch", "-o", "json",
         "--kubeconfig", stack.endpoints["kubeconfig"]],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert watch.stdout is not None
    seen: list[tuple[str, str, str]] = []
    try:
        for _ in range(3):  # the current jobs first
            event = json.loads(watch.stdout.readline())
            seen.append((event["type"], event["job"]["name"], event["job"]["phase"]))
        assert sorted(seen) == [
            ("ADDED", "broken", "Failed"),
            ("ADDED", "ok", "Succeeded"),
            ("ADDED", "stuck", "Pending"),
        ]
        kubectl("apply", "-n", NS, "-f", "-", stdin=job_yaml("late", "echo late"))
        deadline = time.monotonic() + 90
        lines: list[tuple[str, str | None, int, str | None]] = []
        while not lines or lines[-1][0] != "Succeeded":
            assert time.monotonic() < deadline, lines
            ready, _, _ = select.select([watch.stdout], [], [], max(0.1, deadline - time.monotonic()))
            if ready:
                job = json.loads(watch.stdout.readline())["job"]
                if job["name"] == "late":
                    lines.append((job["phase"], job["host"], job["attempts"], job["reason"]))
        assert lines[0][0] == "Pending" and {"Running", "Succeeded"} <= {line[0] for line in lines}
        assert all(a != b for a, b in itertools.pairwise(lines)), "a line per change, no repeats"
        watch.send_signal(signal.SIGINT)
        assert watch.wait(timeout=20) == 0
        assert watch.stderr is not None and "Traceback" not in watch.stderr.read()
    finally:
        if watch.poll() is None:
            watch.kill()
            watch.wait(timeout=10)


def run_on_terminal(stack: DevStack, *args: str, env: dict[str, str]) -> str:
    """Run anklet with its stdout on a pseudo-terminal; what it printed there."""
    leader, follower = pty.openpty()
    process = subprocess.Popen(
        [sys.executable, "-m", "anklet.cli", *args, "--kubeconfig", stack.endpoints["kubeconfig"]],
        stdout=follower, stderr=subprocess.PIPE, env=env,
    )  # fmt: skip
    os.close(follower)
    chunks = []
    try:
        while True:
            ready, _, _ = select.select([leader], [], [], 30)
            if not ready:
                break
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # EIO: the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        assert process.wait(timeout=30) == 0
    finally:
        os.close(leader)
        if process.poll() is None:
            process.kill()
    return b"".join(chunks).decode()


def test_colors_only_on_a_terminal_and_never_with_no_color(stack: DevStack, jobs: None) -> None:
    env = {k: v for k, v in os.environ.items() if k != "NO_COLOR"} | {"TERM": "xterm"}
    colored = run_on_terminal(stack, "jobs", "-n", NS, env=env)
    assert "\x1b[32mSucceeded\x1b[0m" in colored and "\x1b[31mFailed\x1b[0m" in colored
    assert "\x1b[" not in run_on_terminal(stack, "jobs", "-n", NS, env={**env, "NO_COLOR": "1"})
    assert "\x1b[" not in anklet(stack, "jobs", "-n", NS, env=env), "not on a pipe"
