"""JSON shapes of VMs as ``list`` and ``show`` print them (anka-cli.md §2.4, §2.5)."""

from __future__ import annotations

import time
from typing import Any

from anklet.dev.anka_sim.config import SimConfig
from anklet.dev.anka_sim.state import RUNNING, VM

GIB = 1024**3
GUEST_HOME = "/Users/anka"
MOUNT_ROOT = "/Volumes/My Shared Files"


def iso(ts: float | None, precision: str = "s") -> str | None:
    """ISO 8601 UTC with ``Z``; microseconds only when configured (Anka 2 style)."""
    if ts is None:
        return None
    base = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ts))
    if precision == "us":
        base += f".{int((ts % 1) * 1_000_000):06d}"
    return base + "Z"


def list_row(vm: VM, config: SimConfig) -> dict[str, Any]:
    """The default ``list`` columns; ``version`` is omitted for untagged VMs."""
    row: dict[str, Any] = {
        "name": vm.name,
        "uuid": vm.uuid,
        "creation_date": iso(vm.creation_date, config.date_precision),
    }
    if vm.version:
        row["version"] = vm.version
    row["status"] = vm.status
    row["access_date"] = iso(vm.access_date, config.date_precision)
    return row


def show_body(vm: VM, config: SimConfig, now: float) -> dict[str, Any]:
    """Everything ``show <vm>`` prints; run-time keys only while running, ``ip`` empty until up."""
    precision = config.date_precision
    body: dict[str, Any] = {"uuid": vm.uuid, "name": vm.name, "description": ""}
    if vm.version:
        body["version"] = vm.version
    body.update(
        creation_date=iso(vm.creation_date, precision),
        cpu_cores=vm.cpu_cores,
        cpu_frequency=0,
        cpu_htt=False,
        arch=2 if config.arch == "arm64" else 1,
        ram=f"{vm.ram_size // GIB}G",
        ram_size=vm.ram_size,
        frame_buffers=1,
        hard_drive=vm.hard_drive,
        image_size=vm.image_size,
        encrypted=False,
        addons_version=f"{config.anka_version}.{config.build}",
        status=vm.status,
        access_date=iso(vm.access_date, precision),
    )
    if vm.start_date is not None:
        body["start_date"] = iso(vm.start_date, precision)
    if vm.stop_date is not None:
        body["stop_date"] = iso(vm.stop_date, precision)
    if vm.status == RUNNING:
        body.update(
            ip=vm.ip if vm.ip_visible(now) else "",
            mac=vm.mac,
            hostif="vmenet0",
            pid=vm.pid,
            vnc_port=5900 + (vm.boot_id % 100),
            vnc_password="admin",
            vnc_connection_string=f"vnc://:admin@127.0.0.1:{5900 + vm.boot_id % 100}",
            port_forwarding=[],
            time_sync=True,
        )
    return body


def network_body(vm: VM, now: float) -> dict[str, Any]:
    return {
        "mode": "shared",
        "controller": "virtio-net",
        "ip": vm.ip if vm.ip_visible(now) else "",
        "mac": vm.mac,
        "hostif": "vmenet0" if vm.status == RUNNING else "",
    }


def disk_body(vm: VM) -> dict[str, Any]:
    return {"hard_drive": vm.hard_drive, "image_size": vm.image_size, "data_size": vm.image_size}


def mount_rows(vm: VM) -> list[dict[str, Any]]:
    return [
        {
            "fsid": m["fsid"],
            "host_path": m["host_path"],
            "guest_folder_name": m["name"],
            "guest_path": f"{MOUNT_ROOT}/{m['name']}",
        }
        for m in vm.mounts
    ]
