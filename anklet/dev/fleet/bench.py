"""One benchmark row: a fleet of simulated Macs, a burst of AnkaJobs, and what it cost.

The protocol of a row (hosts H, pending P):

1. A fresh `redis-server`; H simulated hosts in `agent_procs` processes (production agents over
   in-process Anka models, templates already on disk, workloads held until released); the
   controller (real `Reconciler`, Kubernetes stand-in) in its own process. Wait until the
   controller sees all H hosts ready, then measure the idle Redis command rate (heartbeats and
   resyncs of H agents) for a moment.
2. Burst: P AnkaJobs are created back to back. Every job that fits is placed, reserved and
   started; the rest stay Pending with an Unschedulable reason. The phase ends when every job
   is accounted for, the controller has been quiet for a moment and every placed job's VM has
   seen its first Anka command. Measured here: throughput, scheduling and dispatch latency,
   Redis commands per placed job, the controller's CPU time.
3. Hand-off (only when a backlog remains): `handoff` running workloads end, `handoff_rate` per
   second at random hosts; each freed slot should go to the head of the queue. Measured: time
   from a workload's end to the first Anka command of the job that took its slot on that host.

Nothing here asserts anything about time: it measures and reports.
"""

from __future__ import annotations

import math
import os
import platform
import tempfile
import time
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis

from anklet.dev.fleet.anka_model import ModelTemplate
from anklet.dev.fleet.control_plane import JobKind
from anklet.dev.fleet.hosts import CONNECTIONS_PER_HOST, FleetSettings, HostSpec
from anklet.dev.fleet.procs import Child
from anklet.dev.redis_server import RedisServer

XCODE = ModelTemplate(
    uuid="84266873-da90-4e0d-903b-ed0233471f9f", name="macos-15-xcode-16", tag="6c14r", cpu=4, memory_mib=8192
)
SMALL = ModelTemplate(
    uuid="5d6c8a10-3f4e-4b8e-9a53-0c1d2e3f4a5b", name="macos-15-small", tag="v1", cpu=2, memory_mib=4096
)

# Every pair of these fits one 8-core / 16 GiB Mac, so H hosts hold exactly 2H jobs: the rows
# measure the scheduler, not bin-packing luck. 15% carry no `resources` and are sized from the
# template tag the hosts report (the path GitHub jobs take).
MIX: tuple[JobKind, ...] = (
    JobKind(0.45, XCODE.uuid, XCODE.tag, (2, 4096)),
    JobKind(0.20, XCODE.uuid, XCODE.tag, (3, 6144)),
    JobKind(0.10, SMALL.uuid, SMALL.tag, (4, 8192)),
    JobKind(0.10, SMALL.name, SMALL.tag, (2, 2048)),
    JobKind(0.15, XCODE.uuid, XCODE.tag, None),
)


@dataclass(frozen=True)
class Scenario:
    hosts: int
    pending: int
    agent_procs: int = 1
    rate: float | None = None
    handoff: int = 200
    handoff_rate: float = 100.0
    # The idle Redis rate (heartbeats, resyncs) is measured over one agent resync period, after
    # the controller's start-up writes (AnkaHosts, host configs) have settled.
    settle: float = 3.0
    idle_window: float = 10.0
    seed: int = 1


@dataclass(frozen=True)
class Row:
    hosts: int
    pending: int
    placed: int
    kube: str
    throughput: float
    sched_p50: float
    sched_p99: float
    dispatch_p50: float
    dispatch_p99: float
    handoff_n: int
    handoff_p50: float | None
    handoff_p99: float | None
    cmds_per_job: float
    gross_cmds_per_job: float
    idle_cmds_per_s: float
    redis_usec_per_job: float
    ctl_cpu: float
    ctl_cpu_standin: float
    ctl_peak_rss_mib: float
    agents_cpu: float
    settled: bool
    wall: float


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100); NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), round(q / 100 * len(ordered) + 0.5)))
    return ordered[rank - 1]


def commandstats(client: redis.Redis) -> tuple[int, int]:
    """(calls, usec) summed over every command type, script-internal calls included."""
    info: Mapping[str, Any] = client.info("commandstats")
    calls = sum(int(v["calls"]) for v in info.values())
    usec = sum(int(v["usec"]) for v in info.values())
    return calls, usec


def machine() -> dict[str, str]:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    load = ", ".join(f"{x:.2f}" for x in os.getloadavg())
    return {
        "cpus": str(os.cpu_count()),
        "cpu_model": model,
        "python": platform.python_version(),
        "kernel": platform.release(),
        "load_at_start": load,
    }


def _fleet(sc: Scenario) -> list[list[HostSpec]]:
    specs = [HostSpec(name=f"mac-{i:04d}") for i in range(1, sc.hosts + 1)]
    return [specs[i :: sc.agent_procs] for i in range(sc.agent_procs)]


