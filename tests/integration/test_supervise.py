"""The workload supervisor (`python -m host_agent.supervise`) and its agent-side adapter, as real
processes: the record outlives whoever started it, timeouts and signals kill the whole workload,
and a second agent re-attaches to a supervisor the first one left behind.

``anka`` is stood in for by a tiny script that runs the guest command (``bash -l -s``) locally.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
from pathlib import Path

import psutil
import pytest

from host_agent.detached import DetachedRuns
from host_agent.runstate import RunRecord, frame
from host_agent.supervise import EXIT_BUSY, EXIT_NO_SCRIPT, HANDSHAKE, lock_path, record_path
from tests.waiting import eventually

VM = "anklet-vm-job-a1"
SUPERVISE = [sys.executable, "-m", "host_agent.supervise"]


@pytest.fixture
def fake_anka(tmp_path: Path) -> str:
    """``anka run <vm> cmd...`` → ``cmd...`` (on this machine), like the simulator's guest."""
    path = tmp_path / "bin" / "anka"
    path.parent.mkdir()
    path.write_text('#!/bin/sh\n[ "$1" = run ] || exit 64\nshift 2\nexec "$@"\n')
    path.chmod(0o755)
    return str(path)


def start(runs: Path, *extra: str, command: tuple[str, ...] = ("bash", "-s")) -> subprocess.Popen[bytes]:
    """A supervisor started as the agent does (own session), past its handshake."""
    runs.mkdir(exist_ok=True)
    proc = subprocess.Popen(
        [*SUPERVISE, "--dir", str(runs), "--vm", VM, *extra, "--", *command],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        start_new_session=True,
    )
    assert proc.stdout is not None and proc.stdout.readline() == HANDSHAKE
    return proc


def feed(proc: subprocess.Popen[bytes], script: str) -> None:
    assert proc.stdin is not None
    proc.stdin.write(frame(script.encode()))
    proc.stdin.close()


def record(runs: Path) -> RunRecord:
    return RunRecord.from_json(record_path(runs, VM).read_text())


def test_records_exit_status_and_output_tail(tmp_path: Path) -> None:
    proc = start(tmp_path / "runs", "--output-limit", "8")
    feed(proc, "echo to-stderr >&2; printf 0123456789ABCDEF; exit 7")
    assert proc.wait(20) == 0
    got = record(tmp_path / "runs")
    assert (got.exit_code, got.output, got.timed_out, got.killed) == (7, "89ABCDEF", False, False)
    assert not list((tmp_path / "runs").glob(".*.tmp")), "written through a renamed temp file"


def test_timeout_kills_the_workload_group(tmp_path: Path) -> None:
    proc = start(tmp_path / "runs", "--timeout", "1")
    feed(proc, f"sleep 60 & echo $! > {tmp_path}/child.pid; wait")
    assert proc.wait(20) == 0
    got = record(tmp_path / "runs")
    assert (got.exit_code, got.timed_out) == (-int(signal.SIGKILL), True)
    assert not child_alive(tmp_path / "child.pid"), "the workload's own children die too"


def test_sigterm_kills_the_workload_and_records_it_as_killed(tmp_path: Path) -> None:
    proc = start(tmp_path / "runs")
    feed(proc, f"sleep 60 & echo $! > {tmp_path}/child.pid; wait")
    pid_file = tmp_path / "child.pid"

    async def started() -> bool:
        return pid_file.exists() and pid_file.read_text().strip() != ""

    asyncio.run(eventually(started, 10))
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(20) == 0
    assert record(tmp_path / "runs").killed
    assert not child_alive(pid_file)


def test_a_truncated_script_runs_nothing(tmp_path: Path) -> None:
    proc = start(tmp_path / "runs")
    assert proc.stdin is not None
    proc.stdin.write(f"100\ntouch {tmp_path}/ran".encode())  # the agent died mid-write
    proc.stdin.close()
    assert proc.wait(20) == EXIT_NO_SCRIPT
    assert not (tmp_path / "ran").exists()
    assert not record_path(tmp_path / "runs", VM).exists()


def test_one_supervisor_per_vm(tmp_path: Path) -> None:
    first = start(tmp_path / "runs")
    second = subprocess.run(
        [*SUPERVISE, "--dir", str(tmp_path / "runs"), "--vm", VM, "--", "true"],
        capture_output=True,
        timeout=20,
        check=False,
    )
    assert second.returncode == EXIT_BUSY, second.stderr
    feed(first, "exit 0")
    assert first.wait(20) == 0


def test_bad_arguments_are_refused(tmp_path: Path) -> None:
    result = subprocess.run(
        [*SUPERVISE, "--dir", str(tmp_path), "--vm", "../x", "--", "true"],
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 2 and "unsafe VM name" in result.stderr


async def test_detached_run_keeps_secrets_off_the_command_line(tmp_path: Path, fake_anka: str) -> None:
    runs = DetachedRuns(tmp_path / "runs", binary=fake_anka)
    seen: list[list[str]] = []

    def started() -> None:
        lock = lock_path(tmp_path / "runs", VM).read_text().strip()
        seen.append(psutil.Process(int(lock)).cmdline())

    result = await runs.run(
        VM, b'export TOKEN=s3cret\necho "$TOKEN" | rev\n', timeout=20, output_limit=100, on_started=started
    )
    assert (result.exit_code, result.output.strip(), result.timed_out) == (0, "terc3s", False)
    assert seen and "s3cret" not in " ".join(seen[0]) and fake_anka in seen[0]
    runs.forget(VM)
    assert not list((tmp_path / "runs").iterdir())


async def test_a_new_agent_reattaches_to_a_running_supervisor(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    proc = start(runs_dir)  # left behind by an agent that died
    runs = DetachedRuns(runs_dir)
    assert runs.supervisor_pid(VM) == proc.pid
    feed(proc, "sleep 1; echo finished; exit 5")
    result = await asyncio.wait_for(runs.attach(VM), 20)
    assert result is not None and (result.exit_code, result.output) == (5, "finished\n")
    assert runs.supervisor_pid(VM) is None
    proc.wait(5)


async def test_cancelling_a_reattached_wait_stops_the_workload(tmp_path: Path) -> None:
    runs_dir = tmp_path / "runs"
    proc = start(runs_dir)
    feed(proc, "sleep 60")
    runs = DetachedRuns(runs_dir)
    waiting = asyncio.create_task(runs.attach(VM))
    await asyncio.sleep(0.5)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await asyncio.to_thread(proc.wait, 10) == 0
    assert record(runs_dir).killed


def child_alive(pid_file: Path) -> bool:
    with contextlib.suppress(psutil.Error, ValueError, FileNotFoundError):
        proc = psutil.Process(int(pid_file.read_text().strip()))
        return proc.status() != psutil.STATUS_ZOMBIE
    return False


def test_child_alive_sees_a_live_process(tmp_path: Path) -> None:
    (tmp_path / "me.pid").write_text(str(os.getpid()))
    assert child_alive(tmp_path / "me.pid")
