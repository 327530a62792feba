"""`anklet hosts credentials`: issue, rotate or revoke the Redis user of one Mac (or the controller).

It talks to Redis with an admin URL (ANKLET_REDIS_URL or --redis-url), writes the user with
ACL SETUSER (rules from `anklet.acl`, the password sent only as its SHA-256), persists it with
ACL SAVE when the server has an aclfile, and prints the new credentials once, to stdout only.
Users are not replicated, so behind Sentinel (a ``redis+sentinel://`` admin URL) the same rules
go to the primary and to every replica the Sentinels know, so a failover keeps every login.
"""

from __future__ import annotations

import argparse
import json
import logging
import secrets
import sys
from dataclasses import dataclass
from typing import Any, TextIO, cast
from urllib.parse import quote, urlsplit, urlunsplit

import redis
from pydantic import ValidationError

from anklet import acl, redis_cluster, redis_sentinel
from anklet.redis_tls import RedisTLSError, client_options

log = logging.getLogger("anklet.credentials")

EXIT_OK, EXIT_FAILED, EXIT_CONFIG = 0, 1, 2


def add_arguments(parser: argparse.ArgumentParser) -> None:
    g = parser.add_argument_group("credentials (anklet hosts credentials NAME | --controller)")
    g.add_argument(
        "--controller", action="store_true", help="the controller's user (anklet-controller), not a Mac's"
    )
    g.add_argument(
        "--redis-url",
        help="admin Redis URL (default: ANKLET_REDIS_URL; prefer that: a password here shows in ps)",
    )
    g.add_argument(
        "--public-url",
        help="the Redis URL as the Mac reaches it, without credentials (default: the admin URL's address)",
    )
    once = g.add_mutually_exclusive_group()
    once.add_argument(
        "--rotate", action="store_true", help="new password for an existing user; the old one stops at once"
    )
    once.add_argument("--revoke", action="store_true", help="delete the user and cut its connections")
    # The output option is shared with the listing (`anklet hosts -o ...`): see cli.py.


@dataclass(frozen=True)
class Target:
    user: str
    host: str | None  # None: the controller


def target(name: str | None, controller: bool) -> Target:
    """Whose user this is; ValueError for a missing, extra or malformed name."""
    if controller:
        if name:
            raise ValueError("give either a host NAME or --controller, not both")
        return Target(acl.CONTROLLER_USER, None)
    if not name:
        raise ValueError("anklet hosts credentials needs a host NAME (or --controller)")
    return Target(acl.host_user(name), name)


def credential_url(base: str, user: str, password: str) -> str:
    """`base` (scheme, address, db; any credentials in it dropped) with `user:password`."""
    userinfo = f"{quote(user, safe='')}:{quote(password, safe='')}"
    if redis_sentinel.is_sentinel_url(base) or redis_cluster.is_cluster_url(base):
        (redis_sentinel if redis_sentinel.is_sentinel_url(base) else redis_cluster).parse(base)  # ValueError
        scheme, _, rest = base.partition("://")
        netloc, slash, tail = rest.partition("/")
        return f"{scheme}://{userinfo}@{netloc.rpartition('@')[2]}{slash}{tail}"
    parts = urlsplit(base)
    if parts.scheme not in ("redis", "rediss") or not parts.hostname:
        raise ValueError("the Redis URL must look like redis[s]://host[:port][/db]")
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    address = host if parts.port is None else f"{host}:{parts.port}"
    netloc = f"{userinfo}@{address}"
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))


def render(url: str, host: str | None, output: str) -> str:
    """The settings the Mac (or controller) needs, as env lines or YAML (settings' field names)."""
    settings = {"redis_url": url} if host is None else {"redis_url": url, "name": host}
    if output == "yaml":
        return "".join(f"{key}: {json.dumps(value)}\n" for key, value in settings.items())
    env = {"redis_url": "ANKLET_REDIS_URL", "name": "ANKLET_AGENT_NAME"}
    return "".join(f"{env[key]}={value}\n" for key, value in settings.items())


def run(args: argparse.Namespace, out: TextIO | None = None) -> int:
    from anklet.config import RedisSettings

    out = out or sys.stdout

    try:
        who = target(args.name, args.controller)
        settings = RedisSettings(**({"redis_url": args.redis_url} if args.redis_url else {}))
        admin_url = settings.redis_url.get_secret_value()
        options = client_options(admin_url, settings.redis_tls())
        public = args.public_url or admin_url
        credential_url(public, who.user, "x")  # fail on a bad URL before changing anything
    except (ValueError, RedisTLSError, ValidationError) as exc:
        # ValidationError hides its input (RedisSettings); the others never carry the URL.
        log.error("%s", exc)
        return EXIT_CONFIG
    try:
        clients = _nodes(admin_url, options)
        try:
            return _apply(clients, who, args, public, out)
        finally:
            for client in clients:
                client.close()
    except redis.AuthenticationError as exc:
        log.error("the admin Redis URL was refused: %s", exc)
    except redis.ConnectionError as exc:
        log.error("cannot reach Redis: %s", exc)
    except redis.ResponseError as exc:
        log.error("Redis refused: %s (the admin URL needs ACL, CONFIG GET and INFO rights)", exc)
    return EXIT_FAILED


