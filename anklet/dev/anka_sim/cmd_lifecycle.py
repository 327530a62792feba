"""VM lifecycle: ``clone``, ``start``, ``stop``, ``suspend``, ``delete`` (anka-cli.md §2.6-§2.10).

Each operation takes the VM's lock for its whole duration (a second operation on the same VM
waits), reserves its effect under the global lock, sleeps outside it, then commits.
"""

from __future__ import annotations

import random
import sys
import time
import uuid as uuidlib

from anklet.dev.anka_sim import pulls, sandbox
from anklet.dev.anka_sim.args import Parsed
from anklet.dev.anka_sim.cmd_mount import MountSpec, attach, parse_spec, require_support
from anklet.dev.anka_sim.context import Ctx
from anklet.dev.anka_sim.output import Reply, SimError, already_exists, not_found
from anklet.dev.anka_sim.registry import image_size
from anklet.dev.anka_sim.state import FAILED, RUNNING, STOPPED, SUSPENDED, VM
from anklet.dev.anka_sim.views import show_body


def _mac(uuid: str) -> str:
    digits = uuid.replace("-", "")[:10]
    return "c2:" + ":".join(digits[i : i + 2] for i in range(0, 10, 2))


def clone(ctx: Ctx, parsed: Parsed) -> Reply:
    if len(parsed.positionals) < 2:
        raise SimError("clone: usage: clone [-c] [-t tag] <source> <newname>...")
    source_ref, *names = parsed.positionals
    tag = parsed.value("tag")
    copy = parsed.flag("copy")
    with ctx.store.read() as state:
        source = ctx.resolve(state, source_ref)
        _check_clone(ctx, source, source_ref, names, tag, taken={vm.name for vm in state.vms.values()})
    if pulls.pulling(ctx.paths, source.uuid):
        _clone_during_pull(ctx, source.uuid)
    ctx.pause("clone_copy" if copy else "clone")
    created = []
    with ctx.store.write() as state:
        source = ctx.resolve(state, source_ref)
        _check_clone(ctx, source, source_ref, names, tag, taken={vm.name for vm in state.vms.values()})
        now = time.time()
        source.access_date = now
        for name in names:
            vm = VM(
                uuid=str(uuidlib.uuid4()),
                name=name,
                creation_date=source.creation_date,
                access_date=now,
                source_uuid=source.uuid,
                cpu_cores=source.cpu_cores,
                ram_size=source.ram_size,
                hard_drive=source.hard_drive,
                image_size=source.image_size if copy else 0,
                corrupt=source.corrupt,
            )
            vm.mac = _mac(vm.uuid)
            state.vms[vm.uuid] = vm
            created.append(vm.uuid)
    body = {"uuid": created[0]} if len(created) == 1 else {"uuid": created}
    return Reply(body, human="\n".join(created))


def _check_clone(
    ctx: Ctx, source: VM, source_ref: str, names: list[str], tag: str | None, taken: set[str]
) -> None:
    if tag is not None and tag not in source.tags:
        raise not_found(tag)
    if source.status == RUNNING and not ctx.config.allow_clone_running:
        raise SimError(f"{source_ref}: cannot clone a running VM; stop or suspend it first")
    for name in names:
        if name in taken:
            raise already_exists(name)


def _clone_during_pull(ctx: Ctx, uuid: str) -> None:
    """Cloning a template mid-pull corrupts it on real hosts; here the policy decides."""
    policy = ctx.config.clone_during_pull
    if policy == "fail":
        raise SimError(f"{uuid}: template is being pulled; try again when the pull finishes")
    if policy == "block":
        while pulls.pulling(ctx.paths, uuid):
            time.sleep(0.05)


def start(ctx: Ctx, parsed: Parsed) -> Reply:
    if len(parsed.positionals) != 1:
        raise SimError("start: usage: start [options] <vmid>")
    vm = start_vm(ctx, parsed.positionals[0], mounts=parsed.values("mount"))
    return Reply(show_body(vm, ctx.config, time.time()))


def start_vm(ctx: Ctx, ref: str, *, mounts: list[str] | tuple[str, ...] = (), auto: bool = False) -> VM:
    """Boot ``ref``: reserve a running slot, sleep the boot time, then commit or fail."""
    specs: list[MountSpec] = []
    if mounts:
        require_support(ctx)
        specs = [parse_spec(m) for m in mounts]
    with ctx.store.read() as state:
        uuid = ctx.resolve(state, ref).uuid
    failed = ctx.fault("vm_failed")
    fail_during_start = failed is not None and failed.get("after") is None
    with ctx.store.vm_lock(uuid):
        with ctx.store.write() as state:
            vm = state.vms.get(uuid)
            if vm is None:
                raise not_found(ref)
            if vm.status == RUNNING and auto:
                return vm
            _check_startable(ctx, vm, ref, others=[v for v in state.running() if v.uuid != uuid])
            resume = vm.resumable and ctx.config.arch != "arm64"
            boot = ctx.seconds("resume" if resume else "start")
            now = time.time()
            vm.status, vm.boot_id, vm.resumable = RUNNING, vm.boot_id + 1, False
            vm.start_date, vm.stop_date, vm.access_date = now, None, now
            vm.pid = random.randint(2000, 60000)
            vm.ip, vm.mac = state.next_ip(), vm.mac or _mac(vm.uuid)
            vm.ready_at = now + boot
            vm.ip_at = vm.ready_at + ctx.seconds("ip_delay")
            vm.ip_never = ctx.fault("ip_never") is not None
            vm.fail_at = (
                vm.ready_at + ctx.scaled(float(failed.get("after")))
                if failed and not fail_during_start
                else None
            )
            if not vm.booted_once and not vm.tags:
                vm.image_size += ctx.config.clone_disk_bytes
            vm.booted_once = True
        time.sleep(boot)
        error: SimError | None = None
        with ctx.store.write() as state:
            vm = state.vms.get(uuid)
            if vm is None:
                raise not_found(ref)
            reason = None
            if vm.corrupt:
                reason = "image is corrupt"  # a pull overlapped another (concurrent_pull: corrupt)
            elif failed is not None and fail_during_start:
                reason = str(failed.get("message", "VM entered failed state"))
            if reason is not None:
                vm.status, vm.ip, vm.pid, vm.stop_date = FAILED, None, None, time.time()
                error = SimError(f"{ref}: failed to start: {reason}")
            else:
                for spec in specs:
                    attach(ctx, state, vm, spec)
        if error is not None:
            raise error
        return vm


