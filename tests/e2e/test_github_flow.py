"""GitHub Actions end to end on the dev stack: fake GitHub → receiver → AnkaJob → VM → runner."""

from __future__ import annotations

import json
import subprocess
import time
from typing import Any

import httpx
import pytest
import redis

from anklet import keys
from anklet.dev.anka_sim import control
from anklet.dev.stack import DEMO_GITHUB_LABELS, DEV_OWNER, DEV_REPO, DevStack
from plugins.handlers.github.constants import ankajob_name
from tests.e2e.conftest import Kubectl

SMALL_LABELS = [
    "self-hosted",
    "anka-template:84266873-da90-4e0d-903b-ed0233471f9f",
    "anka-template-tag:2c4r",
]


def queue(
    stack: DevStack, *, labels: list[str] | None = None, run_seconds: float = 1, **extra: Any
) -> dict[str, Any]:
    body = {
        "owner": DEV_OWNER,
        "repo": DEV_REPO,
        "labels": labels or SMALL_LABELS,
        "run_seconds": run_seconds,
    }
    body.update(extra)
    response = httpx.post(f"{stack.github.url}/_sim/workflow_jobs", json=body, timeout=10)
    response.raise_for_status()
    job: dict[str, Any] = response.json()
    return job


def gh_job(stack: DevStack, job_id: int) -> dict[str, Any]:
    response = httpx.get(f"{stack.github.url}/_sim/workflow_jobs/{job_id}", timeout=10)
    response.raise_for_status()
    data: dict[str, Any] = response.json()
    return data


def fault(stack: DevStack, **rule: Any) -> None:
    response = httpx.post(f"{stack.github.url}/_sim/faults", json=rule, timeout=10)
    response.raise_for_status()


def cancel(stack: DevStack, job_id: int) -> None:
    httpx.post(f"{stack.github.url}/_sim/workflow_jobs/{job_id}/cancel", timeout=10).raise_for_status()


