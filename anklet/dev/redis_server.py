"""Start a real `redis-server` (or `valkey-server`) on a free loopback port.

Used by the dev stack and the test fixtures: behaviour is always tested against the real
server, never a fake.
"""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path


class RedisUnavailable(RuntimeError):
    pass


def stop_process(process: subprocess.Popen[bytes] | None) -> None:
    """SIGTERM (the server saves and exits), SIGKILL if it takes over 5 s; nothing if it is gone."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(5)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(5)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def find_server() -> str:
    for name in ("redis-server", "valkey-server"):
        path = shutil.which(name)
        if path:
            return path
    raise RedisUnavailable(
        "no redis-server or valkey-server on PATH; install one (Debian: apt-get install redis-server; "
        "`make venv` does this when it can)"
    )


@dataclass(frozen=True)
class ServerTLS:
    """Serve TLS only (no plain port): the server's certificate and key, and the CA that
    client certificates must chain to when `auth_clients` (mutual TLS) is on."""

    cert_file: Path
    key_file: Path
    ca_file: Path
    auth_clients: bool = False


class RedisServer:
    """A redis-server child process; `stop()` (or the context manager) always ends it.

    With `aclfile` the server keeps its users there (ACL SAVE / ACL LOAD); with `tls` it
    listens on TLS only and `url` is a `rediss://` URL; with `replica_of` it starts as a
    replica of the server on that loopback port (see `anklet.dev.sentinel_group`)."""

    def __init__(
        self,
        data_dir: Path,
        *,
        port: int | None = None,
        appendonly: bool = False,
        tls: ServerTLS | None = None,
        aclfile: Path | None = None,
        replica_of: int | None = None,
        extra_args: tuple[str, ...] = (),
    ) -> None:
        self.data_dir = data_dir
        self.port = port or free_port()
        self.appendonly = appendonly
        self.tls = tls
        self.aclfile = aclfile
        self.replica_of = replica_of  # the loopback port of the primary this server replicates
        self.extra_args = extra_args  # more `--option value` pairs for redis-server
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://127.0.0.1:{self.port}/0"

    @property
    def stderr_path(self) -> Path:
        """Where the server's own complaints go before its log file is open (bad options)."""
        return self.data_dir / "redis.stderr"

    def _listen_args(self) -> list[str]:
        if self.tls is None:
            return ["--port", str(self.port)]
        t = self.tls
        return [
            "--port", "0",
            "--tls-port", str(self.port),
            "--tls-cert-file", str(t.cert_file),
            "--tls-key-file", str(t.key_file),
            "--tls-ca-cert-file", str(t.ca_file),
            "--tls-auth-clients", "yes" if t.auth_clients else "no",
        ]  # fmt: skip

    def start(self, timeout: float = 10.0) -> RedisServer:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        argv = [
            find_server(),
            *self._listen_args(),
            "--bind", "127.0.0.1",
            "--dir", str(self.data_dir),
            "--save", "",
            "--appendonly", "yes" if self.appendonly else "no",
            "--protected-mode", "yes",
            "--logfile", str(self.data_dir / "redis.log"),
        ]  # fmt: skip
        if self.replica_of is not None:
            argv += ["--replicaof", "127.0.0.1", str(self.replica_of)]
        argv += self.extra_args
        if self.aclfile is not None:
            self.aclfile.touch(exist_ok=True)  # the server refuses to start without the file
            argv += ["--aclfile", str(self.aclfile)]
        with self.stderr_path.open("wb") as stderr:
            self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=stderr)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RedisUnavailable(
                    f"redis-server exited with {self.process.returncode}; see {self.data_dir}"
                )
            if self._answers():
                return self
            time.sleep(0.02)
        self.stop()
        raise RedisUnavailable(f"redis-server did not answer on port {self.port} within {timeout} s")

    def _answers(self) -> bool:
        """Plain servers must answer PING; a TLS server (which may demand a client certificate
        this probe lacks) is ready once it accepts connections on its port."""
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", self.port), 0.2) as s:
            if self.tls is not None:
                return True
            s.sendall(b"PING\r\n")
            return s.recv(16).startswith(b"+PONG")
        return False

    def stop(self) -> None:
        stop_process(self.process)

    def __enter__(self) -> RedisServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