def _wait(what: str, probe: Any, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(interval)
    print(f"  ! {what}: not reached within {timeout:.0f} s", flush=True)
    return False


def run_row(sc: Scenario, workdir: Path, *, timeout: float = 240.0) -> tuple[Row, dict[str, Any]]:
    """Run one scenario end to end; every process it starts is stopped before it returns."""
    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    server = RedisServer(workdir / "redis").start()
    children: list[Child] = []
    try:
        r = redis.Redis.from_url(server.url, decode_responses=True)
        needed = sc.hosts * CONNECTIONS_PER_HOST + 512
        maxclients = int(str(r.config_get("maxclients")["maxclients"]))
        if maxclients < needed:
            r.config_set("maxclients", needed)
        settings = FleetSettings(local=(XCODE, SMALL), registry=(XCODE, SMALL), hold=True, seed=sc.seed)
        agents = []
        for i, share in enumerate(_fleet(sc)):
            child = Child(
                "agents",
                {
                    "redis_url": server.url,
                    "hosts": share,
                    "settings": settings,
                    "state_dir": str(workdir / "hosts"),
                },
                workdir / f"agents-{i}.log",
            )
            children.append(child)
            agents.append(child)
        for child in agents:
            child.call("start", timeout=timeout)
        ctl = Child(
            "controller", {"redis_url": server.url, "resync_seconds": 30.0}, workdir / "controller.log"
        )
        children.append(ctl)
        ctl.call("start", timeout=timeout, hosts=sc.hosts)
        time.sleep(sc.settle)

        calls0, usec0 = commandstats(r)
        idle0 = time.time()
        time.sleep(sc.idle_window)
        calls1, usec1 = commandstats(r)
        idle_rate = (calls1 - calls0) / (time.time() - idle0)
        idle_usec_rate = (usec1 - usec0) / (time.time() - idle0)

        u0 = ctl.call("usage")
        a0 = sum(a.call("usage")["cpu"] for a in agents)
        cs0, us0 = commandstats(r)
        t0 = time.time()
        ctl.call("submit", timeout=timeout, count=sc.pending, mix=MIX, seed=sc.seed, rate=sc.rate)
        state = ctl.call("wait_settled", timeout=timeout + 10, settle_timeout=timeout)
        placed = state["placed"]
        dispatched = _wait(
            "every placed job dispatched",
            lambda: sum(a.call("dispatched") for a in agents) >= placed,
            timeout,
        )
        t1 = time.time()
        cs1, us1 = commandstats(r)
        u1 = ctl.call("usage")
        a1 = sum(a.call("usage")["cpu"] for a in agents)

        backlog = sc.pending - placed
        freed = 0
        th0 = time.time()
        if backlog > 0 and sc.handoff > 0:
            count = min(sc.handoff, placed)
            for a in agents:
                a.conn.send(
                    ("finish", {"count": count // len(agents), "rate": sc.handoff_rate / len(agents)})
                )
            for a in agents:
                if not a.conn.poll(timeout):
                    raise TimeoutError("finish gave no answer")
                freed += int(a.conn.recv()[1])
            expected = placed + min(freed, backlog)
            _wait("hand-off dispatched", lambda: sum(a.call("dispatched") for a in agents) >= expected, 60.0)
            ctl.call("wait_settled", timeout=70.0, settle_timeout=60.0)

        report = ctl.call("report", timeout=timeout)
        host_reports = [a.call("report", timeout=timeout) for a in agents]
    finally:
        for child in reversed(children):
            child.close()
        server.stop()

    jobs = report["jobs"]
    created = {j["uid"]: j["created"] for j in jobs}
    sched = {j["uid"]: j["scheduled"] for j in jobs if j["scheduled"] is not None and j["scheduled"] <= t1}
    vms = [vm for rep in host_reports for vm in rep["vms"]]
    first: dict[str, float] = {}
    for vm in vms:
        if vm["first_command"] <= t1:
            first[vm["uid"]] = min(first.get(vm["uid"], vm["first_command"]), vm["first_command"])
    sched_ms = [1000 * (ts - created[uid]) for uid, ts in sched.items()]
    disp_ms = [1000 * (ts - created[uid]) for uid, ts in first.items() if uid in created]
    span = (max(sched.values()) - min(created.values())) if sched else float("nan")
    handoff_ms = _handoff(vms, th0) if freed else []
    net_calls = (cs1 - cs0) - idle_rate * (t1 - t0)
    row = Row(
        hosts=sc.hosts,
        pending=sc.pending,
        placed=len(sched),
        kube="stand-in",
        throughput=len(sched) / span if sched and span > 0 else float("nan"),
        sched_p50=percentile(sched_ms, 50),
        sched_p99=percentile(sched_ms, 99),
        dispatch_p50=percentile(disp_ms, 50),
        dispatch_p99=percentile(disp_ms, 99),
        handoff_n=len(handoff_ms),
        handoff_p50=percentile(handoff_ms, 50) if handoff_ms else None,
        handoff_p99=percentile(handoff_ms, 99) if handoff_ms else None,
        cmds_per_job=net_calls / max(1, len(sched)),
        gross_cmds_per_job=(cs1 - cs0) / max(1, len(sched)),
        idle_cmds_per_s=idle_rate,
        redis_usec_per_job=((us1 - us0) - idle_usec_rate * (t1 - t0)) / max(1, len(sched)),
        ctl_cpu=u1["cpu"] - u0["cpu"],
        ctl_cpu_standin=u1["standin_cpu"] - u0["standin_cpu"],
        ctl_peak_rss_mib=report["usage"]["peak_rss_mib"],
        agents_cpu=a1 - a0,
        settled=bool(state["settled"]) and dispatched,
        wall=time.monotonic() - started,
    )
    detail = {
        "scenario": sc.__dict__,
        "status_writes": report["status_writes"],
        "events": report["events"],
        "snapshot_reads": report["snapshot_reads"],
        "slow_handoffs": _slow_handoffs(vms, th0, jobs) if freed else [],
        "peaks": {k: v for rep in host_reports for k, v in rep["peaks"].items()},
        "unaccounted": [j["name"] for j in jobs if j["host"] is None and j["reason"] != "Unschedulable"],
    }
    return row, detail


def _slow_handoffs(
    vms: Sequence[Mapping[str, Any]], since: float, jobs: Sequence[Mapping[str, Any]], over_ms: float = 5000
) -> list[dict[str, Any]]:
    """The hand-offs slower than `over_ms`, with what happened on their host (to find stalls)."""
    created = {j["uid"]: j for j in jobs}
    out = []
    by_host: dict[str, list[Mapping[str, Any]]] = defaultdict(list)
    for vm in vms:
        by_host[vm["host"]].append(vm)
    for host, host_vms in by_host.items():
        ends = sorted(v["run_ended"] for v in host_vms if (v["run_ended"] or 0.0) >= since)
        starts = sorted((v["first_command"], v["uid"]) for v in host_vms if v["first_command"] >= since)
        for end in ends:
            later = [s for s in starts if s[0] >= end]
            if later and 1000 * (later[0][0] - end) > over_ms:
                job = created.get(later[0][1], {})
                out.append({"host": host, "ended": end, "next_first_command": later[0][0],
                            "next_job": job.get("name"), "next_created": job.get("created"),
                            "next_scheduled": job.get("scheduled")})  # fmt: skip
    return out


def _handoff(vms: Sequence[Mapping[str, Any]], since: float) -> list[float]:
    """Per host, pair each workload that ended after `since` with the next job dispatched there."""
    ended: dict[str, list[float]] = defaultdict(list)
    began: dict[str, list[float]] = defaultdict(list)
    for vm in vms:
        if vm["run_ended"] is not None and vm["run_ended"] >= since:
            ended[vm["host"]].append(vm["run_ended"])
        if vm["first_command"] >= since:
            began[vm["host"]].append(vm["first_command"])
    out = []
    for host, ends in ended.items():
        starts = sorted(began.get(host, []))
        for end in sorted(ends):
            later = [s for s in starts if s >= end]
            if later:
                out.append(1000 * (later[0] - end))
                starts.remove(later[0])
    return out


def _fmt(value: float | None, digits: int = 0) -> str:
    if value is None or math.isnan(value):
        return "–"
    return f"{value:,.{digits}f}"


def table(rows: Sequence[Row]) -> str:
    """The benchmark table as Markdown."""
    head = (
        "| hosts | pending | placed | jobs placed/s | sched p50 / p99 ms | dispatch p50 / p99 ms "
        "| hand-off p50 / p99 ms | Redis cmds/job | ctl CPU s | ctl peak RSS MiB |"
    )
    lines = [head, "|" + "---:|" * 10]
    for r in rows:
        handoff = f"{_fmt(r.handoff_p50)} / {_fmt(r.handoff_p99)}" if r.handoff_n else "–"
        flag = "" if r.settled else " (!)"
        lines.append(
            f"| {r.hosts:,} | {r.pending:,} | {r.placed:,}{flag} | {_fmt(r.throughput)} "
            f"| {_fmt(r.sched_p50)} / {_fmt(r.sched_p99)} | {_fmt(r.dispatch_p50)} / {_fmt(r.dispatch_p99)} "
            f"| {handoff} | {_fmt(r.cmds_per_job, 1)} | {_fmt(r.ctl_cpu, 2)} | {_fmt(r.ctl_peak_rss_mib)} |"
        )
    return "\n".join(lines)


def default_workdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="anklet-bench-"))
