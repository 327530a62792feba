"""The agent's side of the workload supervisor (``host_agent.supervise``): start, wait, re-attach.

``anka run`` is started through a detached supervisor, so the workload's result outlives the
agent: the supervisor writes it to ``<runs>/<vm>.json`` when ``anka run`` ends. The agent waits
for its child the ordinary way; a restarted agent finds the record, or a supervisor still holding
``<runs>/<vm>.lock``, and waits for that lock to be released instead (a blocking ``flock`` in a
thread: woken by the kernel when the supervisor exits, never a polling loop). The job's timeout is
enforced by the supervisor itself, so it holds while the agent is down; a cancellation reaches
the supervisor as SIGTERM, by the pid it wrote into its lock file.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from host_agent.anka_model import AnkaError, RunResult
from host_agent.runstate import RunRecord, RunRecordError, frame
from host_agent.runsweep import RunFile, run_file_vm, stale_run_files
from host_agent.supervise import HANDSHAKE, lock_path, log_path, record_path

if TYPE_CHECKING:
    from host_agent.anka import AnkaCLI

log = logging.getLogger("anklet.agent")

_HANDSHAKE_TIMEOUT = 30.0  # a Python start on a loaded Mac; the supervisor has nothing else to do
_STOP_GRACE = 5.0


def result_of(record: RunRecord) -> RunResult:
    return RunResult(exit_code=record.exit_code, output=record.output, timed_out=record.timed_out)


class DetachedRuns:
    """Workloads run through supervisors, with their records and locks in ``directory``."""

    def __init__(
        self,
        directory: Path,
        *,
        binary: str = "anka",
        env: Mapping[str, str] | None = None,
        default_timeout: float | None = None,
        observer: Callable[[Sequence[str], float, str], object] | None = None,
        python: str = sys.executable,
    ) -> None:
        self.directory = directory
        self.binary = binary
        self.env = dict(env) if env is not None else None
        self.default_timeout = default_timeout
        self.observer = observer
        self.python = python

    @classmethod
    def for_cli(cls, cli: AnkaCLI, directory: Path) -> DetachedRuns:
        """Runs with the same binary, environment, run timeout and metrics as ``cli``."""
        return cls(
            directory,
            binary=cli.binary,
            env=cli.env,
            default_timeout=cli.timeouts.run,
            observer=cli.observer,
        )

    # ----- what is on disk ------------------------------------------------------------------
    def record(self, vm: str) -> RunRecord | None:
        """The workload's record; an unreadable one is logged and treated as absent."""
        try:
            return RunRecord.from_json(record_path(self.directory, vm).read_text(encoding="utf-8"))
        except FileNotFoundError:
            return None
        except (OSError, RunRecordError) as exc:
            log.error("ignoring the unreadable run record of %s: %s", vm, exc)
            return None

    def supervisor_pid(self, vm: str) -> int | None:
        """The pid of the supervisor holding ``vm``'s lock, or None if nobody holds it."""
        try:
            fd = os.open(lock_path(self.directory, vm), os.O_RDONLY)
        except FileNotFoundError:
            return None
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                text = os.pread(fd, 32, 0).decode(errors="replace").strip()
                return int(text) if text.isdigit() else -1  # held, pid not written yet
            return None
        finally:
            os.close(fd)  # releases our probe lock, if we got it

    def forget(self, vm: str) -> None:
        """Drop a finished attempt's files (its VM is deleted; nothing will ask again)."""
        for make in (record_path, lock_path, log_path):
            path = make(self.directory, vm)
            with contextlib.suppress(FileNotFoundError):
                path.unlink()

    def files(self) -> list[RunFile]:
        """The run files on disk; other files, and files that vanish meanwhile, are left out."""
        try:
            entries = list(os.scandir(self.directory))
        except FileNotFoundError:
            return []
        found: list[RunFile] = []
        for entry in entries:
            vm = run_file_vm(entry.name)
            if vm is None:
                continue
            with contextlib.suppress(FileNotFoundError):
                if entry.is_file(follow_symlinks=False):
                    found.append(RunFile(entry.name, vm, entry.stat(follow_symlinks=False).st_mtime))
        return found

    def sweep(self, live: Collection[str], *, now: float | None = None) -> list[str]:
        """Delete the run files nothing will read again (``host_agent.runsweep``); their names.

        ``live``: the VMs that exist, are desired or have a task. Locks are probed only for the
        other VMs: a probe holds the lock for an instant, and a supervisor starting for a live VM
        at that instant would find it taken. A lock that cannot be probed counts as held.
        """
        files = self.files()
        held = {vm for vm in {f.vm for f in files} - set(live) if self._lock_held(vm)}
        doomed = stale_run_files(files, live=live, held=held, now=time.time() if now is None else now)
        swept: list[str] = []
        for name in doomed:
            try:
                (self.directory / name).unlink()
            except FileNotFoundError:
                continue
            except OSError as exc:
                log.warning("cannot remove the stale run file %s: %s", name, exc)
                continue
            swept.append(name)
        if swept:
            more = f" and {len(swept) - 20} more" if len(swept) > 20 else ""
            log.info("removed %d stale run files: %s%s", len(swept), ", ".join(swept[:20]), more)
        return swept

    def _lock_held(self, vm: str) -> bool:
        try:
            return self.supervisor_pid(vm) is not None
        except OSError as exc:
            log.warning("cannot probe the run lock of %s (keeping its files): %s", vm, exc)
            return True

    # ----- running --------------------------------------------------------------------------
    async def run(
        self,
        vm: str,
        payload: bytes,
        *,
        timeout: float | None,
        output_limit: int,
        on_started: Callable[[], object] = lambda: None,
    ) -> RunResult:
        """``anka run <vm> bash -l -s`` through a new supervisor; ``payload`` goes on its stdin.

        ``on_started`` is called once the supervisor holds its lock and before the script is
        written: from then on, a restarted agent finds either the supervisor or its record.
        """
        self.directory.mkdir(parents=True, exist_ok=True)
        for stale in (record_path(self.directory, vm), log_path(self.directory, vm)):
            with contextlib.suppress(FileNotFoundError):
                stale.unlink()
        anka_argv = [self.binary, "run", vm, "bash", "-l", "-s"]
        timeout = timeout if timeout is not None else self.default_timeout
        argv = [
            self.python,
            "-m",
            "host_agent.supervise",
            "--dir",
            str(self.directory),
            "--vm",
            vm,
            *(["--timeout", str(timeout)] if timeout else []),
            "--output-limit",
            str(output_limit),
            "--",
            *anka_argv,
        ]
        started = time.monotonic()
        errors = os.open(log_path(self.directory, vm), os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=errors,
                env=self.env,
                start_new_session=True,
            )
        finally:
            os.close(errors)
        try:
            assert proc.stdin is not None and proc.stdout is not None
            line = await asyncio.wait_for(proc.stdout.readline(), _HANDSHAKE_TIMEOUT)
            if line != HANDSHAKE:
                await _stop(proc)
                raise AnkaError(f"the workload supervisor did not start: {self._log_tail(vm)}", argv=argv)
            on_started()
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(frame(payload))
                await proc.stdin.drain()
            proc.stdin.close()
            status = await proc.wait()
        except BaseException as exc:
            cancelled = isinstance(exc, asyncio.CancelledError)
            self._observe(anka_argv, time.monotonic() - started, "cancelled" if cancelled else "error")
            await _stop(proc)
            raise
        record = self.record(vm)
        if record is None:
            self._observe(anka_argv, time.monotonic() - started, "error")
            raise AnkaError(
                f"the workload supervisor exited {status} without a record: {self._log_tail(vm)}", argv=argv
            )
        outcome = "timeout" if record.timed_out else "ok" if record.exit_code == 0 else "error"
        self._observe(anka_argv, time.monotonic() - started, outcome)
        return result_of(record)

    async def attach(self, vm: str) -> RunResult | None:
        """Wait for a supervisor started by an earlier agent, then its record (None: it left none).

        Cancelled (the job was cancelled, the agent is stopping), it asks the supervisor to kill
        the workload and waits a moment for it to go.
        """
        pid = self.supervisor_pid(vm)
        if pid is not None:
            log.info("re-attaching to the workload of %s (supervisor pid %d)", vm, pid)
            waiter = _lock_released(lock_path(self.directory, vm))
            try:
                await asyncio.shield(waiter)
            except asyncio.CancelledError:
                self.signal(vm, signal.SIGTERM)
                with contextlib.suppress(TimeoutError, OSError):
                    await asyncio.wait_for(waiter, _STOP_GRACE)
                raise
        record = self.record(vm)
        return None if record is None else result_of(record)

    def signal(self, vm: str, sig: int) -> bool:
        """Signal ``vm``'s live supervisor (found by its lock); False if there is none."""
        pid = self.supervisor_pid(vm)
        if pid is None or pid <= 0:
            return False
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.kill(pid, sig)
            return True
        return False

    def _log_tail(self, vm: str) -> str:
        try:
            text = log_path(self.directory, vm).read_text(errors="replace").strip()
        except OSError:
            return "no log"
        return text[-500:] or "no log"

    def _observe(self, argv: Sequence[str], seconds: float, outcome: str) -> None:
        if self.observer is not None:
            try:
                self.observer(argv, seconds, outcome)
            except Exception as exc:  # metrics must never break a job
                log.debug("anka command observer failed: %r", exc)


