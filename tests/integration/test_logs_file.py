"""`--log-file`: the agent's own size-rotated log, with stderr keeping only errors."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from anklet.logs import add_rotating_file, setup_logging


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    try:
        yield
    finally:
        for handler in root.handlers:
            if handler not in handlers:
                handler.close()
        root.handlers[:] = handlers
        root.setLevel(level)


def test_the_file_rotates_by_size_and_keeps_a_bounded_history(tmp_path: Path, restore_logging: None) -> None:
    stderr = io.StringIO()
    setup_logging("INFO", "json", stream=stderr)
    path = tmp_path / "logs" / "agent.log"
    add_rotating_file(path, max_bytes=4096, backups=2)
    log = logging.getLogger("anklet.test")
    for i in range(300):
        log.info("line %d %s", i, "x" * 40)
    log.error("the one error")
    files = sorted(p.name for p in path.parent.iterdir())
    assert files == ["agent.log", "agent.log.1", "agent.log.2"], "older ones are dropped"
    assert all(p.stat().st_size <= 4096 + 200 for p in path.parent.iterdir())
    last = [json.loads(line) for line in path.read_text().splitlines()][-1]
    assert last["msg"] == "the one error" and last["level"] == "ERROR"
    assert [json.loads(line)["msg"] for line in stderr.getvalue().splitlines()] == ["the one error"]
