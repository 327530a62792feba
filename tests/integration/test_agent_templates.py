"""Templates on the Mac, end to end: the agent as a real process, the `anka` simulator, real Redis.

Covers one pull at a time per host (and clones waiting for a pull of their template), the disk
buffer with LRU eviction of templates no VM uses, the controller's prePull list, and host-to-guest
mounts. The controller side is played with `ControllerProtocol`, as in test_agent.py; the small
`Mac` harness is copied from there so the two modules stay independent.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio as aioredis

from anklet import keys
from anklet.dev.anka_sim import control, install_shim
from anklet.dev.redis_server import RedisServer
from anklet.redis_protocol import ControllerProtocol
from anklet.vmname import VMName
from anklet.wire import DesiredVM, Observation, ObservedPhase, PullInfo, TemplateInfo, Workload
from tests.waiting import eventually

G = 1024**3
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"  # "anklet" in the simulator's default catalogue
OTHER = "d792c6f6-198c-470f-9526-9c998efe7ab4"  # "26.1-arm64"
OTHER_TAG = "vanilla+port-forward-22+brew-git"


class Mac:
    """One simulated Mac: an `anka` simulator home and an `anklet agent` process."""

    def __init__(self, root: Path, redis_url: str, name: str = "mac-1") -> None:
        self.name = name
        self.home = root / name
        self.anka_home = self.home / "anka"
        self.anka_home.mkdir(parents=True)
        # Pulls cost their fixed overhead only, unless a test slows them down on purpose.
        control.write_config(self.anka_home, time_scale=0.01, pull_bytes_per_second=1e13)
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
            "ANKLET_AGENT_SHUTDOWN_GRACE_SECONDS": "1",
            # The simulated disk, not this machine's, is what pulls must fit on.
            "ANKLET_AGENT_TEMPLATE_DISK_BUFFER_BYTES": str(8 * G),
        }
        self.process: subprocess.Popen[bytes] | None = None
        self.log = self.home / "agent.log"

    def start(self, arch: str = "arm64") -> Mac:
        with self.log.open("ab") as log:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "anklet.cli", "agent", "--state-dir", str(self.home), "--arch", arch],
                env=self.env,
                stdout=log,
                stderr=log,
            )
        return self

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            self.process.wait(20)

    def vms(self) -> list[str]:
        return [vm["name"] for vm in control.read_state(self.anka_home).get("vms", {}).values()]

    def calls(self, verb: str) -> list[dict[str, Any]]:
        return [c for c in control.read_calls(self.anka_home) if verb in c["argv"]]

    def pulls(self) -> list[dict[str, Any]]:
        """`registry pull` calls (not the `pull --check-download-size` probes)."""
        return [c for c in self.calls("pull") if "registry" in c["argv"]]

    def spans(self, calls: list[dict[str, Any]]) -> list[tuple[float, float]]:
        """(start, end) wall-clock times of finished calls, from the simulator's own log events."""
        ends = {}
        for line in (self.anka_home / "calls.jsonl").read_text().splitlines():
            event = json.loads(line)
            if event.get("event") == "end":
                ends[event["id"]] = event["ts"]
        return sorted((c["ts"], ends[c["id"]]) for c in calls if c["id"] in ends)

    def template_deletes(self) -> list[list[str]]:
        return [
            c["argv"] for c in self.calls("delete") if not any(a.startswith("anklet-vm-") for a in c["argv"])
        ]


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
    uid: str,
    script: str = "echo ok",
    *,
    template: str = TEMPLATE,
    tag: str | None = "2c4r",
    mounts: list[str] | None = None,
) -> DesiredVM:
    return DesiredVM(
        uid=uid,
        namespace="default",
        name=uid,
        attempt=1,
        vm_name=str(VMName(uid, 1)),
        template=template,
        tag=tag,
        cpu=2,
        memory_mib=4096,
        handler="script",
        workload=Workload(script=script),
        mounts=mounts or [],
    )


