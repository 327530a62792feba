"""Entry point of the simulated ``anka`` executable (console script ``anka-sim``).

One process per call, as with the real CLI: parse the global flags, parse the subcommand's
own options (mixed freely with positionals, except in ``run``), let the fault rules have
their say, run the handler, and write the result. Every call is logged to ``calls.jsonl``.
"""

from __future__ import annotations

import os
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

from anklet.dev.anka_sim import calllog, cmd_guest, cmd_info, cmd_lifecycle, cmd_mount, cmd_registry, cmd_vms
from anklet.dev.anka_sim import config as configmod
from anklet.dev.anka_sim.args import Opt, Parsed, UsageError, flag, multi, parse, value
from anklet.dev.anka_sim.context import Ctx
from anklet.dev.anka_sim.faults import Call, Fault, select
from anklet.dev.anka_sim.output import Emitter, Reply, SimError, already_exists, not_found
from anklet.dev.anka_sim.paths import SimPaths
from anklet.dev.anka_sim.state import Store

Handler = Callable[[Ctx, Parsed], "Reply | int"]


@dataclass(frozen=True)
class Command:
    handler: Handler
    opts: tuple[Opt, ...] = ()
    #: ``run``: everything after the vmid is the guest's argv.
    stop_at_positional: bool = False
    #: ``registry``/``license``: the first positional names the subcommand.
    has_subcommands: bool = False


_TAG = value("tag", "-t", "--tag")
_ALL = flag("all", "-a", "--all")
_QUIET = flag("quiet", "-q", "--quiet")

COMMANDS: dict[str, Command] = {
    "version": Command(cmd_info.version),
    "license": Command(cmd_info.license_cmd, has_subcommands=True),
    "list": Command(
        cmd_vms.list_cmd,
        (
            flag("running", "-r", "--running"),
            flag("stopped", "-s", "--stopped"),
            _ALL,
            multi("field", "-f", "--field"),
        ),
    ),
    "show": Command(cmd_vms.show, (_TAG, flag("current", "--current"))),
    "clone": Command(cmd_lifecycle.clone, (flag("copy", "-c", "--copy"), _TAG)),
    "start": Command(
        cmd_lifecycle.start,
        (
            flag("force", "-f", "--force"),
            _QUIET,
            flag("view", "-v", "--view"),
            flag("update_addons", "-u", "--update-addons"),
            value("login_passwd", "--login-passwd"),
            multi("mount", "--mount"),
            flag("disable_auto_mount", "--disable-auto-mount"),
        ),
    ),
    "stop": Command(cmd_lifecycle.stop, (flag("force", "-f", "--force"), _ALL)),
    "suspend": Command(cmd_lifecycle.suspend, (_ALL,)),
    "delete": Command(
        cmd_lifecycle.delete, (flag("yes", "--yes", "-y"), _TAG, _ALL, flag("cache", "--cache"))
    ),
    "run": Command(
        cmd_guest.run,
        (
            value("workdir", "-w", "-D", "--workdir"),
            multi("env", "-e", "--env"),
            flag("inherit_env", "-E"),
            value("env_file", "-f", "--env-file"),
            _QUIET,
            flag("background", "-b", "--background"),
            flag("no_volume", "-n", "--no-volume"),
        ),
        stop_at_positional=True,
    ),
    "cp": Command(
        cmd_guest.cp,
        tuple(
            flag(dest, f"-{letter}")
            for letter, dest in (
                ("R", "recursive"),
                ("L", "follow"),
                ("H", "follow_args"),
                ("P", "no_follow"),
                ("f", "force"),
                ("n", "no_clobber"),
                ("p", "preserve"),
                ("a", "archive"),
                ("v", "verbose"),
            )
        ),
    ),
    "mount": Command(cmd_mount.mount),
    "unmount": Command(cmd_mount.unmount, (_ALL,)),
    "registry": Command(
        cmd_registry.registry,
        (
            value("remote", "-r", "--remote"),
            value("registry_path", "-a", "--registry-path"),
            flag("insecure", "--insecure"),
            *(
                value(name.replace("-", "_"), f"--{name}")
                for name in ("cert", "key", "cacert", "api-key-id", "api-key")
            ),
            value("oci_version", "-o", "--oci-version"),
            value("user", "-u", "--user"),
            value("prefix", "-p", "--prefix"),
            flag("default", "--default"),
            flag("list", "--list"),
            _TAG,
            flag("shrink", "-s", "--shrink"),
            flag("local", "-l", "--local"),
            flag("fetch_only", "--fetch-only"),
            flag("force", "-f", "--force"),
            _QUIET,
        ),
        has_subcommands=True,
    ),
    "pull": Command(
        cmd_registry.pull,
        (
            _TAG,
            flag("local", "-l", "--local"),
            flag("fetch_only", "--fetch-only"),
            flag("shrink", "-s", "--shrink"),
            flag("check_download_size", "--check-download-size"),
            _QUIET,
        ),
    ),
}

#: Anka 2 had ``run -N/-T``; Anka 3 dropped them (anka-cli.md §4.4).
_ANKA2_RUN_OPTS = (flag("wait_network", "-N", "--wait-network"), flag("wait_time", "-T", "--wait-time"))


def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    paths = SimPaths.from_env()
    try:
        paths.ensure()
    except OSError as exc:
        sys.stderr.write(f"anka: cannot use simulator home {paths.root}: {exc}\n")
        return 1
    started = time.monotonic()
    call_id = calllog.log_start(paths.calls, args)
    fired: list[str] = []
    status: int | None = None
    try:
        status = _main(paths, args, fired)
    finally:
        sys.stdout.flush()
        calllog.log_end(paths.calls, call_id, status, started=started, faults=fired)
    return status


