"""The host agent as a real process, driving the `anka` simulator, against a real redis-server.

The controller side is played with `ControllerProtocol` (the production adapter), so each test
reserves a job exactly as the controller would and reads back what the agent reports.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest
import redis.asyncio as aioredis

from anklet.dev.anka_sim import control, install_shim
from anklet.dev.redis_server import RedisServer
from anklet.redis_protocol import ControllerProtocol, connect
from anklet.vmname import VMName
from anklet.wire import DesiredVM, Observation, ObservedPhase, Workload
from host_agent.runsweep import RUN_FILE_GRACE_SECONDS
from tests.waiting import eventually

T = TypeVar("T")
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"


class Mac:
    """One simulated Mac: an `anka` simulator home and an `anklet agent` process."""

    def __init__(self, root: Path, redis_url: str, name: str = "mac-1") -> None:
        self.name = name
        self.home = root / name
        self.anka_home = self.home / "anka"
        self.anka_home.mkdir(parents=True)
        control.write_config(self.anka_home, time_scale=0.01)
        self.bin = install_shim(self.home / "bin", home=self.anka_home).parent
        self.env = {
            **os.environ,
            "PATH": f"{self.bin}{os.pathsep}{os.environ['PATH']}",
            "ANKLET_REDIS_URL": redis_url,
            "ANKLET_AGENT_NAME": name,
            "ANKLET_AGENT_CPU": "8",
            "ANKLET_AGENT_MEMORY_MIB": "16384",
            "ANKLET_AGENT_READY_POLL_SECONDS": "0.05",
            "ANKLET_AGENT_ORPHAN_GRACE_SECONDS": "0.5",
            "ANKLET_AGENT_RESYNC_SECONDS": "2",
            "ANKLET_AGENT_TEMPLATE_DISK_BUFFER_BYTES": str(20 * 2**30),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.home / "agent.log"

    def start(self) -> Mac:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "anklet.cli",
                    "agent",
                    "--state-dir",
                    str(self.home),
                    "--arch",
                    "arm64",
                ],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        return self

    def kill(self, sig: int = signal.SIGKILL) -> int:
        assert self.process is not None
        self.process.send_signal(sig)
        return self.process.wait(20)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.kill(signal.SIGTERM)

    def anka(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(self.bin / "anka"), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=30,
            check=False,
        )

    def vms(self) -> list[str]:
        return [vm["name"] for vm in control.read_state(self.anka_home).get("vms", {}).values()]

    def calls(self, verb: str) -> list[dict[str, Any]]:
        return [c for c in control.read_calls(self.anka_home) if verb in c["argv"]]


@pytest.fixture
def mac(tmp_path: Path, redis_server: RedisServer) -> Iterator[Mac]:
    m = Mac(tmp_path, redis_server.url)
    try:
        yield m
    finally:
        m.stop()


@pytest.fixture
async def ctl(redis_client: aioredis.Redis) -> AsyncIterator[ControllerProtocol]:
    yield ControllerProtocol(redis_client)


def job(
    uid: str, script: str, *, attempt: int = 1, tag: str = "2c4r", timeout: int | None = None
) -> DesiredVM:
    return DesiredVM(
        uid=uid,
        namespace="default",
        name=uid,
        attempt=attempt,
        vm_name=str(VMName(uid, attempt)),
        template=TEMPLATE,
        tag=tag,
        cpu=2,
        memory_mib=4096,
        handler="script",
        workload=Workload(script=script, env={"GREETING": "hi there"}, timeout_seconds=timeout),
    )


async def registered(ctl: ControllerProtocol, host: str = "mac-1") -> None:
    async def probe() -> bool:
        return any(h.info.name == host and h.ready for h in await ctl.snapshot())

    await eventually(probe)


async def outcome(
    ctl: ControllerProtocol, d: DesiredVM, host: str = "mac-1", timeout: float = 30
) -> Observation:
    """The attempt's terminal report, once the agent confirms its VM is deleted."""

    async def probe() -> Observation | None:
        obs = await ctl.observation(host, d.uid)
        return obs if obs and obs.attempt == d.attempt and obs.vm_deleted else None

    return await eventually(probe, timeout)


async def phase(
    ctl: ControllerProtocol, d: DesiredVM, want: ObservedPhase, host: str = "mac-1"
) -> Observation:
    async def probe() -> Observation | None:
        obs = await ctl.observation(host, d.uid)
        return obs if obs and obs.attempt == d.attempt and obs.phase == want else None

    return await eventually(probe)


