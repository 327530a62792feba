"""The Redis side of the controller ↔ host protocol: thin async adapters over redis-py.

Capacity is reserved by one Lua script that reads the host's limits and its current
allocations and writes the new allocation, the desired VM and the wake-up token in one
atomic step, so two controllers (or one controller racing itself after a restart) can never
put more on a host than it has.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, cast

import redis.asyncio as aioredis

from anklet import keys, redis_cluster, redis_sentinel
from anklet.redis_tls import RedisTLS, client_options
from anklet.wire import DesiredVM, HostConfig, HostInfo, Observation, Reservation, StopReason

# KEYS: info, alloc, desired, inbox, lease
# ARGV: uid, attempt, cpu, memory_mib, reservation_json, desired_json
_RESERVE_LUA = """
if redis.call('EXISTS', KEYS[5]) == 0 then return 'host_not_ready' end
local info = redis.call('HMGET', KEYS[1], 'slots', 'cpu', 'memory_mib', 'overcommit', 'schedulable')
if not info[1] then return 'host_unknown' end
if info[5] ~= '1' then return 'host_unschedulable' end
local existing = redis.call('HGET', KEYS[2], ARGV[1])
if existing then
  local held = cjson.decode(existing)
  if tonumber(held['attempt']) == tonumber(ARGV[2]) then return 'OK' end
  return 'already_reserved'
end
local count, cpu, mem = 0, 0, 0
for _, raw in ipairs(redis.call('HVALS', KEYS[2])) do
  local r = cjson.decode(raw)
  count = count + 1
  cpu = cpu + tonumber(r['cpu'])
  mem = mem + tonumber(r['memory_mib'])
end
if count + 1 > tonumber(info[1]) then return 'no_vm_slot' end
if info[4] ~= '1' then
  if cpu + tonumber(ARGV[3]) > tonumber(info[2]) then return 'insufficient_cpu' end
  if mem + tonumber(ARGV[4]) > tonumber(info[3]) then return 'insufficient_memory' end
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[5])
redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
redis.call('RPUSH', KEYS[4], 'reserve')
redis.call('LTRIM', KEYS[4], -64, -1)
return 'OK'
"""

# KEYS: alloc, desired, observed, inbox, secret   ARGV: uid, attempt
# Only the named attempt is released, so a late release cannot free a newer attempt's slot.
_RELEASE_LUA = """
local raw = redis.call('HGET', KEYS[1], ARGV[1])
if raw then
  local r = cjson.decode(raw)
  if tonumber(r['attempt']) ~= tonumber(ARGV[2]) then return 0 end
end
redis.call('HDEL', KEYS[1], ARGV[1])
local d = redis.call('HGET', KEYS[2], ARGV[1])
if d and tonumber(cjson.decode(d)['attempt']) == tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[2], ARGV[1])
end
local o = redis.call('HGET', KEYS[3], ARGV[1])
if o and tonumber(cjson.decode(o)['attempt']) == tonumber(ARGV[2]) then
  redis.call('HDEL', KEYS[3], ARGV[1])
end
redis.call('DEL', KEYS[5])
redis.call('RPUSH', KEYS[4], 'release')
redis.call('LTRIM', KEYS[4], -64, -1)
return 1
"""

# KEYS: desired, inbox   ARGV: uid, cancelled_json
_CANCEL_LUA = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
redis.call('RPUSH', KEYS[2], 'cancel')
redis.call('LTRIM', KEYS[2], -64, -1)
return 1
"""


