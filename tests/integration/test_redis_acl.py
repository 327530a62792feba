"""Per-host Redis users on a real redis-server: what a Mac's user can and cannot do.

The server keeps its users in an aclfile, as production should. Each host user is issued by
`anklet hosts credentials`; its calls go through the production `HostProtocol` and the
controller's through `ControllerProtocol` with the controller's own user.
"""

from __future__ import annotations

import inspect
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.exceptions import AuthenticationError, NoPermissionError
from redis.exceptions import ConnectionError as RedisConnectionError

from anklet import acl, keys
from anklet.dev.redis_server import RedisServer
from anklet.redis_protocol import ControllerProtocol, HostProtocol, connect
from anklet.vmname import VMName
from anklet.wire import DesiredVM, HostConfig, HostInfo, Observation, ObservedPhase, Workload
from tests.integration.redis_users import Issued, acl_log, credentials, drop_anklet_users
from tests.integration.test_agent import TEMPLATE, Mac, job, outcome, registered
from tests.waiting import eventually

Issue = Callable[..., Issued]


@pytest.fixture(scope="module")
def acl_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    root = Path(tmp_path_factory.mktemp("redis-acl"))
    server = RedisServer(root, aclfile=root / "users.acl").start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def admin(acl_server: RedisServer) -> AsyncIterator[aioredis.Redis]:
    client = connect(acl_server.url)
    await client.flushall()
    await drop_anklet_users(client)
    try:
        yield client
    finally:
        await drop_anklet_users(client)
        await client.aclose()


