"""Logging setup shared by every process: one line per record, level from LOG_LEVEL.

The line format (JSON by default, colored text on a terminal) and secret masking live in
`anklet.logformat`; the per-job context in `anklet.logcontext`.
"""

from __future__ import annotations

import logging
import os
import sys
from typing import IO

from anklet.logformat import make_formatter, parse_level, register_env_secrets


def setup_logging(level: str = "INFO", fmt: str | None = None, *, stream: IO[str] | None = None) -> None:
    """Log to stderr at `level` (LOG_LEVEL values, the Go Anklet's DEBUG-PRETTY/DEV included) in
    `fmt`: auto (default: ANKLET_LOG_FORMAT, else text on a terminal and JSON otherwise), json
    or text. Raises ValueError on an unknown level or format."""
    numeric, pretty = parse_level(level)
    chosen = fmt or os.environ.get("ANKLET_LOG_FORMAT") or ("text" if pretty else "auto")
    out = stream if stream is not None else sys.stderr
    handler = logging.StreamHandler(out)
    handler.setFormatter(make_formatter(chosen, out))
    register_env_secrets()
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(numeric)
    for noisy in ("kopf", "aiohttp.access", "httpx", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))


def add_rotating_file(path: str | os.PathLike[str], *, max_bytes: int, backups: int) -> None:
    """Also log to `path`, rotated at `max_bytes` keeping `backups` old files (`--log-file`).

    For the agent under launchd, which never rotates what it captures: records go to this file,
    and the stderr handler keeps only errors (a fatal line, one per Redis outage), so launchd's
    StandardErrorPath stays small. The file is JSON unless ANKLET_LOG_FORMAT says text.
    """
    from logging.handlers import RotatingFileHandler
    from pathlib import Path

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    handler = RotatingFileHandler(path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8")
    handler.setFormatter(make_formatter(os.environ.get("ANKLET_LOG_FORMAT") or "json", handler.stream))
    root = logging.getLogger()
    for existing in root.handlers:
        existing.setLevel(max(existing.level, logging.ERROR))
    root.addHandler(handler)
