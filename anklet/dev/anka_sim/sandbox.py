"""The per-VM sandbox directory that stands in for the guest's ``/Users/anka``.

Guest commands really run on this Linux machine with the sandbox as ``HOME`` and working
directory, so ``cp <file> vm:`` followed by ``run vm ./file`` behaves as on a Mac. Guest paths
map into the sandbox: ``/Users/anka/x`` and ``x`` to ``<sandbox>/x``, the mount folder
``/Volumes/My Shared Files/<name>`` to ``<sandbox>/Volumes/My Shared Files/<name>`` (a symlink
to the host path), and any other absolute path to ``<sandbox>/.root/<path>``.
"""

from __future__ import annotations

import contextlib
import os
import posixpath
import shutil
import signal
from collections.abc import Iterable
from pathlib import Path

from anklet.dev.anka_sim.paths import SimPaths
from anklet.dev.anka_sim.views import GUEST_HOME, MOUNT_ROOT


def home(paths: SimPaths, uuid: str) -> Path:
    directory = paths.vms / uuid
    directory.mkdir(parents=True, exist_ok=True)
    return directory


def remove(paths: SimPaths, uuid: str) -> None:
    shutil.rmtree(paths.vms / uuid, ignore_errors=True)


def guest_path(sandbox: Path, path: str) -> Path:
    """Map a guest path into the sandbox; ``..`` cannot climb out of it."""
    if path in ("", "~"):
        return sandbox
    if path.startswith("~/"):
        path = GUEST_HOME + path[1:]
    if not path.startswith("/"):
        path = f"{GUEST_HOME}/{path}"
    normal = posixpath.normpath(path)
    if normal == GUEST_HOME or normal.startswith(GUEST_HOME + "/"):
        rest = normal[len(GUEST_HOME) :].lstrip("/")
    elif normal == MOUNT_ROOT or normal.startswith(MOUNT_ROOT + "/"):
        rest = normal.lstrip("/")
    else:
        rest = ".root/" + normal.lstrip("/")
    return sandbox / rest if rest else sandbox


def mount_link(sandbox: Path, name: str) -> Path:
    return sandbox / MOUNT_ROOT.lstrip("/") / name


def link_mount(sandbox: Path, name: str, host_path: str) -> None:
    link = mount_link(sandbox, name)
    link.parent.mkdir(parents=True, exist_ok=True)
    if link.is_symlink() or link.exists():
        link.unlink()
    link.symlink_to(host_path, target_is_directory=True)


def unlink_mount(sandbox: Path, name: str) -> None:
    link = mount_link(sandbox, name)
    if link.is_symlink():
        link.unlink()


def process_identity(pid: int) -> list[float]:
    """``[pid, create_time]``: the pair survives PID reuse, a bare PID does not."""
    import psutil

    return [float(pid), psutil.Process(pid).create_time()]


def kill_guest_processes(procs: Iterable[list[float]]) -> None:
    """Stopping or deleting a VM kills what ``run`` started in it, children included."""
    import psutil

    for pid, created in procs:
        try:
            proc = psutil.Process(int(pid))
            if abs(proc.create_time() - created) > 0.01:
                continue
            victims = [*proc.children(recursive=True), proc]
        except psutil.Error:
            continue
        for victim in victims:
            with contextlib.suppress(psutil.Error):
                victim.send_signal(signal.SIGKILL)


def guest_env(sandbox: Path, user: str = "anka") -> dict[str, str]:
    """The environment a command sees in the guest: no rc files, its own HOME and user."""
    return {
        "HOME": str(sandbox),
        "USER": user,
        "LOGNAME": user,
        "SHELL": "/bin/bash",
        "PATH": os.environ.get("PATH", "/usr/local/bin:/usr/bin:/bin"),
        "TMPDIR": "/tmp",
        "LANG": "en_US.UTF-8",
        "ANKA_SIM_GUEST": "1",
    }
