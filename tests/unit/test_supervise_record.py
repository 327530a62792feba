"""The workload supervisor's record: a kill that came too late changes nothing."""

from __future__ import annotations

import signal

from host_agent.supervise import final_record

KILLED = -int(signal.SIGKILL)


def test_a_workload_killed_at_our_request_is_recorded_killed() -> None:
    record = final_record(KILLED, "out", kill_requested=True, timeout_fired=False)
    assert record.killed and not record.timed_out and record.exit_code == KILLED


def test_a_kill_after_the_workload_exited_leaves_its_own_result() -> None:
    for code in (0, 3):
        record = final_record(code, "out", kill_requested=True, timeout_fired=False)
        assert not record.killed and record.exit_code == code and record.output == "out"


def test_the_timeout_counts_only_when_it_killed_the_workload() -> None:
    fired = final_record(KILLED, "", kill_requested=False, timeout_fired=True)
    assert fired.timed_out and fired.exit_code == KILLED and not fired.killed
    late = final_record(0, "", kill_requested=False, timeout_fired=True)
    assert not late.timed_out and late.exit_code == 0


def test_a_workload_killed_by_someone_else_is_neither() -> None:
    record = final_record(-int(signal.SIGTERM), "", kill_requested=False, timeout_fired=False)
    assert not record.killed and not record.timed_out and record.exit_code == -int(signal.SIGTERM)