def _main(paths: SimPaths, args: list[str], fired: list[str]) -> int:
    machine_readable = os.environ.get("ANKA_MACHINE_READABLE", "").lower() in ("1", "true", "yes")
    i = 0
    while i < len(args) and args[i].startswith("-"):
        arg = args[i]
        if arg in ("-j", "--machine-readable"):
            machine_readable = True
        elif arg == "--version":
            print(cmd_info.version_text(configmod.load(paths)))
            return 0
        elif arg in ("-h", "--help"):
            print(cmd_info.help_text())
            return 0
        elif arg == "--log-level":
            i += 1
        elif arg != "--debug" and not arg.startswith("--log-level="):
            return Emitter(machine_readable).error(SimError(f"no such option: {arg}"))
        i += 1
    rest = args[i:]
    if not rest or rest[0] == "help":
        print(cmd_info.help_text())
        return 0
    config = configmod.load(paths)
    emitter = Emitter(machine_readable, default_exit_status=config.default_exit_status)
    name, *command_args = rest
    command = COMMANDS.get(name)
    if command is None:
        return emitter.error(SimError(f"{name}: unknown command"))
    opts = command.opts + (_ANKA2_RUN_OPTS if name == "run" and config.version_tuple < (3, 0, 0) else ())
    try:
        parsed = parse(command_args, opts, stop_at_positional=command.stop_at_positional)
    except UsageError as exc:
        return emitter.error(SimError(f"{name}: {exc}"))
    key, positionals = _call_key(name, command, parsed)
    store = Store(paths, init=partial(cmd_registry.seed_preinstalled, config))
    faults = select(store, Call(key, positionals, machine_readable))
    fired.extend(f.effect for f in faults)
    malformed = next((f for f in faults if f.effect == "malformed"), None)
    emitter = Emitter(
        machine_readable,
        malformed=str(malformed.get("mode", "not_json")) if malformed else None,
        default_exit_status=config.default_exit_status,
    )
    ctx = Ctx(paths, config, store, emitter, key, dict(os.environ), faults)
    try:
        early = _generic_faults(ctx, key, positionals)
        result = early if early is not None else command.handler(ctx, parsed)
    except SimError as exc:
        return emitter.error(exc)
    except Exception as exc:  # a simulator bug must still honour the envelope contract
        traceback.print_exc()
        return emitter.error(SimError(f"internal simulator error: {exc!r}"))
    return result if isinstance(result, int) else emitter.ok(result)


def _call_key(name: str, command: Command, parsed: Parsed) -> tuple[str, list[str]]:
    """The command name faults match on (``registry pull``) and the call's positionals."""
    if not command.has_subcommands:
        return name, parsed.positionals
    if parsed.positionals:
        return f"{name} {parsed.positionals[0]}", parsed.positionals[1:]
    default = "list-repos" if parsed.flag("list") else ("show" if name == "license" else "")
    return f"{name} {default}".strip(), []


def _generic_faults(ctx: Ctx, key: str, positionals: list[str]) -> int | None:
    """Effects that replace the command outright; others are read by the handlers."""
    for fault in ctx.faults:
        effect = fault.effect
        if effect == "hang":
            _hang(fault)
        elif effect == "error":
            raise _custom_error(fault, f"{key}: simulated failure")
        elif effect == "not_found":
            target = str(fault.get("target") or (positionals[0] if positionals else key))
            raise _with_exit(not_found(target), fault)
        elif effect == "already_exists":
            target = str(fault.get("target") or (positionals[-1] if positionals else key))
            raise _with_exit(already_exists(target), fault)
        elif effect == "exit":
            message = fault.get("message")
            if message:
                sys.stderr.write(f"{message}\n")
                sys.stderr.flush()
            return int(fault.get("status", 125))
        elif effect == "registry_down":
            url = next((r.get("url") for r in ctx.config.registries if r.get("default")), "registry")
            raise _custom_error(fault, f"{url}: connection refused")
        elif effect == "license_invalid" and not key.startswith("license"):
            raise _custom_error(fault, f"license is not valid: {fault.get('status', 'expired')}")
    return None


def _hang(fault: Fault) -> None:
    """Sleep forever (or ``seconds``), the way a wedged ``anka`` does; the caller must kill us."""
    seconds = fault.get("seconds")
    deadline = None if seconds is None else time.monotonic() + float(seconds)
    while deadline is None or time.monotonic() < deadline:
        time.sleep(1.0 if deadline is None else max(0.0, min(1.0, deadline - time.monotonic())))


def _custom_error(fault: Fault, default_message: str) -> SimError:
    return SimError(
        str(fault.get("message", default_message)),
        code=int(fault.get("code", 1)),
        exit_status=None if fault.get("exit") is None else int(fault.get("exit")),
        exception_type=fault.get("exception_type"),
    )


def _with_exit(error: SimError, fault: Fault) -> SimError:
    if fault.get("message"):
        error.message = str(fault.get("message"))
    if fault.get("exit") is not None:
        error.exit_status = int(fault.get("exit"))
    return error


if __name__ == "__main__":
    # Exit the moment the call is logged, as a native `anka` does: Python's interpreter teardown
    # would leave a window in which the call log says "exited" but the process still lives (a
    # kill then would look like a finished workload killed, to the invariant checker).
    code = main()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)
