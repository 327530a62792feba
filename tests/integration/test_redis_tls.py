"""TLS to a real redis-server (`--tls-port`, `--port 0`, mutual TLS) with a CA made in the test.

The last test runs the whole chain as production would: `anklet hosts credentials` over TLS
issues the users, the kopf controller (controller user) and a real `anklet agent` subprocess
(host user) talk to Redis over TLS only, and a job applied to the Kubernetes API succeeds.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import ConnectionError as RedisConnectionError

from anklet import acl
from anklet.dev.redis_server import RedisServer, RedisUnavailable, ServerTLS
from anklet.redis_protocol import connect
from anklet.redis_tls import RedisTLS
from tests.integration.redis_users import acl_log, credentials, drop_anklet_users
from tests.integration.test_agent import TEMPLATE, Mac
from tests.integration.test_controller import make_cluster
from tests.integration.tls_pki import CertificateAuthority, Issued


class PKI:
    def __init__(self, root: Path) -> None:
        self.ca = CertificateAuthority(root / "ca")
        # The server's certificate names "localhost" only: connecting to 127.0.0.1 must fail the check.
        self.server = self.ca.issue("redis-server", dns=("localhost",))
        self.client = self.ca.issue("anklet-client", client=True)
        rogue = CertificateAuthority(root / "rogue", name="rogue CA")
        self.rogue_client = rogue.issue("rogue-client", client=True)

    def tls(
        self, *, ca: bool = True, client: Issued | str | None = "default", check_hostname: bool = True
    ) -> RedisTLS:
        """Client TLS options: our CA or none, our client certificate, another one, or none."""
        cert = self.client if client == "default" else client
        assert not isinstance(cert, str)
        return RedisTLS(
            ca_file=str(self.ca.ca_file) if ca else None,
            cert_file=None if cert is None else str(cert.cert),
            key_file=None if cert is None else str(cert.key),
            check_hostname=check_hostname,
        )


@pytest.fixture(scope="module")
def pki(tmp_path_factory: pytest.TempPathFactory) -> PKI:
    return PKI(Path(tmp_path_factory.mktemp("pki")))


@pytest.fixture(scope="module")
def tls_server(tmp_path_factory: pytest.TempPathFactory, pki: PKI) -> Iterator[RedisServer]:
    root = Path(tmp_path_factory.mktemp("redis-tls"))
    tls = ServerTLS(pki.server.cert, pki.server.key, pki.ca.ca_file, auth_clients=True)
    server = RedisServer(root, tls=tls, aclfile=root / "users.acl")
    try:
        server.start()
    except RedisUnavailable:
        said = " ".join(p.read_text(errors="replace") for p in root.glob("redis.*") if p.is_file())
        if "tls" in said.lower() and ("not supported" in said or "Bad directive" in said):
            pytest.skip(f"this redis-server was built without TLS: {said.strip()[-200:]}")
        raise
    try:
        yield server
    finally:
        server.stop()


def url_of(server: RedisServer, host: str = "localhost") -> str:
    return f"rediss://{host}:{server.port}/0"


@pytest.fixture
async def admin(tls_server: RedisServer, pki: PKI) -> AsyncIterator[aioredis.Redis]:
    client = connect(url_of(tls_server), pki.tls())
    await client.flushall()
    await drop_anklet_users(client)
    try:
        yield client
    finally:
        await drop_anklet_users(client)
        await client.aclose()


async def ping(url: str, tls: RedisTLS) -> bool:
    client = aioredis.Redis.from_url(url, **_options(url, tls))
    try:
        return bool(await client.ping())
    finally:
        await client.aclose()


def _options(url: str, tls: RedisTLS) -> dict[str, object]:
    from anklet.redis_tls import client_options

    return {**client_options(url, tls), "socket_connect_timeout": 5, "socket_timeout": 5}


async def test_a_client_with_the_ca_and_a_certificate_connects(tls_server: RedisServer, pki: PKI) -> None:
    client = connect(url_of(tls_server), pki.tls())
    try:
        assert await client.ping()
        assert (await client.info("server"))["redis_version"]
    finally:
        await client.aclose()


async def test_without_the_ca_the_server_certificate_fails_verification(
    tls_server: RedisServer, pki: PKI
) -> None:
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await ping(url_of(tls_server), pki.tls(ca=False))


async def test_without_a_trusted_client_certificate_the_server_refuses(
    tls_server: RedisServer, pki: PKI
) -> None:
    for tls in (pki.tls(client=None), pki.tls(client=pki.rogue_client)):
        with pytest.raises(RedisConnectionError):
            await ping(url_of(tls_server), tls)


async def test_the_server_name_is_checked(tls_server: RedisServer, pki: PKI) -> None:
    by_ip = url_of(tls_server, "127.0.0.1")
    with pytest.raises(RedisConnectionError, match="certificate verify failed"):
        await ping(by_ip, pki.tls())
    assert await ping(by_ip, pki.tls(check_hostname=False)), "the explicit opt-out works"


async def test_plain_redis_on_the_tls_port_gets_nothing(tls_server: RedisServer) -> None:
    with pytest.raises(RedisConnectionError):
        await ping(f"redis://localhost:{tls_server.port}/0", RedisTLS())


async def test_controller_and_agent_run_a_job_over_tls_with_their_own_users(
    tls_server: RedisServer,
    pki: PKI,
    admin: aioredis.Redis,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tls_env = {
        "ANKLET_REDIS_TLS_CA_FILE": str(pki.ca.ca_file),
        "ANKLET_REDIS_TLS_CERT_FILE": str(pki.client.cert),
        "ANKLET_REDIS_TLS_KEY_FILE": str(pki.client.key),
    }
    for name, value in tls_env.items():
        monkeypatch.setenv(name, value)
    issued = {
        who: credentials(url_of(tls_server), *argv, capsys=capsys, caplog=caplog, monkeypatch=monkeypatch)
        for who, argv in (("host", ("mac-a",)), ("controller", ("--controller",)))
    }
    for who, result in issued.items():
        assert result.rc == 0 and result.url.startswith("rediss://"), (who, result.log)
    mac = Mac(tmp_path, issued["host"].url, name="mac-a")
    mac.env.update(tls_env)
    try:
        mac.start()
        async with make_cluster(tmp_path, issued["controller"].url, admin, monkeypatch) as cluster:
            await cluster.create(
                "tls-job",
                template=TEMPLATE,
                tag="2c4r",
                script={"run": "echo over-tls"},
                resources={"cpu": 2, "memoryMiB": 4096},
            )
            done = await cluster.phase("tls-job", "Succeeded", timeout=60)
            assert done["status"]["host"] == "mac-a"
            assert "over-tls" in (done["status"].get("output") or "")
        assert await acl_log(admin, "anklet-host-mac-a") == []
        assert await acl_log(admin, acl.CONTROLLER_USER) == []
    finally:
        mac.stop()
    log = mac.log.read_text()
    assert "NOPERM" not in log and issued["host"].password not in log


async def test_credentials_flag_url_wins_over_the_environment(
    tls_server: RedisServer,
    pki: PKI,
    admin: aioredis.Redis,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("ANKLET_REDIS_TLS_CA_FILE", str(pki.ca.ca_file))
    monkeypatch.setenv("ANKLET_REDIS_TLS_CERT_FILE", str(pki.client.cert))
    monkeypatch.setenv("ANKLET_REDIS_TLS_KEY_FILE", str(pki.client.key))
    flag = ("--redis-url", url_of(tls_server))
    issued = credentials(
        "redis://127.0.0.1:1/0", "mac-t", *flag, capsys=capsys, caplog=caplog, monkeypatch=monkeypatch
    )
    assert issued.rc == 0, issued.log
    assert await ping(issued.url, pki.tls())
    monkeypatch.delenv("ANKLET_REDIS_TLS_CA_FILE")
    unverified = credentials(
        "redis://127.0.0.1:1/0", "mac-u", *flag, capsys=capsys, caplog=caplog, monkeypatch=monkeypatch
    )
    assert unverified.rc == 1 and "certificate verify failed" in unverified.log
