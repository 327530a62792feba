"""`anklet hosts …`: list, cordon, uncordon and drain Macs through their AnkaHost objects.

Works against any cluster (kubeconfig or in-cluster) and the dev stack alike; a drain cordons
the host and then follows its AnkaHost with a watch until no VM is left, printing progress.
"""

from __future__ import annotations

import json
import sys
import time
from typing import Any, TextIO

import httpx

from anklet import models

_HOSTS = f"/apis/{models.GROUP}/{models.VERSION}/{models.HOST_PLURAL}"


class HostsError(RuntimeError):
    pass


def client(kubeconfig: str | None) -> httpx.Client:
    from controller.kube import load_connection

    conn = load_connection(kubeconfig)
    headers = {"Accept": "application/json"}
    if conn.token:
        headers["Authorization"] = f"Bearer {conn.token}"
    verify: bool | str = (not conn.insecure) and (conn.ca_path or True)
    cert = (conn.cert_path, conn.key_path) if conn.cert_path and conn.key_path else None
    return httpx.Client(base_url=conn.server, headers=headers, verify=verify, cert=cert, timeout=30.0)


def _check(response: httpx.Response, what: str) -> dict[str, Any]:
    if response.status_code == 404:
        raise HostsError(f"{what}: not found")
    if response.status_code >= 400:
        raise HostsError(f"{what}: the API answered {response.status_code}: {response.text[:300]}")
    body: dict[str, Any] = response.json()
    return body


def list_hosts(http: httpx.Client, out: TextIO = sys.stdout) -> int:
    items = _check(http.get(_HOSTS), "listing AnkaHosts").get("items", [])
    rows = [("NAME", "READY", "CORDONED", "VMS", "CPU", "MEMORY", "ANKA", "JOBS")]
    for item in sorted(items, key=lambda i: i["metadata"]["name"]):
        s, spec = item.get("status") or {}, item.get("spec") or {}
        rows.append(
            (
                item["metadata"]["name"],
                str(s.get("ready", False)),
                str(spec.get("unschedulable", False)),
                s.get("vms", "-"),
                s.get("cpu", "-"),
                s.get("memory", "-"),
                s.get("ankaVersion", "-"),
                str(len(s.get("jobs", []))),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip(), file=out)
    return 0


def set_cordon(http: httpx.Client, name: str, cordoned: bool, out: TextIO = sys.stdout) -> int:
    _check(
        http.patch(
            f"{_HOSTS}/{name}",
            json={"spec": {"unschedulable": cordoned}},
            headers={"Content-Type": "application/merge-patch+json"},
        ),
        f"ankahost/{name}",
    )
    print(f"ankahost/{name} {'cordoned' if cordoned else 'uncordoned'}", file=out)
    return 0


def drain(http: httpx.Client, name: str, *, timeout: float, out: TextIO = sys.stdout) -> int:
    """Cordon, then follow the host until its last VM is gone (or the timeout passes)."""
    set_cordon(http, name, True, out)
    deadline = time.monotonic() + timeout
    host = _check(http.get(f"{_HOSTS}/{name}"), f"ankahost/{name}")
    last = None
    while True:
        used = ((host.get("status") or {}).get("allocated") or {}).get("vmSlots", 0)
        jobs = (host.get("status") or {}).get("jobs", [])
        if used != last:
            print(f"ankahost/{name}: {used} VM(s) left {jobs}", file=out)
            last = used
        if used == 0:
            print(f"ankahost/{name} drained", file=out)
            return 0
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            print(f"ankahost/{name}: still {used} VM(s) after {timeout:.0f} s", file=out)
            return 1
        host = _next_version(http, name, host, remaining) or host


def _next_version(
    http: httpx.Client, name: str, host: dict[str, Any], remaining: float
) -> dict[str, Any] | None:
    params = {
        "watch": "true",
        "fieldSelector": f"metadata.name={name}",
        "resourceVersion": host["metadata"].get("resourceVersion", "0"),
        "timeoutSeconds": str(max(1, min(30, int(remaining)))),
    }
    with http.stream("GET", _HOSTS, params=params, timeout=remaining + 5) as stream:
        for line in stream.iter_lines():
            if not line.strip():
                continue
            event = json.loads(line)
            if event.get("type") in ("ADDED", "MODIFIED"):
                obj: dict[str, Any] = event["object"]
                return obj
    return None
