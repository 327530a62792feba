"""The host-wide pull slot, interrupted-pull debris, and the disk arithmetic that depends on both.

Real Anka corrupts templates when two pulls (or a pull and a clone of the same template) overlap,
and a killed pull leaves partial files behind (anka-cli.md §4.2). Here the one running pull holds
an ``flock`` on ``pull.lock`` and writes ``img_lib/.partial-<uuid>-<tag>`` with its progress. A
marker whose pull no longer holds the lock is debris: it still takes disk space until the next
pull (or ``delete --cache``) cleans it up.
"""

from __future__ import annotations

import fcntl
import json
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from anklet.dev.anka_sim.config import SimConfig, write_json_atomic
from anklet.dev.anka_sim.output import SimError
from anklet.dev.anka_sim.paths import SimPaths
from anklet.dev.anka_sim.state import State


def markers(paths: SimPaths) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(paths.img_lib.glob(".partial-*")):
        try:
            found.append((path, json.loads(path.read_text() or "{}")))
        except (OSError, json.JSONDecodeError):
            found.append((path, {}))
    return found


def lock_held(paths: SimPaths) -> bool:
    """Whether some live process holds the pull slot (the kernel drops it on SIGKILL)."""
    paths.pull_lock.parent.mkdir(parents=True, exist_ok=True)
    with paths.pull_lock.open("a+") as handle:
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
        return False


def pulling(paths: SimPaths, uuid: str) -> bool:
    """A live pull of template ``uuid`` is under way."""
    return any(data.get("uuid") == uuid for _, data in markers(paths)) and lock_held(paths)


def partial_bytes(paths: SimPaths) -> int:
    return sum(int(data.get("downloaded", 0)) for _, data in markers(paths))


def clean_debris(paths: SimPaths) -> list[str]:
    """Remove markers of dead pulls; call only while holding the pull slot (or none is held)."""
    removed = []
    for path, data in markers(paths):
        if int(data.get("pid", -1)) == os.getpid():
            continue
        path.unlink(missing_ok=True)
        removed.append(f"{data.get('uuid', '?')}:{data.get('tag', '?')}")
    return removed


def disk_free(state: State, config: SimConfig, paths: SimPaths) -> int:
    """Free bytes: total minus the OS, every VM's image and interrupted downloads."""
    used = config.disk_reserved_bytes + sum(vm.image_size for vm in state.vms.values())
    return max(0, config.disk_total_bytes - used - partial_bytes(paths))


class PullSlot:
    """The marker of the pull this process is running; progress is written as it goes."""

    def __init__(self, paths: SimPaths, uuid: str, tag: str, total: int) -> None:
        self.path = paths.img_lib / f".partial-{uuid}-{tag.replace('/', '_')}"
        self.data: dict[str, Any] = {
            "pid": os.getpid(),
            "uuid": uuid,
            "tag": tag,
            "total": total,
            "downloaded": 0,
            "started": time.time(),
        }
        write_json_atomic(self.path, self.data)

    def progress(self, downloaded: int) -> None:
        self.data["downloaded"] = downloaded
        write_json_atomic(self.path, self.data)

    def finish(self) -> None:
        self.path.unlink(missing_ok=True)


@contextmanager
def slot(paths: SimPaths, policy: str) -> Iterator[bool]:
    """Hold the host-wide pull slot. Yields ``True`` when this pull overlaps another (``corrupt``)."""
    paths.img_lib.mkdir(parents=True, exist_ok=True)
    with paths.pull_lock.open("a+") as handle:
        overlapping = False
        try:
            fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            if policy == "block":
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
            elif policy == "corrupt":
                overlapping = True
            else:
                raise SimError("a pull is already in progress on this host", code=1) from None
        try:
            yield overlapping
        finally:
            if not overlapping:
                fcntl.flock(handle.fileno(), fcntl.LOCK_UN)
