"""Loading a process's configuration at start, and `anklet config check`.

`load()` is the one way a process reads its settings: the file (if any) is parsed and checked
as a whole (unknown sections, plugins and keys; unreadable secret files), then the component's
settings classes are built through pydantic-settings (CLI flags > environment > file >
defaults). Every problem found is collected, so one run names them all; a process logs them as
one line and exits 2 before doing any work, `anklet config check` prints one line each.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import SecretStr, ValidationError
from pydantic_settings import SettingsError

from anklet import config_file as cf
from anklet.plugins import HANDLERS_GROUP, RECEIVERS_GROUP

log = logging.getLogger("anklet.config")

Component = Literal["controller", "agent", "receiver", "all"]
COMPONENTS: tuple[Component, ...] = ("controller", "agent", "receiver", "all")
EXIT_OK = 0
EXIT_CONFIG = 2

#: The module that defines each core section's settings (imported only when needed: the agent
#: on a Mac should not import the receiver).
CORE_MODULES = {
    "redis": "anklet.config",
    "controller": "anklet.config",
    "agent": "anklet.config",
    "receiver": "plugins.receivers.github.config",
}
#: The sections whose values each process validates (the whole file's keys are always checked).
COMPONENT_SECTIONS: dict[Component, tuple[str, ...]] = {
    "controller": ("controller", "plugins"),
    "agent": ("agent",),
    "receiver": ("receiver", "plugins"),
    "all": ("controller", "agent", "receiver", "plugins"),
}

S = TypeVar("S", bound=cf.FileSettings)


@dataclass
class Effective:
    """A component's validated settings, one instance per settings class."""

    path: Path | None
    instances: list[cf.FileSettings] = field(default_factory=list)

    def get(self, cls: type[S]) -> S:
        for instance in self.instances:
            if type(instance) is cls:
                return instance
        raise KeyError(cls.__name__)

    def document(self) -> dict[str, Any]:
        """What a file holding exactly these settings would say, secrets masked."""
        return cf.effective_document(self.instances)


def installed_plugins() -> dict[str, list[Any]]:
    """Installed handler and receiver plugins by name (their entry points, not loaded)."""
    found: dict[str, list[Any]] = {}
    for group in (HANDLERS_GROUP, RECEIVERS_GROUP):
        for ep in entry_points(group=group):
            found.setdefault(ep.name, []).append(ep)
    return found


def _settings_class(section: str) -> type[cf.FileSettings] | None:
    """The one class that owns a core section (its fields are that section's keys)."""
    module = CORE_MODULES[section]
    importlib.import_module(module)
    for cls in cf.registered(section):
        if cls.__module__ == module:
            return cls
    return None


def _load_plugins(names: Collection[str], installed: Mapping[str, list[Any]]) -> list[str]:
    """Import the named installed plugins, so their settings classes register; load failures."""
    problems = []
    for name in names:
        for ep in installed.get(name, []):
            try:
                ep.load()
            except Exception as exc:  # a broken plugin is a configuration problem, not a crash
                problems.append(f"plugins.{name}: plugin failed to load: {type(exc).__name__}: {exc}")
    return problems


def schema_for(sections: Collection[str]) -> tuple[dict[str, set[str]], dict[str, set[str]]]:
    """Allowed keys and secret-file keys by section path, from the registered settings classes."""
    allowed: dict[str, set[str]] = {}
    secret: dict[str, set[str]] = {}
    for section in sections:
        if section in CORE_MODULES:
            owner = _settings_class(section)
            classes = [owner] if owner is not None else []
        else:
            classes = cf.registered(section)
        for cls in classes:
            allowed.setdefault(section, set()).update(cf.section_keys(cls, section))
            secret.setdefault(section, set()).update(cf.secret_file_keys(cls, section))
    return allowed, secret


def check_document(document: Mapping[str, Any], base_dir: Path) -> tuple[list[str], list[str]]:
    """The problems of the file as a whole, and the installed plugins it names."""
    installed = installed_plugins()
    plugins_section = document.get("plugins")
    named = [str(n) for n in plugins_section] if isinstance(plugins_section, Mapping) else []
    named = [name for name in named if name in installed]
    problems = _load_plugins(named, installed)
    sections = [s for s in CORE_MODULES if s in document] + [f"plugins.{name}" for name in named]
    allowed, secret = schema_for(sections)
    problems += cf.check_keys(document, allowed, installed)
    problems += cf.check_secret_files(document, secret, base_dir)
    return problems, named


def classes_for(component: Component, plugins: Collection[str]) -> list[type[cf.FileSettings]]:
    """The settings classes a component runs with: its own, then those of the named plugins."""
    classes: list[type[cf.FileSettings]] = []
    for section in COMPONENT_SECTIONS[component]:
        if section == "plugins":
            for name in plugins:
                classes += [c for c in cf.registered(f"plugins.{name}") if c not in classes]
            continue
        owner = _settings_class(section)
        if owner is not None:
            classes.append(owner)
    return classes


