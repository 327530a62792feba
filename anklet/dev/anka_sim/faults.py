"""Fault injection (anka-cli.md §6.2): rules that make chosen calls misbehave.

Rules come from ``ANKA_SIM_HOME/faults.json`` (a JSON list, editable while the simulator is in
use) and from the ``ANKA_SIM_FAULTS`` env var (same format). A rule names an ``effect`` and
optionally narrows it: ``command`` (``start``, ``registry`` or ``registry pull``, ...), ``match``
(a substring of the call's positional arguments: VM, template, guest command),
``machine_readable`` (only ``-j`` calls, or only plain ones), ``count`` (the first N matching
calls) and ``probability``. Remaining keys are the effect's parameters. Counts are consumed
under the state lock so concurrent processes never double-fire a ``count: 1`` rule.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from anklet.dev.anka_sim.config import write_json_atomic
from anklet.dev.anka_sim.paths import SimPaths
from anklet.dev.anka_sim.state import Store

FAULTS_ENV = "ANKA_SIM_FAULTS"

#: Every effect, with the commands it applies to when a rule names no ``command``
#: (``None``: any command). This keeps an unscoped ``ip_never`` from being spent on a ``list``.
EFFECTS: dict[str, tuple[str, ...] | None] = {
    "error": None,
    "not_found": None,
    "already_exists": ("clone",),
    "hang": None,
    "slow": None,
    "exit": ("run",),
    "vm_failed": ("start",),
    "ip_never": ("start",),
    "max_instances": ("start",),
    "malformed": None,
    "license_invalid": None,
    "disk_full": ("pull", "registry pull"),
    "registry_down": ("registry", "pull"),
}
RULE_KEYS = ("effect", "command", "match", "count", "probability", "machine_readable")


@dataclass(frozen=True)
class Fault:
    """A rule that fired for this call; ``params`` holds the effect's own settings."""

    effect: str
    params: Mapping[str, Any] = field(default_factory=dict)

    def get(self, key: str, default: Any = None) -> Any:
        return self.params.get(key, default)


@dataclass(frozen=True)
class Call:
    """What a rule is matched against."""

    command: str
    positionals: Sequence[str]
    machine_readable: bool


def validate_rule(rule: Mapping[str, Any]) -> dict[str, Any]:
    """Reject typos early: an unknown effect would otherwise silently never fire."""
    effect = rule.get("effect")
    if effect not in EFFECTS:
        raise ValueError(f"unknown fault effect {effect!r}; known: {sorted(EFFECTS)}")
    return dict(rule)


def _command_matches(rule: Mapping[str, Any], command: str) -> bool:
    wanted = rule.get("command")
    if wanted in (None, "*", ""):
        scope = EFFECTS.get(str(rule.get("effect")))
        return scope is None or any(command == s or command.startswith(s + " ") for s in scope)
    wanted = str(wanted)
    return command == wanted or command.startswith(wanted + " ")


def matches(rule: Mapping[str, Any], call: Call) -> bool:
    """Whether ``rule`` selects ``call``, ignoring count and probability."""
    if rule.get("effect") not in EFFECTS or not _command_matches(rule, call.command):
        return False
    wanted_mr = rule.get("machine_readable")
    if wanted_mr is not None and bool(wanted_mr) != call.machine_readable:
        return False
    needle = rule.get("match")
    return not needle or str(needle) in " ".join(call.positionals)


def _fires(rule: Mapping[str, Any], used: int) -> bool:
    count = rule.get("count")
    if count is not None and used >= int(count):
        return False
    probability = rule.get("probability")
    return probability is None or random.random() < float(probability)


def _to_fault(rule: Mapping[str, Any]) -> Fault:
    return Fault(str(rule["effect"]), {k: v for k, v in rule.items() if k not in RULE_KEYS})


def _rule_key(rule: Mapping[str, Any]) -> str:
    return hashlib.sha256(json.dumps(rule, sort_keys=True).encode()).hexdigest()[:16]


def read_file_rules(paths: SimPaths) -> list[dict[str, Any]]:
    try:
        raw = json.loads(paths.faults.read_text() or "[]")
    except FileNotFoundError:
        return []
    return [dict(r) for r in raw] if isinstance(raw, list) else []


def read_env_rules(env: Mapping[str, str] | None = None) -> list[dict[str, Any]]:
    text = (os.environ if env is None else env).get(FAULTS_ENV, "")
    if not text.strip():
        return []
    raw = json.loads(text)
    rules = raw if isinstance(raw, list) else [raw]
    return [dict(r) for r in rules]


def select(store: Store, call: Call, env: Mapping[str, str] | None = None) -> list[Fault]:
    """The faults that fire for ``call``, consuming counts atomically."""
    env_rules = read_env_rules(env)
    if not env_rules and not store.paths.faults.exists():
        return []
    fired: list[Fault] = []
    with store.write() as state:
        file_rules = read_file_rules(store.paths)
        changed = False
        for rule in file_rules:
            if matches(rule, call) and _fires(rule, 0):
                fired.append(_to_fault(rule))
                if rule.get("count") is not None:
                    rule["count"] = int(rule["count"]) - 1
                    changed = True
        if changed:
            write_json_atomic(store.paths.faults, file_rules)
        for rule in env_rules:
            key = _rule_key(rule)
            used = state.fault_hits.get(key, 0)
            if matches(rule, call) and _fires(rule, used):
                fired.append(_to_fault(rule))
                if rule.get("count") is not None:
                    state.fault_hits[key] = used + 1
    return fired
