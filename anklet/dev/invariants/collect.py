"""Thin collectors: read the live system into the plain records of ``model.py``.

Sources: the Kubernetes API (AnkaJobs, their watch stream, Events), Redis (host limits, the
capacity ledger, every Anklet key), each simulated Mac's ``anka`` library and call log
(``ANKA_SIM_HOME``), and the fake GitHub's runner list. Nothing here decides anything; every
reader returns records or raises, and the monitor decides what a failed read means.
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx
import redis.asyncio as aioredis

from anklet import keys, models
from anklet.dev.anka_sim import control
from anklet.dev.invariants.model import (
    CallRecord,
    EventRecord,
    HostRecord,
    JobRecord,
    RedisState,
    ReservationRecord,
    RunnerRecord,
    VMRecord,
)
from anklet.redis_protocol import connect

_MIB = 1024 * 1024
JOBS_PATH = f"/apis/{models.GROUP}/{models.VERSION}/{models.PLURAL}"


@dataclass(frozen=True)
class Target:
    """Where the system under test lives: enough for anyone to point the checker at a stack.

    ``anka_homes`` maps host name → that simulated Mac's ``ANKA_SIM_HOME`` (its library and
    call log); ``github_api`` is the fake GitHub's base URL, None when GitHub is not involved."""

    kube_api: str
    redis_url: str
    anka_homes: Mapping[str, Path] = field(default_factory=dict)
    github_api: str | None = None

    @classmethod
    def from_endpoints(cls, endpoints: Mapping[str, Any], state_dir: Path | None = None) -> Target:
        """From ``anklet dev``'s ``endpoints.json`` (``anka_homes``, or ``hosts`` under ``state_dir``)."""
        homes = endpoints.get("anka_homes")
        if homes is None:
            if state_dir is None:
                raise ValueError("endpoints without anka_homes need the stack's state dir")
            homes = {h: state_dir / "hosts" / h / "anka" for h in endpoints.get("hosts", [])}
        return cls(
            kube_api=str(endpoints["kube_api"]),
            redis_url=str(endpoints["redis_url"]),
            anka_homes={str(h): Path(p) for h, p in homes.items()},
            github_api=endpoints.get("github_api"),
        )

    @classmethod
    def from_file(cls, path: Path) -> Target:
        return cls.from_endpoints(json.loads(path.read_text()), path.parent)


# ----- Kubernetes -------------------------------------------------------------------------------


def job_record(obj: Mapping[str, Any]) -> JobRecord:
    meta = obj.get("metadata") or {}
    status = obj.get("status") or {}
    try:
        rv = int(meta.get("resourceVersion") or 0)
    except ValueError:
        rv = 0
    return JobRecord(
        uid=str(meta.get("uid", "")),
        namespace=str(meta.get("namespace", "default")),
        name=str(meta.get("name", "")),
        phase=str(status.get("phase") or "Pending"),
        reason=str(status.get("reason") or ""),
        message=str(status.get("message") or ""),
        attempts=int(status.get("attempts") or 0),
        host=status.get("host"),
        vm_name=status.get("vmName"),
        resource_version=rv,
    )


async def list_jobs(http: httpx.AsyncClient) -> tuple[str, list[JobRecord]]:
    """Every AnkaJob in every namespace, and the list's resourceVersion (to watch from)."""
    response = await http.get(JOBS_PATH)
    response.raise_for_status()
    body = response.json()
    return str(body["metadata"]["resourceVersion"]), [job_record(o) for o in body.get("items", [])]


async def watch_jobs(
    http: httpx.AsyncClient, rv: str, timeout: int = 30
) -> AsyncIterator[tuple[str, JobRecord]]:
    """Watch events (type, job) after ``rv``, until the server ends the stream.

    Raises ``LookupError`` when ``rv`` is too old (410): the caller lists again."""
    params = {
        "watch": "true",
        "resourceVersion": rv,
        "timeoutSeconds": str(timeout),
        "allowWatchBookmarks": "false",
    }
    async with http.stream("GET", JOBS_PATH, params=params, timeout=timeout + 10) as stream:
        stream.raise_for_status()
        async for line in stream.aiter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("type") == "ERROR":
                raise LookupError(str(event.get("object", {}).get("message", "watch error")))
            if event.get("type") in ("ADDED", "MODIFIED", "DELETED"):
                yield str(event["type"]), job_record(event.get("object") or {})


async def list_events(http: httpx.AsyncClient, namespaces: Iterable[str]) -> list[EventRecord]:
    """Events about AnkaJobs in ``namespaces``."""
    found = []
    for namespace in sorted(set(namespaces)):
        response = await http.get(f"/api/v1/namespaces/{namespace}/events")
        response.raise_for_status()
        for item in response.json().get("items", []):
            involved = item.get("involvedObject") or {}
            if involved.get("kind") != models.KIND:
                continue
            found.append(
                EventRecord(
                    uid=str(involved.get("uid", "")),
                    reason=str(item.get("reason") or ""),
                    message=str(item.get("message") or ""),
                    type=str(item.get("type") or "Normal"),
                )
            )
    return found


