"""Talking to the guest: ``run`` and ``cp`` (anka-cli.md §2.11, §2.12, §4.3).

The "guest" is this Linux machine inside the VM's sandbox directory. ``run`` streams stdin,
stdout and stderr raw (never JSON, even with ``-j``) and exits with the command's status; a
command killed because its VM was stopped or deleted exits 125, the real "guest link lost".
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import FrameType

from anklet.dev.anka_sim import sandbox
from anklet.dev.anka_sim.args import Parsed
from anklet.dev.anka_sim.cmd_lifecycle import start_vm
from anklet.dev.anka_sim.context import Ctx
from anklet.dev.anka_sim.output import Reply, SimError
from anklet.dev.anka_sim.state import FAILED, RUNNING, VM

LINK_LOST = 125


def run(ctx: Ctx, parsed: Parsed) -> int | Reply:
    """Returns the guest command's exit status (no envelope) once the command has started."""
    if len(parsed.positionals) < 2:
        raise SimError("run: usage: run [options] <vmid> <command> [args...]")
    ref, *command = parsed.positionals
    with ctx.store.read() as state:
        vm = ctx.resolve(state, ref)
    if vm.status == FAILED:
        raise SimError(f"{ref}: VM is in failed state")
    if vm.status != RUNNING:
        vm = start_vm(ctx, ref, auto=True)
    if vm.ready_at is not None and vm.ready_at > time.time():
        time.sleep(vm.ready_at - time.time())  # guest addons answer once the boot is done
    ctx.pause("run")
    home = sandbox.home(ctx.paths, vm.uuid)
    env = _environment(parsed, home)
    cwd = sandbox.guest_path(home, parsed.value("workdir") or "")
    if not cwd.is_dir():
        raise SimError(f"{parsed.value('workdir')}: No such file or directory")
    sys.stdout.flush()
    sys.stderr.flush()
    if parsed.flag("background"):
        return _background(ctx, vm, command, cwd, env)
    return _foreground(ctx, vm, command, cwd, env, quiet=parsed.flag("quiet"))


def _environment(parsed: Parsed, home: Path) -> dict[str, str]:
    """Guest defaults; ``-E`` adds host variables without overriding; files then ``-e`` override."""
    env = sandbox.guest_env(home)
    if parsed.flag("inherit_env"):
        for key, value in os.environ.items():
            env.setdefault(key, value)
    env_file = parsed.value("env_file")
    if env_file:
        try:
            lines = Path(env_file).read_text().splitlines()
        except OSError as exc:
            raise SimError(f"{env_file}: {exc.strerror}") from None
        for line in lines:
            key, sep, value = line.partition("=")
            if sep and key.strip() and not key.lstrip().startswith("#"):
                env[key.strip()] = value  # quotes are kept literally, as real anka does
    for item in parsed.values("env"):
        key, sep, value = item.partition("=")
        if sep:
            env[key] = value
        elif key in os.environ:
            env[key] = os.environ[key]
    return env


def _register(ctx: Ctx, uuid: str, proc: subprocess.Popen[bytes]) -> tuple[list[float], int]:
    """Record the guest process so stop/delete can kill it; returns it and the VM's boot id."""
    identity = sandbox.process_identity(proc.pid)
    with ctx.store.write() as state:
        vm = state.vms.get(uuid)
        if vm is None or vm.status != RUNNING:
            proc.kill()
            return identity, -1
        vm.run_procs.append(identity)
        return identity, vm.boot_id


def _foreground(ctx: Ctx, vm: VM, command: list[str], cwd: Path, env: dict[str, str], *, quiet: bool) -> int:
    try:
        proc = subprocess.Popen(command, cwd=cwd, env=env, stdout=subprocess.DEVNULL if quiet else None)
    except FileNotFoundError:
        sys.stderr.write(f"anka: {command[0]}: command not found\n")
        return 127
    except PermissionError:
        sys.stderr.write(f"anka: {command[0]}: permission denied\n")
        return 126

    def forward(signum: int, _frame: FrameType | None) -> None:
        proc.send_signal(signum)

    for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(signum, forward)
    identity, boot_id = _register(ctx, vm.uuid, proc)
    status = _wait(proc, vm.fail_at)
    with ctx.store.write() as state:
        current = state.vms.get(vm.uuid)
        alive = current is not None and current.status == RUNNING and current.boot_id == boot_id
        if current is not None and identity in current.run_procs:
            current.run_procs.remove(identity)
    if status < 0 and not alive:
        sys.stderr.write("anka: connection to the guest was lost\n")
        return LINK_LOST
    return status if status >= 0 else 128 - status