def small_template(name: str, uuid: str, size_g: int) -> dict[str, Any]:
    """A one-tag template without shared layers, so disk arithmetic is just its size."""
    tag = {"name": "v1", "size": size_g * G, "cpu_cores": 2, "ram_size": 4 * G}
    return {"uuid": uuid, "name": name, "latest": "v1", "base_size": 0, "tags": [tag]}


async def registered(ctl: ControllerProtocol, host: str = "mac-1") -> None:
    async def probe() -> bool:
        return any(h.info.name == host and h.ready for h in await ctl.snapshot())

    await eventually(probe)


async def outcome(ctl: ControllerProtocol, d: DesiredVM, timeout: float = 30) -> Observation:
    """The attempt's terminal report, once the agent confirms its VM is deleted."""

    async def probe() -> Observation | None:
        obs = await ctl.observation("mac-1", d.uid)
        return obs if obs and obs.attempt == d.attempt and obs.vm_deleted else None

    return await eventually(probe, timeout)


async def stage(ctl: ControllerProtocol, d: DesiredVM, *stages: str) -> Observation:
    async def probe() -> Observation | None:
        obs = await ctl.observation("mac-1", d.uid)
        return obs if obs and obs.stage in stages else None

    return await eventually(probe)


async def host_templates(ctl: ControllerProtocol) -> list[TemplateInfo]:
    return [t for h in await ctl.snapshot() if h.info.name == "mac-1" for t in h.info.templates]


def assert_ok(obs: Observation) -> None:
    assert (obs.phase, obs.reason) == (ObservedPhase.SUCCEEDED, "Succeeded"), obs


def assert_disjoint(spans: list[tuple[float, float]]) -> None:
    for (_, end), (start, _) in itertools.pairwise(spans):
        assert start >= end, f"two pulls overlapped on one host: {spans}"


# --- one pull at a time ---------------------------------------------------------------------------


async def test_two_jobs_needing_two_missing_templates_never_pull_at_once(
    mac: Mac, ctl: ControllerProtocol
) -> None:
    control.write_config(mac.anka_home, latency={"pull_overhead": 100.0})  # each pull takes 1 s
    mac.start()
    await registered(ctl)
    a, b = job("needs-anklet"), job("needs-other", template=OTHER, tag=OTHER_TAG)
    assert await ctl.reserve("mac-1", a) == "OK"
    assert await ctl.reserve("mac-1", b) == "OK"
    assert_ok(await outcome(ctl, a))
    assert_ok(await outcome(ctl, b))
    pulls = mac.pulls()
    assert sorted(TEMPLATE in c["argv"] for c in pulls) == [False, True], pulls
    spans = mac.spans(pulls)
    assert len(spans) == 2
    assert_disjoint(spans)


async def test_a_clone_of_the_template_being_pulled_waits_for_the_pull(
    mac: Mac, ctl: ControllerProtocol
) -> None:
    control.write_config(mac.anka_home, preinstalled=[f"{TEMPLATE}:2c4r"], latency={"pull_overhead": 150.0})
    mac.start()
    await registered(ctl)
    puller = job("pulls-3c6r", tag="3c6r")
    assert await ctl.reserve("mac-1", puller) == "OK"

    async def pulling() -> bool:
        return any(c["exit"] is None for c in mac.pulls())

    await eventually(pulling)
    cloner = job("clones-2c4r")  # its tag is already local: no pull, only the clone lock
    assert await ctl.reserve("mac-1", cloner) == "OK"
    assert_ok(await outcome(ctl, cloner))
    assert_ok(await outcome(ctl, puller))
    [pull] = mac.spans(mac.pulls())
    clone = mac.spans([c for c in mac.calls("clone") if cloner.vm_name in c["argv"]])
    assert clone and clone[0][0] >= pull[1], f"clone {clone} started before the pull {pull} ended"


# --- disk buffer and LRU eviction -----------------------------------------------------------------

