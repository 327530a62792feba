"""What ``anka`` says, as Python values: errors, VM facts, envelopes, and their pure parsers.

Kept apart from the subprocess code in ``host_agent.anka`` so that everything here is testable
without I/O (contract: ``shared/reference/anka-cli.md`` §1.2, §1.3, §2, §7).
"""

from __future__ import annotations

import json
import math
import re
import shlex
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields, replace
from datetime import UTC, datetime
from typing import Any

_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_RAM = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)i?B?\s*", re.IGNORECASE | re.ASCII)


class AnkaError(Exception):
    """``anka`` failed: non-zero exit or ERROR status. ``code`` is the envelope's, if any."""

    def __init__(
        self,
        message: str,
        *,
        argv: Sequence[str] = (),
        code: int | None = None,
        exit_status: int | None = None,
        stderr: str = "",
    ) -> None:
        super().__init__(message)
        self.message = message
        self.argv = list(argv)
        self.code = code
        self.exit_status = exit_status
        self.stderr = stderr

    def __str__(self) -> str:
        return f"{self.message} (code={self.code}, exit={self.exit_status}, argv={shlex.join(self.argv)})"


class AnkaNotFound(AnkaError):
    """Code 3, or "not found" in the message (how registry misses are told apart)."""


class AnkaAlreadyExists(AnkaError):
    """Code 18: the clone's name is taken."""


class AnkaTimeout(AnkaError):
    """Our own deadline fired; the child's whole process group was SIGKILLed."""


class AnkaOutputError(AnkaError):
    """No parseable JSON envelope on stdout."""


class AnkaVMFailed(AnkaError):
    """The VM reached the ``failed`` state; it needs ``stop --force`` before it can start."""


@dataclass(frozen=True)
class Envelope:
    status: str
    code: int | None
    body: Any
    message: str
    exception_type: str | None = None


@dataclass(frozen=True)
class VMInfo:
    name: str
    uuid: str
    status: str
    version: str | None
    ip: str | None = None
    cpu_cores: int | None = None
    ram_size: int | None = None
    image_size: int | None = None
    access_date: datetime | None = None


@dataclass(frozen=True)
class RunResult:
    """``output`` is the bounded tail of stdout and stderr interleaved as they arrived."""

    exit_code: int
    output: str
    timed_out: bool


@dataclass(frozen=True)
class DownloadSize:
    size: int
    cached: int
    available: int

    @property
    def to_download(self) -> int:
        return max(0, self.size - self.cached)


