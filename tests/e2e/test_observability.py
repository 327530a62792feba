"""Observability on the dev stack: every process's /metrics from endpoints.json, the Events a job
and a host get, and JSON log lines that carry the job."""

from __future__ import annotations

import json

import httpx

from anklet.dev.stack import DevStack
from tests.e2e.conftest import Kubectl
from tests.e2e.test_dev_stack import job_yaml
from tests.metrics_rules import check, parse, value


def test_endpoints_json_lists_every_metrics_url_and_each_serves_valid_text(
    stack: DevStack, kubectl: Kubectl
) -> None:
    kubectl("apply", "-f", "-", stdin=job_yaml("observed", "echo observed"))
    status = kubectl.wait_phase("observed", "Succeeded")["status"]
    endpoints = json.loads((stack.dir / "endpoints.json").read_text())
    urls = endpoints["metrics"]
    assert set(urls) == {"controller", "receiver", *stack.endpoints["hosts"]}
    assert all(url.startswith("http://127.0.0.1:") for url in urls.values())
    uid = kubectl.job("observed")["metadata"]["uid"]
    for name, url in urls.items():
        response = httpx.get(url, timeout=10)
        assert response.status_code == 200, name
        families = parse(response.text)
        assert check(families, forbidden_values=["observed", uid], hosts=stack.endpoints["hosts"]) == [], name
    controller = parse(httpx.get(urls["controller"], timeout=10).text)
    assert (value(controller, "anklet_jobs_finished_total", phase="Succeeded") or 0) >= 1
    assert value(controller, "anklet_hosts", state="ready") == len(stack.endpoints["hosts"])
    agent = parse(httpx.get(urls[status["host"]], timeout=10).text)
    assert (value(agent, "anklet_agent_anka_commands_total", command="clone", result="ok") or 0) >= 1


def test_a_job_and_its_host_have_events(kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=job_yaml("announced", "echo hi"))
    kubectl.wait_phase("announced", "Succeeded")
    events = json.loads(
        kubectl("get", "events", "--field-selector", "involvedObject.name=announced", "-o", "json")
    )
    reasons = [e["reason"] for e in events["items"]]
    for reason in ("Scheduled", "Provisioning", "Running", "Succeeded"):
        assert reasons.count(reason) == 1, reasons
    hosts = json.loads(
        kubectl("get", "events", "--field-selector", "involvedObject.kind=AnkaHost", "-o", "json")
    )
    assert "Registered" in {e["reason"] for e in hosts["items"]}


def test_log_lines_are_json_with_the_job_in_context(stack: DevStack, kubectl: Kubectl) -> None:
    kubectl("apply", "-f", "-", stdin=job_yaml("logged", "echo logged"))
    status = kubectl.wait_phase("logged", "Succeeded")["status"]
    controller = [
        json.loads(line)
        for line in (stack.dir / "logs" / "controller.log").read_text().splitlines()
        if line.startswith("{")
    ]
    assert any(line.get("job") == "default/logged" for line in controller)
    agent = [
        json.loads(line)
        for line in (stack.dir / "logs" / f"{status['host']}.log").read_text().splitlines()
        if line.startswith("{")
    ]
    mine = [line for line in agent if line.get("vm") == status["vmName"]]
    assert mine and all(line["job"] == "default/logged" and line["host"] == status["host"] for line in mine)
