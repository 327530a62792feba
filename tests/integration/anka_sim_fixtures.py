"""Reusable pytest fixtures for the simulated ``anka`` (import them into a test module or conftest).

    from tests.integration import anka_sim_fixtures as fixtures

    anka_home, anka_cli = fixtures.anka_home, fixtures.anka_cli   # or: pytest_plugins = [...]

``anka_home`` is a fresh simulated Mac (a tmp ``ANKA_SIM_HOME`` with a fast config),
``anka_env`` the environment that selects it, ``anka_cli`` an :class:`AnkaCLI` pointed at the
simulator, and ``sim`` runs one raw ``anka`` command synchronously (for byte-level checks).
On teardown every simulator process still running for that home is killed with its group.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from anklet.dev.anka_sim import control, install_shim
from host_agent.anka import AnkaCLI, AnkaTimeouts

#: Simulated seconds become 1/100 s: a 10 s boot takes 0.1 s.
TIME_SCALE = 0.01
#: Tests keep pulls to the fixed overhead instead of minutes of "download".
FAST_PULL_BYTES_PER_SECOND = 1e13

SimRunner = Callable[..., subprocess.CompletedProcess[str]]


def simulator_binary(shim_dir: Path) -> str:
    """The ``anka-sim`` console script next to this interpreter, else a shim that runs it."""
    script = Path(sys.executable).parent / "anka-sim"
    if script.exists():
        return str(script)
    return str(install_shim(shim_dir))


def make_home(path: Path, **config: object) -> Path:
    """A simulated Mac at ``path`` with test-speed settings (and any overrides)."""
    control.write_config(
        path, time_scale=TIME_SCALE, pull_bytes_per_second=FAST_PULL_BYTES_PER_SECOND, **config
    )
    return path


def kill_leftovers(home: Path) -> None:
    """Kill simulator processes of ``home`` that never logged an exit (and their groups)."""
    for call in control.read_calls(home):
        if call["exit"] is not None or not call.get("pid"):
            continue
        with contextlib.suppress(psutil.Error, ProcessLookupError, PermissionError):
            proc = psutil.Process(int(call["pid"]))
            if proc.environ().get("ANKA_SIM_HOME") != str(home):
                continue
            if os.getpgid(proc.pid) == proc.pid:
                os.killpg(proc.pid, signal.SIGKILL)
            else:
                for child in proc.children(recursive=True):
                    child.kill()
                proc.kill()


@pytest.fixture
def anka_home(tmp_path: Path) -> Iterator[Path]:
    home = make_home(tmp_path / "anka-sim")
    yield home
    kill_leftovers(home)


@pytest.fixture
def anka_env(anka_home: Path) -> dict[str, str]:
    return {"ANKA_SIM_HOME": str(anka_home), "ANKA_SIM_TIME_SCALE": str(TIME_SCALE)}


@pytest.fixture
def anka_binary(tmp_path: Path) -> str:
    return simulator_binary(tmp_path / "shim-bin")


@pytest.fixture
def anka_cli(anka_binary: str, anka_env: dict[str, str]) -> AnkaCLI:
    """The production driver against the simulator, with tight timeouts so bugs fail fast."""
    timeouts = AnkaTimeouts(query=10, clone=20, start=20, stop=20, delete=20, pull=60, run=30)
    return AnkaCLI(anka_binary, env=anka_env, timeouts=timeouts)


@pytest.fixture
def sim(anka_binary: str, anka_env: dict[str, str]) -> SimRunner:
    """``sim("-j", "list", input=None)`` → CompletedProcess with text stdout/stderr."""

    def run(*args: str, input: str | None = None, timeout: float = 20) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [anka_binary, *args],
            input=input,
            capture_output=True,
            text=True,
            env={**os.environ, **anka_env},
            timeout=timeout,
            stdin=None if input is not None else subprocess.DEVNULL,
            check=False,
        )

    return run