T_A = "aaaaaaaa-0000-4000-8000-00000000000a"
T_B = "bbbbbbbb-0000-4000-8000-00000000000b"
T_WANT = "cccccccc-0000-4000-8000-00000000000c"
T_BIG = "dddddddd-0000-4000-8000-00000000000d"
T_HUGE = "eeeeeeee-0000-4000-8000-00000000000e"


def small_disk(m: Mac) -> None:
    """40 GiB disk, 5 GiB for macOS, t-a and t-b (10 GiB each) on it: 15 GiB free, 8 GiB buffer."""
    control.write_config(
        m.anka_home,
        templates=[
            small_template("t-a", T_A, 10),
            small_template("t-b", T_B, 10),
            small_template("t-want", T_WANT, 10),
            small_template("t-big", T_BIG, 20),
            small_template("t-huge", T_HUGE, 60),
        ],
        preinstalled=["t-a:v1", "t-b:v1"],
        disk_total_bytes=40 * G,
        disk_reserved_bytes=5 * G,
        clone_disk_bytes=0,
        date_precision="us",  # access dates a fraction of a second apart must still order
    )


async def test_evicts_the_least_recently_used_template_that_no_vm_uses(
    mac: Mac, ctl: ControllerProtocol
) -> None:
    small_disk(mac)
    mac.start()
    await registered(ctl)
    busy = job("busy-on-a", "sleep 30", template=T_A, tag="v1")  # t-a: used first, still in use
    assert await ctl.reserve("mac-1", busy) == "OK"
    await stage(ctl, busy, "Running")
    done = job("done-on-b", template=T_B, tag="v1")  # t-b: used later, no VM left
    assert await ctl.reserve("mac-1", done) == "OK"
    assert_ok(await outcome(ctl, done))
    await ctl.release("mac-1", done.uid, done.attempt)  # frees the VM slot, as the controller would

    wanted = job("wants-new", template=T_WANT, tag="v1")  # 15 GiB free - 10 GiB < 8 GiB buffer
    assert await ctl.reserve("mac-1", wanted) == "OK"
    assert_ok(await outcome(ctl, wanted))
    assert mac.template_deletes() == [["-j", "delete", "--yes", T_B]]
    checks = [c for c in mac.calls("--check-download-size") if T_WANT in c["argv"]]
    assert len(checks) == 2, "the download size is asked again after each eviction"
    assert {"t-a", "t-want"} <= set(mac.vms()) and "t-b" not in mac.vms()

    async def reregistered() -> bool:
        return {t.name for t in await host_templates(ctl)} == {"t-a", "t-want"}

    await eventually(reregistered)
    assert "evicting template t-b" in mac.log.read_text()


@pytest.mark.parametrize(
    ("template", "busy_on_a", "words"),
    [
        pytest.param(T_BIG, True, "evicting every unused template would free only 10.0 GiB", id="in-use"),
        pytest.param(T_HUGE, False, "needs 60.0 GiB plus a 8.0 GiB free-space buffer", id="bigger-than-disk"),
    ],
)
async def test_no_room_even_after_evicting_every_unused_template_deletes_nothing(
    mac: Mac, ctl: ControllerProtocol, template: str, busy_on_a: bool, words: str
) -> None:
    small_disk(mac)
    mac.start()
    await registered(ctl)
    if busy_on_a:
        busy = job("busy-on-a", "sleep 30", template=T_A, tag="v1")
        assert await ctl.reserve("mac-1", busy) == "OK"
        await stage(ctl, busy, "Running")
    d = job("too-big", template=template, tag="v1")
    assert await ctl.reserve("mac-1", d) == "OK"
    obs = await outcome(ctl, d)
    assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.FAILED, "InsufficientDisk", True), obs
    assert words in (obs.message or "")
    assert mac.template_deletes() == []
    assert mac.pulls() == []
    assert {"t-a", "t-b"} <= set(mac.vms())


# --- prePull ---------------------------------------------------------------------------------------


