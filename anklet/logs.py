"""Logging setup shared by every process: one line per record, level from LOG_LEVEL."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)-7s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    for noisy in ("kopf", "aiohttp.access", "httpx", "kubernetes"):
        logging.getLogger(noisy).setLevel(max(logging.WARNING, root.level))
