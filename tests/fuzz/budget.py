"""How many examples a fuzz test runs: its own CI-sized count, scaled up by the `long` profile.

A test's `@settings(max_examples=...)` would override the active Hypothesis profile, so the fuzz
tests size themselves with `examples(n)`: `n` under the default and `ci` profiles (100 examples,
the whole tests/fuzz directory in about a minute here), `n × 20` under `long` (`make fuzz`).
"""

from __future__ import annotations

from hypothesis import settings

_BASELINE = 100  # max_examples of Hypothesis's default and ci profiles


def examples(n: int) -> int:
    return max(n, n * settings().max_examples // _BASELINE)


def fuzz_settings(n: int) -> settings:
    """No deadline (the first example of a run pays for imports and a cold server), `n` scaled."""
    return settings(max_examples=examples(n), deadline=None)
