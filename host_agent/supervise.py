"""The workload supervisor: ``python -m host_agent.supervise``, one per running workload.

The agent starts it in its own session (so a SIGKILL of the agent, or of the agent's process
group, spares it) and it runs ``anka run <vm> bash -l -s`` as its child, in a session of its
own too. It outlives the agent on purpose: when ``anka run`` ends it writes the exit status and
the output tail to ``<dir>/<vm>.json`` (temp file, fsync, rename: a reader sees all or nothing),
so a restarted agent reports the workload's real result instead of running the job again.

Protocol, argv only (no shell, no secrets on the command line):

1. take an exclusive ``flock`` on ``<dir>/<vm>.lock`` and write our pid into it; the lock is
   held until we exit, so "locked" means "this supervisor is alive" with no pid-reuse race;
2. print ``locked`` on stdout (the agent's handshake), then let go of stdout;
3. read ``<length>\\n<payload>`` from stdin (the exports and the script); a short payload means
   the agent died while writing it, and nothing runs;
4. run the command with the payload on its stdin; kill its process group with SIGKILL when
   ``--timeout`` passes (the job's timeoutSeconds, enforced even while the agent is down) or when
   the agent sends us SIGTERM/SIGINT (a cancellation or a shutdown);
5. write the record, exit 0.

Only the standard library is imported here: it starts once per job on a busy Mac.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from host_agent.runstate import RunRecord, check_run_name, unframe_length

EXIT_BUSY = 3  # another supervisor holds this VM's lock
EXIT_NO_SCRIPT = 4  # stdin ended before the whole payload arrived
EXIT_USAGE = 2
HANDSHAKE = b"locked\n"


def lock_path(directory: Path, vm: str) -> Path:
    return directory / f"{check_run_name(vm)}.lock"


def record_path(directory: Path, vm: str) -> Path:
    return directory / f"{check_run_name(vm)}.json"


def log_path(directory: Path, vm: str) -> Path:
    return directory / f"{check_run_name(vm)}.log"


def write_record(path: Path, record: RunRecord) -> None:
    """Atomically: a crash leaves either no record or the whole one, never half of it."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as handle:
        handle.write(record.to_json())
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(tmp, path)
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


class _Tail:
    """The last ``limit`` characters of the output (kept by bytes, 4 per character worst case)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.buffer = bytearray()

    def add(self, chunk: bytes) -> None:
        self.buffer += chunk
        excess = len(self.buffer) - 4 * self.limit
        if excess > 0:
            del self.buffer[:excess]

    def text(self) -> str:
        return self.buffer.decode("utf-8", "replace")[-self.limit :] if self.limit else ""


class _Run:
    """The child and why it was killed; signal handlers and the timer only call :meth:`kill`.

    No lock: a signal handler runs on the main thread between bytecodes and must never wait for
    it; the main thread re-checks ``killed`` once the child exists, so no kill is missed."""

    def __init__(self) -> None:
        self.child: subprocess.Popen[bytes] | None = None
        self.killed = False
        self.timed_out = False

    def kill(self, *, timed_out: bool) -> None:
        if self.killed or self.timed_out:
            return
        if timed_out:
            self.timed_out = True
        else:
            self.killed = True
        child = self.child
        if child is not None:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(child.pid, signal.SIGKILL)


def final_record(status: int, output: str, *, kill_requested: bool, timeout_fired: bool) -> RunRecord:
    """How the workload ended, from its exit status and what we did to it.

    A kill (a cancellation, or the timeout) that came after the workload had exited changed
    nothing: its own exit status is the result. Recording it as killed would make the agent
    report "stopped, retry" for a job that had just finished, and run it a second time."""
    by_signal = status < 0
    timed_out = timeout_fired and by_signal
    return RunRecord(
        exit_code=-int(signal.SIGKILL) if timed_out else status,
        output=output,
        timed_out=timed_out,
        killed=kill_requested and by_signal,
        finished_at=time.time(),
    )


def _read_payload(stream: int) -> bytes | None:
    header = bytearray()
    while not header.endswith(b"\n"):
        byte = os.read(stream, 1)
        if not byte or len(header) > 32:
            return None
        header += byte
    try:
        length = unframe_length(bytes(header))
    except ValueError:
        return None
    payload = bytearray()
    while len(payload) < length:
        chunk = os.read(stream, min(65536, length - len(payload)))
        if not chunk:
            return None
        payload += chunk
    return bytes(payload)


def _feed(child: subprocess.Popen[bytes], payload: bytes) -> None:
    assert child.stdin is not None
    with contextlib.suppress(BrokenPipeError, ConnectionResetError, OSError):
        child.stdin.write(payload)
        child.stdin.flush()
    with contextlib.suppress(OSError):
        child.stdin.close()


def supervise(directory: Path, vm: str, command: list[str], timeout: float | None, limit: int) -> int:
    lock_fd = os.open(lock_path(directory, vm), os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        print(f"supervise: {vm} already has a live supervisor", file=sys.stderr)
        return EXIT_BUSY
    os.ftruncate(lock_fd, 0)
    os.write(lock_fd, f"{os.getpid()}\n".encode())
    run = _Run()
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, lambda _s, _f: run.kill(timed_out=False))
    # The handshake, then stdout goes: the agent that reads it may die at any moment.
    os.write(1, HANDSHAKE)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.close(devnull)
    payload = _read_payload(0)
    if payload is None or run.killed:
        print(f"supervise: {vm}: no complete script on stdin; nothing ran", file=sys.stderr)
        return EXIT_NO_SCRIPT
    tail = _Tail(limit)
    pipe = subprocess.PIPE
    child = run.child = subprocess.Popen(
        command, stdin=pipe, stdout=pipe, stderr=subprocess.STDOUT, start_new_session=True
    )
    if run.killed:  # a signal arrived while we were starting it
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(child.pid, signal.SIGKILL)
    timer = threading.Timer(timeout, run.kill, kwargs={"timed_out": True}) if timeout else None
    if timer is not None:
        timer.daemon = True
        timer.start()
    feeder = threading.Thread(target=_feed, args=(child, payload), daemon=True)
    feeder.start()
    assert child.stdout is not None
    while chunk := os.read(child.stdout.fileno(), 65536):
        tail.add(chunk)
    status = child.wait()
    if timer is not None:
        timer.cancel()
    write_record(
        record_path(directory, vm),
        final_record(status, tail.text(), kill_requested=run.killed, timeout_fired=run.timed_out),
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m host_agent.supervise", description="run a workload; record how it ended"
    )
    parser.add_argument("--dir", required=True, type=Path, help="the agent's runs directory")
    parser.add_argument("--vm", required=True, help="the VM (names the lock and record files)")
    parser.add_argument("--timeout", type=float, default=None, help="kill the command after this many s")
    parser.add_argument("--output-limit", type=int, default=16_384, help="characters of output to keep")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- then the command (anka run ...)")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("no command given")
    try:
        check_run_name(args.vm)
    except ValueError as exc:
        parser.error(str(exc))
    if args.timeout is not None and args.timeout <= 0:
        parser.error("--timeout must be positive")
    return supervise(args.dir, args.vm, command, args.timeout, args.output_limit)


if __name__ == "__main__":
    sys.exit(main())
