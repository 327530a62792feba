"""The call log, ``ANKA_SIM_HOME/calls.jsonl``: every invocation, so tests can assert argv.

Each call appends a ``start`` event before doing anything and an ``end`` event with its exit
status, so a call that hangs or is SIGKILLed still shows up (with ``exit: null``). Lines are
small single ``write``s to an ``O_APPEND`` file, which Linux keeps whole across processes.
"""

from __future__ import annotations

import json
import os
import time
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any


def _append(path: Path, event: dict[str, Any]) -> None:
    data = (json.dumps(event) + "\n").encode()
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, data)
    finally:
        os.close(fd)


def log_start(path: Path, argv: Sequence[str]) -> str:
    call_id = uuid.uuid4().hex[:12]
    _append(
        path, {"event": "start", "id": call_id, "ts": time.time(), "pid": os.getpid(), "argv": list(argv)}
    )
    return call_id


def log_end(
    path: Path, call_id: str, exit_status: int | None, *, started: float, faults: Sequence[str]
) -> None:
    _append(
        path,
        {
            "event": "end",
            "id": call_id,
            "ts": time.time(),
            "exit": exit_status,
            "duration": round(time.monotonic() - started, 4),
            "faults": list(faults),
        },
    )


def read(path: Path) -> list[dict[str, Any]]:
    """One dict per call, in start order: ``id ts pid argv exit duration faults``."""
    calls: dict[str, dict[str, Any]] = {}
    try:
        lines = path.read_text().splitlines()
    except FileNotFoundError:
        return []
    for line in lines:
        try:
            event = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line being written right now
        if event.get("event") == "start":
            calls[event["id"]] = {
                "id": event["id"],
                "ts": event["ts"],
                "pid": event.get("pid"),
                "argv": event.get("argv", []),
                "exit": None,
                "duration": None,
                "faults": [],
            }
        elif event.get("id") in calls:
            calls[event["id"]].update(
                exit=event.get("exit"), duration=event.get("duration"), faults=event.get("faults", [])
            )
    return list(calls.values())
