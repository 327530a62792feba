"""The ACL rules of a Mac's and the controller's Redis users, derived from the key schema."""

from __future__ import annotations

import fnmatch
import hashlib
import inspect
import re

import pytest

from anklet import acl, keys
from anklet.credentials_cli import Target, credential_url, render, target
from anklet.redis_protocol import HostProtocol, publish_event

REDIS_7 = acl.ServerCaps.for_version("7.0.15")


def test_every_key_function_is_classified() -> None:
    """A new key in keys.py fails here until someone decides who may touch it."""
    functions = acl.key_functions()
    assert set(functions) == set(acl.KEY_RULES), "classify every key function in acl.KEY_RULES"
    public = {n for n, f in inspect.getmembers(keys, inspect.isfunction) if not n.startswith("_")}
    assert public == set(functions) | acl.NOT_KEYS
    classes = {name: rule.classification for name, rule in acl.KEY_RULES.items()}
    assert classes == {
        "host_info": "host-own",
        "host_lease": "host-own",
        "host_alloc": "controller-only",
        "host_desired": "host-own",
        "host_observed": "host-own",
        "host_secret": "host-own",
        "host_inbox": "host-own",
        "host_config": "host-own",
        "hosts_index": "shared-agent-writable",
        "events_stream": "shared-agent-writable",
        "template_sizes": "shared-agent-writable",
    }


@pytest.mark.parametrize("name", sorted(acl.KEY_RULES))
def test_scope_matches_the_key_function(name: str) -> None:
    fn = acl.key_functions()[name]
    rule = acl.KEY_RULES[name]
    assert acl.is_host_key(fn) == (rule.scope is acl.Scope.HOST)
    assert rule.agent in ("", "R", "W", "RW") and rule.why
    if rule.scope is acl.Scope.HOST:
        assert keys.host_tag("mac-1") in acl.key_pattern(name, "mac-1")
    assert acl.key_pattern(name, "mac-1").startswith(f"{keys.PREFIX}:")


def test_host_rules_grant_own_keys_and_write_only_shared_keys() -> None:
    rules = acl.host_rules("mac-1", "pw", REDIS_7)
    assert rules[:4] == ["reset", "on", "#" + hashlib.sha256(b"pw").hexdigest(), "resetchannels"]
    assert "pw" not in rules, "the plain password never reaches the server"
    key_rules = {r for r in rules if "~" in r}
    assert key_rules == {
        "%W~anklet:{h:mac-1}:info",
        "%W~anklet:{h:mac-1}:lease",
        "%R~anklet:{h:mac-1}:desired",
        "~anklet:{h:mac-1}:observed",
        "~anklet:{h:mac-1}:secret:*:*",
        "~anklet:{h:mac-1}:inbox",
        "%R~anklet:{h:mac-1}:config",
        "%W~anklet:hosts",
        "%W~anklet:events",
        "%W~anklet:template-sizes",
    }
    assert not any("alloc" in r for r in rules)
    assert not any(r.startswith("&") or r in ("allkeys", "allchannels", "allcommands") for r in rules)


def _matches(rules: list[str], key: str) -> bool:
    return any(fnmatch.fnmatchcase(key, r.split("~", 1)[1]) for r in rules if "~" in r)


@pytest.mark.parametrize("other", ["mac-2", "mac-10", "mac-1x", "mac", "*"])
def test_host_rules_never_match_another_hosts_keys(other: str) -> None:
    rules = acl.host_rules("mac-1", "pw", REDIS_7)
    assert _matches(rules, keys.host_secret("mac-1", "uid", 1))
    for name, fn in acl.key_functions().items():
        if acl.is_host_key(fn):
            args = {p: other if p == "host" else "1" for p in inspect.signature(fn).parameters}
            assert not _matches(rules, fn(**args)), name


def test_commands_are_an_explicit_list_without_scripts_or_admin() -> None:
    rules = acl.host_rules("mac-1", "pw", REDIS_7)
    commands = [r for r in rules if r[0] in "+-"]
    assert commands[0] == "-@all"
    assert not any("@" in c for c in commands[1:]), "no categories after -@all"
    for forbidden in ("+eval", "+evalsha", "+keys", "+flushall", "+config", "+acl", "+scan", "+xread"):
        assert forbidden not in commands
    assert "+client|setinfo" not in commands, "Redis 7.0 has no CLIENT SETINFO"
    assert "+client|setinfo" in acl.host_rules("mac-1", "pw", acl.ServerCaps.for_version("7.2.4"))