def connect(
    url: str, tls: RedisTLS | None = None, *, socket_timeout: float = 30.0, retries: int = 3
) -> aioredis.Redis:
    """A client whose individual commands retry briefly on connection errors.

    Longer outages are handled by the callers' loops (see `anklet.backoff`), which log one
    line per outage instead of one per command. `tls` applies to `rediss://` URLs (the
    processes pass their settings' `redis_tls()`); it raises RedisTLSError on a mismatch.
    A ``redis+sentinel://`` URL (`anklet.redis_sentinel`) gives a client that finds the
    primary through the Sentinels and follows a failover; a ``redis+cluster://`` URL
    (`anklet.redis_cluster`) a Redis Cluster client (it has the same commands; every atomic step
    of the protocol touches one host's hash-tagged keys, hence one slot). Observers that must not stall during
    an outage (the invariant monitor) pass a short `socket_timeout` and no `retries`.
    """
    from redis.asyncio.retry import Retry
    from redis.backoff import ExponentialBackoff
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    common: dict[str, Any] = {
        "decode_responses": True,
        "retry": Retry(ExponentialBackoff(cap=1.0, base=0.05), retries=retries),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "health_check_interval": 30,
        "socket_connect_timeout": min(5.0, socket_timeout),
        # A hung server (not a refused connection) must surface as an error, not a hang; the
        # longest blocking read we issue (BLPOP/XREAD) is 10 s, well inside the default 30 s.
        "socket_timeout": socket_timeout,
    }
    options = client_options(url, tls)
    if redis_sentinel.is_sentinel_url(url):
        from redis.asyncio.sentinel import Sentinel

        parsed = redis_sentinel.parse(url)
        redis_side, sentinel_side = redis_sentinel.client_kwargs(parsed, common, options)
        sentinel = Sentinel(list(parsed.sentinels), sentinel_kwargs=sentinel_side)  # type: ignore[no-untyped-call, unused-ignore]
        return cast(aioredis.Redis, sentinel.master_for(parsed.service, **redis_side))
    if redis_cluster.is_cluster_url(url):
        from redis.asyncio.cluster import ClusterNode, RedisCluster

        cluster = redis_cluster.parse(url)
        nodes = [ClusterNode(host, port) for host, port in cluster.nodes]
        kwargs = redis_cluster.client_kwargs(cluster, common, options)
        return cast(aioredis.Redis, RedisCluster(startup_nodes=nodes, **kwargs))
    return aioredis.Redis.from_url(url, **common, **options)


def _float(raw: str | None) -> float | None:
    try:
        return None if raw is None else float(raw)
    except ValueError:
        return None


def size_key(template: str, tag: str | None) -> str:
    return f"{template}:{tag or ''}"


@dataclass(frozen=True)
class HostSnapshot:
    """One host as the scheduler sees it: registration, liveness and allocations."""

    info: HostInfo
    ready: bool
    reservations: tuple[Reservation, ...]
    heartbeat: float | None = None  # epoch seconds of the last heartbeat, while the lease lives


class HostProtocol:
    """The agent's side: register, heartbeat, read desired VMs, report observations."""

    def __init__(self, client: aioredis.Redis, host: str) -> None:
        self.client = client
        self.host = host

    async def register(self, info: HostInfo) -> None:
        await self.client.hset(
            keys.host_info(self.host),
            mapping={
                "json": info.model_dump_json(),
                "slots": info.vm_slots,
                "cpu": info.cpu,
                "memory_mib": info.memory_mib,
                "overcommit": "1" if info.overcommit else "0",
                "schedulable": "1" if info.schedulable else "0",
            },
        )
        await self.heartbeat()
        await self.client.sadd(keys.hosts_index(), self.host)
        await publish_event(self.client, "host", host=self.host)

    async def heartbeat(self) -> bool:
        """Renew the lease; False when the registration is gone (Redis lost its data, or a
        failover lost the newest writes) and the host must register again to be scheduled."""
        pipe = self.client.pipeline(transaction=False)
        pipe.set(keys.host_lease(self.host), str(time.time()), px=keys.LEASE_TTL_MS)
        pipe.exists(keys.host_info(self.host))
        pipe.sadd(keys.hosts_index(), self.host)  # the index is write-only for a host (ACL)
        _, info, added = await pipe.execute()
        return bool(info) and not added

    async def wait_for_wakeup(self, timeout: float) -> bool:
        """Block until the controller pushes a token or `timeout` passes; drain extra tokens."""
        # Capped below the client's socket timeout so a long resync never looks like a hung server.
        popped = await self.client.blpop([keys.host_inbox(self.host)], timeout=min(timeout, 20.0))
        if popped is not None:
            await self.client.delete(keys.host_inbox(self.host))
        return popped is not None

    async def poke(self) -> None:
        """Wake this host's own loop (used when a local task ends)."""
        await self.client.rpush(keys.host_inbox(self.host), "poke")

    async def desired(self) -> dict[str, DesiredVM]:
        raw = cast(Mapping[str, str], await self.client.hgetall(keys.host_desired(self.host)))
        return {uid: DesiredVM.model_validate_json(v) for uid, v in raw.items()}

    async def host_config(self) -> HostConfig | None:
        """The controller's wishes for this host (prePull, ...); None when it has written none."""
        raw = await self.client.get(keys.host_config(self.host))
        return None if raw is None else HostConfig.model_validate_json(raw)

    async def observed(self) -> dict[str, Observation]:
        raw = cast(Mapping[str, str], await self.client.hgetall(keys.host_observed(self.host)))
        return {uid: Observation.model_validate_json(v) for uid, v in raw.items()}

    async def record_template_size(
        self, names: list[str], tag: str | None, cpu: int, memory_mib: int
    ) -> None:
        """Teach the scheduler a template tag's VM size (under each name the template goes by)."""
        value = json.dumps({"cpu": cpu, "memory_mib": memory_mib})
        await self.client.hset(keys.template_sizes(), mapping={size_key(n, tag): value for n in names})

    async def secret(self, uid: str, attempt: int) -> dict[str, str] | None:
        raw = await self.client.get(keys.host_secret(self.host, uid, attempt))
        if raw is None:
            return None
        env: dict[str, str] = json.loads(raw)
        return env

    async def drop_secret(self, uid: str, attempt: int) -> None:
        await self.client.delete(keys.host_secret(self.host, uid, attempt))

    async def report(self, observation: Observation) -> None:
        await self.client.hset(keys.host_observed(self.host), observation.uid, observation.model_dump_json())
        await publish_event(self.client, "observed", host=self.host, uid=observation.uid)

    async def forget(self, uid: str) -> None:
        await self.client.hdel(keys.host_observed(self.host), uid)

    async def deregister(self) -> None:
        await self.client.delete(keys.host_lease(self.host))
        await publish_event(self.client, "host", host=self.host)


