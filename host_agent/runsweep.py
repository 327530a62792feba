"""Which files in the agent's runs directory nothing will read again: pure data, no I/O.

A workload's supervisor (``host_agent.supervise``) leaves ``<vm>.json`` (its record),
``<vm>.lock`` (held while it lives), ``<vm>.log`` (its stderr) and, if it died mid-write,
``.<vm>.json.<pid>.tmp``. The agent removes them itself once the VM is deleted and its result
reported (``DetachedRuns.forget``), but some paths skip that: a delete that failed and was then
done by hand, a VM that vanished while the agent was down, a crash between the delete and the
forget. Nothing would ever remove those files, so the agent sweeps them on its resync cadence.

The rules, all of which must allow a file before it goes:

- its VM neither exists on the host nor is desired nor driven by a task here (files of a live
  VM are the workload's result, or will be);
- no supervisor holds that VM's lock (one that does may still write the record);
- every file of that VM is older than :data:`RUN_FILE_GRACE_SECONDS` (a VM's files go together,
  so a record is never left without its lock or log, or the reverse).
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

from host_agent.runstate import check_run_name

#: A run file younger than this is never swept, whatever the listings say. The listings that
#: make a VM "live" are taken a moment apart from the directory scan (``anka list`` may race a
#: clone, a restarted agent sees Redis and the host at different instants), and the grace makes
#: any such race harmless: no file that a supervisor or worker touched within the hour can go.
#: A leftover costs a few kilobytes, so waiting an hour costs nothing.
RUN_FILE_GRACE_SECONDS = 3600.0

_SUFFIXES = (".json", ".lock", ".log")  # as host_agent.supervise's record_path, lock_path, log_path
_TEMP = re.compile(r"^\.(?P<vm>.+)\.json\.\d+\.tmp$")  # supervise.write_record's temp file


@dataclass(frozen=True)
class RunFile:
    """One file of the runs directory: its name there, the VM it belongs to, its mtime."""

    name: str
    vm: str
    mtime: float  # seconds since the epoch, as os.stat's st_mtime


def run_file_vm(name: str) -> str | None:
    """The VM a runs-directory file belongs to, or None for a file that is not a run file."""
    match = _TEMP.fullmatch(name)
    vm = match["vm"] if match else next((name[: -len(s)] for s in _SUFFIXES if name.endswith(s)), None)
    if vm is None:
        return None
    try:
        return check_run_name(vm)
    except ValueError:
        return None


def stale_run_files(
    files: Iterable[RunFile],
    *,
    live: Collection[str],
    held: Collection[str],
    now: float,
    grace: float = RUN_FILE_GRACE_SECONDS,
) -> list[str]:
    """The names of the files to delete, sorted.

    ``live``: VMs that exist on the host, are desired, or have a task here; ``held``: VMs whose
    lock a supervisor holds; ``now``: the wall clock, comparable with the mtimes. A file with an
    mtime in the future (the clock was set back) counts as young.
    """
    files = list(files)
    newest: dict[str, float] = {}
    for f in files:
        newest[f.vm] = max(newest.get(f.vm, f.mtime), f.mtime)
    return sorted(
        f.name for f in files if f.vm not in live and f.vm not in held and now - newest[f.vm] >= grace
    )