async def test_runs_a_script_in_a_fresh_vm_then_deletes_it(mac: Mac, ctl: ControllerProtocol) -> None:
    mac.start()
    await registered(ctl)
    d = job("ok", 'echo "$GREETING"; pwd; exit 0')
    assert await ctl.reserve("mac-1", d) == "OK"
    obs = await outcome(ctl, d)
    assert (obs.phase, obs.exit_code, obs.reason) == (ObservedPhase.SUCCEEDED, 0, "Succeeded")
    assert "hi there" in (obs.output or "")
    assert mac.vms() == ["anklet"], "only the pulled template is left"
    [clone] = mac.calls("clone")
    assert clone["argv"][-2:] == [TEMPLATE, d.vm_name] and "2c4r" in clone["argv"]
    assert len(mac.calls("pull")) >= 1
    run = mac.calls("run")[0]["argv"]
    assert "hi there" not in " ".join(run), "env values travel on stdin, never on the command line"


async def test_workload_exit_code_is_final(mac: Mac, ctl: ControllerProtocol) -> None:
    mac.start()
    await registered(ctl)
    d = job("three", "echo nope >&2; exit 3")
    await ctl.reserve("mac-1", d)
    obs = await outcome(ctl, d)
    assert (obs.phase, obs.exit_code, obs.retryable) == (ObservedPhase.FAILED, 3, False)
    assert "nope" in (obs.output or "")


async def test_timeout_kills_the_workload(mac: Mac, ctl: ControllerProtocol) -> None:
    mac.start()
    await registered(ctl)
    d = job("slow", "sleep 30", timeout=1)
    await ctl.reserve("mac-1", d)
    obs = await outcome(ctl, d)
    assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.FAILED, "Timeout", False)


async def test_cancel_while_running_deletes_the_vm(mac: Mac, ctl: ControllerProtocol) -> None:
    mac.start()
    await registered(ctl)
    d = job("cancel-me", "sleep 30")
    await ctl.reserve("mac-1", d)
    await phase(ctl, d, ObservedPhase.RUNNING)
    assert d.vm_name in mac.vms()
    assert await ctl.cancel("mac-1", d.uid)
    obs = await outcome(ctl, d)
    assert obs.phase == ObservedPhase.CANCELLED
    assert d.vm_name not in mac.vms()


async def test_when_redis_loses_everything_the_host_registers_again_and_asks_for_a_retry(
    mac: Mac, ctl: ControllerProtocol
) -> None:
    """Redis lost its data (no persistence, or a failover to a replica that had not synced):
    the running job's record is gone. The agent deletes the VM but reports a retryable
    ReservationLost, not a cancellation nobody asked for, and registers again (heartbeat)."""
    mac.start()
    await registered(ctl)
    d = job("flushed", "sleep 30")
    await ctl.reserve("mac-1", d)
    await phase(ctl, d, ObservedPhase.RUNNING)
    await ctl.client.flushall()
    obs = await outcome(ctl, d)
    assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.FAILED, "ReservationLost", True)
    assert d.vm_name not in mac.vms()
    await registered(ctl)


async def test_unknown_tag_fails_without_retry(mac: Mac, ctl: ControllerProtocol) -> None:
    mac.start()
    await registered(ctl)
    d = job("missing", "true", tag="no-such-tag")
    await ctl.reserve("mac-1", d)
    obs = await outcome(ctl, d)
    assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.FAILED, "TemplateNotFound", False)
    assert mac.calls("clone") == []


@pytest.mark.parametrize(
    ("fault", "reason"),
    [
        pytest.param(
            {"command": "start", "effect": "error", "message": "failed to start: No child processes"},
            "ProvisioningFailed",
            id="start-fails",
        ),
        pytest.param(
            {"command": "run", "match": "bash", "effect": "exit", "status": 125},
            "GuestDisconnected",
            id="run-125",
        ),
        pytest.param({"command": "start", "effect": "vm_failed"}, "ProvisioningFailed", id="vm-goes-failed"),
        pytest.param({"command": "clone", "effect": "already_exists"}, None, id="clone-name-clash"),
    ],
)
async def test_anka_faults_clean_up_and_are_retryable(
    mac: Mac, ctl: ControllerProtocol, fault: dict[str, Any], reason: str | None
) -> None:
    control.add_fault(mac.anka_home, count=1, **fault)
    mac.start()
    await registered(ctl)
    d = job("faulty", "echo fine")
    await ctl.reserve("mac-1", d)
    obs = await outcome(ctl, d)
    if reason is None:
        # A clash on our own deterministic name means the VM is ours: adopted, not duplicated.
        assert obs.phase in (ObservedPhase.SUCCEEDED, ObservedPhase.FAILED)
    else:
        assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.FAILED, reason, True), obs
    assert [v for v in mac.vms() if v.startswith("anklet-vm-")] == []


