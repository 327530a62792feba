"""The launchd user agent that keeps `anklet agent` running on a Mac (pure: paths, plist, argv).

Why a user agent (``~/Library/LaunchAgents``, domain ``gui/<uid>``) and not a system daemon:
Anka VMs belong to the user who created them and need that user's login session, so the agent
runs as that user, started at login (use automatic login on a CI Mac).

`anklet.agent_install` does the I/O with what this module computes.
"""

from __future__ import annotations

import plistlib
import shutil
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

DEFAULT_LABEL = "dev.anklet.agent"
#: `anka` lives in /usr/local/bin (its installer) and Homebrew in /opt/homebrew/bin (Apple
#: silicon) or /usr/local/bin (Intel); launchd's own default PATH has neither.
PATH = "/usr/local/bin:/opt/homebrew/bin:/usr/bin:/bin:/usr/sbin:/sbin"
#: Seconds launchd waits between two starts: a crash loop (bad config, Redis down) stays slow.
THROTTLE_SECONDS = 30
#: On `launchctl bootout` launchd sends SIGTERM, then SIGKILL after ExitTimeOut; the agent
#: needs its shutdown grace (running jobs finish) plus time to hand jobs back and exit.
EXIT_MARGIN_SECONDS = 30


@dataclass(frozen=True)
class Layout:
    """Where an installation puts its files, under `home` (the user's, or --home for a dry run)."""

    home: Path
    label: str = DEFAULT_LABEL

    @property
    def plist(self) -> Path:
        return self.home / "Library" / "LaunchAgents" / f"{self.label}.plist"

    @property
    def config_dir(self) -> Path:
        return self.home / ".config" / "anklet"

    @property
    def config(self) -> Path:
        return self.config_dir / "agent.yaml"

    @property
    def log_dir(self) -> Path:
        return self.home / "Library" / "Logs" / "anklet"

    @property
    def log_file(self) -> Path:
        """The agent's own, rotated log (`--log-file`)."""
        return self.log_dir / "agent.log"

    @property
    def stdout(self) -> Path:
        return self.log_dir / "agent.stdout.log"

    @property
    def stderr(self) -> Path:
        """What escapes the logger (errors, a crash's traceback); launchd never rotates it."""
        return self.log_dir / "agent.stderr.log"


def anklet_program(
    executable: str = sys.executable, which: Callable[[str], str | None] = shutil.which
) -> list[str]:
    """The absolute command that runs `anklet`: the console script next to this Python (the
    venv it was installed into), else the one on PATH, else this Python with ``-m anklet.cli``.

    No symlink is resolved: a venv's python is a symlink whose target has no `anklet` next to it.
    """
    script = Path(executable).absolute().parent / "anklet"
    if script.is_file():
        return [str(script)]
    found = which("anklet")
    if found:
        return [str(Path(found).absolute())]
    return [str(Path(executable).absolute()), "-m", "anklet.cli"]


def program_arguments(program: list[str], config: Path, log_file: Path | None) -> list[str]:
    argv = [*program, "agent", "run", "--config", str(config)]
    if log_file is not None:
        argv += ["--log-file", str(log_file)]
    return argv


def plist(layout: Layout, arguments: list[str], *, shutdown_grace_seconds: float) -> dict[str, Any]:
    """The launchd job definition.

    - KeepAlive {SuccessfulExit: false}: restarted after a crash or a non-zero exit, but not
      after a clean stop (SIGTERM → drain → exit 0), which is what an operator asked for.
    - ProcessType Standard: Background would throttle CPU and disk I/O, slowing template pulls
      of tens of GiB and VM starts; Interactive is for UI work and exempts from App Nap
      policies a daemon has no business escaping.
    - ExitTimeOut: the drain gets its full grace before launchd resorts to SIGKILL.
    """
    return {
        "Label": layout.label,
        "ProgramArguments": arguments,
        "RunAtLoad": True,
        "KeepAlive": {"SuccessfulExit": False},
        "ThrottleInterval": THROTTLE_SECONDS,
        "ProcessType": "Standard",
        "ExitTimeOut": int(shutdown_grace_seconds) + EXIT_MARGIN_SECONDS,
        "WorkingDirectory": str(layout.home),
        "StandardOutPath": str(layout.stdout),
        "StandardErrorPath": str(layout.stderr),
        "EnvironmentVariables": {"PATH": PATH},
    }


def plist_bytes(definition: dict[str, Any]) -> bytes:
    return plistlib.dumps(definition, fmt=plistlib.FMT_XML, sort_keys=True)


def domain(uid: int) -> str:
    return f"gui/{uid}"


def print_command(uid: int, label: str) -> list[str]:
    """Exit status 0 when the job is loaded."""
    return ["launchctl", "print", f"{domain(uid)}/{label}"]


def load_commands(uid: int, label: str, plist_path: Path, *, loaded: bool) -> list[list[str]]:
    """bootout first when loaded (bootstrap refuses a loaded label), then bootstrap the plist."""
    commands = [unload_command(uid, label)] if loaded else []
    return [*commands, ["launchctl", "bootstrap", domain(uid), str(plist_path)]]


def unload_command(uid: int, label: str) -> list[str]:
    return ["launchctl", "bootout", f"{domain(uid)}/{label}"]


def starter_config(redis_url: str, name: str | None = None) -> str:
    """A minimal agent.yaml when none is given: where Redis is, and optionally the host name."""
    document: dict[str, Any] = {"redis": {"url": redis_url}, "agent": {} if name is None else {"name": name}}
    header = '# Written by `anklet agent install`; see README, "The configuration file".\n'
    return header + yaml.safe_dump(document, sort_keys=False)
