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

from anklet import multihost_url

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
        return f"SentinelURL({self.describe()})"

    def describe(self) -> str:
        """Where it points, for log lines: never the credentials."""
        where = multihost_url.joined(self.sentinels)
        return f"service {self.service} via sentinels {where} db {self.db}{' (TLS)' if self.tls else ''}"


def is_sentinel_url(url: str) -> bool:
    return url.split("://", 1)[0].lower() in SCHEMES


def parse(url: str) -> SentinelURL:
    """The URL's parts; ValueError (never quoting the URL, which may hold a password) when malformed."""
    scheme, sep, rest = url.partition("://")
    if not sep or scheme.lower() not in SCHEMES:
        raise ValueError("a Sentinel URL starts with redis+sentinel:// or rediss+sentinel://")
    parts = urlsplit(f"x://{rest}")  # only path and query: the netloc holds commas urlsplit can't read
    username, password, sentinels = multihost_url.netloc(
        rest.split("/", 1)[0].split("?", 1)[0], DEFAULT_PORT, "Sentinel address"
    )
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
