"""A workload's run record and what a restarted agent does with it: pure data, no I/O.

The workload (``anka run <vm> bash -l -s``) is driven by a detached supervisor
(``host_agent.supervise``) that outlives the agent and writes one record per VM when the
workload ends. After a restart the agent looks at what it finds for a VM: the record, whether the
supervisor still holds its lock, and whether it had reported the workload running, and
:func:`resume_run` picks one course. Keeping this a table over plain values lets a unit test pin
every combination, so a job never runs twice because an agent crashed.
"""

from __future__ import annotations

import enum
import json
import re
from dataclasses import asdict, dataclass
from typing import Any

RECORD_VERSION = 1
_SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")


class RunRecordError(ValueError):
    """A record file that is not a record (truncated by hand, another version): not trusted."""


@dataclass(frozen=True)
class RunRecord:
    """How ``anka run`` ended: exit status (negative: killed by that signal), output tail, and
    whether the supervisor killed it itself (``timed_out``: timeoutSeconds passed; ``killed``:
    the agent asked it to stop, for a cancellation or a shutdown)."""

    exit_code: int
    output: str
    timed_out: bool = False
    killed: bool = False
    finished_at: float = 0.0

    def to_json(self) -> str:
        return json.dumps({"version": RECORD_VERSION, **asdict(self)})

    @classmethod
    def from_json(cls, text: str) -> RunRecord:
        try:
            data: Any = json.loads(text)
        except ValueError as exc:
            raise RunRecordError(f"not JSON: {exc}") from None
        if not isinstance(data, dict) or data.get("version") != RECORD_VERSION:
            raise RunRecordError(f"unknown record: {str(data)[:200]}")
        code, output = data.get("exit_code"), data.get("output")
        if isinstance(code, bool) or not isinstance(code, int) or not isinstance(output, str):
            raise RunRecordError("record lacks an integer exit_code or a string output")
        finished = data.get("finished_at", 0.0)
        return cls(
            exit_code=code,
            output=output,
            timed_out=data.get("timed_out") is True,
            killed=data.get("killed") is True,
            finished_at=float(finished) if isinstance(finished, int | float) else 0.0,
        )


def check_run_name(name: str) -> str:
    """A VM name used as a file name under the runs directory: no separators, no dot-dot."""
    if not _SAFE_NAME.fullmatch(name) or ".." in name:
        raise ValueError(f"unsafe VM name for a run file: {name!r}")
    return name


class ResumeRun(enum.StrEnum):
    """What a restarted agent does with a VM it finds, as far as the workload is concerned."""

    REPORT = "report"  # the workload ended while we were away: report its real exit status
    REATTACH = "reattach"  # the supervisor still runs it: wait for its record
    ABANDON = "abandon"  # it ran, but its result is lost (host reboot): retryable AgentRestarted
    PROVISION = "provision"  # the workload never started: go on provisioning the VM


def resume_run(*, record: RunRecord | None, supervisor_alive: bool, reported_running: bool) -> ResumeRun:
    """The decision for a VM found at restart.

    The record wins: it is written last, so it is the workload's final word, even if the
    supervisor has not exited yet, and even if our RUNNING report never reached Redis. A record
    of a run the agent itself killed has no verdict to report, so the attempt is handed back. A
    live supervisor means the workload may still be running: re-attach, never start it again.
    With neither, a workload reported running was lost with its supervisor (the host rebooted):
    retry it elsewhere. One never reported running most likely never got its script (the agent
    reports RUNNING before it writes the script, and the supervisor reads it in full before it
    starts ``anka run``), so provisioning carries on.
    """
    if record is not None:
        return ResumeRun.ABANDON if record.killed else ResumeRun.REPORT
    if supervisor_alive:
        return ResumeRun.REATTACH
    return ResumeRun.ABANDON if reported_running else ResumeRun.PROVISION


def frame(payload: bytes) -> bytes:
    """The supervisor's stdin: the payload's length on a line, then the payload. A supervisor
    whose stdin ends early (the agent died mid-write) sees a short payload and runs nothing."""
    return b"%d\n" % len(payload) + payload


def unframe_length(header: bytes) -> int:
    text = header.strip()
    if not text.isdigit():
        raise ValueError(f"bad payload header: {header[:40]!r}")
    return int(text)
