"""The part Sentinel and Cluster URLs share: several ``host:port`` addresses after the credentials.

``urllib.parse`` reads one host per URL, so ``[user[:password]@]h1[:p1],h2[:p2],...`` is read here,
once, for both `anklet.redis_sentinel` and `anklet.redis_cluster`. Errors never quote the URL
(it may hold a password).
"""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import unquote


def address(item: str, default_port: int) -> tuple[str, int]:
    """One server: ``host``, ``host:port``, ``[v6]`` or ``[v6]:port``."""
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


def netloc(
    text: str, default_port: int, what: str
) -> tuple[str | None, str | None, tuple[tuple[str, int], ...]]:
    """``[user[:password]@]addr[,addr...]`` → (username, password, addresses); `what` names the
    addresses in the error when there are none ("Sentinel address", "node address")."""
    userinfo, at, hosts = text.rpartition("@")
    username = password = None
    if at:
        user, colon, secret = userinfo.partition(":")
        username = unquote(user) or None
        password = unquote(secret) if colon else None
    if not hosts:
        raise ValueError(f"the URL needs at least one {what}")
    return username, password, tuple(address(item, default_port) for item in hosts.split(","))


def joined(addresses: Iterable[tuple[str, int]]) -> str:
    """``h1:p1,h2:p2`` (for descriptions; never with credentials)."""
    return ",".join(f"{h}:{p}" for h, p in addresses)