async def test_sigkill_during_provisioning_resumes_without_a_second_clone(
    mac: Mac, ctl: ControllerProtocol
) -> None:
    control.write_config(mac.anka_home, latency={"start": 100.0})  # 1 s at time scale 0.01
    mac.start()
    await registered(ctl)
    d = job("resume", "echo resumed")
    await ctl.reserve("mac-1", d)

    async def starting() -> bool:
        return bool(mac.calls("start"))

    await eventually(starting)
    assert mac.kill() == -signal.SIGKILL
    mac.start()
    obs = await outcome(ctl, d)
    assert obs.phase == ObservedPhase.SUCCEEDED, obs
    assert len(mac.calls("clone")) == 1
    assert [v for v in mac.vms() if v.startswith("anklet-vm-")] == []


async def workload_ended(mac: Mac) -> bool:
    """Every ``anka run <vm> bash`` process has exited (a killed one logs no exit status)."""
    for call in mac.calls("run"):
        if "bash" in call["argv"] and call["exit"] is None and call.get("pid"):
            with contextlib.suppress(psutil.Error):
                if psutil.Process(int(call["pid"])).status() != psutil.STATUS_ZOMBIE:
                    return False
    return True


async def test_sigkill_while_running_reports_the_real_exit_status(mac: Mac, ctl: ControllerProtocol) -> None:
    """The workload's supervisor outlives the agent: the restarted agent re-attaches to it and
    reports the workload's own exit status (final, not retried), in the attempt's only VM."""
    mac.start()
    await registered(ctl)
    d = job("interrupted", "sleep 2; echo finished; exit 4")
    await ctl.reserve("mac-1", d)
    await phase(ctl, d, ObservedPhase.RUNNING)
    mac.kill()
    mac.start()
    obs = await outcome(ctl, d)
    assert (obs.phase, obs.reason, obs.exit_code) == (ObservedPhase.FAILED, "ExitCode", 4)
    assert not obs.retryable, "the workload's own verdict is final"
    assert "finished" in (obs.output or "")
    assert d.vm_name not in mac.vms()
    assert len(mac.calls("clone")) == 1
    assert len([c for c in mac.calls("run") if "bash" in c["argv"]]) == 1, "the workload ran once"
    assert not list((mac.home / "runs").glob(f"{d.vm_name}.*")), "its run files are cleaned up"


async def test_timeout_still_kills_the_workload_after_an_agent_restart(
    mac: Mac, ctl: ControllerProtocol
) -> None:
    mac.start()
    await registered(ctl)
    d = job("slow-restarted", "sleep 30", timeout=3)
    await ctl.reserve("mac-1", d)
    await phase(ctl, d, ObservedPhase.RUNNING)
    mac.kill()
    mac.start()
    obs = await outcome(ctl, d, timeout=20)
    assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.FAILED, "Timeout", False)
    await eventually(lambda: workload_ended(mac), 10)


async def test_cancel_reaches_a_workload_started_before_an_agent_restart(
    mac: Mac, ctl: ControllerProtocol
) -> None:
    mac.start()
    await registered(ctl)
    d = job("cancel-restarted", "sleep 30")
    await ctl.reserve("mac-1", d)
    await phase(ctl, d, ObservedPhase.RUNNING)
    mac.kill()
    mac.start()
    await registered(ctl)
    assert await ctl.cancel("mac-1", d.uid)
    obs = await outcome(ctl, d, timeout=20)
    assert obs.phase == ObservedPhase.CANCELLED
    assert d.vm_name not in mac.vms()
    await eventually(lambda: workload_ended(mac), 10)


async def test_orphan_vms_are_deleted_and_foreign_vms_left_alone(mac: Mac, ctl: ControllerProtocol) -> None:
    assert mac.anka("-j", "registry", "pull", TEMPLATE, "--tag", "2c4r").returncode == 0
    orphan = str(VMName("gone-job", 1))
    assert mac.anka("-j", "clone", TEMPLATE, orphan).returncode == 0
    assert mac.anka("-j", "clone", TEMPLATE, "someone-elses-vm").returncode == 0
    mac.start()
    await registered(ctl)

    async def orphan_gone() -> bool:
        return orphan not in mac.vms()

    await eventually(orphan_gone)
    assert "someone-elses-vm" in mac.vms()


