"""The host agent's metrics: command labels from a closed set, and a well-named exposition."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import pytest

from host_agent.metrics import AgentMetrics, command_label, slots_free
from tests.metrics_rules import check, parse, value

VM = "anklet-vm-6f1c1c7e-3b7a-4e0e-9a43-2d1f0b7a9c11-a1"
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"


@pytest.mark.parametrize(
    ("argv", "label"),
    [
        (["anka", "-j", "clone", "--tag", "2c4r", TEMPLATE, VM], "clone"),
        (["anka", "run", VM, "bash", "-l", "-s"], "run"),
        (["anka", "-j", "delete", "--yes", VM], "delete"),
        (["anka", "-j", "registry", "pull", TEMPLATE, "--tag", "x"], "registry_pull"),
        (["anka", "-j", "registry", "--remote", "https://registry:8089", "show", TEMPLATE], "registry_show"),
        (["anka", "-j", "registry", "--remote", "r", "frobnicate"], "registry_other"),
        (["anka", "-j", "pull", TEMPLATE, "--check-download-size"], "pull_check_download_size"),
        (["anka", "-j", "license", "show"], "license"),
        (["/opt/bin/anka", "-j", "rm", VM], "other"),
        (["anka"], "other"),
    ],
)
def test_command_label(argv: list[str], label: str) -> None:
    assert command_label(argv) == label


@dataclass
class View:
    vm_slots: int = 2
    vms_running: int = 1
    vms_desired: int = 1
    jobs_active: int = 1


def test_slots_free_never_negative() -> None:
    assert slots_free(View(vm_slots=2, vms_desired=1)) == 1
    assert slots_free(View(vm_slots=2, vms_desired=3)) == 0


def test_the_exposition_parses_and_is_well_named(tmp_path: Path) -> None:
    m = AgentMetrics(disk_path=tmp_path)
    m.bind(View())
    m.anka_command(["anka", "-j", "clone", TEMPLATE, VM], 1.5, "ok")
    m.anka_command(["anka", "-j", "start", VM], 0.2, "error")
    m.anka_command(["anka", "run", VM, "bash"], 3.0, "timeout")
    m.anka_command(["anka", "-j", "show", VM], 0.1, "weird")
    m.pulled("ok", 5 * 2**30)
    m.pulled("not_found", 0)
    m.evicted()
    families = parse(m.exposition().decode())
    assert check(families, forbidden_values=[VM, TEMPLATE]) == []
    assert value(families, "anklet_agent_anka_commands_total", command="start", result="error") == 1
    assert value(families, "anklet_agent_anka_commands_total", command="show", result="error") == 1
    assert value(families, "anklet_agent_anka_command_duration_seconds_count", command="clone") == 1
    assert value(families, "anklet_agent_template_pulls_total", result="ok") == 1
    assert value(families, "anklet_agent_template_pulls_total", result="failed") == 0
    assert value(families, "anklet_agent_template_pull_bytes_total") == 5 * 2**30
    assert value(families, "anklet_agent_template_evictions_total") == 1
    assert value(families, "anklet_agent_vm_slots_free") == 1
    assert value(families, "anklet_agent_vms_running") == 1
    cpu = value(families, "anklet_agent_host_cpu_usage_ratio")
    assert cpu is not None and 0.0 <= cpu <= 1.0
    memory = value(families, "anklet_agent_host_memory_bytes")
    available = value(families, "anklet_agent_host_memory_available_bytes")
    assert memory and available is not None and 0 < available <= memory
    disk = value(families, "anklet_agent_host_disk_bytes")
    free = value(families, "anklet_agent_host_disk_free_bytes")
    assert disk and free is not None and 0 <= free <= disk


def test_before_the_agent_registers_the_host_figures_are_there(tmp_path: Path) -> None:
    families = parse(AgentMetrics(disk_path=tmp_path).exposition().decode())
    assert check(families) == []
    assert value(families, "anklet_agent_host_cpu_cores")
    assert value(families, "anklet_agent_vm_slots") is None
