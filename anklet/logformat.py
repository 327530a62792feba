"""How log records are written: JSON lines for machines, colored text for people, no secrets.

Every process logs one JSON object per line by default (`ts`, `level`, `logger`, `msg`, then the
context of `anklet.logcontext`: `job`, `uid`, `attempt`, `host`, `vm`), so a log pipeline can
filter one job's lines across the controller and its Mac. On a terminal the same records are
readable text with colors (`--log-format auto`, the default; `NO_COLOR` turns colors off).

Secrets: nothing is supposed to log one, but a message can quote something it did not build
(an exception from a library, a URL). `redact` is the last line of defence and runs on every
line in both formats: credentials in URLs, GitHub tokens, bearer tokens, PEM private keys,
`key=value` / `"key": "value"` pairs whose key names a secret (token, secret, password, JIT
config, ...) and the exact values of secret-looking environment variables.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from typing import IO, Any

from anklet.logcontext import FIELDS, current

MASK = "***"
FORMATS = ("auto", "json", "text")
#: LOG_LEVEL values of the Go Anklet that mean "debug, human-readable".
PRETTY_LEVELS = ("DEBUG-PRETTY", "DEV")

_PATTERNS: list[tuple[re.Pattern[str], str]] = [
    (
        re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.S),
        f"{MASK}PRIVATE KEY{MASK}",
    ),
    # scheme://user:password@host → scheme://user:***@host
    (re.compile(r"(?P<head>\b[a-zA-Z][a-zA-Z0-9+.-]*://[^:@/\s]*:)[^@/\s]+@"), rf"\g<head>{MASK}@"),
    (re.compile(r"\b(?:gh[pousr]_[A-Za-z0-9_]{16,}|github_pat_[A-Za-z0-9_]{20,})"), MASK),
    (re.compile(r"(?i)\b(bearer)\s+[^\s\"',;]+"), rf"\1 {MASK}"),
    (
        re.compile(
            r"(?i)(?P<key>(?:jit_?config|encoded_jit_config|secret|token|password|passwd|private_key|"
            r"api_key|authorization)[\"']?\s*[:=]\s*[\"']?)(?P<value>[^\"'\s,;}&]+)"
        ),
        rf"\g<key>{MASK}",
    ),
]

_SECRET_ENV = re.compile(r"(?i)(TOKEN|SECRET|PASSWORD|PASSWD|PRIVATE_KEY|JITCONFIG|REDIS_URL)")
_MIN_SECRET = 8
_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Mask this exact value wherever it appears in a log line (short values are ignored:
    masking "admin" everywhere would hide more than it protects)."""
    if value and len(value) >= _MIN_SECRET:
        _secrets.add(value)


def register_env_secrets(environ: Mapping[str, str] = os.environ) -> None:
    """Every secret-looking environment variable's value (ANKLET_GITHUB_TOKEN, ..._SECRET, the
    Redis URL) is masked, so a configured secret cannot reach a log whatever quotes it."""
    for key, value in environ.items():
        if _SECRET_ENV.search(key):
            register_secret(value)


def redact(text: str) -> str:
    """`text` with every secret it contains replaced by ***."""
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def parse_level(value: str) -> tuple[int, bool]:
    """LOG_LEVEL → (logging level, wants pretty text). Accepts the Go Anklet's values too
    (DEBUG-PRETTY, DEV); anything else raises ValueError with the accepted values."""
    name = value.strip().upper()
    if name in PRETTY_LEVELS:
        return logging.DEBUG, True
    if name == "WARN":
        name = "WARNING"
    level = logging.getLevelNamesMapping().get(name)
    if level is None or name == "NOTSET":
        raise ValueError(
            f"invalid log level {value!r}: use DEBUG, INFO, WARNING, ERROR, CRITICAL, DEBUG-PRETTY or DEV"
        )
    return level, False