async def set_prepull(client: aioredis.Redis, specs: list[str]) -> None:
    """What the controller does: write the host's config, then wake the host."""
    await client.set(keys.host_config("mac-1"), json.dumps({"prePull": specs}))
    await client.rpush(keys.host_inbox("mac-1"), "config")


async def test_prepull_pulls_in_the_background_one_at_a_time_and_reregisters(
    mac: Mac, ctl: ControllerProtocol, redis_client: aioredis.Redis
) -> None:
    control.write_config(mac.anka_home, latency={"pull_overhead": 200.0})  # each pull takes 2 s
    mac.start()
    await registered(ctl)
    assert await host_templates(ctl) == []
    await set_prepull(redis_client, [f"{TEMPLATE}:2c4r", f"26.1-arm64:{OTHER_TAG}"])

    async def pulling() -> bool:
        return any(c["exit"] is None for c in mac.pulls())

    await eventually(pulling)

    async def announced() -> PullInfo | None:
        [snap] = await ctl.snapshot()
        return snap.info.pulling

    shown = await eventually(announced)  # the registration shows the pull while it runs
    assert shown.template in (TEMPLATE, "26.1-arm64") and shown.started_at > 0
    # The converge loop is not blocked by the pull: a new job is taken up while it runs.
    d = job("during-prepull", template=TEMPLATE, tag="2c4r")
    assert await ctl.reserve("mac-1", d) == "OK"
    await stage(ctl, d, "Pulling", "Cloning", "Starting")
    assert any(c["exit"] is None for c in mac.pulls()), "the job was picked up only after the pull"
    assert_ok(await outcome(ctl, d))

    async def both_registered() -> bool:
        found = {(t.uuid, t.tag) for t in await host_templates(ctl)}
        return found == {(TEMPLATE, "2c4r"), (OTHER, OTHER_TAG)}

    await eventually(both_registered, 30)

    async def no_pull_shown() -> bool:
        [snap] = await ctl.snapshot()
        return snap.info.pulling is None

    await eventually(no_pull_shown)
    spans = mac.spans(mac.pulls())
    assert len(spans) == 2, "each template pulled once: the job reused the pre-pulled one"
    assert_disjoint(spans)


async def test_a_pull_whose_job_is_cancelled_is_no_longer_shown(mac: Mac, ctl: ControllerProtocol) -> None:
    control.write_config(mac.anka_home, latency={"pull_overhead": 300.0})  # the pull takes 3 s
    mac.start()
    await registered(ctl)
    d = job("cancelled-while-pulling", template=TEMPLATE, tag="2c4r")
    assert await ctl.reserve("mac-1", d) == "OK"

    async def shown() -> PullInfo | None:
        [snap] = await ctl.snapshot()
        return snap.info.pulling

    assert (await eventually(shown)).template == TEMPLATE
    assert await ctl.cancel("mac-1", d.uid)
    assert (await outcome(ctl, d)).phase == ObservedPhase.CANCELLED

    async def gone() -> bool:
        return await shown() is None

    await eventually(gone)


async def test_prepull_errors_are_logged_once_and_retried(
    mac: Mac, ctl: ControllerProtocol, redis_client: aioredis.Redis
) -> None:
    mac.env["ANKLET_AGENT_RESYNC_SECONDS"] = "0.5"
    mac.start()
    await registered(ctl)
    await set_prepull(redis_client, ["no-such-template:1", f"{TEMPLATE}:2c4r"])

    async def retried() -> bool:
        checks = [c for c in mac.calls("--check-download-size") if "no-such-template" in c["argv"]]
        return len(checks) >= 3

    await eventually(retried)
    assert (TEMPLATE, "2c4r") in {(t.uuid, t.tag) for t in await host_templates(ctl)}
    assert mac.log.read_text().count("pre-pull of no-such-template:1 failed (TemplateNotFound)") == 1


# --- host-to-guest mounts --------------------------------------------------------------------------


def folder(path: Path, content: str) -> Path:
    path.mkdir(parents=True)
    (path / "probe.txt").write_text(content)
    return path


