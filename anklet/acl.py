"""Redis ACL rules for a Mac's agent and for the controller, derived from the key schema.

A Mac is the least trusted part of the system: it runs other people's CI jobs. Its Redis user
may touch only its own ``{h:<host>}`` keys, each no more than the agent needs, plus three shared
keys it may *write* but not read. Per-run secrets (GitHub JIT configs) therefore reach only the
one host that runs the job, as DESIGN.md promises.

Every key function of `anklet.keys` must be classified in `KEY_RULES` (a unit test enumerates
them), so a new key can never be silently left out of, or silently granted by, these rules.
Everything here is a pure function over plain data; `anklet.credentials_cli` does the I/O.
"""

from __future__ import annotations

import hashlib
import inspect
import re
from collections.abc import Callable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from anklet import keys

HOST_USER_PREFIX = "anklet-host-"
CONTROLLER_USER = "anklet-controller"


class Scope(Enum):
    HOST = "host"  # one key (or key family) per host, under the host's hash tag
    SHARED = "shared"  # one key for the whole fleet


@dataclass(frozen=True)
class KeyRule:
    """What a host's agent may do with one key: "" (nothing: controller-only), "R", "W" or "RW"."""

    scope: Scope
    agent: str
    why: str

    @property
    def classification(self) -> str:
        if not self.agent:
            return "controller-only"
        return "host-own" if self.scope is Scope.HOST else "shared-agent-writable"


# The classification of every key function in `anklet.keys`. "W" alone (Redis >= 7 key
# permissions) lets the agent add to a key without reading what other hosts put there.
KEY_RULES: dict[str, KeyRule] = {
    "host_info": KeyRule(Scope.HOST, "W", "register: HSET of its own capacity and facts"),
    "host_lease": KeyRule(Scope.HOST, "W", "heartbeat: SET PX; deregister: DEL"),
    "host_alloc": KeyRule(
        Scope.HOST, "", "the capacity ledger: only the controller's Lua reads or writes it"
    ),
    "host_desired": KeyRule(Scope.HOST, "R", "HGETALL of what the controller wants; never written by a host"),
    "host_observed": KeyRule(Scope.HOST, "RW", "report (HSET), forget (HDEL), re-read after a restart"),
    "host_secret": KeyRule(
        Scope.HOST, "RW", "GET of its own attempts' secrets; DEL lets it drop one early (never others')"
    ),
    "host_inbox": KeyRule(Scope.HOST, "RW", "BLPOP, DEL to drain, RPUSH to poke itself"),
    "host_config": KeyRule(Scope.HOST, "R", "GET of the controller's wishes (prePull)"),
    "hosts_index": KeyRule(Scope.SHARED, "W", "SADD of its own name; reading would list the fleet"),
    "events_stream": KeyRule(
        Scope.SHARED,
        "W",
        "XADD (capped); entries name other hosts' jobs, so reading the stream is the controller's alone",
    ),
    "template_sizes": KeyRule(Scope.SHARED, "W", "HSET of a tag's size it learnt; read by the controller"),
}

# Public functions of `anklet.keys` that build part of a key, not a key.
NOT_KEYS = frozenset({"host_tag"})

# Every command the agent sends (through `HostProtocol`), and why. No scripts: the agent runs
# no EVAL/EVALSHA, so a compromised Mac cannot run Lua either.
AGENT_COMMANDS: dict[str, str] = {
    "hset": "register (info), report (observed), record_template_size",
    "hgetall": "desired, observed",
    "hdel": "forget",
    "set": "heartbeat (lease, PX)",
    "exists": "heartbeat (is its registration still there, or did Redis lose it)",
    "get": "secret, host_config",
    "del": "drop_secret, deregister, draining the inbox",
    "sadd": "register and heartbeat (hosts index)",
    "xadd": "events (register, report, deregister)",
    "blpop": "wait_for_wakeup",
    "rpush": "poke",
}

# What any redis-py connection needs: authenticate, health-check PINGs, a non-zero db; and a
# Cluster client: the slot map (CLUSTER SLOTS), the command table (COMMAND: which arguments are
# keys) and following an ASK redirect while slots move.
CONNECTION_COMMANDS = ("auth", "hello", "ping", "select", "cluster|slots", "asking", "command")

# The controller touches only Anklet's keys, with data commands, MULTI/EXEC and its three Lua
# scripts; nothing server-wide (FLUSHALL, KEYS, CONFIG, ACL, DEBUG, FUNCTION ...). Categories
# (not a list) so a new data command in ControllerProtocol does not break production.
_CONTROLLER_COMMANDS = (
    "-@all",
    "+@read",
    "+@write",
    "+@transaction",
    "+@connection",
    "-@dangerous",
    "-@admin",
    "-@scripting",
    "-@pubsub",
    "+eval",
    "+evalsha",
    "+script|load",
    "+script|exists",
    "+cluster|slots",
    "+asking",
    "+command",
)

