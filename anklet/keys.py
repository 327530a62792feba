"""Every Redis key, prefix and TTL of the Anklet protocol, in one place.

All keys of one host carry the hash tag ``{h:<host>}`` so that the Lua scripts that touch
them run on one Redis Cluster slot. Fleet-wide keys (the host index and the event stream)
are touched by separate commands, never inside one script with host keys.
"""

from __future__ import annotations

PREFIX = "anklet"

# Heartbeat lease of a host agent. An agent refreshes it every HEARTBEAT_INTERVAL_S; the lease
# lives three intervals so that one slow heartbeat (GC pause, Redis failover) does not mark a
# healthy host NotReady, while a dead host is noticed within ~15 s.
HEARTBEAT_INTERVAL_S = 5.0
LEASE_TTL_MS = 15_000

# Agents block on their inbox for at most this long, then resync anyway: the inbox only makes
# convergence fast; a lost wake-up costs at most one resync interval.
AGENT_RESYNC_S = 10.0

# Events stream: capped so a controller that is down for a long time cannot make Redis grow
# without bound; the per-host observed hashes stay the source of truth, so a trimmed event
# only delays (never loses) a status update until the next resync.
EVENTS_MAXLEN = 100_000
EVENTS_GROUP = "controllers"


def template_sizes() -> str:
    """Hash "template:tag" → JSON {cpu, memory_mib}: VM sizes hosts learnt from the registry."""
    return f"{PREFIX}:template-sizes"


def host_tag(host: str) -> str:
    return f"{{h:{host}}}"


def hosts_index() -> str:
    """Set of every host name that ever registered (pruned by the controller)."""
    return f"{PREFIX}:hosts"


def events_stream() -> str:
    """Stream of host → controller notifications (observations, registrations, releases)."""
    return f"{PREFIX}:events"


def host_info(host: str) -> str:
    """Hash: the host's capacity and facts (JSON in field ``info``)."""
    return f"{PREFIX}:{host_tag(host)}:info"


def host_lease(host: str) -> str:
    """String with PX TTL: present while the host's agent is alive."""
    return f"{PREFIX}:{host_tag(host)}:lease"


def host_alloc(host: str) -> str:
    """Hash job-key → JSON reservation (cpu, memory); the capacity ledger."""
    return f"{PREFIX}:{host_tag(host)}:alloc"


def host_desired(host: str) -> str:
    """Hash job-key → JSON DesiredVM: what the controller wants running on the host."""
    return f"{PREFIX}:{host_tag(host)}:desired"


def host_observed(host: str) -> str:
    """Hash job-key → JSON Observation: what the host reports about each job's VM."""
    return f"{PREFIX}:{host_tag(host)}:observed"


# Per-run secrets (e.g. a GitHub JIT runner config) live at most this long: long enough for a
# large template pull before the VM starts, short enough that a leaked key is soon useless.
SECRET_TTL_MS = 2 * 3600 * 1000


def host_secret(host: str, uid: str, attempt: int) -> str:
    """String (JSON env) with a TTL: one attempt's secrets, readable by that host alone."""
    return f"{PREFIX}:{host_tag(host)}:secret:{uid}:{attempt}"


def host_inbox(host: str) -> str:
    """List the agent blocks on (BLPOP); each element is only a wake-up token."""
    return f"{PREFIX}:{host_tag(host)}:inbox"


def host_config(host: str) -> str:
    """String (JSON ``HostConfig``) the controller writes: what it wants of the host (prePull …)."""
    return f"{PREFIX}:{host_tag(host)}:config"
