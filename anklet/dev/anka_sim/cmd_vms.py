"""Read-only views of the library: ``list`` and ``show`` (anka-cli.md §2.4, §2.5)."""

from __future__ import annotations

import time
from typing import Any

from anklet.dev.anka_sim.args import Parsed
from anklet.dev.anka_sim.context import Ctx
from anklet.dev.anka_sim.output import Reply, SimError, not_found
from anklet.dev.anka_sim.state import FAILED, RUNNING, STOPPED, SUSPENDED, VM
from anklet.dev.anka_sim.views import disk_body, list_row, mount_rows, network_body, show_body


def list_cmd(ctx: Ctx, parsed: Parsed) -> Reply:
    ctx.pause("list")
    fields = [f for raw in parsed.values("field") for f in raw.split(",") if f]
    columns = [f for f in fields if "=" not in f]
    filters = [tuple(f.split("=", 1)) for f in fields if "=" in f]
    now = time.time()
    with ctx.store.read() as state:
        if parsed.positionals:
            vms: list[VM] = []
            for ref in parsed.positionals:
                vm = state.find(ref)
                if vm is None:
                    raise not_found(ref)
                vms.append(vm)
        else:
            vms = sorted(state.vms.values(), key=lambda v: (v.creation_date, v.name))
    if parsed.flag("running"):
        vms = [vm for vm in vms if vm.status == RUNNING]
    if parsed.flag("stopped"):
        vms = [vm for vm in vms if vm.status in (STOPPED, SUSPENDED)]
    rows = []
    for vm in vms:
        full = {**show_body(vm, ctx.config, now), **list_row(vm, ctx.config)}
        full.setdefault("ip", "")
        full.setdefault("vnc_port", 0)
        if not all(_filter_ok(full, key, wanted) for key, wanted in filters):
            continue
        rows.append({c: full.get(c) for c in columns} if columns else list_row(vm, ctx.config))
    return Reply(rows)


def _filter_ok(row: dict[str, Any], key: str, wanted: str) -> bool:
    """3.7 filters: ``name`` matches a substring, everything else exactly."""
    actual = str(row.get(key, ""))
    return wanted in actual if key == "name" else actual == wanted


def show(ctx: Ctx, parsed: Parsed) -> Reply:
    if not parsed.positionals:
        raise SimError("show: missing argument: vmid")
    ref, *prop = parsed.positionals
    ctx.pause("show")
    now = time.time()
    with ctx.store.read() as state:
        vm = ctx.resolve(state, ref)
    tag = parsed.value("tag")
    if tag is not None and tag not in vm.tags:
        raise not_found(tag)
    if not prop:
        body = show_body(vm, ctx.config, now)
        if tag is not None:
            body["version"] = tag
        return Reply(body)
    return _show_property(ctx, vm, prop, now, current_only=parsed.flag("current"))


def _show_property(ctx: Ctx, vm: VM, prop: list[str], now: float, *, current_only: bool) -> Reply:
    name = prop[0]
    if name == "tag":
        tags = [vm.version] if vm.version else []
        if not current_only:
            tags += sorted(t for t in vm.tags if t != vm.version)
        return Reply([{"tag": t} for t in tags], human="\n".join(tags))
    if name == "ip" or (name == "network" and prop[1:2] == ["ip"]):
        if not vm.ip_visible(now):
            state_word = "failed" if vm.status == FAILED else "not available yet"
            raise SimError(f"{vm.name}: ip address {state_word}")
        return Reply({"ip": vm.ip}, human=vm.ip)
    if name == "network":
        return Reply(network_body(vm, now))
    if name == "disk":
        return Reply(disk_body(vm))
    if name == "mount":
        return Reply(mount_rows(vm))
    body = show_body(vm, ctx.config, now)
    aliases = {"cpu": "cpu_cores", "ram": "ram"}
    key = aliases.get(name, name)
    if key not in body:
        raise SimError(f"show: unknown property {name!r}")
    return Reply({key: body[key]}, human=str(body[key]))
