"""The dev overlay's Redis container, run with the real redis-server as its pod would run it.

Its command line and environment come from the rendered StatefulSet (kubelet rules); only the
paths of its volumes, the port and the listen address are pointed at this machine. What must
hold: a password from the Secret guards it, AOF is on and writes into the data volume, the
password reaches neither a command line nor the server's environment, and the probes pass.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
import pytest
import redis

from anklet.dev import kustomize
from anklet.dev.kube.podenv import PodContext, container_argv, container_env
from anklet.dev.redis_server import free_port

ROOT = Path(__file__).resolve().parents[2]
PASSWORD = "0123456789abcdef0123456789abcdef"  # what `openssl rand -hex 16` gives: URL-safe


def _container() -> dict[str, Any]:
    objects = kustomize.render(ROOT / "manifests" / "overlays" / "dev")
    [statefulset] = [o for o in objects if o["kind"] == "StatefulSet"]
    container: dict[str, Any] = statefulset["spec"]["template"]["spec"]["containers"][0]
    return container


def _local(text: str, tmp: Path, port: int) -> str:
    """The pod's paths and port, moved to this machine."""
    return (
        text.replace("/config/", f"{tmp}/config/")
        .replace("--dir /data", f"--dir {tmp}/data --port {port} --bind 127.0.0.1")
        .replace("redis-cli -h 127.0.0.1", f"redis-cli -h 127.0.0.1 -p {port}")
    )


@dataclass
class DevRedis:
    client: redis.Redis
    container: dict[str, Any]
    env: dict[str, str]  # the container's environment, PATH pointed at this machine's binaries
    tmp: Path
    process: subprocess.Popen[bytes]
    port: int

    def local(self, text: str) -> str:
        return _local(text, self.tmp, self.port)


@pytest.fixture
def dev_redis(tmp_path: Path) -> Iterator[DevRedis]:
    server = shutil.which("redis-server")
    if server is None:
        pytest.skip("redis-server is not on PATH")
    container = _container()
    (tmp_path / "config").mkdir()
    (tmp_path / "data").mkdir()
    secrets = {"anklet-redis": {"password": PASSWORD}}
    pod = PodContext(name="anklet-redis-0", namespace="anklet-system", secrets=secrets)
    env = container_env(container, pod)
    env["PATH"] = f"{Path(server).parent}{os.pathsep}/usr/bin{os.pathsep}/bin"
    port = free_port()
    argv = [_local(part, tmp_path, port) for part in container_argv(container, env)]
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(host="127.0.0.1", port=port, password=PASSWORD, socket_timeout=5)
    try:
        deadline = time.monotonic() + 20
        while True:
            with contextlib.suppress(redis.ConnectionError):
                if client.ping():
                    break
            assert process.poll() is None, f"redis exited with {process.returncode}"
            assert time.monotonic() < deadline, "redis did not come up"
            time.sleep(0.05)
        yield DevRedis(client, container, env, tmp_path, process, port)
    finally:
        client.close()
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_password_guards_it_and_aof_persists_to_the_volume(dev_redis: DevRedis) -> None:
    anonymous = redis.Redis(host="127.0.0.1", port=dev_redis.port, socket_timeout=5)
    with anonymous, pytest.raises(redis.AuthenticationError):
        anonymous.set("k", "v")
    assert dev_redis.client.config_get("appendonly") == {"appendonly": "yes"}
    dev_redis.client.set("anklet:probe", "1")
    # What the controller's URL looks like in the dev overlay (README): password only, no user.
    with redis.Redis.from_url(f"redis://:{PASSWORD}@127.0.0.1:{dev_redis.port}/0") as controller:
        assert controller.get("anklet:probe") == b"1"
    data = dev_redis.tmp / "data"
    assert any(p.name.startswith("appendonly") for p in data.rglob("*")), list(data.rglob("*"))


def test_the_password_is_on_no_command_line_and_not_in_the_servers_environment(dev_redis: DevRedis) -> None:
    server = psutil.Process(dev_redis.process.pid)  # `exec` made the shell the server itself
    assert "redis-server" in " ".join(server.cmdline())
    assert PASSWORD not in " ".join(server.cmdline())
    assert "REDIS_PASSWORD" not in server.environ()


def test_the_probes_pass_with_the_secret_and_fail_without(dev_redis: DevRedis) -> None:
    if shutil.which("redis-cli") is None:
        pytest.skip("redis-cli is not on PATH")
    for probe in ("livenessProbe", "readinessProbe"):
        command = [dev_redis.local(part) for part in dev_redis.container[probe]["exec"]["command"]]
        assert subprocess.run(command, env=dev_redis.env, timeout=10, check=False).returncode == 0, probe
        wrong = {**dev_redis.env, "REDISCLI_AUTH": "wrong"}
        assert (
            subprocess.run(command, env=wrong, timeout=10, check=False, capture_output=True).returncode != 0
        )
