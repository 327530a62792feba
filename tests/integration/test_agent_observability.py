"""The host agent's /metrics and log lines after real jobs: an `anklet agent` process driving the
`anka` simulator against a real redis-server (as in test_agent.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from anklet.dev.redis_server import RedisServer, free_port
from anklet.redis_protocol import ControllerProtocol
from anklet.wire import ObservedPhase
from tests.integration.test_agent import TEMPLATE, Mac, ctl, job, outcome, registered  # noqa: F401
from tests.metrics_rules import check, parse, value
from tests.waiting import eventually


class MeteredMac(Mac):
    """A simulated Mac whose agent serves /metrics on a free loopback port."""

    def __init__(self, root: Path, redis_url: str) -> None:
        super().__init__(root, redis_url)
        self.metrics_port = free_port()
        self.metrics_url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        self.env.update(
            {"ANKLET_AGENT_METRICS_HOST": "127.0.0.1", "ANKLET_AGENT_METRICS_PORT": str(self.metrics_port)}
        )


@pytest.fixture
def metered(tmp_path: Path, redis_server: RedisServer) -> Iterator[MeteredMac]:
    m = MeteredMac(tmp_path, redis_server.url)
    try:
        yield m
    finally:
        m.stop()


def log_lines(mac: Mac) -> list[dict[str, Any]]:
    """The agent's log: JSON lines only (its stderr is a file, not a terminal)."""
    return [json.loads(line) for line in mac.log.read_text().splitlines() if line.strip()]


async def test_metrics_and_logs_after_jobs(metered: MeteredMac, ctl: ControllerProtocol) -> None:  # noqa: F811
    mac = metered
    mac.start()
    await registered(ctl)
    ok = job("metered-ok", "echo hi; exit 0")
    assert await ctl.reserve("mac-1", ok) == "OK"
    assert (await outcome(ctl, ok)).phase == ObservedPhase.SUCCEEDED
    bad = job("metered-bad", "exit 3")
    assert await ctl.reserve("mac-1", bad) == "OK"
    assert (await outcome(ctl, bad)).phase == ObservedPhase.FAILED

    async with httpx.AsyncClient(timeout=10) as http:

        async def scrape() -> Any:
            response = await http.get(mac.metrics_url)
            families = parse(response.text)
            deleted = value(families, "anklet_agent_anka_commands_total", command="delete", result="ok")
            return families if (deleted or 0) >= 2 else None

        families = await eventually(scrape)
    assert check(families, forbidden_values=[ok.uid, ok.vm_name, bad.uid, TEMPLATE, "mac-1"]) == []
    for command in ("clone", "start", "delete", "registry_pull"):
        assert (value(families, "anklet_agent_anka_commands_total", command=command, result="ok") or 0) >= 1
        assert (
            value(families, "anklet_agent_anka_command_duration_seconds_count", command=command) or 0
        ) >= 1
    assert value(families, "anklet_agent_anka_commands_total", command="run", result="error") == 1, "exit 3"
    assert value(families, "anklet_agent_template_pulls_total", result="ok") == 1, "pulled once, then local"
    assert (value(families, "anklet_agent_template_pull_bytes_total") or 0) > 0
    assert value(families, "anklet_agent_vm_slots") == 2
    assert value(families, "anklet_agent_vm_slots_free") == 0, "both still reserved"
    assert value(families, "anklet_agent_vms_running") == 0, "their VMs are gone"
    assert (value(families, "anklet_agent_host_memory_bytes") or 0) > 0
    for d in (ok, bad):
        await ctl.release("mac-1", d.uid, d.attempt)  # as the controller does once it saw the outcome

    async def freed() -> bool:
        async with httpx.AsyncClient(timeout=10) as http:
            text = (await http.get(mac.metrics_url)).text
        return value(parse(text), "anklet_agent_vm_slots_free") == 2

    await eventually(freed)

    lines = log_lines(mac)
    assert all({"ts", "level", "logger", "msg"} <= set(line) for line in lines)
    assert all(line["host"] == "mac-1" for line in lines if line["logger"].startswith("anklet.agent"))
    about_ok = [line for line in lines if line.get("vm") == ok.vm_name]
    assert about_ok, "the worker's lines carry its VM"
    assert all(line["job"] == f"default/{ok.name}" and line["attempt"] == "1" for line in about_ok)


async def test_a_taken_metrics_port_stops_the_agent_with_one_line(metered: MeteredMac) -> None:
    mac = metered
    port = mac.metrics_port
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", port))
        taken.listen()
        mac.start()
        assert mac.process is not None
        assert mac.process.wait(60) == 2
    errors = [line for line in log_lines(mac) if line["level"] == "ERROR"]
    assert len(errors) == 1 and f"cannot serve metrics on 127.0.0.1:{port}" in errors[0]["msg"]


def test_the_controller_refuses_a_bad_metrics_port(tmp_path: Path) -> None:
    result = subprocess.run(
        ["anklet", "controller", "--metrics-port", "70000"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        env={"PATH": str(Path(sys.executable).parent), "HOME": str(tmp_path)},
    )
    assert result.returncode == 2, result.stderr
    assert "metrics_port" in result.stderr
