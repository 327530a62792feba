"""`DetachedRuns.sweep` on a real runs directory, with a real supervisor holding its lock."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from host_agent.detached import DetachedRuns
from host_agent.runstate import frame
from host_agent.runsweep import RUN_FILE_GRACE_SECONDS
from host_agent.supervise import HANDSHAKE

OLD = time.time() - RUN_FILE_GRACE_SECONDS - 60


def leftovers(runs: Path, vm: str, *, mtime: float = OLD) -> list[str]:
    """A dead supervisor's files (record, lock, log, a temp file it died writing), aged."""
    names = [f"{vm}.json", f"{vm}.lock", f"{vm}.log", f".{vm}.json.77.tmp"]
    for name in names:
        (runs / name).write_text("{}")
        os.utime(runs / name, (mtime, mtime))
    return names


def test_sweeps_only_what_nothing_will_read(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    gone = leftovers(runs, "anklet-vm-gone-1")
    leftovers(runs, "anklet-vm-live-1")
    leftovers(runs, "anklet-vm-young-1", mtime=time.time() - 5)
    (runs / "notes.txt").write_text("not ours")
    os.utime(runs / "notes.txt", (OLD, OLD))
    swept = DetachedRuns(runs).sweep({"anklet-vm-live-1"})
    assert swept == sorted(gone)
    left = sorted(p.name for p in runs.iterdir())
    assert not set(gone) & set(left)
    assert {"anklet-vm-live-1.json", "anklet-vm-young-1.json", "notes.txt"} <= set(left)


def test_a_live_supervisor_keeps_its_files_until_it_exits(tmp_path: Path) -> None:
    runs = tmp_path / "runs"
    runs.mkdir()
    vm = "anklet-vm-held-1"
    names = leftovers(runs, vm)
    proc = subprocess.Popen(
        [sys.executable, "-m", "host_agent.supervise", "--dir", str(runs), "--vm", vm, "--", "true"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        assert proc.stdout is not None and proc.stdout.readline() == HANDSHAKE
        lock = runs / f"{vm}.lock"
        os.utime(lock, (OLD, OLD))  # a workload running for longer than the grace
        for name in (f"{vm}.json", f"{vm}.log"):
            os.utime(runs / name, (OLD, OLD))
        sweeper = DetachedRuns(runs)
        assert sweeper.supervisor_pid(vm) == proc.pid
        assert sweeper.sweep(set()) == [], "its VM is gone, but the supervisor still runs"
        assert lock.exists()
        assert proc.stdin is not None
        proc.stdin.write(frame(b"exit 0"))
        proc.stdin.close()
        assert proc.wait(20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(10)
    # The supervisor wrote a fresh record on exit: still inside the grace, so all stays...
    assert DetachedRuns(runs).sweep(set()) == []
    # ...until the grace has passed for every file of the VM.
    later = time.time() + RUN_FILE_GRACE_SECONDS + 60
    assert DetachedRuns(runs).sweep(set(), now=later) == sorted(names)
    assert list(runs.iterdir()) == []


def test_a_missing_runs_directory_sweeps_nothing(tmp_path: Path) -> None:
    assert DetachedRuns(tmp_path / "absent").sweep(set()) == []