@pytest.fixture
def issue(
    acl_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> Issue:
    def run(*argv: str) -> Issued:
        return credentials(acl_server.url, *argv, capsys=capsys, caplog=caplog, monkeypatch=monkeypatch)

    return run


async def caps_of(admin: aioredis.Redis) -> acl.ServerCaps:
    return acl.ServerCaps.for_version(str((await admin.info("server"))["redis_version"]))


def desired(uid: str, *, secrets: bool = False) -> DesiredVM:
    return DesiredVM(
        uid=uid,
        namespace="default",
        name=uid,
        attempt=1,
        vm_name=str(VMName(uid, 1)),
        template="tmpl",
        cpu=2,
        memory_mib=4096,
        handler="script",
        workload=Workload(script="true", needs_secrets=secrets),
    )


async def test_a_host_user_can_make_every_host_protocol_call(admin: aioredis.Redis, issue: Issue) -> None:
    host_a = issue("mac-a")
    ctl_user = issue("--controller")
    assert host_a.rc == 0 and ctl_user.rc == 0, host_a.log + ctl_user.log
    a_client, c_client = connect(host_a.url), connect(ctl_user.url)
    try:
        a, ctl = HostProtocol(a_client, "mac-a"), ControllerProtocol(c_client)
        called: set[str] = set()

        async def call(name: str, *args: object) -> object:
            called.add(name)
            return await getattr(a, name)(*args)

        await call("register", HostInfo(name="mac-a", cpu=8, memory_mib=16384))
        await call("heartbeat")
        d = desired("job-1", secrets=True)
        assert await ctl.reserve("mac-a", d) == "OK"
        await ctl.put_secret("mac-a", d.uid, 1, {"TOKEN": "s3cret"})
        await ctl.put_host_config("mac-a", HostConfig(prePull=["tmpl:tag"]))
        assert await call("wait_for_wakeup", 1.0) is True
        assert await call("desired") == {d.uid: d}
        assert await call("host_config") == HostConfig(prePull=["tmpl:tag"])
        assert await call("secret", d.uid, 1) == {"TOKEN": "s3cret"}
        obs = Observation(uid=d.uid, attempt=1, host="mac-a", phase=ObservedPhase.RUNNING, vm_name=d.vm_name)
        await call("report", obs)
        assert await call("observed") == {d.uid: obs}
        assert await ctl.observation("mac-a", d.uid) == obs
        await call("record_template_size", ["tmpl", "uuid"], "tag", 4, 8192)
        assert (await ctl.template_sizes())["tmpl:tag"] == (4, 8192)
        await call("forget", d.uid)
        await call("poke")
        await call("drop_secret", d.uid, 1)
        assert not await ctl.has_secret("mac-a", d.uid, 1)
        await call("deregister")
        _, events = await ctl.read_events("0-0", block_ms=10)
        assert {e["kind"] for e in events} >= {"host", "observed"}
        public = {n for n, f in inspect.getmembers(HostProtocol, inspect.isfunction) if not n.startswith("_")}
        assert called == public, "exercise every HostProtocol method under the host's ACL"
        assert await acl_log(admin, "anklet-host-mac-a") == []
        assert await acl_log(admin, acl.CONTROLLER_USER) == []
    finally:
        await a_client.aclose()
        await c_client.aclose()


async def test_a_host_user_cannot_touch_another_hosts_keys_or_the_server(
    admin: aioredis.Redis, issue: Issue
) -> None:
    host_a, host_b = issue("mac-a"), issue("mac-b")
    ctl = ControllerProtocol(admin)
    b = HostProtocol(admin, "mac-b")
    await b.register(HostInfo(name="mac-b", cpu=8, memory_mib=16384))
    d = desired("b-job", secrets=True)
    assert await ctl.reserve("mac-b", d) == "OK"
    await ctl.put_secret("mac-b", d.uid, 1, {"TOKEN": "b-secret"})
    await ctl.put_host_config("mac-b", HostConfig(prePull=["tmpl"]))
    a = aioredis.Redis.from_url(host_a.url, decode_responses=True)
    try:
        denied = [
            ("HGETALL", keys.host_desired("mac-b")),
            ("GET", keys.host_secret("mac-b", d.uid, 1)),
            ("GET", keys.host_config("mac-b")),
            ("HGETALL", keys.host_observed("mac-b")),
            ("HSET", keys.host_observed("mac-b"), d.uid, "{}"),
            ("HSET", keys.host_desired("mac-b"), d.uid, "{}"),
            ("HSET", keys.host_info("mac-b"), "slots", "99"),
            ("SET", keys.host_lease("mac-b"), "1"),
            ("RPUSH", keys.host_inbox("mac-b"), "x"),
            ("DEL", keys.host_secret("mac-b", d.uid, 1)),
            ("DEL", keys.host_alloc("mac-b")),
            # its own keys, beyond what the agent needs
            ("HGETALL", keys.host_alloc("mac-a")),
            ("HSET", keys.host_alloc("mac-a"), "x", "{}"),
            ("HSET", keys.host_desired("mac-a"), "x", "{}"),
            ("SET", keys.host_config("mac-a"), "{}"),
            ("SET", "not-anklet", "1"),
            # server-wide and unlisted commands
            ("FLUSHALL",),
            ("FLUSHDB",),
            ("CONFIG", "GET", "*"),
            ("ACL", "LIST"),
            ("ACL", "SETUSER", "anklet-host-mac-a", "allkeys"),
            ("KEYS", "*"),
            ("SCAN", "0"),
            ("EVAL", "return 1", "0"),
            ("XREAD", "STREAMS", keys.events_stream(), "0-0"),
            ("SMEMBERS", keys.hosts_index()),
            ("PUBLISH", "c", "m"),
            ("CLIENT", "KILL", "USER", "default"),
            ("SHUTDOWN",),
        ]
        for command in denied:
            with pytest.raises(NoPermissionError):
                await a.execute_command(*command)
        assert await ctl.has_secret("mac-b", d.uid, 1)
        assert await ctl.desired("mac-b", d.uid) == d
        assert await admin.dbsize() > 0
        assert len(await acl_log(admin, "anklet-host-mac-a")) >= 1, "denials are audited"
    finally:
        await a.aclose()
    assert host_b.rc == 0


async def test_shared_keys_are_write_only_for_hosts(admin: aioredis.Redis, issue: Issue) -> None:
    if not (await caps_of(admin)).key_permissions:
        pytest.skip("this redis-server predates 7.0: no read/write key permissions (%R~/%W~)")
    host_a = issue("mac-a")
    await HostProtocol(admin, "mac-b").register(HostInfo(name="mac-b", cpu=8, memory_mib=16384))
    await HostProtocol(admin, "mac-b").record_template_size(["tmpl"], "t", 2, 4096)
    a = aioredis.Redis.from_url(host_a.url, decode_responses=True)
    try:
        for command in (
            ("HGETALL", keys.events_stream()),  # an allowed command on a key it may not read
            ("HGETALL", keys.template_sizes()),
            ("GET", keys.hosts_index()),
            ("GET", keys.host_lease("mac-a")),
            ("HGETALL", keys.host_info("mac-a")),
        ):
            with pytest.raises(NoPermissionError):
                await a.execute_command(*command)
    finally:
        await a.aclose()


async def test_revoked_user_is_refused_and_cut_off(admin: aioredis.Redis, issue: Issue) -> None:
    host_a = issue("mac-a")
    a = aioredis.Redis.from_url(host_a.url, decode_responses=True)
    try:
        assert await a.ping()
        revoked = issue("mac-a", "--revoke")
        assert (revoked.rc, revoked.out) == (0, "")
        with pytest.raises(RedisConnectionError):
            await a.ping()  # the open connection was closed; reconnecting fails AUTH
        with pytest.raises(AuthenticationError):
            await aioredis.Redis.from_url(host_a.url).ping()
        assert await admin.acl_getuser("anklet-host-mac-a") is None
        again = issue("mac-a", "--revoke")
        assert again.rc == 1 and "no Redis user anklet-host-mac-a" in again.log
    finally:
        await a.aclose()


async def test_rotation_replaces_the_password_and_cuts_old_connections(
    admin: aioredis.Redis, issue: Issue
) -> None:
    first = issue("mac-a")
    old = aioredis.Redis.from_url(first.url, decode_responses=True)
    try:
        assert await old.ping()
        refused = issue("mac-a")
        assert refused.rc == 1 and refused.out == "" and "--rotate" in refused.log
        assert await old.ping(), "a refused re-issue changes nothing"
        rotated = issue("mac-a", "--rotate", "--output", "yaml")
        assert rotated.rc == 0, rotated.log
        [url_line, name_line] = rotated.out.splitlines()
        new_url = url_line.removeprefix("redis_url: ").strip('"')
        assert name_line == 'name: "mac-a"' and new_url != first.url
        with pytest.raises(RedisConnectionError):
            await old.ping()
        with pytest.raises(AuthenticationError):
            await aioredis.Redis.from_url(first.url).ping()
        fresh = aioredis.Redis.from_url(new_url)
        assert await fresh.ping()
        await fresh.aclose()
        missing = issue("mac-z", "--rotate")
        assert missing.rc == 1 and "run without --rotate" in missing.log
    finally:
        await old.aclose()


async def test_users_are_saved_to_the_aclfile_and_survive_a_reload(
    acl_server: RedisServer, admin: aioredis.Redis, issue: Issue
) -> None:
    assert acl_server.aclfile is not None
    host_a = issue("mac-a")
    text = acl_server.aclfile.read_text()
    assert "user anklet-host-mac-a on" in text and host_a.password not in text
    assert "ACL SAVE" in host_a.log
    await admin.execute_command("ACL", "LOAD")  # what a restart does
    a = aioredis.Redis.from_url(host_a.url)
    assert await a.ping()
    await a.aclose()
    issue("mac-a", "--revoke")
    assert "anklet-host-mac-a" not in acl_server.aclfile.read_text()


async def test_without_an_aclfile_the_operator_is_told_how_to_persist(
    redis_server: RedisServer,
    capsys: pytest.CaptureFixture[str],
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    issued = credentials(redis_server.url, "mac-q", capsys=capsys, caplog=caplog, monkeypatch=monkeypatch)
    try:
        assert issued.rc == 0 and "no aclfile" in issued.log and "CONFIG REWRITE" in issued.log
    finally:
        revoked = credentials(
            redis_server.url, "mac-q", "--revoke", capsys=capsys, caplog=caplog, monkeypatch=monkeypatch
        )
        assert revoked.rc == 0


async def test_the_controller_user_runs_the_controller_protocol_but_nothing_server_wide(
    admin: aioredis.Redis, issue: Issue
) -> None:
    ctl_user = issue("--controller")
    host = issue("mac-a")
    c_client, a_client = connect(ctl_user.url), connect(host.url)
    try:
        ctl, a = ControllerProtocol(c_client), HostProtocol(a_client, "mac-a")
        await a.register(HostInfo(name="mac-a", cpu=8, memory_mib=16384))
        assert await ctl.host_names() == ["mac-a"]
        [snap] = await ctl.snapshot()
        assert snap.ready and snap.info.name == "mac-a"
        d = desired("c-job", secrets=True)
        await admin.script_flush()  # the first EVALSHA misses: SCRIPT LOAD must be allowed too
        assert await ctl.reserve("mac-a", d) == "OK"
        await ctl.put_secret("mac-a", d.uid, 1, {"T": "x"})
        assert await ctl.has_secret("mac-a", d.uid, 1)
        await ctl.put_host_config("mac-a", HostConfig(prePull=["tmpl"]))
        assert await ctl.cancel("mac-a", d.uid)
        assert (await ctl.desired("mac-a", d.uid)) is not None
        await ctl.release("mac-a", d.uid, 1)
        assert await ctl.desired("mac-a", d.uid) is None
        assert await ctl.latest_event_id() != "0-0"
        assert await ctl.template_sizes() == {}
        assert await acl_log(admin, acl.CONTROLLER_USER) == []
        c = aioredis.Redis.from_url(ctl_user.url, decode_responses=True)
        try:
            for command in (
                ("FLUSHALL",),
                ("KEYS", "*"),
                ("CONFIG", "GET", "*"),
                ("ACL", "LIST"),
                ("FUNCTION", "FLUSH"),
                ("SET", "other-app:key", "1"),
                ("GET", "other-app:key"),
                ("SHUTDOWN",),
            ):
                with pytest.raises(NoPermissionError):
                    await c.execute_command(*command)
        finally:
            await c.aclose()
    finally:
        await c_client.aclose()
        await a_client.aclose()


async def test_bad_input_is_refused_before_anything_changes(admin: aioredis.Redis, issue: Issue) -> None:
    for argv, rc, message in (
        (("mac a",), 2, "invalid host name"),
        (("mac*",), 2, "invalid host name"),
        ((), 2, "needs a host NAME"),
        (("mac-a", "--controller"), 2, "not both"),
        (("mac-a", "--public-url", "http://x"), 2, "redis[s]://"),
        (("mac-a", "--redis-url", "redis://127.0.0.1:1/0"), 1, "cannot reach Redis"),
    ):
        result = issue(*argv)
        assert (result.rc, result.out) == (rc, ""), (argv, result)
        assert message in result.log, (argv, result.log)
    assert await admin.acl_getuser("anklet-host-mac-a") is None
    host = issue("mac-b")
    as_admin = issue("mac-c", "--redis-url", host.url)
    assert as_admin.rc == 1 and "Redis refused" in as_admin.log
    assert host.password not in as_admin.log


def test_the_password_goes_to_stdout_only(acl_server: RedisServer, tmp_path: Path) -> None:
    env = {**os.environ, "ANKLET_REDIS_URL": acl_server.url}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "anklet.cli",
            "hosts",
            "credentials",
            "mac-s",
            "--public-url",
            "rediss://r.example",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    try:
        assert run.returncode == 0, run.stderr
        issued = Issued(0, run.stdout, run.stderr)
        assert issued.url.startswith("rediss://anklet-host-mac-s:") and issued.url.endswith("@r.example")
        assert run.stdout.endswith("ANKLET_AGENT_NAME=mac-s\n")
        assert len(issued.password) >= 40
        assert issued.password not in run.stderr and "created Redis user anklet-host-mac-s" in run.stderr
    finally:
        subprocess.run(
            [sys.executable, "-m", "anklet.cli", "hosts", "credentials", "mac-s", "--revoke"],
            env=env,
            capture_output=True,
            timeout=60,
            check=False,
        )


async def test_a_real_agent_runs_jobs_with_secrets_under_its_host_user(
    acl_server: RedisServer, admin: aioredis.Redis, issue: Issue, tmp_path: Path
) -> None:
    """The production agent (a subprocess driving the anka simulator) with only its host's
    user: it registers, learns a template's size, pre-pulls, receives its run's secret, runs
    the job and reports, and Redis denies it nothing along the way."""
    host, ctl_user = issue("mac-a"), issue("--controller")
    mac = Mac(tmp_path, host.url, name="mac-a")
    ctl_client = connect(ctl_user.url)
    ctl = ControllerProtocol(ctl_client)
    try:
        mac.start()
        await registered(ctl, "mac-a")
        await ctl.put_host_config("mac-a", HostConfig(prePull=[f"{TEMPLATE}:3c6r"]))
        unsized = job("unsized", "true", tag="2c4r").model_copy(update={"cpu": 0, "memory_mib": 0})
        assert await ctl.reserve("mac-a", unsized) == "OK"
        sized = await outcome(ctl, unsized, host="mac-a")
        assert (sized.reason, sized.retryable) == ("TemplateSized", True), sized
        assert (await ctl.template_sizes())[f"{TEMPLATE}:2c4r"] == (2, 4096)
        await ctl.release("mac-a", unsized.uid, unsized.attempt)
        secret_job = job("with-secret", 'test "$TOKEN" = s3cret && echo secret-ok')
        secret_job = secret_job.model_copy(
            update={"workload": secret_job.workload.model_copy(update={"needs_secrets": True})}
        )
        assert await ctl.reserve("mac-a", secret_job) == "OK"
        await ctl.put_secret("mac-a", secret_job.uid, 1, {"TOKEN": "s3cret"})
        done = await outcome(ctl, secret_job, host="mac-a")
        assert (done.phase, done.exit_code) == (ObservedPhase.SUCCEEDED, 0), done
        assert "secret-ok" in (done.output or "")

        async def pre_pulled() -> bool:
            return any("3c6r" in c["argv"] for c in mac.calls("pull"))

        await eventually(pre_pulled)
        _, events = await ctl.read_events("0-0", block_ms=10)
        assert {e["kind"] for e in events if e.get("host") == "mac-a"} >= {"host", "observed"}
        mac.stop()
        assert mac.process is not None and mac.process.returncode == 0
        assert await acl_log(admin, "anklet-host-mac-a") == []
        assert "NOPERM" not in mac.log.read_text()
    finally:
        mac.stop()
        await ctl_client.aclose()
