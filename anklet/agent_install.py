"""`anklet agent install` / `uninstall`: the file and launchctl side of `anklet.launchd`.

The config is checked before anything is written, at the place it will live (a copy with
relative secret paths would otherwise break only when launchd starts it), and is written
0600 because it may hold the Redis password. launchctl runs only on macOS and never with
``--no-load``, so the whole install can be exercised anywhere with ``--home DIR --no-load``.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

from anklet import config_file as cf
from anklet import launchd
from anklet.config_cli import load

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_CONFIG = 2
LAUNCHCTL_TIMEOUT = 60.0

Say = Callable[[str], None]


def _say(line: str) -> None:
    print(line, flush=True)


def _complain(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def write_atomically(path: Path, data: bytes, mode: int) -> None:
    """Write `data` to `path` with `mode` from the first byte (never briefly world-readable)."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "wb") as out:
            out.write(data)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def layout_for(home: str | None, label: str) -> launchd.Layout:
    return launchd.Layout(Path(home).expanduser().absolute() if home else Path.home(), label)


def _config_bytes(source: Path | None, layout: launchd.Layout) -> tuple[bytes | None, str]:
    """The config to install and where it comes from; None bytes: keep the installed one."""
    if source is not None:
        return source.read_bytes(), f"copied from {source}"
    if layout.config.exists():
        return None, "kept (already installed)"
    url = os.environ.get("ANKLET_REDIS_URL", "").strip() or cf.go_redis_url(os.environ)
    if not url:
        raise cf.ConfigError(
            [
                "no configuration to install: pass --config FILE (see examples/config/anklet.yaml) "
                "or set ANKLET_REDIS_URL"
            ]
        )
    name = os.environ.get("ANKLET_AGENT_NAME", "").strip() or None
    return launchd.starter_config(url, name).encode(), "written from ANKLET_REDIS_URL"


def install(
    *,
    config: str | None,
    label: str,
    home: str | None,
    load_job: bool,
    say: Say = _say,
    complain: Say = _complain,
) -> int:
    layout = layout_for(home, label)
    source = Path(config).expanduser().absolute() if config else cf.config_path(os.environ, Path.home())
    if source is not None and not source.is_file():
        complain(f"configuration file {source}: not found")
        return EXIT_CONFIG
    if source is not None and source.resolve() == layout.config.resolve():
        source = None  # installing the installed file: keep it
    try:
        data, origin = _config_bytes(source, layout)
    except cf.ConfigError as exc:
        for problem in exc.problems:
            complain(problem)
        return EXIT_CONFIG
    layout.config_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    candidate = layout.config
    if data is not None:  # checked where it will live, then moved into place
        candidate = layout.config_dir / f".{layout.config.name}.new"
        write_atomically(candidate, data, 0o600)
    try:
        effective = load("agent", candidate)
        document = cf.read_document(candidate)
    except cf.ConfigError as exc:
        for problem in exc.problems:
            complain(problem)
        if candidate != layout.config:
            candidate.unlink(missing_ok=True)
        complain(f"nothing installed: fix the configuration ({source or layout.config})")
        return EXIT_CONFIG
    if candidate != layout.config:
        os.replace(candidate, layout.config)
    layout.config.chmod(0o600)
    cf.activate(layout.config)

    from anklet.config import AgentSettings

    agent = cf.lookup(document, "agent")
    grace = float(
        agent.get("shutdown_grace_seconds", AgentSettings.model_fields["shutdown_grace_seconds"].default)
    )
    log_file = None if agent.get("log_file") else layout.log_file
    arguments = launchd.program_arguments(launchd.anklet_program(), layout.config, log_file)
    definition = launchd.plist(layout, arguments, shutdown_grace_seconds=grace)
    layout.log_dir.mkdir(parents=True, exist_ok=True)
    layout.plist.parent.mkdir(parents=True, exist_ok=True)
    write_atomically(layout.plist, launchd.plist_bytes(definition), 0o644)
    name = effective.get(AgentSettings).name
    say(f"config  {layout.config} (0600, {origin})")
    say(f"plist   {layout.plist}")
    say(f"logs    {layout.log_dir}/")
    say(f"command {' '.join(arguments)}")
    if not load_job:
        say(f"not loaded (--no-load); load it with: launchctl bootstrap gui/{os.getuid()} {layout.plist}")
        return EXIT_OK
    if sys.platform != "darwin":
        say("not loaded: launchd exists only on macOS")
        return EXIT_OK
    uid = os.getuid()
    loaded = _run(launchd.print_command(uid, label), quiet=True) == 0
    for command in launchd.load_commands(uid, label, layout.plist, loaded=loaded):
        if _run(command, complain=complain) != 0:
            return EXIT_FAILED
    say(f"loaded: host {name} starts now and at every login; check with `anklet hosts` or")
    say(f"        launchctl print gui/{uid}/{label}")
    return EXIT_OK


def uninstall(
    *, label: str, home: str | None, load_job: bool, purge: bool, say: Say = _say, complain: Say = _complain
) -> int:
    layout = layout_for(home, label)
    if load_job and sys.platform == "darwin":
        uid = os.getuid()
        if _run(launchd.print_command(uid, label), quiet=True) == 0:
            if _run(launchd.unload_command(uid, label), complain=complain) != 0:
                return EXIT_FAILED
            say(f"stopped gui/{uid}/{label}")
    if layout.plist.exists():
        layout.plist.unlink()
        say(f"removed {layout.plist}")
    else:
        say(f"not installed: no {layout.plist}")
    if purge:
        layout.config.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            layout.config_dir.rmdir()  # only when nothing else lives there
        shutil.rmtree(layout.log_dir, ignore_errors=True)
        say(f"purged {layout.config} and {layout.log_dir}/")
    else:
        say(f"kept {layout.config} and {layout.log_dir}/ (--purge removes them)")
    return EXIT_OK


def _run(command: list[str], *, quiet: bool = False, complain: Say = _complain) -> int:
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=LAUNCHCTL_TIMEOUT, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        if not quiet:
            complain(f"{' '.join(command)}: {exc}")
        return 1
    if done.returncode != 0 and not quiet:
        detail = (done.stderr or done.stdout).strip().splitlines()
        complain(f"{' '.join(command)} exited {done.returncode}: {detail[-1] if detail else ''}")
    return done.returncode
