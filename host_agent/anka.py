"""Async driver for Veertu's ``anka`` CLI: the only code in Anklet that runs the binary.

Contract: ``shared/reference/anka-cli.md`` §1, §2 and §7. Every call is ``anka -j <cmd> ...``
as an argv list (never a shell) in its own session, so a timeout or a cancellation can SIGKILL
the whole process group, children included. The result is the JSON envelope on the *last*
non-empty stdout line; ``run`` is never parsed, it yields an exit status and an output tail.
Destructive calls (``stop``, ``delete``) are shielded: cancelling the caller must not leave a
half-deleted VM behind. Pure parsing lives in module-level functions, testable without I/O.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import shlex
import signal
import time
from collections.abc import Callable, Coroutine, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from host_agent.anka_model import (
    AnkaAlreadyExists,
    AnkaError,
    AnkaNotFound,
    AnkaOutputError,
    AnkaTimeout,
    AnkaTimeouts,
    AnkaVMFailed,
    DownloadSize,
    Envelope,
    RunResult,
    VMInfo,
    as_int,
    check_envelope,
    env_script,
    error_for,
    parse_envelope,
    parse_timestamp,
    parse_version,
    vm_info_from_dict,
)

__all__ = [
    "AnkaAlreadyExists",
    "AnkaCLI",
    "AnkaDriver",
    "AnkaError",
    "AnkaNotFound",
    "AnkaOutputError",
    "AnkaTimeout",
    "AnkaTimeouts",
    "AnkaVMFailed",
    "DownloadSize",
    "Envelope",
    "RunResult",
    "VMInfo",
    "check_envelope",
    "env_script",
    "error_for",
    "parse_envelope",
    "parse_timestamp",
    "parse_version",
    "vm_info_from_dict",
]

log = logging.getLogger(__name__)

_T = TypeVar("_T")
_KILL_GRACE = 5.0


class _Tail:
    """Keeps only the last ``limit`` characters of a byte stream (by bytes, 4 per char worst case)."""

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.buffer = bytearray()

    def add(self, chunk: bytes) -> None:
        self.buffer += chunk
        excess = len(self.buffer) - 4 * self.limit
        if excess > 0:
            del self.buffer[:excess]

    def text(self) -> str:
        decoded = self.buffer.decode("utf-8", "replace")
        return decoded[-self.limit :] if self.limit else ""


# --- the driver --------------------------------------------------------------------------------


class AnkaDriver(Protocol):
    """What the host agent needs from Anka; :class:`AnkaCLI` implements it."""

    async def version(self) -> dict[str, str]: ...
    async def license(self) -> dict[str, str]: ...
    async def list_vms(self, *, running_only: bool = False) -> list[VMInfo]: ...
    async def show(self, vm: str) -> VMInfo: ...
    async def clone(self, source: str, name: str, *, tag: str | None = None) -> None: ...
    async def start(self, vm: str, *, mounts: Sequence[str] = ()) -> None: ...
    async def stop(self, vm: str, *, force: bool = False) -> None: ...
    async def delete(self, vm: str) -> None: ...
    async def wait_ready(self, vm: str, *, timeout: float, interval: float = 2.0) -> VMInfo: ...
    async def mount(self, vm: str, spec: str) -> None: ...
    async def run(
        self,
        vm: str,
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        output_limit: int = 64_000,
    ) -> RunResult: ...
    async def registry_show(self, template: str, *, tag: str | None = None) -> dict[str, Any]: ...
    async def registry_pull(self, template: str, *, tag: str | None = None, shrink: bool = True) -> None: ...
    async def check_download_size(self, template: str, *, tag: str | None = None) -> DownloadSize | None: ...


class AnkaCLI:
    """:class:`AnkaDriver` over the ``anka`` binary (or the simulator, via ``binary``).

    ``env`` is overlaid on this process's environment for every call; ``registry`` (a name or
    URL) is passed as ``registry --remote`` and as ``pull``'s trailing remote. ``observer`` is
    told every command's argv, duration and result (ok, error, timeout, cancelled): the metrics.
    """

    def __init__(
        self,
        binary: str = "anka",
        *,
        env: Mapping[str, str] | None = None,
        timeouts: AnkaTimeouts | None = None,
        registry: str | None = None,
        observer: Callable[[Sequence[str], float, str], object] | None = None,
    ) -> None:
        self.binary = binary
        self.observer = observer
        self.env = {**os.environ, **env} if env is not None else None
        self.timeouts = timeouts or AnkaTimeouts()
        self.registry = registry
        self._shielded: set[asyncio.Task[Any]] = set()

    async def _execute(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None,
        on_stdout: Callable[[bytes], object],
        on_stderr: Callable[[bytes], object],
        stdin: bytes | None = None,
    ) -> tuple[int | None, bool]:
        """Run ``argv`` in a new session; returns (exit status, timed out). Kills the group on exit
        paths. Every ``anka`` process goes through here, so this is where commands are measured."""
        started, result = time.monotonic(), "error"
        try:
            status, timed_out = await self._spawn(
                argv, timeout=timeout, on_stdout=on_stdout, on_stderr=on_stderr, stdin=stdin
            )
            result = "timeout" if timed_out else "ok" if status == 0 else "error"
            return status, timed_out
        except asyncio.CancelledError:
            result = "cancelled"
            raise
        finally:
            if self.observer is not None:
                try:
                    self.observer(argv, time.monotonic() - started, result)
                except Exception as exc:  # metrics must never break a VM operation
                    log.debug("anka command observer failed: %r", exc)

    async def _spawn(
        self,
        argv: Sequence[str],
        *,
        timeout: float | None,
        on_stdout: Callable[[bytes], object],
        on_stderr: Callable[[bytes], object],
        stdin: bytes | None,
    ) -> tuple[int | None, bool]:
        log.debug("anka: executing %s", shlex.join(argv))
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.PIPE if stdin is not None else asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env=self.env,
            start_new_session=True,
        )

        async def pump(stream: asyncio.StreamReader | None, sink: Callable[[bytes], object]) -> None:
            while stream is not None and (chunk := await stream.read(65536)):
                sink(chunk)

        async def feed() -> None:
            if proc.stdin is None or stdin is None:
                return
            with contextlib.suppress(BrokenPipeError, ConnectionResetError):
                proc.stdin.write(stdin)
                await proc.stdin.drain()
            proc.stdin.close()

        async def complete() -> int:
            await asyncio.gather(pump(proc.stdout, on_stdout), pump(proc.stderr, on_stderr), feed())
            return await proc.wait()

        try:
            return await asyncio.wait_for(complete(), timeout), False
        except TimeoutError:
            await self._kill(proc)
            return proc.returncode, True
        except BaseException:
            await self._kill(proc)
            raise

    @staticmethod
    async def _kill(proc: asyncio.subprocess.Process) -> None:
        """SIGKILL the child's process group (it leads its own session), then reap it."""
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(TimeoutError, ProcessLookupError):
            await asyncio.wait_for(proc.wait(), _KILL_GRACE)

    async def _call(
        self, args: Sequence[str], *, timeout: float | None, machine_readable: bool = True
    ) -> Envelope:
        argv = [self.binary, *(["-j"] if machine_readable else []), *args]
        stdout, stderr = bytearray(), _Tail(16_000)
        status, timed_out = await self._execute(
            argv, timeout=timeout, on_stdout=stdout.extend, on_stderr=stderr.add
        )
        if timed_out:
            raise AnkaTimeout(f"anka {args[0]} timed out after {timeout}s", argv=argv, stderr=stderr.text())
        if not machine_readable:
            if status != 0:
                message = (stderr.text().strip().splitlines() or [f"exit status {status}"])[-1]
                raise error_for(message, argv=argv, code=None, exit_status=status, stderr=stderr.text())
            return Envelope("OK", 0, None, stdout.decode("utf-8", "replace").strip())
        envelope = parse_envelope(bytes(stdout), argv=argv, exit_status=status, stderr=stderr.text())
        return check_envelope(envelope, argv=argv, exit_status=status, stderr=stderr.text())

    async def _shield(self, coro: Coroutine[Any, Any, _T]) -> _T:
        """Run ``coro`` to completion even if our caller is cancelled meanwhile."""
        task = asyncio.ensure_future(coro)
        self._shielded.add(task)
        task.add_done_callback(self._shielded.discard)
        return await asyncio.shield(task)

    def _registry_args(self) -> list[str]:
        return ["registry", *(["--remote", self.registry] if self.registry else [])]

    @staticmethod
    def _strings(envelope: Envelope, required: str) -> dict[str, str]:
        body = envelope.body
        if not isinstance(body, dict) or not isinstance(body.get(required), str):
            raise AnkaOutputError(f"body has no string {required!r}: {body!r:.200}")
        return {str(k): str(v) for k, v in body.items() if isinstance(v, str | int | float)}

    async def version(self) -> dict[str, str]:
        return self._strings(await self._call(["version"], timeout=self.timeouts.query), "version")

    async def license(self) -> dict[str, str]:
        return self._strings(await self._call(["license", "show"], timeout=self.timeouts.query), "status")

    async def list_vms(self, *, running_only: bool = False) -> list[VMInfo]:
        args = ["list", "--running"] if running_only else ["list"]
        body = (await self._call(args, timeout=self.timeouts.query)).body
        if body is None:
            return []
        if not isinstance(body, list):
            raise AnkaOutputError(f"list body is not an array: {body!r:.200}")
        return [vm_info_from_dict(row) for row in body]

    async def show(self, vm: str) -> VMInfo:
        return vm_info_from_dict((await self._call(["show", vm], timeout=self.timeouts.query)).body)

    async def clone(self, source: str, name: str, *, tag: str | None = None) -> None:
        await self._call(
            ["clone", *(["--tag", tag] if tag else []), source, name], timeout=self.timeouts.clone
        )

    async def start(self, vm: str, *, mounts: Sequence[str] = ()) -> None:
        mount_args = [arg for spec in mounts for arg in ("--mount", spec)]
        await self._call(["start", *mount_args, vm], timeout=self.timeouts.start)

    async def stop(self, vm: str, *, force: bool = False) -> None:
        args = ["stop", *(["--force"] if force else []), vm]
        await self._shield(self._call(args, timeout=self.timeouts.stop))

    async def suspend(self, vm: str) -> None:
        await self._shield(self._call(["suspend", vm], timeout=self.timeouts.suspend))

    async def delete(self, vm: str) -> None:
        """``delete --yes`` (works on running VMs); shielded, with the Go Anklet's plain-text retry."""
        await self._shield(self._delete(vm))

    async def _delete(self, vm: str) -> None:
        args = ["delete", "--yes", vm]
        try:
            await self._call(args, timeout=self.timeouts.delete)
        except (AnkaNotFound, AnkaTimeout):
            raise
        except AnkaError as exc:
            log.warning("anka -j delete %s failed (%s); retrying without -j", vm, exc.message)
            await self._call(args, timeout=self.timeouts.delete, machine_readable=False)

    async def wait_ready(self, vm: str, *, timeout: float, interval: float = 2.0) -> VMInfo:
        """Poll ``show`` until running with an IP (fail fast on ``failed``), then ``run vm true``.

        One deadline covers everything; a call in flight when it expires is killed.
        """
        try:
            async with asyncio.timeout(timeout):
                return await self._wait_ready(vm, interval)
        except TimeoutError:
            raise AnkaTimeout(f"{vm}: not ready after {timeout}s", argv=[self.binary, "show", vm]) from None

    async def _wait_ready(self, vm: str, interval: float) -> VMInfo:
        while True:
            info = await self.show(vm)
            if info.status == "failed":
                raise AnkaVMFailed(f"{vm}: VM is in failed state", argv=[self.binary, "show", vm])
            if info.status == "running" and info.ip:
                break
            await asyncio.sleep(interval)
        while True:
            probe = await self._run_argv([self.binary, "run", vm, "true"], b"", self.timeouts.query, 4000)
            if probe.exit_code == 0:
                return info
            log.debug(
                "anka: %s not ready for run yet (exit %s): %s", vm, probe.exit_code, probe.output[-200:]
            )
            await asyncio.sleep(interval)

    async def run(
        self,
        vm: str,
        script: str,
        *,
        env: Mapping[str, str] | None = None,
        timeout: float | None = None,
        output_limit: int = 64_000,
    ) -> RunResult:
        """``anka run <vm> bash -l -s`` with the exports and ``script`` on stdin.

        On timeout the process group is killed and ``timed_out`` is set (exit code -9). Note the
        script shares stdin with the commands it runs: a command that reads stdin eats the rest.
        """
        payload = env_script(script, env).encode()
        argv = [self.binary, "run", vm, "bash", "-l", "-s"]
        return await self._run_argv(
            argv, payload, timeout if timeout is not None else self.timeouts.run, output_limit
        )

    async def _run_argv(self, argv: list[str], stdin: bytes, timeout: float | None, limit: int) -> RunResult:
        tail = _Tail(limit)
        status, timed_out = await self._execute(
            argv, timeout=timeout, on_stdout=tail.add, on_stderr=tail.add, stdin=stdin
        )
        exit_code = -int(signal.SIGKILL) if timed_out or status is None else status
        return RunResult(exit_code=exit_code, output=tail.text(), timed_out=timed_out)

    async def copy_in(self, vm: str, host_path: str, guest_path: str = "") -> None:
        """``cp -a <host> <vm>:<guest>``; an empty guest path is the guest user's home."""
        await self._call(["cp", "-a", host_path, f"{vm}:{guest_path}"], timeout=self.timeouts.copy)

    async def copy_out(self, vm: str, guest_path: str, host_path: str) -> None:
        await self._call(["cp", "-a", f"{vm}:{guest_path}", host_path], timeout=self.timeouts.copy)

    async def mount(self, vm: str, spec: str) -> None:
        """Host-to-guest mount ``host_path[:name]`` on a running VM (Anka 3.9.0+, arm64 only)."""
        await self._call(["mount", vm, spec], timeout=self.timeouts.mount)

    async def registry_list(self) -> list[dict[str, Any]]:
        """Templates in the registry; also the cheapest "is the registry up?" probe."""
        body = (await self._call([*self._registry_args(), "list"], timeout=self.timeouts.registry)).body
        return [dict(row) for row in body if isinstance(row, dict)] if isinstance(body, list) else []

    async def registry_show(self, template: str, *, tag: str | None = None) -> dict[str, Any]:
        args = [*self._registry_args(), "show", template, *(["--tag", tag] if tag else [])]
        body = (await self._call(args, timeout=self.timeouts.registry)).body
        if not isinstance(body, dict):
            raise AnkaOutputError(f"registry show body is not an object: {body!r:.200}")
        return body

    async def registry_pull(self, template: str, *, tag: str | None = None, shrink: bool = True) -> None:
        args = [*self._registry_args(), "pull", *(["--shrink"] if shrink else []), template]
        await self._call([*args, *(["--tag", tag] if tag else [])], timeout=self.timeouts.pull)

    async def check_download_size(self, template: str, *, tag: str | None = None) -> DownloadSize | None:
        """Bytes to fetch before a pull; ``None`` when the tag is already local."""
        args = ["pull", template, "--check-download-size", *(["--tag", tag] if tag else [])]
        envelope = await self._call(
            [*args, *([self.registry] if self.registry else [])], timeout=self.timeouts.check_download_size
        )
        body = envelope.body
        if not body or "available locally" in envelope.message:
            return None
        values = [
            as_int(body.get(key)) if isinstance(body, dict) else None
            for key in ("size", "cached", "available")
        ]
        if any(v is None for v in values):
            raise AnkaOutputError(f"check-download-size body lacks sizes: {body!r:.200}", argv=args)
        size, cached, available = (int(v or 0) for v in values)
        return DownloadSize(size=size, cached=cached, available=available)


if TYPE_CHECKING:
    _conforms: AnkaDriver = AnkaCLI()  # mypy proves AnkaCLI implements the protocol
