"""How a command's result reaches the caller: the ``-j`` envelope or human text.

The envelope rules are what real callers depend on (anka-cli.md §1.2): one JSON line, written
last, with no trailing newline, and stderr flushed before it. The ``malformed`` fault bends
exactly these rules so a driver's parser can be tested against them.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Any, TextIO


class SimError(Exception):
    """A failed command: becomes an ERROR envelope (or ``anka: <message>`` on stderr)."""

    def __init__(
        self,
        message: str,
        *,
        code: int = 1,
        exit_status: int | None = None,
        exception_type: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.code = code
        self.exit_status = exit_status
        self.exception_type = exception_type


def not_found(ref: str) -> SimError:
    return SimError(f"{ref}: not found", code=3, exception_type="NotFoundError")


def already_exists(ref: str) -> SimError:
    return SimError(f"{ref}: already exists", code=18, exception_type="AlreadyExistsError")


@dataclass
class Reply:
    """A successful result. ``human`` overrides the generic rendering of ``body`` without ``-j``."""

    body: Any = field(default_factory=dict)
    message: str = ""
    human: str | None = None


@dataclass(frozen=True)
class Emitter:
    """Writes results; ``malformed`` is a fault mode or ``None`` for well-formed output."""

    machine_readable: bool
    malformed: str | None = None
    default_exit_status: int = 1
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)

    def progress_line(self, payload: dict[str, Any]) -> None:
        """An intermediate JSON line (``registry pull``); always newline-terminated."""
        if self.machine_readable:
            self.out.write(json.dumps(payload) + "\n")
            self.out.flush()

    def ok(self, reply: Reply) -> int:
        if not self.machine_readable:
            text = reply.human if reply.human is not None else render_human(reply.body)
            if reply.message:
                text = f"{text}\n{reply.message}" if text else reply.message
            self.err.flush()
            if text:
                self.out.write(text + "\n")
            self.out.flush()
            return 0
        envelope = {"status": "OK", "code": 0, "body": reply.body, "message": reply.message}
        self._write_envelope(envelope)
        return 0

    def error(self, error: SimError) -> int:
        status = error.exit_status if error.exit_status is not None else self.default_exit_status
        status = status or self.default_exit_status
        if not self.machine_readable:
            self.out.flush()
            self.err.write(f"anka: {error.message}\n")
            self.err.flush()
            return status
        envelope: dict[str, Any] = {"status": "ERROR", "code": error.code, "message": error.message}
        if error.exception_type:
            envelope["exception_type"] = error.exception_type
        self._write_envelope(envelope)
        return status

    def _write_envelope(self, envelope: dict[str, Any]) -> None:
        line = json.dumps(envelope)
        mode = self.malformed
        self.err.flush()
        if mode == "empty":
            pass
        elif mode == "extra_json":
            progress = {"status": "OK", "code": 0, "body": {"progress": 50}, "message": "working"}
            self.out.write(json.dumps(progress) + "\n" + json.dumps(progress) + "\n" + line)
        elif mode == "trailing_newline":
            self.out.write(line + "\n")
        elif mode == "truncated":
            self.out.write(line[: len(line) // 2])
        elif mode == "stderr_after":
            self.out.write(line)
            self.out.flush()
            self.err.write("anka: warning: written after the result\n")
        elif mode is not None:  # "not_json" and anything unknown
            self.out.write(line + "\nsimulated garbage after the result")
        else:
            self.out.write(line)
        self.out.flush()
        self.err.flush()


def render_human(body: Any) -> str:
    """Good-enough tables for people; no caller parses human output."""
    if isinstance(body, list):
        if not body:
            return ""
        if all(isinstance(row, dict) for row in body):
            columns: list[str] = []
            for row in body:
                columns.extend(k for k in row if k not in columns)
            widths = {c: max(len(c), *(len(str(row.get(c, ""))) for row in body)) for c in columns}
            lines = [" | ".join(c.ljust(widths[c]) for c in columns)]
            lines.append("-+-".join("-" * widths[c] for c in columns))
            lines += [" | ".join(str(row.get(c, "")).ljust(widths[c]) for c in columns) for row in body]
            return "\n".join(lines)
        return "\n".join(str(item) for item in body)
    if isinstance(body, dict):
        if not body:
            return ""
        width = max(len(str(k)) for k in body)
        return "\n".join(f"{str(k).ljust(width)} | {v}" for k, v in body.items())
    return "" if body is None else str(body)
