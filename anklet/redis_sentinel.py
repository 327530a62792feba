"""Redis behind Sentinel: what a ``redis+sentinel://`` URL means, and a client that follows failovers.

A production Redis that must survive the loss of its primary runs with replicas and Sentinels;
clients ask the Sentinels where the primary is instead of holding its address. One URL still
says everything, so every setting, file and secret that carries ``redis.url`` works unchanged::

    redis+sentinel://[[user]:password@]host[:port][,host[:port]...]/service[/db][?sentinel_password=...]
    rediss+sentinel://...    (TLS to the Sentinels and to Redis, with the redis_tls_* settings)

The credentials before ``@`` are for Redis itself (the per-host ACL users of ``anklet hosts
credentials``); Sentinels usually have no password, or a shared one given as
``sentinel_password`` (and ``sentinel_username``) in the query. The default Sentinel port is
26379. The client re-asks the Sentinels on every new connection and drops a connection whose
server answers READONLY (a demoted primary), so after a failover the callers' ordinary retries
reach the new primary.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

SCHEMES = {"redis+sentinel": False, "rediss+sentinel": True}  # scheme → TLS
DEFAULT_PORT = 26379
_QUERY_KEYS = ("sentinel_username", "sentinel_password")


@dataclass(frozen=True)
class SentinelURL:
    """A parsed ``redis+sentinel://`` URL. Its repr hides both passwords."""

    sentinels: tuple[tuple[str, int], ...]
    service: str
    db: int = 0
    username: str | None = None
    password: str | None = None
    sentinel_username: str | None = None
    sentinel_password: str | None = None
    tls: bool = False

    def __repr__(self) -> str:
        where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"SentinelURL({where}/{self.service}/{self.db}, tls={self.tls})"

    def describe(self) -> str:
        """Where it points, for log lines: never the credentials."""
        where = ",".join(f"{h}:{p}" for h, p in self.sentinels)
        return f"service {self.service} via sentinels {where} db {self.db}{' (TLS)' if self.tls else ''}"


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def address(item: str, default_port: int = DEFAULT_PORT) -> tuple[str, int]:
    """One server of a multi-host URL: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
    if item.startswith("["):
        host, sep, rest = item[1:].partition("]")
        if not sep or not host or (rest and not rest.startswith(":")):
            raise ValueError("an address in brackets must look like [ipv6]:port")
        port_text = rest[1:]
    else:
        host, _, port_text = item.rpartition(":") if ":" in item else (item, "", "")
        if ":" in host:
            raise ValueError("an IPv6 address must be in brackets: [ipv6]:port")
    if not host:
        raise ValueError("an address in the URL has no host")
    if not port_text:
        return host, default_port
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError("a port must be a number from 1 to 65535")
    return host, int(port_text)


def parse(url: str) -> SentinelURL:
    """The URL's parts; ValueError (never quoting the URL, which may hold a password) when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    parts = urlsplit(f"x://{rest}")  # only path and query: the netloc holds commas urlsplit can't read
    netloc = rest.split("/", 1)[0].split("?", 1)[0]
    userinfo, at, hosts = netloc.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ValueError("a Sentinel URL needs at least one Sentinel address")
    sentinels = tuple(address(item) for item in hosts.split(","))
    segments = [s for s in parts.path.split("/") if s]
    if not segments or len(segments) > 2:
        raise ValueError("a Sentinel URL's path is /<service name>[/<db>]")
    service = unquote(segments[0])
    db = 0
    if len(segments) == 2:
        if not segments[1].isdigit():
            raise ValueError("the database in a Sentinel URL must be a number")
        db = int(segments[1])
    query = parse_qs(parts.query, keep_blank_values=True)
    unknown = sorted(k for k in query if k not in _QUERY_KEYS)
    if unknown:
        raise ValueError(f"a Sentinel URL takes only {', '.join(_QUERY_KEYS)} in its query, not {unknown}")
    repeated = sorted(k for k, v in query.items() if len(v) > 1)
    if repeated:
        raise ValueError(f"a Sentinel URL's query repeats {', '.join(repeated)}")
    return SentinelURL(
        sentinels=sentinels,
        service=service,
        db=db,
        username=username,
        password=password,
        sentinel_username=(query.get("sentinel_username") or [""])[0] or None,
        sentinel_password=(query.get("sentinel_password") or [""])[0] or None,
        tls=SCHEMES[scheme.lower()],
    )


def client_kwargs(
    url: SentinelURL, common: dict[str, Any], tls_options: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Keyword arguments for redis-py's Sentinel: (for Redis itself, for the Sentinels).

    `common` (timeouts, retries, decoding) applies to both; `tls_options` are the ``ssl_*``
    options of `anklet.redis_tls.client_options`, which turn TLS on for both."""
    tls = {"ssl": True, **tls_options} if url.tls else {}
    redis_side = {**common, **tls, "db": url.db, "username": url.username, "password": url.password}
    sentinel_side = {
        **{k: v for k, v in common.items() if k.startswith("socket_")},
        **tls,
        "username": url.sentinel_username,
        "password": url.sentinel_password,
    }
    return redis_side, sentinel_side
