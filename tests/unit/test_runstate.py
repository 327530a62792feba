"""The run record's format and the restart decision for a VM whose workload may have run."""

from __future__ import annotations

import itertools

import pytest

from host_agent.runstate import (
    ResumeRun,
    RunRecord,
    RunRecordError,
    check_run_name,
    frame,
    resume_run,
    unframe_length,
)

DONE = RunRecord(exit_code=3, output="tail")
KILLED = RunRecord(exit_code=-9, output="", killed=True)
TIMED_OUT = RunRecord(exit_code=-9, output="", timed_out=True)


@pytest.mark.parametrize(
    ("record", "alive", "running", "want"),
    [
        # the workload ended while the agent was down: its real verdict, whatever else we see
        (DONE, False, True, ResumeRun.REPORT),
        (DONE, True, True, ResumeRun.REPORT),  # written last: the supervisor is just exiting
        (DONE, False, False, ResumeRun.REPORT),  # our RUNNING report never reached Redis
        (TIMED_OUT, False, True, ResumeRun.REPORT),  # the supervisor enforced timeoutSeconds
        # the agent killed it itself (cancel, shutdown): no verdict, hand the attempt back
        (KILLED, False, True, ResumeRun.ABANDON),
        # still running under its supervisor: wait for it, never start it again
        (None, True, True, ResumeRun.REATTACH),
        (None, True, False, ResumeRun.REATTACH),
        # supervisor and result both gone (the host rebooted): retry elsewhere
        (None, False, True, ResumeRun.ABANDON),
        # never started: provisioning goes on
        (None, False, False, ResumeRun.PROVISION),
    ],
)
def test_resume_run(record: RunRecord | None, alive: bool, running: bool, want: ResumeRun) -> None:
    assert resume_run(record=record, supervisor_alive=alive, reported_running=running) == want


def test_resume_run_covers_every_case_and_never_reruns_a_started_workload() -> None:
    for record, alive, running in itertools.product((None, DONE, KILLED), (False, True), (False, True)):
        decision = resume_run(record=record, supervisor_alive=alive, reported_running=running)
        if record is not None or alive or running:
            assert decision != ResumeRun.PROVISION, (record, alive, running)


def test_record_round_trips() -> None:
    record = RunRecord(exit_code=-9, output="ü\nend", timed_out=True, killed=False, finished_at=12.5)
    assert RunRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    "text",
    [
        "",
        "{",
        "[]",
        '{"version": 2, "exit_code": 0, "output": ""}',
        '{"version": 1, "exit_code": "0", "output": ""}',
        '{"version": 1, "exit_code": true, "output": ""}',
        '{"version": 1, "exit_code": 0}',
    ],
)
def test_bad_records_are_refused(text: str) -> None:
    with pytest.raises(RunRecordError):
        RunRecord.from_json(text)


def test_frame_carries_the_payload_length() -> None:
    framed = frame(b"export A='x'\necho hi\n")
    header, _, payload = framed.partition(b"\n")
    assert unframe_length(header + b"\n") == len(payload) == 21
    with pytest.raises(ValueError, match="bad payload header"):
        unframe_length(b"-1\n")


@pytest.mark.parametrize("name", ["anklet-vm-abc-a1", "vm1"])
def test_safe_run_names(name: str) -> None:
    assert check_run_name(name) == name


@pytest.mark.parametrize("name", ["", "../x", "a/b", ".hidden", "a..b", "x y"])
def test_unsafe_run_names(name: str) -> None:
    with pytest.raises(ValueError, match="unsafe VM name"):
        check_run_name(name)