def _check_startable(ctx: Ctx, vm: VM, ref: str, others: list[VM]) -> None:
    if vm.status == RUNNING:
        raise SimError(f"{ref}: VM is already running")
    if vm.status == FAILED:
        raise SimError(f"{ref}: failed to start: VM is in failed state; run 'anka stop --force' first")
    if ctx.fault("max_instances") is not None or len(others) >= ctx.config.running_limit:
        raise SimError(f"{vm.uuid}: maximum number of running instances exceeded")


def _targets(ctx: Ctx, parsed: Parsed, verb: str, statuses: tuple[str, ...]) -> list[str]:
    if parsed.flag("all"):
        with ctx.store.read() as state:
            return [vm.uuid for vm in state.vms.values() if vm.status in statuses]
    if not parsed.positionals:
        raise SimError(f"{verb}: missing argument: vmid")
    return list(parsed.positionals)


def stop(ctx: Ctx, parsed: Parsed) -> Reply:
    force = parsed.flag("force")
    for ref in _targets(ctx, parsed, "stop", (RUNNING, FAILED)):
        halt_vm(ctx, ref, final=STOPPED, force=force)
    return Reply({})


def suspend(ctx: Ctx, parsed: Parsed) -> Reply:
    """On Apple silicon a CLI suspend really stops the VM but reports ``suspended``."""
    for ref in _targets(ctx, parsed, "suspend", (RUNNING,)):
        halt_vm(ctx, ref, final=SUSPENDED, force=False)
    return Reply({})


def halt_vm(ctx: Ctx, ref: str, *, final: str, force: bool) -> None:
    with ctx.store.read() as state:
        uuid = ctx.resolve(state, ref).uuid
    with ctx.store.vm_lock(uuid):
        with ctx.store.read() as state:
            status = ctx.resolve(state, uuid).status
        if status in (STOPPED, SUSPENDED):
            if final == SUSPENDED and status == STOPPED:
                raise SimError(f"{ref}: VM is not running")
            return
        if status == FAILED and not force:
            raise SimError(f"{ref}: VM is in failed state; use --force")
        ctx.pause("suspend" if final == SUSPENDED else ("stop_force" if force else "stop"))
        with ctx.store.write() as state:
            vm = ctx.resolve(state, uuid)
            procs, vm.run_procs = vm.run_procs, []
            now = time.time()
            vm.status, vm.stop_date, vm.access_date = final, now, now
            vm.ip, vm.pid, vm.ready_at, vm.ip_at, vm.fail_at = None, None, None, None, None
            vm.resumable = final == SUSPENDED and ctx.config.arch != "arm64"
        sandbox.kill_guest_processes(procs)


def delete(ctx: Ctx, parsed: Parsed) -> Reply:
    if parsed.flag("cache"):
        if not pulls.lock_held(ctx.paths):
            pulls.clean_debris(ctx.paths)
        if not parsed.positionals and not parsed.flag("all"):
            return Reply({})
    refs = _targets(ctx, parsed, "delete", (RUNNING, FAILED, STOPPED, SUSPENDED))
    if not parsed.flag("yes"):
        _confirm(ctx, refs)
    for ref in refs:
        delete_vm(ctx, ref, tag=parsed.value("tag"))
    return Reply({})


def _confirm(ctx: Ctx, refs: list[str]) -> None:
    """Real ``anka delete`` prompts; with no terminal to ask, refuse rather than guess."""
    if not sys.stdin.isatty():
        raise SimError("delete: confirmation required; pass --yes (stdin is not a terminal)")
    with ctx.store.read() as state:
        vms = [ctx.resolve(state, ref) for ref in refs]
    for vm in vms:
        sys.stderr.write(f"are you sure you want to delete vm {vm.uuid} {vm.name} [y/N]: ")
        sys.stderr.flush()
        if sys.stdin.readline().strip().lower() not in ("y", "yes"):
            raise SimError("delete: cancelled")


def delete_vm(ctx: Ctx, ref: str, *, tag: str | None = None) -> None:
    """Delete a VM (stopping it first if running), or one local tag of a template."""
    with ctx.store.read() as state:
        uuid = ctx.resolve(state, ref).uuid
    with ctx.store.vm_lock(uuid):
        ctx.pause("delete")
        with ctx.store.write() as state:
            vm = state.vms.get(uuid)
            if vm is None:
                raise not_found(ref)
            if tag is not None:
                if tag not in vm.tags:
                    raise not_found(tag)
                del vm.tags[tag]
                vm.image_size = image_size(vm.base_size, vm.tags.values())
                if vm.version == tag:
                    vm.version = next(iter(sorted(vm.tags)), None)
                return
            procs = vm.run_procs
            del state.vms[uuid]
        sandbox.kill_guest_processes(procs)
        sandbox.remove(ctx.paths, uuid)