def resolve_format(fmt: str, stream: IO[str], environ: Mapping[str, str] = os.environ) -> tuple[str, bool]:
    """(`json` or `text`, use colors) for `--log-format` on this stream.

    auto = text on a terminal, JSON otherwise (files, pipes, log collectors). Colors only on a
    terminal and never with NO_COLOR set (https://no-color.org)."""
    fmt = fmt.strip().lower()
    if fmt not in FORMATS:
        raise ValueError(f"invalid log format {fmt!r}: use one of {', '.join(FORMATS)}")
    try:
        tty = stream.isatty()
    except (AttributeError, ValueError):
        tty = False
    kind = ("text" if tty else "json") if fmt == "auto" else fmt
    color = kind == "text" and tty and not environ.get("NO_COLOR")
    return kind, color


def _context(record: logging.LogRecord) -> dict[str, str]:
    """The record's context: the contextvars in force when it was logged, then `extra` fields
    passed as `extra={"context": {...}}`."""
    fields = dict(current())
    extra = getattr(record, "context", None)
    if isinstance(extra, Mapping):
        fields.update({str(k): str(v) for k, v in extra.items() if v is not None})
    return fields


def _ordered(fields: Mapping[str, str]) -> Iterable[tuple[str, str]]:
    for key in FIELDS:
        if key in fields:
            yield key, fields[key]
    for key in sorted(set(fields) - set(FIELDS)):
        yield key, fields[key]


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


class JSONFormatter(logging.Formatter):
    """One JSON object per line: ts, level, logger, msg, context fields, exc (if any)."""

    _RESERVED = frozenset({"ts", "level", "logger", "msg", "exc"})

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "msg": redact(record.getMessage()),
        }
        for key, value in _ordered(_context(record)):
            line[f"ctx_{key}" if key in self._RESERVED else key] = redact(value)
        if record.exc_info:
            line["exc"] = redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line["exc"] = redact(record.exc_text)
        if record.stack_info:
            line["stack"] = redact(self.formatStack(record.stack_info))
        return json.dumps(line, ensure_ascii=False, default=str)


_COLORS = {
    logging.DEBUG: "\x1b[2m",  # dim
    logging.INFO: "\x1b[32m",  # green
    logging.WARNING: "\x1b[33m",  # yellow
    logging.ERROR: "\x1b[31m",  # red
    logging.CRITICAL: "\x1b[1;31m",  # bold red
}
_RESET = "\x1b[0m"
_DIM = "\x1b[2m"
_KEY = "\x1b[36m"  # cyan


class TextFormatter(logging.Formatter):
    """`HH:MM:SS.mmm LEVEL   logger: message  job=ns/name attempt=2 host=mac-1`, colored on demand."""

    def __init__(self, *, color: bool = False) -> None:
        super().__init__()
        self.color = color

    def _paint(self, code: str, text: str) -> str:
        return f"{code}{text}{_RESET}" if self.color else text

    def format(self, record: logging.LogRecord) -> str:
        clock = datetime.fromtimestamp(record.created).strftime("%H:%M:%S.%f")[:-3]
        level = self._paint(_COLORS.get(record.levelno, ""), f"{record.levelname:<7}")
        parts = [self._paint(_DIM, clock), level, f"{record.name}:", redact(record.getMessage())]
        context = " ".join(f"{self._paint(_KEY, k)}={redact(v)}" for k, v in _ordered(_context(record)))
        line = " ".join(parts) + (f"  {context}" if context else "")
        if record.exc_info:
            line += "\n" + redact(self.formatException(record.exc_info))
        elif record.exc_text:
            line += "\n" + redact(record.exc_text)
        return line


def make_formatter(fmt: str = "auto", stream: IO[str] | None = None) -> logging.Formatter:
    """The formatter for `--log-format` on `stream` (stderr by default); for extra handlers
    (a log file) pass `"json"`."""
    kind, color = resolve_format(fmt, stream if stream is not None else sys.stderr)
    return JSONFormatter() if kind == "json" else TextFormatter(color=color)