def _wait(proc: subprocess.Popen[bytes], fail_at: float | None) -> int:
    """The guest's exit status; a VM scheduled to go ``failed`` (``vm_failed`` with ``after``) takes
    its guest processes down with it when that time comes, as a crashed VM would."""
    if fail_at is None:
        return proc.wait()
    try:
        return proc.wait(max(0.0, fail_at - time.time()))
    except subprocess.TimeoutExpired:
        proc.kill()
        return proc.wait()


def _background(ctx: Ctx, vm: VM, command: list[str], cwd: Path, env: dict[str, str]) -> Reply:
    try:
        proc = subprocess.Popen(
            command,
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
    except OSError as exc:
        raise SimError(f"{command[0]}: {exc.strerror}") from None
    _register(ctx, vm.uuid, proc)
    return Reply({"pid": proc.pid}, human=str(proc.pid))


def _split_vm(arg: str) -> tuple[str, str] | None:
    ref, sep, path = arg.partition(":")
    return (ref, path) if sep and ref and "/" not in ref else None


def cp(ctx: Ctx, parsed: Parsed) -> Reply:
    if len(parsed.positionals) < 2:
        raise SimError("cp: usage: cp [options] <src>... <dst>  (one side is <vmid>:<path>)")
    *sources, target = parsed.positionals
    target_vm = _split_vm(target)
    source_vms = [_split_vm(s) for s in sources]
    with ctx.store.read() as state:
        if target_vm is not None and (source_vms[0] is None or state.find(target_vm[0]) is not None):
            vm = ctx.resolve(state, target_vm[0])
            home = sandbox.home(ctx.paths, vm.uuid)
            pairs = [(Path(s), sandbox.guest_path(home, target_vm[1])) for s in sources]
        elif source_vms[0] is not None:
            vm = ctx.resolve(state, source_vms[0][0])
            home = sandbox.home(ctx.paths, vm.uuid)
            pairs = [
                (sandbox.guest_path(home, sv[1] if sv else s), Path(target))
                for s, sv in zip(sources, source_vms, strict=True)
            ]
        else:
            raise SimError("cp: one of source or destination must be <vmid>:<path>")
    if vm.status != RUNNING:
        raise SimError(f"{vm.name}: VM is not running")
    total = sum(_size(src) for src, _ in pairs)
    ctx.pause("cp", extra=total / ctx.config.cp_bytes_per_second)
    into_dir = target.endswith(("/", ":"))  # `vm:` and `vm:/tmp/` name existing guest folders
    for src, dst in pairs:
        if into_dir:
            dst.mkdir(parents=True, exist_ok=True)
        _copy(src, dst, parsed)
    return Reply({})


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return 0


def _copy(src: Path, dst: Path, parsed: Parsed) -> None:
    archive = parsed.flag("archive")
    recursive = archive or parsed.flag("recursive")
    follow = parsed.flag("follow") or (not archive and not parsed.flag("no_follow"))
    if not src.exists() and not src.is_symlink():
        raise SimError(f"{src.name or src}: No such file or directory")
    if dst.is_dir():
        dst = dst / src.name
    if dst.exists() and parsed.flag("no_clobber"):
        return
    dst.parent.mkdir(parents=True, exist_ok=True)
    if src.is_dir() and not (src.is_symlink() and not follow):
        if not recursive:
            raise SimError(f"{src.name}: is a directory (not copied)")
        shutil.copytree(src, dst, symlinks=not follow, dirs_exist_ok=True)
    elif src.is_symlink() and not follow:
        if dst.is_symlink() or dst.exists():
            dst.unlink()
        dst.symlink_to(os.readlink(src))
    else:
        copier = shutil.copy2 if (archive or parsed.flag("preserve")) else shutil.copy
        copier(src, dst)
