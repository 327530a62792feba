"""The host agent's Prometheus metrics, in a registry of its own (`anklet agent --metrics-port`).

- Anka commands: one histogram of durations and one counter of outcomes per command, fed from
  the single place that runs the binary (`AnkaCLI._execute`), so no call can escape them.
  `command` is the Anka verb from a closed set (`registry pull` → `registry_pull`; anything
  else → `other`); VM names, templates and arguments are never labels. For `run`, `error`
  includes the workload's own non-zero exits.
- Templates: pulls by result, bytes downloaded (Anka's own `--check-download-size` figure for
  the pull), evictions.
- Gauges read at scrape time: the host's CPU, memory and disk (psutil; disk = the volume of the
  agent's state directory, where a standard Mac keeps Anka's library), the VM slots and how many
  are free, the Anklet VMs running as the last `anka list` showed, and the job attempts in work.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Protocol

import psutil
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

#: Anka verbs (anka-cli.md); every command label is one of these, `registry_<verb>` or `other`.
COMMANDS = frozenset(
    {"version", "license", "list", "show", "clone", "start", "stop", "suspend", "delete", "run", "cp",
     "mount", "pull", "registry"}
)  # fmt: skip
REGISTRY_VERBS = frozenset({"list", "show", "pull", "describe"})
RESULTS = ("ok", "error", "timeout", "cancelled")
PULL_RESULTS = ("ok", "failed", "not_found")
_OPTIONS_WITH_VALUES = frozenset({"--remote", "--tag", "--mount"})

_COMMAND_BUCKETS = (
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
    30.0,
    60.0,
    120.0,
    300.0,
    900.0,
    1800.0,
    3600.0,
)


def command_label(argv: Sequence[str]) -> str:
    """The Anka verb of a command line: `anka -j registry --remote r pull x` → registry_pull."""
    words = [w for w in argv[1:] if w != "-j"]
    if not words or words[0] not in COMMANDS:
        return "other"
    verb = words[0]
    if verb == "pull" and "--check-download-size" in words:
        return "pull_check_download_size"
    if verb != "registry":
        return verb
    rest = iter(words[1:])
    for word in rest:
        if word in _OPTIONS_WITH_VALUES:
            next(rest, None)
            continue
        if word.startswith("-"):
            continue
        return f"registry_{word}" if word in REGISTRY_VERBS else "registry_other"
    return "registry_other"


class AgentView(Protocol):
    """What the scrape-time gauges read from the agent."""

    @property
    def vm_slots(self) -> int: ...
    @property
    def vms_running(self) -> int: ...
    @property
    def vms_desired(self) -> int: ...
    @property
    def jobs_active(self) -> int: ...


def slots_free(view: AgentView) -> int:
    """VM slots not held by a desired VM (never negative: an orphan VM may briefly exceed)."""
    return max(0, view.vm_slots - view.vms_desired)


class _HostCollector(Collector):
    def __init__(self, owner: AgentMetrics) -> None:
        self._owner = owner

    def describe(self) -> Iterable[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        owner = self._owner
        yield GaugeMetricFamily(
            "anklet_agent_host_cpu_cores", "Logical CPU cores of the Mac.", value=psutil.cpu_count() or 0
        )
        yield GaugeMetricFamily(
            "anklet_agent_host_cpu_usage_ratio",
            "CPU busy, 0 to 1, averaged since the previous scrape.",
            value=psutil.cpu_percent(interval=None) / 100.0,
        )
        memory = psutil.virtual_memory()
        yield GaugeMetricFamily(
            "anklet_agent_host_memory_bytes", "Physical memory of the Mac.", value=memory.total
        )
        yield GaugeMetricFamily(
            "anklet_agent_host_memory_available_bytes",
            "Memory available to new processes and VMs without swapping.",
            value=memory.available,
        )
        with contextlib.suppress(OSError):
            disk = psutil.disk_usage(str(owner.disk_path))
            yield GaugeMetricFamily(
                "anklet_agent_host_disk_bytes",
                "Size of the volume holding the agent's state.",
                value=disk.total,
            )
            yield GaugeMetricFamily(
                "anklet_agent_host_disk_free_bytes", "Free space on that volume.", value=disk.free
            )
        view = owner.view
        if view is None:
            return
        yield GaugeMetricFamily(
            "anklet_agent_vm_slots", "VMs this host may run at once.", value=view.vm_slots
        )
        yield GaugeMetricFamily(
            "anklet_agent_vm_slots_free", "VM slots no desired VM holds.", value=slots_free(view)
        )
        yield GaugeMetricFamily(
            "anklet_agent_vms_running",
            "Anklet's VMs running, as the last `anka list` showed.",
            value=view.vms_running,
        )
        yield GaugeMetricFamily(
            "anklet_agent_jobs_active", "Job attempts the agent is working on.", value=view.jobs_active
        )


class AgentMetrics:
    """Every agent series, in one registry; `bind` the agent for the VM gauges."""

    def __init__(self, *, disk_path: Path) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.disk_path = disk_path
        self.view: AgentView | None = None
        r = self.registry
        self.anka_duration = Histogram(
            "anklet_agent_anka_command_duration_seconds",
            "Wall time of `anka` commands, by command.",
            ["command"],
            registry=r,
            buckets=_COMMAND_BUCKETS,
        )
        self.anka_commands = Counter(
            "anklet_agent_anka_commands",
            "`anka` commands by command and result (ok, error: non-zero exit, timeout, cancelled).",
            ["command", "result"],
            registry=r,
        )
        self.template_pulls = Counter(
            "anklet_agent_template_pulls",
            "Template pulls (`anka registry pull`) by result (ok, failed, not_found).",
            ["result"],
            registry=r,
        )
        self.template_pull_bytes = Counter(
            "anklet_agent_template_pull_bytes",
            "Bytes downloaded by successful template pulls (Anka's download size before the pull).",
            registry=r,
        )
        self.template_evictions = Counter(
            "anklet_agent_template_evictions",
            "Templates deleted to make room for a pull (least recently used first).",
            registry=r,
        )
        for result in PULL_RESULTS:
            self.template_pulls.labels(result=result)
        r.register(_HostCollector(self))
        psutil.cpu_percent(interval=None)  # the first reading only starts the measurement

    def bind(self, view: AgentView) -> None:
        self.view = view

    # ----- hooks for the driver and the template store ------------------------------------------
    def anka_command(self, argv: Sequence[str], seconds: float, result: str) -> None:
        command = command_label(argv)
        self.anka_duration.labels(command=command).observe(seconds)
        self.anka_commands.labels(command=command, result=result if result in RESULTS else "error").inc()

    def pulled(self, result: str, downloaded: int) -> None:
        self.template_pulls.labels(result=result if result in PULL_RESULTS else "failed").inc()
        if result == "ok" and downloaded > 0:
            self.template_pull_bytes.inc(downloaded)

    def evicted(self) -> None:
        self.template_evictions.inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
