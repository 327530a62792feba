"""`anklet agent` with a bad ANKLET_AGENT_ANKA_TIMEOUTS stops at once: exit 2 and one clear line."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ('{"strat": 6}', "unknown anka timeout strat"),
        ('{"delete": 0}', "anka timeouts must be positive seconds: delete"),
        ("not json", "anka_timeouts"),
    ],
)
def test_a_bad_anka_timeout_setting_refuses_to_start(tmp_path: Path, value: str, message: str) -> None:
    env = {**os.environ, "ANKLET_AGENT_ANKA_TIMEOUTS": value, "ANKLET_REDIS_URL": "redis://127.0.0.1:1/0"}
    result = subprocess.run(
        [sys.executable, "-m", "anklet.cli", "agent", "--state-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr + result.stdout
