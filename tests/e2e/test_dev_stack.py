"""End to end on the dev stack, driven by the real kubectl: the user's view of Anklet."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import textwrap
from typing import Any

from anklet.dev.anka_sim import control
from anklet.dev.stack import DevStack
from tests.e2e.conftest import ROOT, Kubectl, StackThread

TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"


def job_yaml(name: str, script: str, *, tag: str = "2c4r", cpu: int = 2, mem: int = 4096, **spec: Any) -> str:
    extra = "".join(f"  {key}: {json.dumps(value)}\n" for key, value in spec.items())
    return (
        textwrap.dedent(f"""\
        apiVersion: anklet.dev/v1alpha1
        kind: AnkaJob
        metadata: {{name: {name}}}
        spec:
          template: {TEMPLATE}
          tag: {tag}
          handler: script
          resources: {{cpu: {cpu}, memoryMiB: {mem}}}
          script: {{run: {json.dumps(script)}}}
        """)
        + extra
    )


def anklet_vms(stack: DevStack) -> dict[str, list[str]]:
    """VMs Anklet owns on each simulated Mac, straight from the simulated `anka list`."""
    found = {}
    for host in stack.endpoints["hosts"]:
        env = {**os.environ, "ANKA_SIM_HOME": str(stack.dir / "hosts" / host / "anka")}
        out = subprocess.run(
            [str(stack.dir / "bin" / "anka"), "-j", "list"],
            check=True,
            capture_output=True,
            text=True,
            env=env,
            timeout=30,
        )
        body = json.loads(out.stdout.strip().splitlines()[-1])["body"]
        found[host] = [vm["name"] for vm in body if vm["name"].startswith("anklet-vm-")]
    return found


def calls(stack: DevStack, host: str) -> list[dict[str, Any]]:
    return control.read_calls(stack.dir / "hosts" / host / "anka")


def test_script_job_succeeds_and_its_vm_is_gone(stack: DevStack, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(ROOT / "examples" / "hello-script.yaml"))
    job = kubectl.wait_phase("hello-script", "Succeeded")
    status = job["status"]
    assert status["exitCode"] == 0
    assert "hello from" in status["output"]
    assert status["attempts"] == 1 and status["host"] in stack.endpoints["hosts"]
    assert status["vmName"] not in anklet_vms(stack)[status["host"]]
    listing = kubectl("get", "ankajobs")
    assert listing.split()[:6] == ["NAME", "PHASE", "HOST", "TEMPLATE", "TAG", "AGE"]
    assert "hello-script" in listing and "Succeeded" in listing


def test_failing_script_ends_failed_with_its_exit_code(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(ROOT / "examples" / "failing-script.yaml"))
    status = kubectl.wait_phase("failing-script", "Failed")["status"]
    assert status["exitCode"] == 3 and status["reason"] == "ExitCode"
    assert "about to fail" in status["output"]
    assert status["attempts"] == 1, "a workload's own failure is never retried"


def test_three_big_jobs_never_overlap_beyond_capacity(stack: DevStack, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", str(ROOT / "examples" / "capacity.yaml"))
    for name in ("big-1", "big-2", "big-3"):
        kubectl.wait_phase(name, "Succeeded", timeout=90)
    events = kubectl("get", "events", "--field-selector", "involvedObject.name=big-3,reason=Unschedulable")
    assert "insufficient cpu" in events or "no free VM slot" in events
    # From the simulators' call logs: per host, at most one 6c14r VM at any moment.
    for host in stack.endpoints["hosts"]:
        timeline: list[tuple[float, int]] = []
        for call in calls(stack, host):
            argv = call["argv"]
            if "clone" in argv and "6c14r" in argv:
                timeline.append((call["ts"], +1))  # the VM exists from its clone ...
            elif "delete" in argv and any(str(a).startswith("anklet-vm-") for a in argv):
                timeline.append((call["ts"] + (call["duration"] or 0), -1))  # ... until deleted
        live = peak = 0
        for _, delta in sorted(timeline):
            live += delta
            peak = max(peak, live)
        assert peak <= 1, f"{host} held {peak} 6 CPU / 14 GiB VMs at once"


def test_invalid_ankajob_is_refused_with_the_reason(kubectl: Kubectl) -> None:
    bad = "apiVersion: anklet.dev/v1alpha1\nkind: AnkaJob\nmetadata: {name: bad1}\nspec:\n  handler: script\n"
    out = kubectl("create", "-f", "-", stdin=bad, check=False)
    assert 'The AnkaJob "bad1" is invalid' in out and "spec.template" in out


def test_job_larger_than_every_host_fails_at_once(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=job_yaml("too-big", "true", tag="20c20r", cpu=20, mem=20480))
    status = kubectl.wait_phase("too-big", "Failed")["status"]
    assert status["reason"] == "Unschedulable" and "can ever fit 20 CPU" in status["message"]
    assert status["attempts"] == 0


def test_unknown_template_tag_fails_with_the_cause(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=job_yaml("no-such-tag", "true", tag="does-not-exist"))
    status = kubectl.wait_phase("no-such-tag", "Failed")["status"]
    assert status["reason"] == "TemplateNotFound", status
    assert status["attempts"] == 1


def test_cancel_tears_the_vm_down(stack: DevStack, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=job_yaml("to-cancel", "sleep 60"))
    running = kubectl.wait_phase("to-cancel", "Running")["status"]
    assert running["vmName"] in anklet_vms(stack)[running["host"]]
    kubectl("patch", "ankajob", "to-cancel", "--type=merge", "-p", '{"spec":{"cancel":true}}')
    status = kubectl.wait_phase("to-cancel", "Cancelled")["status"]
    assert status["vmName"] not in anklet_vms(stack)[status["host"]]


def test_delete_waits_for_the_vm_then_removes_the_job(stack: DevStack, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=job_yaml("to-delete", "sleep 60"))
    status = kubectl.wait_phase("to-delete", "Running")["status"]
    kubectl("delete", "ankajob", "to-delete", "--timeout=60s", timeout=70)
    assert "to-delete" not in kubectl("get", "ankajobs", "-o", "name")
    assert status["vmName"] not in anklet_vms(stack)[status["host"]]


def test_finished_jobs_are_garbage_collected_after_their_ttl(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=job_yaml("short-lived", "true", ttlSecondsAfterFinished=4))
    kubectl(
        "wait", "--for=jsonpath={.status.phase}=Succeeded", "ankajob/short-lived", "--timeout=60s", timeout=70
    )
    assert "short-lived" in kubectl("get", "ankajobs", "-o", "name"), "kept until its TTL expires"
    kubectl("wait", "--for=delete", "ankajob/short-lived", "--timeout=30s", timeout=40)


def test_agent_killed_mid_job_leaves_no_second_vm_and_no_orphan(
    stack_thread: StackThread, kubectl: Kubectl
) -> None:
    stack = stack_thread.stack
    kubectl("apply", "-f", "-", stdin=job_yaml("survivor", "sleep 3; echo finished", backoffLimit=2))
    status = kubectl.wait_phase("survivor", "Running")["status"]
    host = status["host"]
    assert stack_thread.call(stack.kill_child(host, signal.SIGKILL)) == -signal.SIGKILL
    stack_thread.call(stack.restart_child(host))
    final = kubectl.wait_phase("survivor", "Succeeded", timeout=90)["status"]
    # The workload's supervisor outlives the agent: the restarted agent reports its result.
    assert final["attempts"] == 1, "the workload's result survived the agent; nothing was retried"
    assert "finished" in (final.get("output") or "")
    assert anklet_vms(stack) == {h: [] for h in stack.endpoints["hosts"]} or all(
        final["vmName"] not in vms for vms in anklet_vms(stack).values()
    )
    first_vm = status["vmName"]
    clones = [
        c
        for h in stack.endpoints["hosts"]
        for c in calls(stack, h)
        if "clone" in c.get("argv", []) and first_vm in c.get("argv", []) and c.get("phase") != "end"
    ]
    assert len(clones) == 1, "the attempt's VM was cloned exactly once"
    assert first_vm not in anklet_vms(stack)[host]


def test_an_anka_fault_is_cleaned_up_and_retried(stack: DevStack, kubectl: Kubectl) -> None:
    homes = [stack.dir / "hosts" / host / "anka" for host in stack.endpoints["hosts"]]
    for home in homes:  # the first attempt's VM fails to start, whichever Mac it lands on
        control.add_fault(home, command="start", match="-a1", effect="error", count=1,
                          message="failed to start: No child processes")  # fmt: skip
    try:
        kubectl("apply", "-f", "-", stdin=job_yaml("retried", "echo second time lucky", backoffLimit=2))
        status = kubectl.wait_phase("retried", "Succeeded", timeout=90)["status"]
    finally:
        for home in homes:
            control.clear_faults(home)
    assert status["attempts"] == 2 and "second time lucky" in status["output"]
    assert all(not vms for vms in anklet_vms(stack).values()), "the failed attempt's VM was deleted"
