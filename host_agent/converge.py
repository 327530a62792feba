"""The agent's converge step as a table: (desired × local facts) → one action.

For every job attempt the agent knows of (desired by the controller, running in a task here,
present as a VM, or reported in Redis), the loop looks up exactly one action. Keeping the
policy in a table makes every combination visible and lets a test prove it is exhaustive.
"""

from __future__ import annotations

import enum
import itertools


class Desire(enum.StrEnum):
    RUN = "run"
    CANCEL = "cancel"
    ABSENT = "absent"


class Outcome(enum.StrEnum):
    """Whether this attempt already has a terminal result, and whether its VM is confirmed gone."""

    NONE = "none"
    PENDING_DELETE = "pending-delete"
    DONE = "done"


class Action(enum.StrEnum):
    NOTHING = "nothing"
    START = "start"  # fresh attempt: pull if needed, clone, start, run
    RESUME = "resume"  # the VM exists but no task drives it (agent restarted)
    STOP_TASK = "stop-task"  # cancel the task; it deletes its VM and reports
    DELETE_VM = "delete-vm"  # delete the VM, then report what is owed
    REPORT_DONE = "report-done"  # the VM is gone: confirm the terminal result
    REPORT_CANCELLED = "report-cancelled"  # cancelled before any VM existed
    FORGET = "forget"  # nothing desired, nothing here: drop our report


def _rule(desire: Desire, task: bool, vm: bool, outcome: Outcome) -> Action:
    if task:
        return Action.NOTHING if desire == Desire.RUN else Action.STOP_TASK
    if outcome == Outcome.PENDING_DELETE:
        return Action.DELETE_VM if vm else Action.REPORT_DONE
    if outcome == Outcome.DONE:
        if vm:
            return Action.DELETE_VM
        return Action.FORGET if desire == Desire.ABSENT else Action.NOTHING
    if desire == Desire.RUN:
        return Action.RESUME if vm else Action.START
    if desire == Desire.CANCEL:
        return Action.DELETE_VM if vm else Action.REPORT_CANCELLED
    return Action.DELETE_VM if vm else Action.FORGET


TABLE: dict[tuple[Desire, bool, bool, Outcome], Action] = {
    key: _rule(*key) for key in itertools.product(Desire, (False, True), (False, True), Outcome)
}


def decide(*, desire: Desire, task: bool, vm: bool, outcome: Outcome) -> Action:
    return TABLE[(desire, task, vm, outcome)]
