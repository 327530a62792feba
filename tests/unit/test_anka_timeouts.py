"""ANKLET_AGENT_ANKA_TIMEOUTS → AnkaTimeouts: overrides per kind, and typos refused."""

from __future__ import annotations

import pytest

from host_agent.anka_model import AnkaTimeouts


def test_named_kinds_are_overridden_and_the_rest_keep_their_defaults() -> None:
    timeouts = AnkaTimeouts.from_mapping({"start": 6, "delete": 5.5, "run": 600})
    assert (timeouts.start, timeouts.delete, timeouts.run) == (6.0, 5.5, 600.0)
    assert timeouts.query == AnkaTimeouts().query and timeouts.pull == AnkaTimeouts().pull
    assert AnkaTimeouts.from_mapping({}) == AnkaTimeouts()


def test_an_unknown_kind_is_an_error_that_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown anka timeout strat; known: .*start"):
        AnkaTimeouts.from_mapping({"strat": 6})


@pytest.mark.parametrize("value", [0, -1])
def test_a_timeout_must_be_positive(value: float) -> None:
    with pytest.raises(ValueError, match="must be positive seconds: delete"):
        AnkaTimeouts.from_mapping({"delete": value})