_HOST_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
_GLOB_SPECIAL = re.compile(r"([*?\[\]\\])")
_WILD = "\x00ANY\x00"


@dataclass(frozen=True)
class ServerCaps:
    """ACL features of the server, by version: key permissions (%R~/%W~) need Redis 7.0,
    channel rules 6.2, and CLIENT SETINFO (which redis-py sends on connect) 7.2."""

    key_permissions: bool = True
    channel_rules: bool = True
    client_setinfo: bool = True

    @classmethod
    def for_version(cls, version: str) -> ServerCaps:
        match = re.match(r"^(\d+)\.(\d+)", version)
        if match is None:
            raise ValueError(f"cannot read the Redis server version {version!r}")
        v = (int(match.group(1)), int(match.group(2)))
        if v < (6, 0):
            raise ValueError(f"Redis {version} has no ACL users; Anklet needs Redis >= 6.2 (7 recommended)")
        return cls(key_permissions=v >= (7, 0), channel_rules=v >= (6, 2), client_setinfo=v >= (7, 2))


def validate_host_name(name: str) -> str:
    """A host name safe in a key, an ACL rule and a user name (letters, digits, '.', '_', '-')."""
    if not _HOST_NAME.match(name):
        raise ValueError(
            f"invalid host name {name!r}: use letters, digits, '.', '_' and '-', starting and ending "
            "with a letter or digit (the agent's ANKLET_AGENT_NAME)"
        )
    return name


def host_user(host: str) -> str:
    return HOST_USER_PREFIX + validate_host_name(host)


def key_functions() -> dict[str, Callable[..., str]]:
    """Every public function of `anklet.keys` that builds a key."""
    return {
        name: fn
        for name, fn in inspect.getmembers(keys, inspect.isfunction)
        if fn.__module__ == keys.__name__ and not name.startswith("_") and name not in NOT_KEYS
    }


def is_host_key(fn: Callable[..., str]) -> bool:
    return "host" in inspect.signature(fn).parameters


class _Wildcard:
    """Formats as a marker that `key_pattern` turns into a glob `*` after escaping the rest."""

    def __format__(self, spec: str) -> str:
        return _WILD

    def __str__(self) -> str:
        return _WILD


def key_pattern(name: str, host: str | None = None) -> str:
    """The ACL glob for key function `name`: its arguments other than `host` become `*`.

    Literal characters (including the host name) are glob-escaped, so a pattern matches the
    one host's keys and nothing else."""
    fn = key_functions()[name]
    args: dict[str, Any] = {}
    for param in inspect.signature(fn).parameters:
        args[param] = validate_host_name(host) if param == "host" and host is not None else _Wildcard()
    raw = fn(**args)
    return _GLOB_SPECIAL.sub(r"\\\1", raw).replace(_WILD, "*")


def password_hash(password: str) -> str:
    """The form ACL SETUSER takes (`#<sha256 hex>`), so the plain password never reaches the
    server, its slow log or a MONITOR session."""
    return "#" + hashlib.sha256(password.encode()).hexdigest()


def _base(password: str, caps: ServerCaps) -> list[str]:
    rules = ["reset", "on", password_hash(password)]
    if caps.channel_rules:
        rules.append("resetchannels")  # no pub/sub: Anklet uses none
    return rules


def host_rules(host: str, password: str, caps: ServerCaps) -> list[str]:
    """ACL SETUSER rules for `anklet-host-<host>` (replacing any it had: they start with reset)."""
    validate_host_name(host)
    rules = _base(password, caps)
    rules.append("-@all")
    rules += [f"+{cmd}" for cmd in (*CONNECTION_COMMANDS, *AGENT_COMMANDS)]
    if caps.client_setinfo:
        rules.append("+client|setinfo")
    for name, rule in sorted(KEY_RULES.items()):
        if not rule.agent:
            continue
        pattern = key_pattern(name, host if rule.scope is Scope.HOST else None)
        # Before Redis 7 a key pattern grants read and write alike.
        perm = f"%{rule.agent}" if caps.key_permissions and rule.agent != "RW" else ""
        rules.append(f"{perm}~{pattern}")
    return rules


def controller_rules(password: str, caps: ServerCaps) -> list[str]:
    """ACL SETUSER rules for the controller: every Anklet key, no server-wide command."""
    prefix = _GLOB_SPECIAL.sub(r"\\\1", keys.PREFIX)
    return [*_base(password, caps), f"~{prefix}:*", *_CONTROLLER_COMMANDS]
