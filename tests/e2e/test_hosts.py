"""Fleet operations on the dev stack: AnkaHosts in kubectl, cordon, drain."""

from __future__ import annotations

import subprocess
import sys
import time

from anklet.dev.stack import DevStack
from tests.e2e.conftest import Kubectl
from tests.e2e.test_dev_stack import job_yaml


def wait_hosts_ready(kubectl: Kubectl, stack: DevStack, timeout: float = 60) -> str:
    deadline = time.monotonic() + timeout
    while True:
        out = kubectl("get", "ankahosts")
        lines = [line.split() for line in out.splitlines()[1:]]
        if len(lines) == len(stack.endpoints["hosts"]) and all(cols[1] == "true" for cols in lines):
            return out
        assert time.monotonic() < deadline, out
        time.sleep(0.5)


def test_kubectl_shows_the_simulated_macs(stack: DevStack, kubectl: Kubectl) -> None:
    out = wait_hosts_ready(kubectl, stack)
    assert out.split()[:6] == ["NAME", "READY", "VMS", "CPU", "MEMORY", "AGE"]
    for host in stack.endpoints["hosts"]:
        assert host in out
    wide = kubectl("get", "ah", "-o", "wide")
    assert "3.9.1" in wide


def test_cordon_with_kubectl_patch_and_drain_with_anklet(stack: DevStack, kubectl: Kubectl) -> None:
    wait_hosts_ready(kubectl, stack)
    kubectl("patch", "ankahost", "mac-1", "--type=merge", "-p", '{"spec":{"unschedulable":true}}')
    time.sleep(1)
    kubectl("apply", "-f", "-", stdin=job_yaml("avoids-mac-1", "sleep 3"))
    status = kubectl.wait_phase("avoids-mac-1", "Running", timeout=90)["status"]
    assert status["host"] == "mac-2"
    kubectl("patch", "ankahost", "mac-1", "--type=merge", "-p", '{"spec":{"unschedulable":false}}')
    drain = subprocess.run(
        [sys.executable, "-m", "anklet.cli", "hosts", "drain", "mac-2", "--timeout", "90",
         "--kubeconfig", stack.endpoints["kubeconfig"]],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert drain.returncode == 0, drain.stderr
    assert "ankahost/mac-2 cordoned" in drain.stdout and "ankahost/mac-2 drained" in drain.stdout
    assert "ankahost/mac-2: 1 job left (1 VM): default/avoids-mac-1\n" in drain.stdout, "the drain's progress"
    assert kubectl.job("avoids-mac-1")["status"]["phase"] == "Succeeded", "drain waited for the running job"
    listing = subprocess.run(
        [sys.executable, "-m", "anklet.cli", "hosts", "--kubeconfig", stack.endpoints["kubeconfig"]],
        capture_output=True, text=True, timeout=60, check=True,
    ).stdout  # fmt: skip
    assert listing.split()[:7] == ["NAME", "READY", "VMS", "CPU", "MEMORY", "TEMPLATES", "AGE"]
    assert "mac-2" in listing and "true" in listing
    kubectl("patch", "ankahost", "mac-2", "--type=merge", "-p", '{"spec":{"unschedulable":false}}')


def test_prepull_from_the_ankahost_spec(stack: DevStack, kubectl: Kubectl) -> None:
    wait_hosts_ready(kubectl, stack)
    wanted = "d792c6f6-198c-470f-9526-9c998efe7ab4"
    patch = '{"spec":{"prePull":["' + wanted + ':vanilla+port-forward-22+brew-git"]}}'
    kubectl("patch", "ankahost", "mac-2", "--type=merge", "-p", patch)
    condition = (
        f'--for=jsonpath={{.status.templates[?(@.uuid=="{wanted}")].tag}}=vanilla+port-forward-22+brew-git'
    )
    kubectl("wait", condition, "ankahost/mac-2", "--timeout=90s", timeout=100)
