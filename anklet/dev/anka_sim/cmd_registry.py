"""The registry: ``registry list|show|pull|list-repos|--list`` and top-level ``pull`` (§2.15, §2.16).

A pull downloads ``size - cached`` bytes at ``pull_bytes_per_second`` (scaled), holds the
host-wide pull slot, reports progress on stderr (and as JSON lines with ``-j``), consumes
simulated disk, and creates or updates the local template with the registry's UUID and name.
"""

from __future__ import annotations

import time
from typing import Any

from anklet.dev.anka_sim import pulls
from anklet.dev.anka_sim.args import Parsed
from anklet.dev.anka_sim.config import SimConfig
from anklet.dev.anka_sim.context import Ctx
from anklet.dev.anka_sim.output import Reply, SimError, not_found
from anklet.dev.anka_sim.registry import (
    GIB,
    RegistryTag,
    RegistryTemplate,
    cached_bytes,
    find_template,
    image_size,
)
from anklet.dev.anka_sim.state import FAILED, STOPPED, SUSPENDED, VM, State

PROGRESS_STEPS = 10


def _remote(ctx: Ctx, wanted: str | None) -> dict[str, Any]:
    """Resolve ``--remote`` / ``[remote]``: a configured name or URL, or any URL."""
    repos = ctx.config.registries
    if wanted is None:
        default = next((r for r in repos if r.get("default")), repos[0] if repos else None)
        if default is None:
            raise SimError("No registry configured", exit_status=30)
        return default
    hit = next((r for r in repos if wanted in (r.get("name"), r.get("url"))), None)
    if hit is not None:
        return hit
    if "://" in wanted:
        return {"name": wanted, "url": wanted, "default": False}
    raise SimError(f"{wanted}: unknown registry")


def _lookup(ctx: Ctx, ref: str, tag_name: str | None) -> tuple[RegistryTemplate, RegistryTag]:
    template = find_template(ctx.config.catalogue, ref)
    if template is None:
        raise not_found(ref)
    tag = template.tag(tag_name)
    if tag is None:
        raise SimError(
            f"{ref}: tag {tag_name or template.latest}: not found", code=3, exception_type="NotFoundError"
        )
    return template, tag


def registry(ctx: Ctx, parsed: Parsed) -> Reply:
    remote = _remote(ctx, parsed.value("remote") or parsed.value("registry_path"))
    sub, *rest = parsed.positionals or ["list-repos" if parsed.flag("list") else ""]
    if parsed.flag("list") or sub == "list-repos":
        return Reply(ctx.config.registries)
    ctx.pause("registry")
    if sub == "list":
        rows = [{"name": t.name, "uuid": t.uuid, "latest": t.latest} for t in ctx.config.catalogue]
        return Reply(rows)
    if sub == "show":
        return _registry_show(ctx, rest, parsed.value("tag"))
    if sub == "pull":
        if len(rest) != 1:
            raise SimError("registry pull: usage: registry pull [-t tag] [-l] [-s] <vmid>")
        return pull_template(
            ctx, rest[0], parsed.value("tag"), shrink=parsed.flag("shrink"), local=parsed.flag("local")
        )
    raise SimError(
        f"registry: {sub or 'missing command'}: not supported by the simulator (registry {remote['name']})"
    )


def _registry_show(ctx: Ctx, rest: list[str], tag_name: str | None) -> Reply:
    if not rest:
        raise SimError("registry show: missing argument: vmid")
    template, tag = _lookup(ctx, rest[0], tag_name)
    if rest[1:] == ["tag"]:
        return Reply([{"tag": t.name, "latest": t.name == template.latest} for t in template.tags])
    body = {
        "uuid": template.uuid,
        "name": template.name,
        "description": template.description,
        "version": tag.name,
        "cpu_cores": tag.cpu_cores,
        "ram": f"{tag.ram_size // GIB}G",
        "ram_size": tag.ram_size,
        "hard_drive": tag.hard_drive,
        "image_size": tag.size,
        "arch": 2 if ctx.config.arch == "arm64" else 1,
    }
    return Reply(body)


def pull(ctx: Ctx, parsed: Parsed) -> Reply:
    """Top-level ``pull <vmid> [remote]``, including ``--check-download-size``."""
    if not 1 <= len(parsed.positionals) <= 2:
        raise SimError("pull: usage: pull [options] <vmid> [remote]")
    ref = parsed.positionals[0]
    _remote(ctx, parsed.positionals[1] if len(parsed.positionals) == 2 else None)
    if parsed.flag("check_download_size"):
        return check_download_size(ctx, ref, parsed.value("tag"))
    ctx.pause("registry")
    return pull_template(
        ctx, ref, parsed.value("tag"), shrink=parsed.flag("shrink"), local=parsed.flag("local")
    )


def check_download_size(ctx: Ctx, ref: str, tag_name: str | None) -> Reply:
    ctx.pause("check_download_size")
    template, tag = _lookup(ctx, ref, tag_name)
    with ctx.store.read() as state:
        local = state.vms.get(template.uuid)
        free = _free(ctx, state)
    if local is not None and tag.name in local.tags:
        return Reply({}, message=f"{tag.name}: available locally")
    cached = cached_bytes(template, tag, local.tags if local else None)
    body = {"size": tag.size, "cached": cached, "available": free, "bytes": tag.size - cached}
    return Reply(body)


