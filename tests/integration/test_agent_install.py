"""`anklet agent install|uninstall --home DIR --no-load`: the files a Mac would get, for real."""

from __future__ import annotations

import json
import os
import plistlib
import stat
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from anklet.dev.anka_sim import control, install_shim
from anklet.dev.redis_server import free_port


def anklet(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANKLET_", "LOG_LEVEL"))}
    return subprocess.run(
        [sys.executable, "-m", "anklet.cli", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


@pytest.fixture
def home(tmp_path: Path) -> Path:
    path = tmp_path / "home"
    path.mkdir()
    return path


@pytest.fixture
def source(tmp_path: Path) -> Path:
    """The operator's config: a password in the Redis URL, a closed port, a short start budget."""
    path = tmp_path / "mine.yaml"
    path.write_text(
        f"# my Mac\nredis:\n  url: redis://:hunter2-hunter2@127.0.0.1:{free_port()}/0\n"
        "  connect_timeout_seconds: 1\nagent:\n  name: mac-test\n  shutdown_grace_seconds: 120\n"
    )
    return path


def read_plist(home: Path, label: str = "dev.anklet.agent") -> dict[str, Any]:
    data: dict[str, Any] = plistlib.loads((home / "Library/LaunchAgents" / f"{label}.plist").read_bytes())
    return data


def test_install_writes_the_plist_the_private_config_and_the_log_dir(home: Path, source: Path) -> None:
    done = anklet("agent", "install", "--home", str(home), "--config", str(source), "--no-load")
    assert done.returncode == 0, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    config = home / ".config/anklet/agent.yaml"
    assert config.read_text() == source.read_text(), "copied as written, comments and all"
    assert mode(config) == 0o600 and mode(config.parent) == 0o700
    assert (home / "Library/Logs/anklet").is_dir()
    definition = read_plist(home)
    argv = definition["ProgramArguments"]
    assert Path(argv[0]).is_absolute() and os.access(argv[0], os.X_OK)
    assert argv[1:] == [
        "agent", "run", "--config", str(config), "--log-file", str(home / "Library/Logs/anklet/agent.log"),
    ]  # fmt: skip
    assert definition["KeepAlive"] == {"SuccessfulExit": False}
    assert definition["ExitTimeOut"] > 120, "the config's shutdown grace, plus a margin"
    assert definition["StandardErrorPath"] == str(home / "Library/Logs/anklet/agent.stderr.log")
    assert [line for line in done.stdout.splitlines() if line.startswith("not loaded (--no-load)")]
    assert mode(home / "Library/LaunchAgents/dev.anklet.agent.plist") == 0o644


def test_the_installed_command_line_runs_the_agent(home: Path, source: Path, tmp_path: Path) -> None:
    """What launchd would run: the agent reads the installed config and logs to the rotated file
    (here it stops at once: nothing listens on the config's Redis port)."""
    assert (
        anklet("agent", "install", "--home", str(home), "--config", str(source), "--no-load").returncode == 0
    )
    anka_home = tmp_path / "anka"
    anka_home.mkdir()
    control.write_config(anka_home, time_scale=0.01)
    shim = install_shim(tmp_path / "bin", home=anka_home).parent
    env = {k: v for k, v in os.environ.items() if not k.startswith(("ANKLET_", "LOG_LEVEL"))}
    env["PATH"] = f"{shim}{os.pathsep}{env['PATH']}"
    argv = [*read_plist(home)["ProgramArguments"], "--state-dir", str(tmp_path / "state")]
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    log = home / "Library/Logs/anklet/agent.log"
    messages = [json.loads(line)["msg"] for line in log.read_text().splitlines()]
    assert any(m.startswith("cannot reach Redis at 127.0.0.1:") for m in messages)
    assert "hunter2" not in log.read_text() + done.stderr


def test_reinstalling_without_config_keeps_the_installed_one(home: Path, source: Path) -> None:
    assert (
        anklet("agent", "install", "--home", str(home), "--config", str(source), "--no-load").returncode == 0
    )
    done = anklet("agent", "install", "--home", str(home), "--no-load")
    assert done.returncode == 0, done.stderr
    assert "kept (already installed)" in done.stdout
    assert (home / ".config/anklet/agent.yaml").read_text() == source.read_text()


def test_install_from_the_environment_writes_a_starter_config(home: Path) -> None:
    done = anklet("agent", "install", "--home", str(home), "--no-load")
    assert done.returncode == 2
    assert "pass --config FILE" in done.stderr
    assert not (home / "Library/LaunchAgents/dev.anklet.agent.plist").exists()
    env = {"ANKLET_REDIS_URL": "redis://:pw-12345678@redis.internal:6379/0", "ANKLET_AGENT_NAME": "mac-9"}
    done = anklet("agent", "install", "--home", str(home), "--no-load", env=env)
    assert done.returncode == 0, done.stderr
    config = home / ".config/anklet/agent.yaml"
    assert mode(config) == 0o600
    check = anklet("config", "check", str(config), "--component", "agent")
    assert check.returncode == 0, check.stderr
    assert "name: mac-9" in check.stdout and "pw-12345678" not in check.stdout


def test_a_bad_config_installs_nothing(home: Path, tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("agent:\n  vm_slots: -1\n")
    done = anklet("agent", "install", "--home", str(home), "--config", str(bad), "--no-load")
    assert done.returncode == 2
    assert "agent.vm_slots: Input should be greater than or equal to 0" in done.stderr
    assert not (home / "Library/LaunchAgents").exists()
    assert not (home / ".config/anklet/agent.yaml").exists()


def test_a_relative_secret_path_is_checked_where_the_copy_will_live(home: Path, tmp_path: Path) -> None:
    (tmp_path / "redis-url").write_text("redis://127.0.0.1:6379/0\n")
    relative = tmp_path / "relative.yaml"
    relative.write_text("redis:\n  url_file: redis-url\n")
    assert anklet("config", "check", str(relative)).returncode == 0, "fine where it is"
    done = anklet("agent", "install", "--home", str(home), "--config", str(relative), "--no-load")
    assert done.returncode == 2
    assert f"redis.url_file: cannot read {home / '.config/anklet/redis-url'}" in done.stderr
    assert not (home / ".config/anklet/agent.yaml").exists()
    assert [p.name for p in (home / ".config/anklet").iterdir()] == [], "no temporary file left"


def test_uninstall_keeps_config_and_logs_unless_purged(home: Path, source: Path) -> None:
    assert (
        anklet("agent", "install", "--home", str(home), "--config", str(source), "--no-load").returncode == 0
    )
    plist = home / "Library/LaunchAgents/dev.anklet.agent.plist"
    done = anklet("agent", "uninstall", "--home", str(home), "--no-load")
    assert done.returncode == 0, done.stderr
    assert not plist.exists()
    assert (home / ".config/anklet/agent.yaml").exists() and (home / "Library/Logs/anklet").is_dir()
    again = anklet("agent", "uninstall", "--home", str(home), "--no-load", "--purge")
    assert again.returncode == 0, again.stderr
    assert "not installed" in again.stdout
    assert not (home / ".config/anklet").exists() and not (home / "Library/Logs/anklet").exists()


def test_a_custom_label(home: Path, source: Path) -> None:
    args = ("--home", str(home), "--label", "com.example.anklet-2", "--no-load")
    assert anklet("agent", "install", "--config", str(source), *args).returncode == 0
    assert read_plist(home, "com.example.anklet-2")["Label"] == "com.example.anklet-2"
    assert anklet("agent", "uninstall", *args).returncode == 0
    assert not (home / "Library/LaunchAgents/com.example.anklet-2.plist").exists()