async def test_stale_run_files_are_swept_and_live_ones_kept(mac: Mac, ctl: ControllerProtocol) -> None:
    """Run files left by a lost attempt go on the agent's converge cadence; files of a VM that
    exists, or whose lock a supervisor holds, or that are recent, stay."""
    runs = mac.home / "runs"
    runs.mkdir()
    old = time.time() - RUN_FILE_GRACE_SECONDS - 60

    def leave(vm: str, mtime: float = old) -> list[Path]:
        paths = [runs / f"{vm}.json", runs / f"{vm}.lock", runs / f"{vm}.log", runs / f".{vm}.json.9.tmp"]
        for path in paths:
            path.write_text("{}")
            os.utime(path, (mtime, mtime))
        return paths

    gone = leave(str(VMName("lost-job", 1)))
    young = leave(str(VMName("lost-recently", 1)), time.time())
    assert mac.anka("-j", "registry", "pull", TEMPLATE, "--tag", "2c4r").returncode == 0
    assert mac.anka("-j", "clone", TEMPLATE, "someone-elses-vm").returncode == 0
    existing = leave("someone-elses-vm")  # never touched by the agent: its VM exists
    held = leave(str(VMName("still-supervised", 1)))
    lock = os.open(held[1], os.O_RDWR | os.O_TRUNC)  # as a live supervisor: locked, its pid inside
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        os.write(lock, f"{os.getpid()}\n".encode())
        os.utime(held[1], (old, old))
        mac.start()
        await registered(ctl)

        async def swept() -> bool:
            return not any(path.exists() for path in gone)

        await eventually(swept)
        assert all(path.exists() for path in [*young, *existing, *held])
    finally:
        os.close(lock)


async def test_redis_outage_loses_no_report(tmp_path: Path) -> None:
    """Redis paused mid-job (SIGSTOP): the agent keeps working and reports once Redis is back."""
    with RedisServer(tmp_path / "redis") as server:
        client = connect(server.url)
        ctl = ControllerProtocol(client)
        m = Mac(tmp_path, server.url)
        try:
            m.start()
            await registered(ctl)
            d = job("outage", "sleep 1; echo survived")
            await ctl.reserve("mac-1", d)
            await phase(ctl, d, ObservedPhase.RUNNING)
            assert server.process is not None
            server.process.send_signal(signal.SIGSTOP)
            await asyncio.sleep(3)  # the job finishes while Redis is unreachable
            server.process.send_signal(signal.SIGCONT)
            obs = await outcome(ctl, d, timeout=40)
            assert obs.phase == ObservedPhase.SUCCEEDED and "survived" in (obs.output or "")
            assert m.process is not None and m.process.poll() is None, "the agent rode out the outage"
        finally:
            m.stop()
            await client.aclose()


async def test_refuses_to_start_with_an_unusable_licence(mac: Mac) -> None:
    control.write_config(mac.anka_home, license_type="com.veertu.anka.develop")
    mac.start()
    assert mac.process is not None
    assert mac.process.wait(30) == 2
    assert "licence type com.veertu.anka.develop cannot run CI VMs" in mac.log.read_text()


async def test_sigterm_lets_a_running_job_finish_within_the_grace(mac: Mac, ctl: ControllerProtocol) -> None:
    mac.env["ANKLET_AGENT_SHUTDOWN_GRACE_SECONDS"] = "20"
    mac.start()
    await registered(ctl)
    d = job("graceful", "sleep 1; echo done")
    await ctl.reserve("mac-1", d)
    await phase(ctl, d, ObservedPhase.RUNNING)
    assert mac.kill(signal.SIGTERM) == 0
    obs = await outcome(ctl, d, timeout=5)
    assert obs.phase == ObservedPhase.SUCCEEDED and "done" in (obs.output or "")
    assert [h.ready for h in await ctl.snapshot()] == [False], "a stopped agent gives up its lease"


async def test_sigterm_past_the_grace_hands_the_job_back(mac: Mac, ctl: ControllerProtocol) -> None:
    mac.env["ANKLET_AGENT_SHUTDOWN_GRACE_SECONDS"] = "0.5"
    mac.start()
    await registered(ctl)
    d = job("too-long", "sleep 60")
    await ctl.reserve("mac-1", d)
    await phase(ctl, d, ObservedPhase.RUNNING)
    assert mac.kill(signal.SIGTERM) == 0
    obs = await outcome(ctl, d, timeout=5)
    assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.FAILED, "AgentStopped", True)
    assert d.vm_name not in mac.vms()
