"""Python helpers for tests and the dev stack: configure a simulated host, inject faults, read the log.

Every helper takes the simulated host's home directory (what ``ANKA_SIM_HOME`` points at).
Fault files are edited under the same lock the simulator uses to consume rule counts, so a
test may add faults while simulator processes are running.
"""

from __future__ import annotations

import fcntl
import json
from pathlib import Path
from typing import Any

from anklet.dev.anka_sim import calllog, faults
from anklet.dev.anka_sim import config as configmod
from anklet.dev.anka_sim.config import SimConfig, write_json_atomic
from anklet.dev.anka_sim.paths import SimPaths
from anklet.dev.anka_sim.state import flocked


def _paths(home: str | Path) -> SimPaths:
    paths = SimPaths(Path(home))
    paths.ensure()
    return paths


def write_config(home: str | Path, **overrides: Any) -> SimConfig:
    """Merge ``overrides`` (config.json keys) into the host's config; ``latency`` merges per key."""
    paths = _paths(home)
    current = configmod.load(paths, env={}).to_json()
    if "latency" in overrides:
        overrides["latency"] = {**current["latency"], **overrides["latency"]}
    current.update(overrides)
    configmod.write(paths, current)
    return configmod.from_mapping(current, env={})


def read_config(home: str | Path) -> SimConfig:
    return configmod.load(_paths(home), env={})


def add_fault(
    home: str | Path,
    *,
    effect: str,
    command: str | None = None,
    match: str | None = None,
    count: int | None = None,
    probability: float | None = None,
    machine_readable: bool | None = None,
    **params: Any,
) -> dict[str, Any]:
    """Append a rule to ``faults.json``; ``params`` are the effect's settings (see ``faults``).

    Example: ``add_fault(home, command="start", effect="error", count=1, message="boom")``.
    """
    rule: dict[str, Any] = {"effect": effect}
    for key, val in (
        ("command", command),
        ("match", match),
        ("count", count),
        ("probability", probability),
        ("machine_readable", machine_readable),
    ):
        if val is not None:
            rule[key] = val
    rule.update(params)
    faults.validate_rule(rule)
    paths = _paths(home)
    with flocked(paths.state_lock, fcntl.LOCK_EX):
        rules = faults.read_file_rules(paths)
        rules.append(rule)
        write_json_atomic(paths.faults, rules)
    return rule


def read_faults(home: str | Path) -> list[dict[str, Any]]:
    """The rules in ``faults.json``, with their remaining counts."""
    return faults.read_file_rules(_paths(home))


def clear_faults(home: str | Path) -> None:
    paths = _paths(home)
    with flocked(paths.state_lock, fcntl.LOCK_EX):
        paths.faults.unlink(missing_ok=True)


def read_calls(home: str | Path) -> list[dict[str, Any]]:
    """Every call so far: ``{"id", "ts", "pid", "argv", "exit", "duration", "faults"}``.

    ``exit`` is ``None`` for calls still running, hung, or killed.
    """
    return calllog.read(_paths(home).calls)


def read_state(home: str | Path) -> dict[str, Any]:
    """The raw library (``state.json``), for assertions a CLI call cannot make."""
    paths = _paths(home)
    try:
        data: dict[str, Any] = json.loads(paths.state.read_text())
    except FileNotFoundError:
        return {}
    return data


def vm_sandbox(home: str | Path, uuid: str) -> Path:
    """The directory standing for ``/Users/anka`` in VM ``uuid``."""
    return _paths(home).vms / uuid