def test_agent_commands_cover_what_host_protocol_sends() -> None:
    """Each public HostProtocol method's Redis calls are named in AGENT_COMMANDS; the
    integration tests run every method as a host user, this keeps the list honest on paper."""
    source = inspect.getsource(HostProtocol)
    sent = set(re.findall(r"self\.client\.(\w+)\(", source)) - {"pipeline"}
    sent |= set(re.findall(r"pipe\.(\w+)\(", source)) - {"execute"}  # commands sent in a pipeline
    assert {"hset", "blpop", "get", "exists"} <= sent, "the scan finds the calls"
    sent |= set(re.findall(r"client\.(\w+)\(", inspect.getsource(publish_event)))
    sent = {"del" if m == "delete" else m for m in sent}  # redis-py's name for DEL
    assert sent <= set(acl.AGENT_COMMANDS), sent - set(acl.AGENT_COMMANDS)


def test_before_redis_7_key_patterns_fall_back_to_read_write() -> None:
    rules = acl.host_rules("mac-1", "pw", acl.ServerCaps.for_version("6.2.14"))
    assert "~anklet:events" in rules and not any(r.startswith("%") for r in rules)
    assert "resetchannels" in rules
    assert "resetchannels" not in acl.host_rules("mac-1", "pw", acl.ServerCaps.for_version("6.0.9"))
    with pytest.raises(ValueError, match="no ACL users"):
        acl.ServerCaps.for_version("5.0.7")
    with pytest.raises(ValueError, match="version"):
        acl.ServerCaps.for_version("unknown")


@pytest.mark.parametrize("name", ["", "a b", "mac*", "mac?", "m[1]", "a\\b", "{h:x}", "a:b", "-mac", "mac-"])
def test_unsafe_host_names_are_refused(name: str) -> None:
    with pytest.raises(ValueError, match="invalid host name"):
        acl.host_rules(name, "pw", REDIS_7)


def test_key_patterns_escape_glob_characters_of_literal_parts() -> None:
    assert acl.key_pattern("host_secret", "Mac-mini.local") == "anklet:{h:Mac-mini.local}:secret:*:*"
    assert acl.key_pattern("events_stream") == "anklet:events"


def test_controller_rules_cover_anklet_keys_and_no_server_wide_command() -> None:
    rules = acl.controller_rules("pw", REDIS_7)
    assert "~anklet:*" in rules and "~*" not in rules and "allkeys" not in rules
    assert rules.index("-@dangerous") > rules.index("+@read") and rules.index("-@admin") > rules.index(
        "+@write"
    )
    assert rules.index("+evalsha") > rules.index("-@scripting")


def test_credential_url_drops_admin_credentials_and_keeps_scheme_address_db() -> None:
    url = credential_url("rediss://default:admin-secret@redis.example:6380/2", "anklet-host-m1", "p-w_")
    assert url == "rediss://anklet-host-m1:p-w_@redis.example:6380/2"
    assert credential_url("redis://[::1]/0", "u", "p") == "redis://u:p@[::1]/0"
    with pytest.raises(ValueError, match="redis"):
        credential_url("http://x", "u", "p")


def test_render_prints_settings_names() -> None:
    assert (
        render("redis://u:p@h/0", "mac-1", "env")
        == "ANKLET_REDIS_URL=redis://u:p@h/0\nANKLET_AGENT_NAME=mac-1\n"
    )
    assert render("redis://u:p@h/0", None, "yaml") == 'redis_url: "redis://u:p@h/0"\n'


def test_target_needs_exactly_one_of_name_and_controller() -> None:
    assert target("mac-1", False) == Target("anklet-host-mac-1", "mac-1")
    assert target(None, True).user == "anklet-controller"
    with pytest.raises(ValueError, match="NAME"):
        target(None, False)
    with pytest.raises(ValueError, match="not both"):
        target("mac-1", True)