def _free(ctx: Ctx, state: State) -> int:
    free = pulls.disk_free(state, ctx.config, ctx.paths)
    fault = ctx.fault("disk_full")
    return min(free, int(fault.get("available", GIB))) if fault else free


def pull_template(ctx: Ctx, ref: str, tag_name: str | None, *, shrink: bool, local: bool) -> Reply:
    if local:
        return _checkout_local(ctx, ref, tag_name, shrink=shrink)
    template, tag = _lookup(ctx, ref, tag_name)
    with ctx.store.read() as state:
        existing = state.vms.get(template.uuid)
        clash = next(
            (v for v in state.vms.values() if v.name == template.name and v.uuid != template.uuid), None
        )
    if clash is not None:
        raise SimError(
            f"{template.name}: a different VM with this name exists locally ({clash.uuid})", code=18
        )
    if existing is not None and tag.name in existing.tags:
        ctx.pause("pull_local")
        _commit(ctx, template, tag, shrink=shrink, corrupt=existing.corrupt)
        return Reply({"uuid": template.uuid}, message=f"{tag.name}: available locally")
    need = tag.size - cached_bytes(template, tag, existing.tags if existing else None)
    with pulls.slot(ctx.paths, ctx.config.concurrent_pull) as overlapping:
        if not overlapping:
            for debris in pulls.clean_debris(ctx.paths):
                ctx.say(f"cleaning up interrupted pull of {debris}")
        with ctx.store.read() as state:
            free = _free(ctx, state)
        if need > free:
            message = f"{template.uuid}:{tag.name}: not enough free disk space"
            raise SimError(f"{message}: {need} bytes needed, {free} available")
        _download(ctx, template, tag, need)
        _commit(ctx, template, tag, shrink=shrink, corrupt=overlapping)
    return Reply({"uuid": template.uuid}, message="vm pulled successfully")


def _download(ctx: Ctx, template: RegistryTemplate, tag: RegistryTag, need: int) -> None:
    """Sleep through the transfer in steps, leaving a marker a SIGKILL would strand."""
    marker = pulls.PullSlot(ctx.paths, template.uuid, tag.name, need)
    try:
        step = ctx.seconds("pull_overhead", extra=need / ctx.config.pull_bytes_per_second) / PROGRESS_STEPS
        for i in range(1, PROGRESS_STEPS + 1):
            time.sleep(step)
            marker.progress(need * i // PROGRESS_STEPS)
            ctx.say(f"pulling {template.name}:{tag.name} ... {i * 100 // PROGRESS_STEPS}%")
            if ctx.config.pull_json_progress:
                progress = {"progress": i * 100 // PROGRESS_STEPS, "bytes": need * i // PROGRESS_STEPS}
                ctx.emitter.progress_line({"status": "OK", "code": 0, "body": progress, "message": "pulling"})
    finally:
        marker.finish()  # only a SIGKILL (which skips this) strands the marker


def _commit(ctx: Ctx, template: RegistryTemplate, tag: RegistryTag, *, shrink: bool, corrupt: bool) -> None:
    with ctx.store.write() as state:
        install_template(state, template, tag, shrink=shrink, corrupt=corrupt)


def install_template(
    state: State, template: RegistryTemplate, tag: RegistryTag, *, shrink: bool, corrupt: bool = False
) -> VM:
    """Make ``tag`` of ``template`` the local template's current tag (the end of a pull)."""
    now = time.time()
    vm = state.vms.get(template.uuid)
    if vm is None:
        vm = VM(uuid=template.uuid, name=template.name, creation_date=now, access_date=now)
        state.vms[vm.uuid] = vm
    vm.base_size = template.base_size
    vm.tags = {tag.name: tag.size} if shrink else {**vm.tags, tag.name: tag.size}
    vm.version = tag.name
    vm.cpu_cores, vm.ram_size, vm.hard_drive = tag.cpu_cores, tag.ram_size, tag.hard_drive
    vm.image_size = image_size(vm.base_size, vm.tags.values())
    vm.corrupt = corrupt
    if vm.status == SUSPENDED:
        vm.status = STOPPED
    return vm


def seed_preinstalled(config: SimConfig, state: State) -> None:
    """First use of a home: install the configured ``preinstalled`` templates without waiting."""
    for spec in config.preinstalled:
        ref, _, tag_name = spec.partition(":")
        template = find_template(config.catalogue, ref)
        tag = template.tag(tag_name or None) if template else None
        if template is None or tag is None:
            raise SimError(f"preinstalled: {spec}: not found in the configured templates", code=3)
        install_template(state, template, tag, shrink=False)


def _checkout_local(ctx: Ctx, ref: str, tag_name: str | None, *, shrink: bool) -> Reply:
    """``pull -l``: switch to a tag that is already local (also how a failed VM is reset)."""
    ctx.pause("pull_local")
    with ctx.store.write() as state:
        vm = ctx.resolve(state, ref)
        tag = tag_name or vm.version
        if tag is None or tag not in vm.tags:
            raise not_found(tag or ref)
        vm.version = tag
        if shrink:
            vm.tags = {tag: vm.tags[tag]}
            vm.image_size = image_size(vm.base_size, vm.tags.values())
        if vm.status == FAILED:
            vm.status = STOPPED
        vm.corrupt = False
        return Reply({"uuid": vm.uuid}, message="vm pulled successfully")
