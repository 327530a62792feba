"""Host-to-guest mounts: ``mount``, ``unmount`` and ``start --mount`` (3.9.0+, Apple silicon only).

A mount appears in the sandbox at ``Volumes/My Shared Files/<name>`` as a symlink to the host
path, so guest commands see the host folder live, as virtiofs does (anka-cli.md §2.13).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from anklet.dev.anka_sim import sandbox
from anklet.dev.anka_sim.args import Parsed
from anklet.dev.anka_sim.context import Ctx
from anklet.dev.anka_sim.output import Reply, SimError, already_exists, not_found
from anklet.dev.anka_sim.state import RUNNING, VM, State
from anklet.dev.anka_sim.views import MOUNT_ROOT, mount_rows


@dataclass(frozen=True)
class MountSpec:
    host_path: str
    name: str


def require_support(ctx: Ctx) -> None:
    if ctx.config.version_tuple < (3, 9, 0):
        raise SimError(f"mount: not supported by anka {ctx.config.anka_version} (needs 3.9.0 or later)")
    if ctx.config.arch != "arm64":
        raise SimError("mount: host-to-guest mounts are not supported on Intel hosts")


def parse_spec(raw: str) -> MountSpec:
    """``host_path[:guest_folder_name]``; the name defaults to the path's basename."""
    host, sep, name = raw.rpartition(":")
    if not sep or "/" in name or not host:
        host, name = raw, ""
    real = os.path.realpath(host)
    if not os.path.isdir(real):
        raise SimError(f"{host}: No such directory", code=3)
    return MountSpec(real, name or os.path.basename(real.rstrip("/")) or "root")


def attach(ctx: Ctx, state: State, vm: VM, spec: MountSpec) -> dict[str, object]:
    """Record and link a mount; the caller holds the state lock."""
    if any(m["name"] == spec.name for m in vm.mounts):
        raise already_exists(spec.name)
    state.fsid_counter += 1
    record = {"fsid": state.fsid_counter, "host_path": spec.host_path, "name": spec.name}
    vm.mounts.append(record)
    sandbox.link_mount(sandbox.home(ctx.paths, vm.uuid), spec.name, spec.host_path)
    return record


def mount(ctx: Ctx, parsed: Parsed) -> Reply:
    require_support(ctx)
    if not parsed.positionals:
        raise SimError("mount: missing argument: vmid")
    ref, *specs = parsed.positionals
    if not specs:
        with ctx.store.read() as state:
            return Reply(mount_rows(ctx.resolve(state, ref)))
    parsed_specs = [parse_spec(s) for s in specs]
    ctx.pause("mount")
    guest_paths = []
    with ctx.store.write() as state:
        vm = ctx.resolve(state, ref)
        if vm.status != RUNNING:
            raise SimError(f"{ref}: VM is not running")
        for spec in parsed_specs:
            attach(ctx, state, vm, spec)
            guest_paths.append(f"{MOUNT_ROOT}/{spec.name}")
    return Reply(
        {"guest_path": guest_paths[0] if len(guest_paths) == 1 else guest_paths}, human="\n".join(guest_paths)
    )


def unmount(ctx: Ctx, parsed: Parsed) -> Reply:
    require_support(ctx)
    if not parsed.positionals:
        raise SimError("unmount: missing argument: vmid")
    ref, *refs = parsed.positionals
    if not refs and not parsed.flag("all"):
        raise SimError("unmount: give mount references or -a")
    ctx.pause("unmount")
    with ctx.store.write() as state:
        vm = ctx.resolve(state, ref)
        doomed = list(vm.mounts) if parsed.flag("all") else []
        for wanted in refs:
            hit = next((m for m in vm.mounts if wanted in (str(m["fsid"]), m["name"], m["host_path"])), None)
            if hit is None:
                raise not_found(wanted)
            doomed.append(hit)
        home = sandbox.home(ctx.paths, vm.uuid)
        for record in doomed:
            sandbox.unlink_mount(home, str(record["name"]))
        vm.mounts = [m for m in vm.mounts if m not in doomed]
    return Reply({})
