"""The converge table is exhaustive and its safety rules hold for every combination."""

from __future__ import annotations

import itertools

import pytest

from host_agent.converge import TABLE, Action, Desire, Outcome, decide


def test_table_is_exhaustive() -> None:
    combos = set(itertools.product(Desire, (False, True), (False, True), Outcome))
    assert set(TABLE) == combos


@pytest.mark.parametrize(
    ("desire", "task", "vm", "outcome", "action"),
    [
        pytest.param(Desire.RUN, False, False, Outcome.NONE, Action.START, id="new-job-starts"),
        pytest.param(Desire.RUN, False, True, Outcome.NONE, Action.RESUME, id="restart-adopts-vm"),
        pytest.param(Desire.RUN, True, True, Outcome.NONE, Action.NOTHING, id="running-left-alone"),
        pytest.param(Desire.CANCEL, True, True, Outcome.NONE, Action.STOP_TASK, id="cancel-running"),
        pytest.param(Desire.CANCEL, False, True, Outcome.NONE, Action.DELETE_VM, id="cancel-after-restart"),
        pytest.param(Desire.CANCEL, False, False, Outcome.NONE, Action.REPORT_CANCELLED, id="cancel-no-vm"),
        pytest.param(Desire.ABSENT, False, True, Outcome.NONE, Action.DELETE_VM, id="orphan-vm"),
        pytest.param(Desire.ABSENT, True, True, Outcome.NONE, Action.STOP_TASK, id="released-while-running"),
        pytest.param(Desire.RUN, False, True, Outcome.PENDING_DELETE, Action.DELETE_VM, id="finish-delete"),
        pytest.param(Desire.RUN, False, False, Outcome.PENDING_DELETE, Action.REPORT_DONE, id="confirm-gone"),
        pytest.param(Desire.RUN, False, False, Outcome.DONE, Action.NOTHING, id="done-awaits-release"),
        pytest.param(Desire.ABSENT, False, False, Outcome.DONE, Action.FORGET, id="released-forget"),
    ],
)
def test_rules(desire: Desire, task: bool, vm: bool, outcome: Outcome, action: Action) -> None:
    assert decide(desire=desire, task=task, vm=vm, outcome=outcome) == action


@pytest.mark.parametrize("key", sorted(TABLE, key=str))
def test_never_creates_a_vm_twice(key: tuple[Desire, bool, bool, Outcome]) -> None:
    desire, task, vm, outcome = key
    action = TABLE[key]
    if action == Action.START:
        assert desire == Desire.RUN and not task and not vm and outcome == Outcome.NONE
    if action == Action.RESUME:
        assert vm and not task and outcome == Outcome.NONE
    if outcome != Outcome.NONE:
        assert action not in (Action.START, Action.RESUME)