def load(
    component: Component,
    path: Path | None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Effective:
    """Validate the configuration of `component`, with `path` as this process's file.

    `overrides` are CLI flags by class name (``{"AgentSettings": {"name": "mac-1"}}``); they win
    over everything. Raises ConfigError naming every problem.
    """
    path = cf.activate(path)
    document: dict[str, Any] = {}
    if path is not None:
        try:
            document = cf.read_document(path)
        except cf.ConfigError as exc:
            raise cf.ConfigError(exc.problems, path) from None
    # Everything is checked, so one run names every problem (ConfigError drops duplicates).
    problems, plugins = check_document(document, path.parent if path else Path.cwd())
    effective = Effective(path)
    token = cf.SECRETS_CHECKED.set(True)
    try:
        for cls in classes_for(component, plugins):
            try:
                effective.instances.append(cls(**dict((overrides or {}).get(cls.__name__, {}))))
            except ValidationError as exc:
                problems += cf.validation_problems(exc, cls)
            except cf.ConfigError as exc:
                problems += exc.problems
            except SettingsError as exc:  # an env value that is not JSON for a list/dict field
                problems.append(f"{exc}: {exc.__cause__}" if exc.__cause__ else str(exc))
    finally:
        cf.SECRETS_CHECKED.reset(token)
    # The receiver cannot run without its webhook secret; `all` asks only of a file that
    # configures a receiver (a Mac's file need not name one).
    if not problems and (component == "receiver" or (component == "all" and "receiver" in document)):
        problems += _receiver_problems(effective)
    if problems:
        raise cf.ConfigError(problems, path)
    _mask_in_logs(effective)
    return effective


def _mask_in_logs(effective: Effective) -> None:
    """Secrets read from the file are masked in log lines, like those from the environment."""
    from anklet.logformat import register_secret

    for instance in effective.instances:
        for name, info in type(instance).model_fields.items():
            value = getattr(instance, name)
            if cf.is_secret(info) and isinstance(value, SecretStr):
                register_secret(value.get_secret_value())


def start(component: Component, args: argparse.Namespace, **overrides: Mapping[str, Any]) -> Effective | None:
    """For `anklet controller|agent|receiver`: the settings to run with, or None after logging
    the one line that says why not (the caller exits 2 before doing any work).

    `overrides` are the CLI flags by settings class name; flags left unset (None, []) do not
    override. The log level is applied from the settings unless ``--log-level`` was given.
    """
    flags = {
        cls: {key: value for key, value in values.items() if value is not None and value != []}
        for cls, values in overrides.items()
    }
    path = Path(args.config) if getattr(args, "config", None) else None
    try:
        effective = load(component, path, flags)
    except cf.ConfigError as exc:
        log.error("%s", exc.one_line())
        return None
    level = getattr(effective.instances[0], "log_level", None) if effective.instances else None
    if getattr(args, "log_level", None) is None and isinstance(level, str):
        from anklet.logs import setup_logging

        setup_logging(level, getattr(args, "log_format", None))
    return effective


def _receiver_problems(effective: Effective) -> list[str]:
    """What the receiver needs beyond valid settings: the webhook secret."""
    from plugins.handlers.github.settings import GitHubSettings
    from plugins.receivers.github.config import ConfigError, ReceiverConfig, ReceiverSettings

    github = next((i for i in effective.instances if isinstance(i, GitHubSettings)), None)
    try:
        ReceiverConfig(receiver=effective.get(ReceiverSettings), github=github or GitHubSettings())
    except ConfigError as exc:
        return [f"plugins.github.webhook_secret: required by the receiver ({exc})"]
    except ValidationError as exc:
        return cf.validation_problems(exc, GitHubSettings)
    return []


def dump(document: Mapping[str, Any]) -> str:
    return yaml.safe_dump(dict(document), sort_keys=False, default_flow_style=False, allow_unicode=True)


# ----- the `anklet config` command ---------------------------------------------------------------


def add_arguments(sub: Any) -> None:
    """Register `anklet config check` on the top-level subparsers."""
    config = sub.add_parser("config", help="check a configuration file and print the effective settings")
    actions = config.add_subparsers(dest="config_command", required=True, metavar="check")
    check = actions.add_parser(
        "check",
        help="validate FILE; print the effective configuration (secrets masked), exit 0 when valid, else 2",
    )
    check.add_argument("file", nargs="?", help="the YAML file (default: $ANKLET_CONFIG)")
    check.add_argument(
        "--component", choices=COMPONENTS, default="all", help="check what this process reads (default all)"
    )
    check.set_defaults(func=run_check)


def run_check(args: argparse.Namespace) -> int:
    path = Path(args.file) if args.file else cf.config_path(os.environ, Path.home())
    if path is None:
        print("config check: no file given (pass FILE or set ANKLET_CONFIG)", file=sys.stderr)
        return EXIT_CONFIG
    try:
        effective = load(args.component, path)
    except cf.ConfigError as exc:
        for problem in exc.problems:
            print(problem, file=sys.stderr)
        return EXIT_CONFIG
    except Exception as exc:  # never a traceback for a user's file: one line, exit 2
        log.debug("config check failed", exc_info=True)
        print(f"config check failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    sys.stdout.write(f"# effective configuration of {args.component} from {effective.path}\n")
    sys.stdout.write(dump(effective.document()))
    return EXIT_OK