def wait_for_object(kubectl: Kubectl, name: str, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        out = kubectl("get", "ankajob", name, "-o", "json", check=False)
        if out.lstrip().startswith("{"):
            data: dict[str, Any] = json.loads(out[: out.rindex("}") + 1])
            return data
        time.sleep(0.2)
    raise AssertionError(f"ankajob/{name} never appeared")


def runner_registered(stack: DevStack) -> bool:
    return bool(stack.github.runners())


def clones_for(stack: DevStack, uid: str) -> list[dict[str, Any]]:
    return [
        c
        for host in stack.endpoints["hosts"]
        for c in control.read_calls(stack.dir / "hosts" / host / "anka")
        if "clone" in c["argv"] and any(uid in str(a) for a in c["argv"])
    ]


def test_a_workflow_job_runs_in_its_own_vm(stack: DevStack, kubectl: Kubectl) -> None:
    job = queue(stack, labels=DEMO_GITHUB_LABELS, run_seconds=1, steps=["checkout", "build"])
    name = ankajob_name(job["id"], 1)
    obj = wait_for_object(kubectl, name)
    assert obj["spec"]["handler"] == "github" and obj["spec"]["tag"] == "6c14r"
    assert obj["metadata"]["labels"]["anklet.dev/github-job-id"] == str(job["id"])
    done = kubectl.wait_phase(name, "Succeeded", timeout=120)
    assert done["status"]["github"]["conclusion"] == "success"
    assert done["status"]["github"]["runnerName"] == done["status"]["vmName"]
    final = gh_job(stack, job["id"])
    assert (final["status"], final["conclusion"], final["runner_name"]) == (
        "completed",
        "success",
        done["status"]["vmName"],
    )
    assert not runner_registered(stack), "the ephemeral runner is gone"


def ps() -> str:
    return subprocess.run(["ps", "-eo", "args"], capture_output=True, text=True, check=True).stdout


def test_no_secret_leaks_anywhere(stack: DevStack, kubectl: Kubectl) -> None:
    """The JIT config, the GitHub token and the webhook secret are in none of: AnkaJobs, AnkaHosts,
    Events, any process's log, any metrics endpoint, any `anka` command line, any process's argv."""
    job = queue(stack, run_seconds=3)
    name = ankajob_name(job["id"], 1)
    wait_for_object(kubectl, name)
    running = kubectl.wait_phase(name, "Running", timeout=120)
    uid, host, attempt = running["metadata"]["uid"], running["status"]["host"], running["status"]["attempts"]
    client = redis.Redis.from_url(stack.endpoints["redis_url"], decode_responses=True)
    raw = client.get(keys.host_secret(host, uid, attempt))
    client.close()
    assert raw, "the secret is in the host's key while the job runs"
    jit = json.loads(raw)["ACTIONS_RUNNER_INPUT_JITCONFIG"]
    secrets = {"JIT config": jit, "GitHub token": stack.github_token, "webhook secret": stack.webhook_secret}
    assert all(secrets.values())
    ps_while_running = ps()
    kubectl.wait_phase(name, "Succeeded", timeout=120)

    places: dict[str, str] = {
        "AnkaJobs": kubectl("get", "ankajobs", "-A", "-o", "yaml"),
        "AnkaHosts": kubectl("get", "ankahosts", "-o", "yaml"),
        "Events": kubectl("get", "events", "-A", "-o", "yaml"),
        "ps while running": ps_while_running,
        "ps after": ps(),
    }
    for log in (stack.dir / "logs").glob("*.log"):
        places[f"log {log.name}"] = log.read_text(errors="replace")
    for process, url in stack.endpoints["metrics"].items():
        body = httpx.get(url, timeout=10)
        assert body.status_code == 200, f"{process} metrics at {url}: {body.status_code}"
        places[f"metrics of {process}"] = body.text
    for h in stack.endpoints["hosts"]:
        argv = [" ".join(map(str, c["argv"])) for c in control.read_calls(stack.dir / "hosts" / h / "anka")]
        places[f"anka command lines on {h}"] = "\n".join(argv)
    assert any(f"metrics of {h}" in places for h in stack.endpoints["hosts"]), "agents serve metrics too"
    leaks = [f"{what} in {where}" for where, text in places.items()
             for what, v in secrets.items() if v in text]  # fmt: skip
    assert not leaks


def test_cancelled_on_github_while_running(stack: DevStack, kubectl: Kubectl) -> None:
    job = queue(stack, run_seconds=60)
    name = ankajob_name(job["id"], 1)
    wait_for_object(kubectl, name)
    kubectl.wait_phase(name, "Running", timeout=120)
    deadline = time.monotonic() + 60
    while gh_job(stack, job["id"])["status"] != "in_progress" and time.monotonic() < deadline:
        time.sleep(0.2)
    cancel(stack, job["id"])
    done = kubectl.wait_phase(name, "Cancelled", timeout=60)
    assert done["status"]["reason"] == "GitHubJobCancelled"
    assert not runner_registered(stack)


def test_cancelled_before_any_vm_exists(stack: DevStack, kubectl: Kubectl) -> None:
    fault(stack, kind="drop_webhooks", action="queued", count=1)
    job = queue(stack)
    cancel(stack, job["id"])
    name = ankajob_name(job["id"], 1)
    obj = wait_for_object(kubectl, name)
    done = kubectl.wait_phase(name, "Cancelled", timeout=60)
    assert done["status"].get("host") is None
    assert clones_for(stack, obj["metadata"]["uid"]) == [], "no VM was ever created"


def test_dropped_queued_webhook_is_recovered_by_redelivery(stack: DevStack, kubectl: Kubectl) -> None:
    fault(stack, kind="drop_webhooks", action="queued", count=1)
    job = queue(stack)
    name = ankajob_name(job["id"], 1)
    wait_for_object(kubectl, name, timeout=60)  # the scan runs every 10 s in the dev stack
    done = kubectl.wait_phase(name, "Succeeded", timeout=120)
    assert done["status"]["github"]["conclusion"] == "success"


def test_dropped_completed_webhook_is_recovered_by_the_jobs_api(stack: DevStack, kubectl: Kubectl) -> None:
    fault(stack, kind="drop_webhooks", action="completed", count=1)
    job = queue(stack)
    name = ankajob_name(job["id"], 1)
    wait_for_object(kubectl, name)
    done = kubectl.wait_phase(name, "Succeeded", timeout=120)
    assert done["status"]["reason"] == "GitHubSuccess"


def test_non_anka_jobs_are_ignored(stack: DevStack, kubectl: Kubectl) -> None:
    job = queue(stack, labels=["self-hosted", "linux"])
    time.sleep(2)
    out = kubectl("get", "ankajob", ankajob_name(job["id"], 1), check=False)
    assert "NotFound" in out or "not found" in out


@pytest.mark.parametrize("conclusion", ["failure"])
def test_failed_workflow_job_fails_the_ankajob(stack: DevStack, kubectl: Kubectl, conclusion: str) -> None:
    job = queue(stack, conclusion=conclusion)
    wait_for_object(kubectl, ankajob_name(job["id"], 1))
    done = kubectl.wait_phase(ankajob_name(job["id"], 1), "Failed", timeout=120)
    assert done["status"]["github"]["conclusion"] == conclusion


def test_cancelled_on_github_while_the_vm_is_being_prepared(stack: DevStack, kubectl: Kubectl) -> None:
    homes = [stack.dir / "hosts" / h / "anka" for h in stack.endpoints["hosts"]]
    for home in homes:  # a slow boot keeps the VM in Provisioning long enough to cancel there
        control.add_fault(home, command="start", effect="slow", factor=40, count=1)
    try:
        job = queue(stack, run_seconds=5)
        name = ankajob_name(job["id"], 1)
        wait_for_object(kubectl, name)
        kubectl.wait_phase(name, "Provisioning", timeout=60)
        cancel(stack, job["id"])
        done = kubectl.wait_phase(name, "Cancelled", timeout=90)
    finally:
        for home in homes:
            control.clear_faults(home)
    assert done["status"]["reason"] == "GitHubJobCancelled"
    assert all(done["status"]["vmName"] not in vms for vms in _anklet_vms(stack).values())
    assert not runner_registered(stack)


def test_a_runner_that_never_gets_its_job_is_replaced(stack: DevStack, kubectl: Kubectl) -> None:
    fault(stack, kind="runner_never_takes_job", count=1)
    job = queue(stack)
    name = ankajob_name(job["id"], 1)
    wait_for_object(kubectl, name)
    done = kubectl.wait_phase(name, "Succeeded", timeout=150)
    assert done["status"]["attempts"] == 2, "the idle first VM was released and the job retried"
    assert gh_job(stack, job["id"])["conclusion"] == "success"
    events = kubectl("get", "events", "--field-selector", f"involvedObject.name={name}")
    assert "Scheduled" in events


def test_orphan_runners_are_deleted(stack: DevStack) -> None:
    response = httpx.post(
        f"{stack.github.url}/repos/{DEV_OWNER}/{DEV_REPO}/actions/runners/generate-jitconfig",
        headers={"Authorization": f"Bearer {stack.github_token}"},
        json={"name": "anklet-vm-orphan-a1", "runner_group_id": 1, "labels": ["x"]},
        timeout=10,
    )
    assert response.status_code == 201, response.text
    deadline = time.monotonic() + 90
    while any(r["name"] == "anklet-vm-orphan-a1" for r in stack.github.runners()):
        assert time.monotonic() < deadline, "the orphan runner was never deleted"
        time.sleep(0.5)


def _anklet_vms(stack: DevStack) -> dict[str, list[str]]:
    return {
        h: [vm["name"] for vm in control.read_state(stack.dir / "hosts" / h / "anka").get("vms", {}).values()]
        for h in stack.endpoints["hosts"]
    }


def test_a_job_too_large_for_every_mac_fails_once_its_size_is_known(
    stack: DevStack, kubectl: Kubectl
) -> None:
    labels = ["self-hosted", "anka-template:84266873-da90-4e0d-903b-ed0233471f9f", "anka-template-tag:20c20r"]
    job = queue(stack, labels=labels)
    name = ankajob_name(job["id"], 1)
    wait_for_object(kubectl, name)
    done = kubectl.wait_phase(name, "Failed", timeout=90)
    assert done["status"]["reason"] == "Unschedulable"
    assert "20 CPU / 20480 MiB" in done["status"]["message"]
    assert gh_job(stack, job["id"])["status"] == "queued", "the run is not cancelled unless configured"