async def test_host_and_job_folders_are_mounted_into_the_guest(
    mac: Mac, ctl: ControllerProtocol, tmp_path: Path
) -> None:
    host_dir = folder(tmp_path / "host-cache", "from-the-host-config")
    job_dir = folder(tmp_path / "job-data", "from-the-job")
    (tmp_path / "job-link").symlink_to(job_dir, target_is_directory=True)
    mac.env["ANKLET_AGENT_MOUNTS"] = json.dumps([f"{host_dir}:shared_cache"])
    mac.start()
    await registered(ctl)
    script = 'cd "Volumes/My Shared Files" && ls && cat shared_cache/probe.txt job-data/probe.txt'
    d = job("mounts", script, mounts=[str(tmp_path / "job-link"), f"{job_dir}"])  # one folder, twice
    assert await ctl.reserve("mac-1", d) == "OK"
    obs = await outcome(ctl, d)
    assert_ok(obs)
    assert "from-the-host-config" in (obs.output or "") and "from-the-job" in (obs.output or "")
    mounts = [c["argv"][-2:] for c in mac.calls("mount")]
    assert mounts == [
        [d.vm_name, f"{host_dir.resolve()}:shared_cache"],
        [d.vm_name, f"{job_dir.resolve()}:job-data"],
    ]
    assert "mounted" in mac.log.read_text()


@pytest.mark.parametrize(
    ("anka_version", "mounts", "fault", "reason", "retryable"),
    [
        pytest.param("3.9.1", ["/no/such/folder:x"], None, "MountFailed", False, id="missing-host-folder"),
        pytest.param(
            "3.9.1",
            ["{tmp}"],
            {"command": "mount", "effect": "error", "message": "mount: virtiofs refused"},
            "MountFailed",
            True,
            id="anka-mount-fails",
        ),
        pytest.param("3.8.2", ["{tmp}"], None, "MountsUnsupported", False, id="anka-too-old"),
    ],
)
async def test_a_job_whose_mounts_cannot_be_honoured_fails_and_leaves_no_vm(
    mac: Mac,
    ctl: ControllerProtocol,
    tmp_path: Path,
    anka_version: str,
    mounts: list[str],
    fault: dict[str, Any] | None,
    reason: str,
    retryable: bool,
) -> None:
    control.write_config(mac.anka_home, anka_version=anka_version)
    if fault is not None:
        control.add_fault(mac.anka_home, **fault)
    mac.start()
    await registered(ctl)
    d = job("bad-mounts", mounts=[m.format(tmp=tmp_path) for m in mounts])
    assert await ctl.reserve("mac-1", d) == "OK"
    obs = await outcome(ctl, d)
    assert (obs.phase, obs.reason, obs.retryable) == (ObservedPhase.FAILED, reason, retryable), obs
    assert [v for v in mac.vms() if v.startswith("anklet-vm-")] == []
    if not retryable:
        assert mac.calls("clone") == [], "refused before any pull or clone"
    assert mac.calls("run") == [] or all("bash" not in c["argv"] for c in mac.calls("run"))


@pytest.mark.parametrize(
    ("anka_version", "arch", "words"),
    [
        pytest.param("3.8.2", "arm64", "need Anka >= 3.9.0; this host has 3.8.2", id="anka-too-old"),
        pytest.param("3.9.1", "amd64", "need an Apple-silicon (arm64) host", id="intel"),
    ],
)
async def test_refuses_to_start_with_mounts_the_host_cannot_honour(
    mac: Mac, tmp_path: Path, anka_version: str, arch: str, words: str
) -> None:
    control.write_config(mac.anka_home, anka_version=anka_version, arch=arch)
    mac.env["ANKLET_AGENT_MOUNTS"] = json.dumps([str(tmp_path)])
    mac.start(arch=arch)
    assert mac.process is not None
    assert mac.process.wait(30) == 2
    lines = [line for line in mac.log.read_text().splitlines() if "refusing to start" in line]
    assert len(lines) == 1 and words in lines[0], lines
