"""Fatal configuration errors: every process exits 2 with ONE clear line before doing any work."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from anklet.dev.anka_sim import control, install_shim
from anklet.dev.redis_server import free_port

PROCESSES = ["controller", "agent", "receiver"]


def run(
    process: str, config: Path, tmp_path: Path, *extra: str, timeout: float = 60
) -> tuple[int, str, float]:
    """Run `anklet <process> --config F` on a simulated Mac (for the agent's anka preflight);
    returns the exit status, stderr and how long it took."""
    anka_home = tmp_path / "anka"
    if not anka_home.exists():
        anka_home.mkdir()
        control.write_config(anka_home, time_scale=0.01)
        install_shim(tmp_path / "bin", home=anka_home)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANKLET_", "LOG_LEVEL"))}
    env["PATH"] = f"{tmp_path / 'bin'}{os.pathsep}{env['PATH']}"
    argv = [sys.executable, "-m", "anklet.cli", process, "--config", str(config), *extra]
    if process == "agent":
        argv += ["--state-dir", str(tmp_path / "state")]
    started = time.monotonic()
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, check=False)
    return done.returncode, done.stderr, time.monotonic() - started


def one_line(stderr: str) -> str:
    """The single log line; fails on a traceback or on anything else logged."""
    assert "Traceback" not in stderr, stderr
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    record = json.loads(lines[0])  # not a terminal: JSON lines
    assert record["level"] == "ERROR"
    return str(record["msg"])


@pytest.mark.parametrize("process", PROCESSES)
def test_a_missing_config_file(process: str, tmp_path: Path) -> None:
    missing = tmp_path / "nope.yaml"
    status, stderr, _ = run(process, missing, tmp_path)
    assert status == 2
    assert one_line(stderr) == f"invalid configuration ({missing}): configuration file {missing}: not found"


@pytest.mark.parametrize("process", PROCESSES)
def test_a_typo_anywhere_in_the_file_stops_every_process(process: str, tmp_path: Path) -> None:
    config = tmp_path / "anklet.yaml"
    config.write_text("agent:\n  vm_slotz: 1\n")
    status, stderr, _ = run(process, config, tmp_path)
    assert status == 2
    assert one_line(stderr).endswith("agent.vm_slotz: unknown key (did you mean vm_slots?)")


def test_an_invalid_value_names_its_key(tmp_path: Path) -> None:
    config = tmp_path / "anklet.yaml"
    config.write_text("agent:\n  vm_slots: -1\n  resync_seconds: soon\n")
    status, stderr, _ = run("agent", config, tmp_path)
    assert status == 2
    assert one_line(stderr) == (
        f"invalid configuration ({config}): agent.vm_slots: Input should be greater than or equal to 0; "
        "agent.resync_seconds: Input should be a valid number, unable to parse string as a number"
    )


@pytest.mark.parametrize("process", ["controller", "receiver"])
def test_an_unknown_plugin(process: str, tmp_path: Path) -> None:
    config = tmp_path / "anklet.yaml"
    config.write_text("plugins:\n  jenkins:\n    token_file: /x\n")
    status, stderr, _ = run(process, config, tmp_path)
    assert status == 2
    assert one_line(stderr).endswith("plugins.jenkins: unknown plugin (installed: github, script)")


@pytest.mark.parametrize(
    ("process", "section", "key"),
    [
        ("controller", "redis", "url_file"),
        ("agent", "redis", "url_file"),
        ("receiver", "plugins:\n  github", "webhook_secret_file"),
        ("controller", "plugins:\n  github", "app_private_key_file"),
    ],
)
def test_a_missing_secret_file(process: str, section: str, key: str, tmp_path: Path) -> None:
    config = tmp_path / "anklet.yaml"
    indent = "    " if "\n" in section else "  "
    config.write_text(f"{section}:\n{indent}{key}: secrets/missing\n")
    status, stderr, _ = run(process, config, tmp_path)
    assert status == 2
    path = "plugins.github" if "\n" in section else section
    missing = tmp_path / "secrets" / "missing"
    assert f"{path}.{key}: cannot read {missing}: No such file or directory" in one_line(stderr)


@pytest.mark.parametrize("process", ["controller", "agent"])
def test_an_unreachable_redis_after_the_budget(process: str, tmp_path: Path) -> None:
    port = free_port()  # nothing listens there
    config = tmp_path / "anklet.yaml"
    config.write_text(f"redis:\n  url: redis://:pw-{port}@127.0.0.1:{port}/0\n  connect_timeout_seconds: 1\n")
    log_file = tmp_path / "logs" / "agent.log"
    extra = ["--log-file", str(log_file)] if process == "agent" else []
    status, stderr, took = run(process, config, tmp_path, *extra)
    assert status == 2
    line = one_line(stderr)
    assert line.startswith(f"cannot reach Redis at 127.0.0.1:{port} db 0 within 1 s")
    assert f"pw-{port}" not in stderr, "the URL's password never reaches a log"
    assert took < 20
    if process == "agent":
        logged = [json.loads(entry)["msg"] for entry in log_file.read_text().splitlines()]
        assert line in logged, "the agent's own log file has it too"