def _nodes(admin_url: str, options: dict[str, Any]) -> list[redis.Redis]:
    """Where the user must be written: the server; behind Sentinel the primary then every
    replica; in a Cluster every node (ACL users are neither replicated nor shared).
    ConnectionError when the Sentinels know no primary or no node answers."""
    common: dict[str, Any] = {"decode_responses": True, "socket_connect_timeout": 5, "socket_timeout": 15}
    if redis_cluster.is_cluster_url(admin_url):
        from redis.cluster import ClusterNode, RedisCluster

        cluster = redis_cluster.parse(admin_url)
        kwargs = redis_cluster.client_kwargs(cluster, common, options)
        startup = [ClusterNode(h, p) for h, p in cluster.nodes]  # type: ignore[no-untyped-call]
        whole = RedisCluster(startup_nodes=startup, **kwargs)
        try:  # every node, primaries first (the checks run on the first)
            nodes = whole.get_nodes()  # type: ignore[no-untyped-call]
            found = sorted(nodes, key=lambda n: (n.server_type != "primary", n.host, n.port))
            return [redis.Redis(host=n.host, port=n.port, **kwargs) for n in found]
        finally:
            whole.close()
    if not redis_sentinel.is_sentinel_url(admin_url):
        return [redis.Redis.from_url(admin_url, **common, **options)]
    from redis.sentinel import Sentinel

    parsed = redis_sentinel.parse(admin_url)
    redis_side, sentinel_side = redis_sentinel.client_kwargs(parsed, common, options)
    # redis-py types these calls from 8.x on; older releases leave them untyped.
    sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_side)  # type: ignore[no-untyped-call, unused-ignore]
    primary = sentinel.discover_master(parsed.service)  # type: ignore[no-untyped-call, unused-ignore]
    replicas = sentinel.discover_slaves(parsed.service)  # type: ignore[no-untyped-call, unused-ignore]
    addresses = cast(list[tuple[str, int]], [primary, *replicas])
    for client in sentinel.sentinels:
        client.close()
    return [redis.Redis(host=host, port=port, **redis_side) for host, port in addresses]


def _apply(
    clients: list[redis.Redis], who: Target, args: argparse.Namespace, public: str, out: TextIO
) -> int:
    client = clients[0]  # the server, or the primary
    info: dict[str, Any] = client.info("server")
    caps = acl.ServerCaps.for_version(str(info.get("redis_version", "")))
    exists = client.acl_getuser(who.user) is not None
    if args.revoke:
        if not exists:
            log.error("no Redis user %s to revoke", who.user)
            return EXIT_FAILED
        for node in clients:
            node.acl_deluser(who.user)  # Redis also closes the connections it had
            _persist(node)
        log.info("revoked Redis user %s%s", who.user, _where(clients))
        return EXIT_OK
    if exists and not args.rotate:
        log.error(
            "Redis user %s exists; --rotate issues a new password (the old one stops working at once)",
            who.user,
        )
        return EXIT_FAILED
    if args.rotate and not exists:
        log.error("no Redis user %s to rotate; run without --rotate to create it", who.user)
        return EXIT_FAILED
    password = secrets.token_urlsafe(32)
    if who.host is None:
        rules = acl.controller_rules(password, caps)
    else:
        rules = acl.host_rules(who.host, password, caps)
    for node in clients:
        node.execute_command("ACL", "SETUSER", who.user, *rules)  # type: ignore[no-untyped-call]
        if args.rotate:
            # A new password does not log out connections made with the old one: cut them.
            node.execute_command("CLIENT", "KILL", "USER", who.user)  # type: ignore[no-untyped-call]
        _persist(node)
    if not caps.key_permissions:
        log.warning(
            "Redis %s has no read/write key permissions (7.0+): %s may also read the shared keys it writes",
            info.get("redis_version"),
            who.user,
        )
    out.write(render(credential_url(public, who.user, password), who.host, args.output or "env"))
    out.flush()
    log.info(
        "%s Redis user %s%s; the credentials above are shown only once",
        "rotated" if args.rotate else "created",
        who.user,
        _where(clients),
    )
    return EXIT_OK


def _where(clients: list[redis.Redis]) -> str:
    return "" if len(clients) == 1 else f" on {len(clients)} Redis servers"


def _persist(client: redis.Redis) -> None:
    """ACL SAVE when the server keeps users in an aclfile; otherwise say how to keep them."""
    try:
        config = client.config_get("aclfile")
    except redis.ResponseError as exc:
        log.warning("could not read the server's aclfile setting (%s); persist the ACL change yourself", exc)
        return
    if config.get("aclfile"):
        client.acl_save()
        log.info("saved the server's users to its aclfile (ACL SAVE)")
        return
    log.warning(
        "the server has no aclfile: this change is lost when Redis restarts; set `aclfile` in redis.conf "
        "(then ACL SAVE), or run CONFIG REWRITE to store users in redis.conf"
    )
