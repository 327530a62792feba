"""A Redis primary, its replicas and three Sentinels on loopback: the production HA shape, here.

Used by the dev stack (`anklet dev --redis-sentinel`) and the chaos tests, so a failover is
tested against real servers: `redis-server --sentinel` is the same binary in Sentinel mode.
Timers are short (the primary is declared down after `down_after_ms`) so a failover takes a
couple of seconds instead of the production default of half a minute.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from pathlib import Path

from anklet.dev.redis_server import RedisServer, RedisUnavailable, find_server, free_port, stop_process

SERVICE = "anklet"


def ask(port: int, *words: str, timeout: float = 0.5) -> str:
    """One inline command to a loopback server, its reply as text ('' when it does not answer)."""
    with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout) as s:
        s.settimeout(timeout)
        s.sendall((" ".join(words) + "\r\n").encode())
        return s.recv(4096).decode(errors="replace")
    return ""


class SentinelProcess:
    """One `redis-server --sentinel` watching the group's service."""

    def __init__(self, data_dir: Path, primary_port: int, quorum: int, down_after_ms: int) -> None:
        self.data_dir = data_dir
        self.port = free_port()
        self.primary_port = primary_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.process: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 10.0) -> SentinelProcess:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        conf = self.data_dir / "sentinel.conf"  # Sentinel rewrites it: it must be its own, writable
        conf.write_text(
            f"port {self.port}\n"
            "bind 127.0.0.1\n"
            f"dir {self.data_dir}\n"
            f"logfile {self.data_dir / 'sentinel.log'}\n"
            f"sentinel monitor {SERVICE} 127.0.0.1 {self.primary_port} {self.quorum}\n"
            f"sentinel down-after-milliseconds {SERVICE} {self.down_after_ms}\n"
            f"sentinel failover-timeout {SERVICE} {max(3000, 3 * self.down_after_ms)}\n"
            f"sentinel parallel-syncs {SERVICE} 1\n"
        )
        with (self.data_dir / "sentinel.stderr").open("wb") as stderr:
            self.process = subprocess.Popen(
                [find_server(), str(conf), "--sentinel"], stdout=subprocess.DEVNULL, stderr=stderr
            )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisUnavailable(f"redis sentinel exited with {self.process.returncode}; see {conf}")
            if ask(self.port, "PING").startswith("+PONG"):
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis sentinel did not answer on port {self.port} within {timeout} s")

    def primary_port_now(self) -> int | None:
        """The primary's port as this Sentinel sees it now."""
        reply = ask(self.port, "SENTINEL", "get-master-addr-by-name", SERVICE)
        lines = reply.split("\r\n")
        # *2 $9 127.0.0.1 $4 6379
        return int(lines[4]) if len(lines) > 4 and lines[4].isdigit() else None

    def stop(self) -> None:
        stop_process(self.process)


class SentinelGroup:
    """Primary + `replicas` replicas + `sentinels` Sentinels; `url` is the clients' Sentinel URL."""

    def __init__(
        self,
        data_dir: Path,
        *,
        replicas: int = 1,
        sentinels: int = 3,
        appendonly: bool = True,
        down_after_ms: int = 1000,
    ) -> None:
        self.data_dir = data_dir
        self.appendonly = appendonly
        self.servers: list[RedisServer] = [self._server(0)]
        self.replica_count = replicas
        self.sentinel_count = sentinels
        self.down_after_ms = down_after_ms
        self.sentinels: list[SentinelProcess] = []

    def _server(self, index: int, replica_of: int | None = None) -> RedisServer:
        # A replica's first full sync waits for the primary's diskless-sync delay (5 s by
        # default); until it is done the replica holds nothing, yet could still be promoted.
        return RedisServer(
            self.data_dir / f"redis-{index}",
            appendonly=self.appendonly,
            replica_of=replica_of,
            extra_args=("--repl-diskless-sync-delay", "0"),
        )

    @property
    def url(self) -> str:
        where = ",".join(f"127.0.0.1:{s.port}" for s in self.sentinels)
        return f"redis+sentinel://{where}/{SERVICE}/0"

    def start(self, timeout: float = 20.0) -> SentinelGroup:
        try:
            primary = self.servers[0].start()
            for i in range(1, self.replica_count + 1):
                self.servers.append(self._server(i, replica_of=primary.port).start())
            self._wait_replicated(timeout)
            quorum = self.sentinel_count // 2 + 1
            for i in range(self.sentinel_count):
                sentinel = SentinelProcess(
                    self.data_dir / f"sentinel-{i}", primary.port, quorum, self.down_after_ms
                )
                self.sentinels.append(sentinel.start())
            self._wait_sentinels_know_replicas(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_replicated(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = ask(self.servers[0].port, "INFO", "replication")
            if info.count(",state=online,") >= self.replica_count:  # synced, not just connected
                return
            time.sleep(0.05)
        raise RedisUnavailable(f"the replicas did not sync with the primary within {timeout} s")

    def _wait_sentinels_know_replicas(self, timeout: float) -> None:
        """Sentinels learn of replicas from the primary's INFO (every 10 s at first): until they
        do, a failover has no candidate. Also wait until they see each other (quorum)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            ready = True
            for s in self.sentinels:
                reply = ask(s.port, "SENTINEL", "master", SERVICE, timeout=1.0)
                fields = reply.split("\r\n")
                values = {fields[i]: fields[i + 2] for i in range(2, len(fields) - 2, 4)}
                if (
                    int(values.get("num-slaves", "0")) < self.replica_count
                    or int(values.get("num-other-sentinels", "0")) < self.sentinel_count - 1
                ):
                    ready = False
            if ready:
                return
            time.sleep(0.1)
        raise RedisUnavailable(f"the Sentinels did not discover the group within {timeout} s")

    def primary(self) -> RedisServer:
        """The server the Sentinels now name as primary."""
        ports = {s.primary_port_now() for s in self.sentinels if s.process and s.process.poll() is None}
        ports.discard(None)
        for server in self.servers:
            if server.port in ports:
                return server
        raise RedisUnavailable("no Sentinel names a primary")

    def revive(self) -> None:
        """Start every stopped server again, as a replica of the current primary. (A returning
        old primary is demoted by the Sentinels anyway; starting it as a replica avoids a moment
        in which two servers call themselves primary.)"""
        primary = self.primary()
        for server in self.servers:
            if server.process is None or server.process.poll() is not None:
                server.replica_of = primary.port
                server.start()

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in self.servers:
            server.stop()
