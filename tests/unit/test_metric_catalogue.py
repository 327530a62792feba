"""Every registry's metrics follow the naming rules, and the Grafana dashboard and the README
name only metrics that exist (and the README names all of them)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from prometheus_client.metrics_core import Metric

from anklet.models import AnkaHostSpec, AnkaJob
from anklet.redis_protocol import HostSnapshot
from anklet.wire import HostInfo
from controller.metrics import ControllerMetrics
from host_agent.metrics import AgentMetrics
from plugins.receivers.github.metrics import ReceiverMetrics
from tests.metrics_rules import check, parse, sample_names, without_created

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "manifests" / "grafana" / "anklet-dashboard.json"
METRIC = re.compile(r"\banklet_[a-z0-9_]+\b")


@dataclass
class ControllerView:
    jobs: dict[str, AnkaJob] = field(default_factory=dict)
    host_specs: dict[str, AnkaHostSpec] = field(default_factory=dict)
    fleet: list[HostSnapshot] = field(
        default_factory=lambda: [
            HostSnapshot(
                info=HostInfo(name="mac-1", cpu=8, memory_mib=16384),
                ready=True,
                reservations=(),
                heartbeat=1.0,
            )
        ]
    )


@dataclass
class AgentView:
    vm_slots: int = 2
    vms_running: int = 0
    vms_desired: int = 0
    jobs_active: int = 0


def receiver() -> list[Metric]:
    m = ReceiverMetrics()
    m.webhooks.labels(event="workflow_job", action="queued", result="created").inc()
    m.webhook_seconds.labels(result="created").observe(0.01)
    m.kube_errors.inc()
    m.redelivery_scans.labels(result="ok").inc()
    m.redeliveries.inc()
    m.redelivery_last_success.set(1.0)
    return parse(m.exposition().decode())


def controller() -> list[Metric]:
    m = ControllerMetrics()
    m.bind(ControllerView())
    return parse(m.exposition().decode())


def agent(tmp: Path) -> list[Metric]:
    m = AgentMetrics(disk_path=tmp)
    m.bind(AgentView())
    m.anka_command(["anka", "-j", "list"], 0.1, "ok")
    return parse(m.exposition().decode())


def every_family(tmp: Path) -> list[Metric]:
    return without_created([*controller(), *agent(tmp), *receiver()])


def test_the_receiver_follows_the_naming_rules() -> None:
    families = receiver()
    assert check(families) == []
    counters = {f.name for f in families if f.type == "counter"}
    assert counters == {
        "anklet_receiver_webhooks",
        "anklet_receiver_kube_errors",
        "anklet_receiver_redelivery_scans",
        "anklet_receiver_redeliveries_requested",
    }


def test_metric_names_are_unique_across_the_processes(tmp_path: Path) -> None:
    names = [f.name for f in every_family(tmp_path)]
    assert len(names) == len(set(names))


def _exprs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["expr"]] if isinstance(node.get("expr"), str) else []
        return found + [e for value in node.values() for e in _exprs(value)]
    if isinstance(node, list):
        return [e for item in node for e in _exprs(item)]
    return []


def test_the_dashboard_queries_only_metrics_that_exist(tmp_path: Path) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = _exprs(dashboard)
    assert len(exprs) >= 20
    known = sample_names(every_family(tmp_path))
    unknown = {name for expr in exprs for name in METRIC.findall(expr)} - known
    assert not unknown, f"the dashboard queries metrics no registry has: {sorted(unknown)}"
    used = {name for expr in exprs for name in METRIC.findall(expr)}
    families = {f.name for f in every_family(tmp_path)}
    shown = {f for f in families if any(n == f or n.startswith(f + "_") for n in used)}
    assert len(shown) >= 0.8 * len(families), f"not on the dashboard: {sorted(families - shown)}"
    panel_ids = [p["id"] for p in dashboard["panels"]]
    assert len(panel_ids) == len(set(panel_ids))


def test_the_readme_lists_every_metric_and_nothing_else(tmp_path: Path) -> None:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Metrics, events and logs", 1)[1].split("\n## ", 1)[0]
    listed = {name for name in METRIC.findall(section) if not name.endswith("_")}  # not `anklet_host_*`
    families = {f.name + ("_total" if f.type == "counter" else "") for f in every_family(tmp_path)}
    assert families - listed == set(), "metrics missing from the README"
    assert listed - sample_names(every_family(tmp_path)) == set(), (
        "the README names metrics that do not exist"
    )