async def publish_event(client: aioredis.Redis, kind: str, **fields: str) -> None:
    entry: dict[Any, Any] = {"kind": kind, **fields}
    await client.xadd(
        keys.events_stream(),
        entry,
        maxlen=keys.EVENTS_MAXLEN,
        approximate=True,
    )


class ControllerProtocol:
    """The controller's side: snapshot hosts, reserve, release, cancel, read observations."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self._reserve = client.register_script(_RESERVE_LUA)
        self._release = client.register_script(_RELEASE_LUA)
        self._cancel = client.register_script(_CANCEL_LUA)
        self._parsed_info: dict[str, tuple[str, HostInfo]] = {}  # host -> (registration text, parsed)
        self._parsed_allocs: dict[str, Reservation] = {}

    async def put_host_config(self, host: str, config: HostConfig) -> None:
        """Tell a host what the operator wants of it beyond its jobs (prePull, ...), and wake it."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(keys.host_config(host), config.model_dump_json(by_alias=True))
        pipe.rpush(keys.host_inbox(host), "config")
        await pipe.execute()

    async def template_sizes(self) -> dict[str, tuple[int, int]]:
        """Learnt VM sizes by `size_key` (cpu, memory MiB)."""
        raw = cast(Mapping[str, str], await self.client.hgetall(keys.template_sizes()))
        sizes = {}
        for key, value in raw.items():
            data = json.loads(value)
            sizes[key] = (int(data["cpu"]), int(data["memory_mib"]))
        return sizes

    async def host_names(self) -> list[str]:
        names = cast(set[str], await self.client.smembers(keys.hosts_index()))
        return sorted(names)

    async def snapshot(self, names: Sequence[str] | None = None) -> list[HostSnapshot]:
        """Registered hosts (all, or just `names`) with lease state and allocations, in one pipeline.

        A host that is not (or no longer) registered is left out. Registrations change rarely
        but are the bulk of what a fleet read parses, so each host's parsed registration is kept
        with the exact text it came from and reused while Redis holds that same text."""
        if names is None:
            names = await self.host_names()
        if not names:
            return []
        pipe = self.client.pipeline(transaction=False)
        for name in names:
            pipe.hget(keys.host_info(name), "json")
            pipe.get(keys.host_lease(name))
            pipe.hvals(keys.host_alloc(name))
        raw: list[Any] = await pipe.execute()
        result = []
        for i, name in enumerate(names):
            info_json, lease, allocs = raw[3 * i : 3 * i + 3]
            if not info_json:
                self._parsed_info.pop(name, None)
                continue
            cached = self._parsed_info.get(name)
            if cached is None or cached[0] != info_json:
                cached = self._parsed_info[name] = (info_json, HostInfo.model_validate_json(info_json))
            result.append(
                HostSnapshot(
                    info=cached[1],
                    ready=lease is not None,
                    reservations=tuple(self._reservation(a) for a in allocs),
                    heartbeat=_float(lease),
                )
            )
        return result

    def _reservation(self, text: str) -> Reservation:
        """Parse one allocation; reservations are immutable once written, so parse each text once."""
        parsed = self._parsed_allocs.get(text)
        if parsed is None:
            if len(self._parsed_allocs) >= 100_000:  # bounded: old texts are dropped wholesale
                self._parsed_allocs.clear()
            parsed = self._parsed_allocs[text] = Reservation.model_validate_json(text)
        return parsed

    async def reserve(self, host: str, desired: DesiredVM) -> str:
        """Reserve capacity and publish the desired VM atomically; 'OK' or the refusal reason."""
        reservation = Reservation(
            uid=desired.uid, attempt=desired.attempt, cpu=desired.cpu, memory_mib=desired.memory_mib
        )
        result = await self._reserve(
            keys=[
                keys.host_info(host),
                keys.host_alloc(host),
                keys.host_desired(host),
                keys.host_inbox(host),
                keys.host_lease(host),
            ],
            args=[
                desired.uid,
                desired.attempt,
                desired.cpu,
                desired.memory_mib,
                reservation.model_dump_json(),
                desired.model_dump_json(),
            ],
        )
        return str(result)

    async def release(self, host: str, uid: str, attempt: int) -> None:
        await self._release(
            keys=[
                keys.host_alloc(host),
                keys.host_desired(host),
                keys.host_observed(host),
                keys.host_inbox(host),
                keys.host_secret(host, uid, attempt),
            ],
            args=[uid, attempt],
        )
        await publish_event(self.client, "released", host=host, uid=uid)

    async def put_secret(self, host: str, uid: str, attempt: int, env: Mapping[str, str]) -> None:
        """Store one attempt's secrets for its host only (TTL), then wake the host."""
        pipe = self.client.pipeline(transaction=True)
        pipe.set(keys.host_secret(host, uid, attempt), json.dumps(dict(env)), px=keys.SECRET_TTL_MS)
        pipe.rpush(keys.host_inbox(host), "secret")
        await pipe.execute()

    async def has_secret(self, host: str, uid: str, attempt: int) -> bool:
        return bool(await self.client.exists(keys.host_secret(host, uid, attempt)))

    async def cancel(self, host: str, uid: str, *, stop: StopReason | None = None) -> bool:
        """Ask the host to tear the job's VM down; False when nothing is desired there.

        The first request's `stop` is kept with the desired VM and wins over later ones."""
        raw = await self.client.hget(keys.host_desired(host), uid)
        if raw is None:
            return False
        desired = DesiredVM.model_validate_json(raw)
        if desired.cancel:
            return True
        cancelled = desired.model_copy(update={"cancel": True, "stop": stop})
        done = await self._cancel(
            keys=[keys.host_desired(host), keys.host_inbox(host)],
            args=[uid, cancelled.model_dump_json()],
        )
        return bool(done)

    async def desired(self, host: str, uid: str) -> DesiredVM | None:
        raw = await self.client.hget(keys.host_desired(host), uid)
        return None if raw is None else DesiredVM.model_validate_json(raw)

    async def observation(self, host: str, uid: str) -> Observation | None:
        raw = await self.client.hget(keys.host_observed(host), uid)
        return None if raw is None else Observation.model_validate_json(raw)

    async def read_events(self, last_id: str, block_ms: int) -> tuple[str, list[dict[str, str]]]:
        """Events after `last_id` (blocking up to `block_ms`); returns the new last id."""
        streams: dict[Any, Any] = {keys.events_stream(): last_id}
        reply = cast(
            list[tuple[str, list[tuple[str, dict[str, str]]]]],
            await self.client.xread(streams, block=block_ms, count=500),
        )
        events: list[dict[str, str]] = []
        for _stream, entries in reply or []:
            for entry_id, fields in entries:
                last_id = entry_id
                events.append(dict(fields))
        return last_id, events

    async def latest_event_id(self) -> str:
        entries = await self.client.xrevrange(keys.events_stream(), count=1)
        return str(entries[0][0]) if entries else "0-0"