# ----- Redis ------------------------------------------------------------------------------------


def redis_client(url: str) -> aioredis.Redis:
    """A client that fails fast: during an injected outage a sample is skipped, not stalled."""
    return connect(url, socket_timeout=1.0, retries=0)


async def read_hosts(client: aioredis.Redis) -> tuple[HostRecord, ...]:
    """Each registered host's limits and its reservations, in one pipeline."""
    names = sorted(cast(set[str], await client.smembers(keys.hosts_index())))
    if not names:
        return ()
    pipe = client.pipeline(transaction=False)
    for name in names:
        pipe.hget(keys.host_info(name), "json")
        pipe.hvals(keys.host_alloc(name))
    raw: list[Any] = await pipe.execute()
    hosts = []
    for i, name in enumerate(names):
        info_json, allocs = raw[2 * i], raw[2 * i + 1]
        if not info_json:
            continue
        info = json.loads(info_json)
        held = tuple(
            ReservationRecord(str(r["uid"]), int(r["attempt"]), int(r["cpu"]), int(r["memory_mib"]))
            for r in (json.loads(a) for a in allocs)
        )
        hosts.append(
            HostRecord(
                name=name,
                vm_slots=int(info.get("vm_slots", 2)),
                cpu=int(info["cpu"]),
                memory_mib=int(info["memory_mib"]),
                overcommit=bool(info.get("overcommit", False)),
                reservations=held,
            )
        )
    return tuple(hosts)


async def read_redis_state(client: aioredis.Redis) -> RedisState:
    """Every ``anklet:*`` key, and which attempts the per-host hashes name."""
    found = sorted([k async for k in client.scan_iter(match=f"{keys.PREFIX}:*", count=1000)])
    hosts = frozenset(cast(set[str], await client.smembers(keys.hosts_index())))
    tables: dict[str, dict[str, dict[str, int]]] = {"alloc": {}, "desired": {}, "observed": {}}
    for host in sorted(hosts):
        for kind, key in (
            ("alloc", keys.host_alloc(host)),
            ("desired", keys.host_desired(host)),
            ("observed", keys.host_observed(host)),
        ):
            raw = cast(Mapping[str, str], await client.hgetall(key))
            if raw:
                tables[kind][host] = {uid: int(json.loads(v).get("attempt", 0)) for uid, v in raw.items()}
    return RedisState(
        keys=tuple(found),
        hosts_index=hosts,
        alloc=tables["alloc"],
        desired=tables["desired"],
        observed=tables["observed"],
    )


# ----- the simulated Macs ---------------------------------------------------------------------------


def read_vms(homes: Mapping[str, Path]) -> tuple[VMRecord, ...]:
    """Every VM in each simulated Mac's library (templates included; the checks skip them)."""
    vms = []
    for host, home in sorted(homes.items()):
        for vm in control.read_state(home).get("vms", {}).values():
            vms.append(
                VMRecord(
                    host=host,
                    name=str(vm.get("name", "")),
                    status=str(vm.get("status", "")),
                    cpu=int(vm.get("cpu_cores") or 0),
                    memory_mib=int(vm.get("ram_size") or 0) // _MIB,
                )
            )
    return tuple(vms)


def read_calls(homes: Mapping[str, Path]) -> tuple[CallRecord, ...]:
    """Every ``anka`` call on each simulated Mac, with start and end times."""
    calls = []
    for host, home in sorted(homes.items()):
        for call in control.read_calls(home):
            start = float(call["ts"])
            duration = call.get("duration")
            calls.append(
                CallRecord(
                    host=host,
                    argv=tuple(str(a) for a in call.get("argv", [])),
                    start=start,
                    end=None if duration is None else start + float(duration),
                    exit=call.get("exit"),
                )
            )
    return tuple(calls)


# ----- GitHub -----------------------------------------------------------------------------------


async def list_runners(http: httpx.AsyncClient, github_api: str) -> tuple[RunnerRecord, ...]:
    """Every runner the fake GitHub knows, in any scope (its control API needs no token)."""
    response = await http.get(f"{github_api.rstrip('/')}/_sim/runners")
    response.raise_for_status()
    return tuple(
        RunnerRecord(
            id=int(r["id"]), name=str(r["name"]), busy=bool(r.get("busy")), status=str(r.get("status", ""))
        )
        for r in response.json()
    )


def now() -> float:
    """Wall-clock seconds: the simulators' call logs use the same clock."""
    return time.time()