async def _stop(proc: asyncio.subprocess.Process) -> None:
    """Ask the supervisor to kill its workload (SIGTERM), then SIGKILL it if it lingers."""
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), _STOP_GRACE)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(proc.wait(), _STOP_GRACE)


def _lock_released(path: Path) -> asyncio.Future[None]:
    """A future set once we can take ``path``'s lock, i.e. once its holder exited.

    A daemon thread blocks in ``flock``: the kernel wakes it when the supervisor's descriptor
    closes. Daemon, so an agent that stops while a supervisor lives on is never held up by it.
    """
    loop = asyncio.get_running_loop()
    future: asyncio.Future[None] = loop.create_future()

    def settle(error: BaseException | None) -> None:
        if future.done():
            return
        if error is None:
            future.set_result(None)
        else:
            future.set_exception(error)

    def wait() -> None:
        error: BaseException | None = None
        try:
            fd = os.open(path, os.O_RDONLY)
            try:
                fcntl.flock(fd, fcntl.LOCK_SH)
            finally:
                os.close(fd)
        except OSError as exc:
            error = exc if not isinstance(exc, FileNotFoundError) else None
        with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
            loop.call_soon_threadsafe(settle, error)

    threading.Thread(target=wait, name=f"wait {path.name}", daemon=True).start()
    return future
