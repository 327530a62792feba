"""A Redis Cluster of three primaries on loopback, for the tests of the ``redis+cluster://`` path.

Built with plain cluster commands (CLUSTER ADDSLOTSRANGE, CLUSTER MEET) rather than
`redis-cli --cluster create`, so it needs nothing but `redis-server` (7.0 or newer).
"""

from __future__ import annotations

import time
from pathlib import Path

from anklet.dev.redis_server import RedisServer, RedisUnavailable, free_port
from anklet.dev.sentinel_group import ask

SLOTS = 16384


class ClusterGroup:
    """`size` primaries sharing the 16384 slots evenly; `url` is the clients' Cluster URL."""

    def __init__(self, data_dir: Path, *, size: int = 3) -> None:
        # The bus port defaults to port + 10000, past 65535 for most free ports: choose it too.
        self.bus_ports = [free_port() for _ in range(size)]
        self.servers = [
            RedisServer(
                data_dir / f"node-{i}",
                extra_args=(
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    str(data_dir / f"node-{i}" / "nodes.conf"),
                    "--cluster-node-timeout",
                    "2000",
                    "--cluster-port",
                    str(self.bus_ports[i]),
                ),
            )
            for i in range(size)
        ]

    @property
    def url(self) -> str:
        return "redis+cluster://" + ",".join(f"127.0.0.1:{s.port}" for s in self.servers) + "/0"

    def start(self, timeout: float = 20.0) -> ClusterGroup:
        try:
            for server in self.servers:
                server.start()
            share = SLOTS // len(self.servers)
            for i, server in enumerate(self.servers):
                first = i * share
                last = SLOTS - 1 if i == len(self.servers) - 1 else first + share - 1
                self._must(server.port, "CLUSTER", "ADDSLOTSRANGE", str(first), str(last))
            for server, bus in zip(self.servers[1:], self.bus_ports[1:], strict=True):
                self._must(self.servers[0].port, "CLUSTER", "MEET", "127.0.0.1", str(server.port), str(bus))
            self._wait_ok(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @staticmethod
    def _must(port: int, *words: str) -> None:
        reply = ask(port, *words, timeout=2.0)
        if not reply.startswith("+OK"):
            raise RedisUnavailable(
                f"{' '.join(words[:2])} on port {port} failed: {reply.strip() or 'no answer'}"
            )

    def _wait_ok(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if all("cluster_state:ok" in ask(s.port, "CLUSTER", "INFO") for s in self.servers):
                return
            time.sleep(0.05)
        raise RedisUnavailable(f"the cluster did not reach cluster_state:ok within {timeout} s")

    def stop(self) -> None:
        for server in self.servers:
            server.stop()