@dataclass(frozen=True)
class AnkaTimeouts:
    """Seconds per kind of call; ``run`` (``None``: unbounded) applies when a call gives none."""

    query: float = 30.0
    clone: float = 300.0
    start: float = 120.0
    stop: float = 120.0
    delete: float = 120.0
    suspend: float = 120.0
    copy: float = 600.0
    mount: float = 60.0
    registry: float = 60.0
    check_download_size: float = 120.0
    pull: float = 3 * 3600.0
    run: float | None = None

    @classmethod
    def from_mapping(cls, seconds: Mapping[str, float]) -> AnkaTimeouts:
        """The defaults with some kinds overridden (``ANKLET_AGENT_ANKA_TIMEOUTS``); an unknown kind
        or a value that is not positive is an error, so a typo cannot silently keep a default."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(seconds) - known)
        if unknown:
            raise ValueError(f"unknown anka timeout {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        bad = sorted(kind for kind, value in seconds.items() if not value > 0)
        if bad:
            raise ValueError(f"anka timeouts must be positive seconds: {', '.join(bad)}")
        return replace(cls(), **{kind: float(value) for kind, value in seconds.items()})


# --- pure parsing ------------------------------------------------------------------------------


def parse_envelope(
    stdout: str | bytes, *, argv: Sequence[str] = (), exit_status: int | None = None, stderr: str = ""
) -> Envelope:
    """The envelope on the last non-empty line; earlier lines (pull progress) are ignored.

    Tolerates either JSON separator style and a missing trailing newline. Anything else
    (empty output, a non-JSON last line, a non-object) raises :class:`AnkaOutputError`.
    """
    text = stdout.decode("utf-8", "replace") if isinstance(stdout, bytes) else stdout
    lines = [line.strip() for line in text.splitlines() if line.strip()]

    def fail(reason: str) -> AnkaOutputError:
        detail = f"; stderr: {stderr.strip()[-300:]}" if stderr.strip() else ""
        return AnkaOutputError(f"{reason}{detail}", argv=argv, exit_status=exit_status, stderr=stderr)

    if not lines:
        raise fail("no JSON output from anka")
    try:
        data = json.loads(lines[-1])
    except (ValueError, RecursionError):
        raise fail(f"last output line is not JSON: {lines[-1][:200]!r}") from None
    if not isinstance(data, dict) or not isinstance(data.get("status"), str):
        raise fail(f"last output line is not an anka envelope: {lines[-1][:200]!r}")
    code = data.get("code")
    message = data.get("message")
    exception_type = data.get("exception_type")
    return Envelope(
        status=data["status"],
        code=code if isinstance(code, int) and not isinstance(code, bool) else None,
        body=data.get("body"),
        message=message if isinstance(message, str) else ("" if message is None else str(message)),
        exception_type=exception_type if isinstance(exception_type, str) else None,
    )


def error_for(
    message: str, *, argv: Sequence[str] = (), code: int | None, exit_status: int | None, stderr: str = ""
) -> AnkaError:
    """Map an ``anka`` failure to the exception class callers branch on."""
    cls: type[AnkaError] = AnkaError
    if code == 3 or "not found" in message.lower():
        cls = AnkaNotFound
    elif code == 18:
        cls = AnkaAlreadyExists
    return cls(message, argv=argv, code=code, exit_status=exit_status, stderr=stderr)


def check_envelope(
    envelope: Envelope, *, argv: Sequence[str] = (), exit_status: int | None, stderr: str = ""
) -> Envelope:
    """Success means exit 0 *and* status OK; either alone is an error (the two must agree)."""
    if envelope.status == "OK" and exit_status in (0, None):
        return envelope
    message = envelope.message or f"anka exited with status {exit_status} (envelope {envelope.status})"
    raise error_for(message, argv=argv, code=envelope.code, exit_status=exit_status, stderr=stderr)


def parse_version(text: str) -> tuple[int, int, int]:
    """``3.9.1 (build 216)`` / ``v4.0.1`` → (3, 9, 1): cut at the first space, strip ``v``,
    require three numeric parts (each may carry a suffix, as in ``1-beta``)."""
    head = text.strip().split(" ", 1)[0]
    head = head[1:] if head[:1] in ("v", "V") else head
    parts = head.split(".")
    if len(parts) < 3:
        raise ValueError(f"not a three-part version: {text!r}")
    numbers = []
    for part in parts[:3]:
        match = re.match(r"\d+", part)
        if match is None:
            raise ValueError(f"not a numeric version part {part!r} in {text!r}")
        numbers.append(int(match.group()))
    return numbers[0], numbers[1], numbers[2]


def parse_timestamp(value: object) -> datetime | None:
    """RFC 3339 (``Z`` or offset, optional fraction) as an aware UTC datetime; junk → ``None``.

    A time that cannot be expressed in UTC (year 1 with a positive offset, year 9999 with a
    negative one) is junk too: ``astimezone`` would raise OverflowError.
    """
    if not isinstance(value, str) or not value.strip():
        return None
    try:
        parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00").replace("z", "+00:00"))
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None


_MAX_DIGITS = 30  # beyond any byte count or core count; int() refuses > 4300 digits anyway


def as_int(value: object) -> int | None:
    """An int, or a string of ASCII digits; anything else (``"²"``, ``"١٢"``, bools) → ``None``."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str):
        text = value.strip()
        if text.isascii() and text.isdigit() and len(text) <= _MAX_DIGITS:
            return int(text)
    return None


def _ram_bytes(value: object) -> int | None:
    """``ram`` is ``"4G"`` since 3.0.1 (bytes as a string before); absurd sizes → ``None``."""
    if not isinstance(value, str) or (match := _RAM.fullmatch(value)) is None:
        return None
    scale = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3, "T": 1024**4}[match.group(2).upper()]
    amount = float(match.group(1)) * scale
    return int(amount) if math.isfinite(amount) else None


def vm_info_from_dict(data: object) -> VMInfo:
    """A ``list`` row or ``show`` body as :class:`VMInfo` (empty ``ip`` means none yet)."""
    if not isinstance(data, dict):
        raise AnkaOutputError(f"expected a VM object, got {type(data).__name__}")
    uuid = data.get("uuid") or data.get("id")
    name = data.get("name")
    if not uuid and not name:
        raise AnkaOutputError(f"VM object without uuid or name: {data!r:.200}")
    version, ip = data.get("version"), data.get("ip")
    return VMInfo(
        name=str(name or uuid),
        uuid=str(uuid or name),
        status=str(data.get("status") or ""),
        version=str(version) if version else None,
        ip=str(ip) if ip else None,
        cpu_cores=as_int(data.get("cpu_cores")),
        ram_size=as_int(data.get("ram_size")) or _ram_bytes(data.get("ram")),
        image_size=as_int(data.get("image_size")),
        access_date=parse_timestamp(data.get("access_date")),
    )


def env_script(script: str, env: Mapping[str, str] | None) -> str:
    """``export K=<quoted>`` lines then the script: values travel on stdin, never in argv."""
    lines = []
    for key, value in (env or {}).items():
        if not _ENV_NAME.fullmatch(key):
            raise ValueError(f"invalid environment variable name: {key!r}")
        lines.append(f"export {key}={shlex.quote(value)}")
    return "\n".join([*lines, script]) + "\n"
