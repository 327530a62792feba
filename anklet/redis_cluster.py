"""Redis Cluster: what a ``redis+cluster://`` URL means.

Anklet's keys are cluster-ready: every key of one host carries the hash tag ``{h:<host>}``, so
the atomic steps (the reservation, release and cancel scripts, the transactions) touch one
slot; the few shared keys (the hosts index, the event stream, learnt template sizes) are
single-key commands. A Cluster URL names one or more nodes to learn the cluster from::

    redis+cluster://[[user]:password@]host[:6379][,host[:port]...][/0]
    rediss+cluster://...    (TLS, with the redis_tls_* settings)

Cluster has one database, so the path may only be empty or ``/0``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from anklet import multihost_url

SCHEMES = {"redis+cluster": False, "rediss+cluster": True}  # scheme → TLS
DEFAULT_PORT = 6379


@dataclass(frozen=True)
class ClusterURL:
    """A parsed ``redis+cluster://`` URL. Its repr hides the password."""

    nodes: tuple[tuple[str, int], ...]
    username: str | None = None
    password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:
        return f"ClusterURL({self.describe()})"

    def describe(self) -> str:
        """Where it points, for log lines: never the credentials."""
        return f"cluster via {multihost_url.joined(self.nodes)}{' (TLS)' if self.tls else ''}"


def is_cluster_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def parse(url: str) -> ClusterURL:
    """The URL's parts; ValueError (never quoting the URL, which may hold a password) when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("a Cluster URL starts with redis+cluster:// or rediss+cluster://")
    if "?" in rest or "#" in rest:
        raise ValueError("a Cluster URL takes no query or fragment (TLS is the redis_tls_* settings' job)")
    netloc, _, path = rest.partition("/")
    if path.strip("/") not in ("", "0"):
        raise ValueError("Redis Cluster has only database 0: the URL's path must be empty or /0")
    username, password, nodes = multihost_url.netloc(netloc, DEFAULT_PORT, "node address")
    return ClusterURL(nodes=nodes, username=username, password=password, tls=SCHEMES[scheme.lower()])


def client_kwargs(url: ClusterURL, common: dict[str, Any], tls_options: dict[str, Any]) -> dict[str, Any]:
    """Keyword arguments for redis-py's RedisCluster (besides the startup nodes): `common`
    (timeouts, retries, decoding), the credentials, and TLS when the scheme asks for it."""
    tls = {"ssl": True, **tls_options} if url.tls else {}
    return {**common, **tls, "username": url.username, "password": url.password}
