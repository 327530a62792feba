"""The simulated ``anka`` as a subprocess, driven through the production driver (``AnkaCLI``).

Each test gets a fresh simulated Mac (``anka_home``) at 1/100 of real time. Byte-level
contract checks use the raw ``sim`` runner; everything else goes through the driver, so the
two are tested against each other.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

import psutil
import pytest

from anklet.dev.anka_sim import control, install_shim
from host_agent.anka import (
    AnkaAlreadyExists,
    AnkaCLI,
    AnkaError,
    AnkaNotFound,
    AnkaOutputError,
    AnkaTimeout,
    AnkaTimeouts,
    AnkaVMFailed,
    parse_version,
)
from tests.integration import anka_sim_fixtures as fixtures
from tests.integration.anka_sim_fixtures import SimRunner

anka_home = fixtures.anka_home
anka_env = fixtures.anka_env
anka_binary = fixtures.anka_binary
anka_cli = fixtures.anka_cli
sim = fixtures.sim

pytestmark = pytest.mark.timeout(60)

GIB = 1024**3
ANKLET = "84266873-da90-4e0d-903b-ed0233471f9f"
ARM_TEMPLATE = "d792c6f6-198c-470f-9526-9c998efe7ab4"


@pytest.fixture
def with_template(anka_home: Path) -> Path:
    """The ``anklet`` template (tag 2c4r) is already local, as after an earlier pull."""
    control.write_config(anka_home, preinstalled=[f"{ANKLET}:2c4r"])
    return anka_home


def _dead(pid: int, within: float = 3.0) -> bool:
    """Gone, or a zombie awaiting its reaper (PID 1 here reaps orphans lazily)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            if psutil.Process(pid).status() == psutil.STATUS_ZOMBIE:
                return True
        except psutil.NoSuchProcess:
            return True
        time.sleep(0.02)
    return False


async def _running_vm(cli: AnkaCLI, name: str = "vm1") -> None:
    await cli.clone(ANKLET, name)
    await cli.start(name)
    await cli.wait_ready(name, timeout=10, interval=0.02)


# --- process contract ------------------------------------------------------------------------


def test_bare_anka_and_version_flag_exit_zero(sim: SimRunner) -> None:
    assert sim().returncode == 0
    result = sim("--version")
    assert result.returncode == 0
    assert "version 3.9.1" in result.stdout


def test_envelope_is_the_last_write_single_line_without_newline(sim: SimRunner) -> None:
    ok = sim("-j", "version")
    assert ok.returncode == 0 and not ok.stdout.endswith("\n") and "\n" not in ok.stdout
    assert json.loads(ok.stdout)["status"] == "OK"
    assert '"status": "OK"' in ok.stdout  # the spaced separators grep-based callers expect
    missing = sim("--machine-readable", "show", "ghost")
    assert missing.returncode != 0
    assert json.loads(missing.stdout) == {
        "status": "ERROR",
        "code": 3,
        "message": "ghost: not found",
        "exception_type": "NotFoundError",
    }


def test_human_mode_errors_go_to_stderr(sim: SimRunner) -> None:
    result = sim("show", "ghost")
    assert result.returncode != 0 and result.stdout == ""
    assert result.stderr.strip() == "anka: ghost: not found"


def test_options_mix_with_positionals_except_in_run(with_template: Path, sim: SimRunner) -> None:
    result = sim("-j", "pull", ANKLET, "--check-download-size", "--tag", "2c4r", "http://r:8089")
    assert json.loads(result.stdout)["message"] == "2c4r: available locally"
    assert sim("-j", "clone", ANKLET, "vm1").returncode == 0
    # `-la` and `-e` after the vmid belong to the guest command, not to `run`
    result = sim("-j", "run", "-e", "X=1", "vm1", "sh", "-c", 'echo "$X" "$0" "$1"', "-la", "-e")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "1 -la -e"


# --- info commands ---------------------------------------------------------------------------


async def test_version_and_license(anka_cli: AnkaCLI) -> None:
    info = await anka_cli.version()
    assert parse_version(info["version"]) == (3, 9, 1)
    assert info["build"] and info["product"]
    lic = await anka_cli.license()
    assert lic["status"] == "valid" and lic["license_type"] == "com.veertu.anka.entplus"
    assert lic["product"] and lic["expires"]


async def test_version_arch_and_licence_are_configurable(anka_home: Path, anka_cli: AnkaCLI) -> None:
    control.write_config(
        anka_home, anka_version="3.8.6", license_type="com.veertu.anka.develop", license_status="expired"
    )
    assert (await anka_cli.version())["version"] == "3.8.6"
    lic = await anka_cli.license()
    assert (lic["status"], lic["license_type"]) == ("expired", "com.veertu.anka.develop")


# --- library: list / show / clone / start / stop / suspend / delete ---------------------------


async def test_empty_library_and_not_found(anka_cli: AnkaCLI, sim: SimRunner) -> None:
    assert await anka_cli.list_vms() == []
    assert await anka_cli.list_vms(running_only=True) == []
    with pytest.raises(AnkaNotFound) as caught:
        await anka_cli.show("ghost")
    assert caught.value.code == 3 and caught.value.message == "ghost: not found"
    assert json.loads(sim("-j", "list", "ghost").stdout)["code"] == 3


async def test_vm_lifecycle(with_template: Path, anka_cli: AnkaCLI, sim: SimRunner) -> None:
    control.write_config(with_template, latency={"ip_delay": 40.0})  # the IP shows 0.4 s after boot
    [template] = await anka_cli.list_vms()
    assert (template.uuid, template.name, template.version) == (ANKLET, "anklet", "2c4r")
    await anka_cli.clone(ANKLET, "vm1")
    with pytest.raises(AnkaAlreadyExists) as clash:
        await anka_cli.clone(ANKLET, "vm1")
    assert clash.value.code == 18 and clash.value.message == "vm1: already exists"
    clone = await anka_cli.show("vm1")
    assert (clone.status, clone.version, clone.cpu_cores, clone.ram_size) == ("stopped", None, 2, 4 * GIB)
    assert clone.access_date is not None

    await anka_cli.start("vm1")
    assert (await anka_cli.show("vm1")).ip is None  # the IP comes a few (simulated) seconds later
    ready = await anka_cli.wait_ready("vm1", timeout=10, interval=0.02)
    assert ready.status == "running" and ready.ip and ready.ip.startswith("192.168.")
    assert [vm.name for vm in await anka_cli.list_vms(running_only=True)] == ["vm1"]
    assert json.loads(sim("-j", "show", "vm1", "tag").stdout)["body"] == []
    assert json.loads(sim("-j", "show", "anklet", "tag").stdout)["body"] == [{"tag": "2c4r"}]
    assert json.loads(sim("-j", "show", "vm1", "network").stdout)["body"]["ip"] == ready.ip
    assert json.loads(sim("-j", "show", "vm1", "disk").stdout)["body"]["image_size"] == 2 * GIB
    assert sim("show", "vm1", "network", "ip").stdout.strip() == ready.ip

    await anka_cli.suspend("vm1")
    assert (await anka_cli.show("vm1")).status == "suspended"
    await anka_cli.start("vm1")
    await anka_cli.stop("vm1")
    assert (await anka_cli.show("vm1")).status == "stopped"
    assert sim("show", "vm1", "ip").returncode != 0
    await anka_cli.start("vm1")
    await anka_cli.delete("vm1")  # deletes a running VM
    with pytest.raises(AnkaNotFound):
        await anka_cli.delete("vm1")
    assert [vm.name for vm in await anka_cli.list_vms()] == ["anklet"]


async def test_delete_refuses_without_yes_when_not_a_tty(with_template: Path, sim: SimRunner) -> None:
    result = sim("-j", "delete", ANKLET)
    assert result.returncode != 0 and "--yes" in json.loads(result.stdout)["message"]
    assert sim("-j", "delete", ANKLET, "--yes").returncode == 0


async def test_two_running_vms_at_most_on_apple_silicon(with_template: Path, anka_cli: AnkaCLI) -> None:
    for name in ("a", "b", "c"):
        await anka_cli.clone(ANKLET, name)
    await asyncio.gather(anka_cli.start("a"), anka_cli.start("b"))
    with pytest.raises(AnkaError, match="maximum number of running instances exceeded"):
        await anka_cli.start("c")
    await anka_cli.stop("a", force=True)
    await anka_cli.start("c")
    assert sorted(vm.name for vm in await anka_cli.list_vms(running_only=True)) == ["b", "c"]


async def test_concurrent_starts_never_exceed_the_limit(with_template: Path, anka_cli: AnkaCLI) -> None:
    names = ["a", "b", "c", "d"]
    await asyncio.gather(*(anka_cli.clone(ANKLET, n) for n in names))
    results = await asyncio.gather(*(anka_cli.start(n) for n in names), return_exceptions=True)
    assert sum(r is None for r in results) == 2
    assert all(isinstance(r, AnkaError) for r in results if r is not None)
    listed = await asyncio.gather(*(anka_cli.list_vms(running_only=True) for _ in range(6)))
    assert all(len(rows) == 2 for rows in listed)


# --- run / cp / mount ------------------------------------------------------------------------


async def test_run_exit_status_output_and_env_on_stdin(
    with_template: Path, anka_home: Path, anka_cli: AnkaCLI
) -> None:
    await _running_vm(anka_cli)
    secret = "s3cr3t value with 'quotes' $HOME and\nnewline"
    result = await anka_cli.run(
        "vm1", 'printf "%s" "$TOKEN"; echo; echo err >&2; exit 7', env={"TOKEN": secret}
    )
    assert result.exit_code == 7 and not result.timed_out
    assert result.output.startswith(secret) and "err" in result.output
    run_calls = [c for c in control.read_calls(anka_home) if "run" in c["argv"]]
    assert run_calls[-1]["argv"] == ["run", "vm1", "bash", "-l", "-s"]
    assert all(secret not in " ".join(c["argv"]) for c in control.read_calls(anka_home))
    home = await anka_cli.run("vm1", "pwd; echo $HOME")
    sandbox = str(control.vm_sandbox(anka_home, (await anka_cli.show("vm1")).uuid))
    assert home.output.split() == [sandbox, sandbox]


async def test_run_output_is_bounded_to_the_tail(with_template: Path, anka_cli: AnkaCLI) -> None:
    await _running_vm(anka_cli)
    result = await anka_cli.run("vm1", "seq 1 20000", output_limit=100)
    assert len(result.output) == 100 and result.output.endswith("19999\n20000\n")


async def test_run_auto_starts_a_stopped_vm_with_options(
    with_template: Path, sim: SimRunner, tmp_path: Path
) -> None:
    assert sim("-j", "clone", ANKLET, "vm1").returncode == 0
    assert sim("-j", "run", "vm1", "mkdir", "sub").returncode == 0
    env_file = tmp_path / "envfile"
    env_file.write_text("A='kept literally'\nB=2\n")
    result = sim(
        "run",
        "-w",
        "sub",
        "-n",
        "--env-file",
        str(env_file),
        "-e",
        "B=3",
        "vm1",
        "sh",
        "-c",
        'pwd; echo "$A" $B',
    )
    assert result.returncode == 0, result.stderr
    cwd, values = result.stdout.splitlines()
    assert cwd.endswith("/sub") and values == "'kept literally' 3"
    assert sim("run", "-q", "vm1", "echo", "hidden").stdout == ""
    inherit = 'echo "${ANKA_SIM_TIME_SCALE:-unset}"'
    assert sim("run", "-E", "vm1", "sh", "-c", inherit).stdout == "0.01\n"  # -E: host environment too
    assert sim("run", "vm1", "sh", "-c", inherit).stdout == "unset\n"
    assert sim("run", "vm1", "no-such-binary-xyz").returncode == 127
    background = sim("-j", "run", "-b", "vm1", "sleep", "30")
    pid = json.loads(background.stdout)["body"]["pid"]
    assert psutil.pid_exists(pid)
    assert sim("-j", "delete", "--yes", "vm1").returncode == 0  # deleting the VM kills its processes
    assert _dead(pid)


async def test_run_timeout_kills_the_guest_command(
    with_template: Path, anka_home: Path, anka_cli: AnkaCLI
) -> None:
    await _running_vm(anka_cli)
    started = time.monotonic()
    result = await anka_cli.run("vm1", "echo $$ > shell.pid; echo started; sleep 30", timeout=1.0)
    assert result.timed_out and result.exit_code == -9 and "started" in result.output
    assert time.monotonic() - started < 5
    uuid = (await anka_cli.show("vm1")).uuid
    pid = int((control.vm_sandbox(anka_home, uuid) / "shell.pid").read_text())
    assert _dead(pid)


async def test_delete_kills_running_guest_commands(with_template: Path, anka_cli: AnkaCLI) -> None:
    await _running_vm(anka_cli)
    job = asyncio.create_task(anka_cli.run("vm1", "sleep 30"))
    await asyncio.sleep(0.5)
    await anka_cli.delete("vm1")
    result = await asyncio.wait_for(job, 10)
    assert result.exit_code == 125 and "connection to the guest was lost" in result.output


async def test_cp_into_and_out_of_the_guest(
    with_template: Path, anka_cli: AnkaCLI, tmp_path: Path, sim: SimRunner
) -> None:
    await anka_cli.clone(ANKLET, "vm1")
    script = tmp_path / "install-runner.bash"
    script.write_text("#!/bin/sh\necho installed > result.txt\n")
    script.chmod(0o755)
    with pytest.raises(AnkaError, match="not running"):
        await anka_cli.copy_in("vm1", str(script))
    await anka_cli.start("vm1")
    await anka_cli.copy_in("vm1", str(script))
    assert (await anka_cli.run("vm1", "./install-runner.bash")).exit_code == 0
    (tmp_path / "out").mkdir()
    await anka_cli.copy_out("vm1", "/Users/anka/result.txt", str(tmp_path / "out"))
    assert (tmp_path / "out" / "result.txt").read_text() == "installed\n"
    tree = tmp_path / "tree"
    (tree / "deep").mkdir(parents=True)
    (tree / "deep" / "f").write_text("x")
    assert sim("-j", "cp", str(tree), "vm1:/tmp/").returncode != 0  # a directory needs -R / -a
    assert sim("-j", "cp", "-pRLf", str(tree), "vm1:/tmp/").returncode == 0
    assert (await anka_cli.run("vm1", "cat .root/tmp/tree/deep/f")).output == "x"
    with pytest.raises(AnkaError, match="No such file"):
        await anka_cli.copy_out("vm1", "missing.txt", str(tmp_path))


async def test_host_to_guest_mounts(
    with_template: Path, anka_cli: AnkaCLI, tmp_path: Path, sim: SimRunner
) -> None:
    shared = tmp_path / "shared"
    shared.mkdir()
    (shared / "hello.txt").write_text("from host")
    await anka_cli.clone(ANKLET, "vm1")
    await anka_cli.start("vm1", mounts=[f"{shared}:data"])
    result = await anka_cli.run("vm1", 'cat "Volumes/My Shared Files/data/hello.txt"')
    assert result.output == "from host"
    await anka_cli.mount("vm1", str(shared))
    rows = json.loads(sim("-j", "mount", "vm1").stdout)["body"]
    assert [r["guest_path"] for r in rows] == [
        "/Volumes/My Shared Files/data",
        "/Volumes/My Shared Files/shared",
    ]
    assert sim("-j", "unmount", "vm1", "data").returncode == 0
    assert (await anka_cli.run("vm1", 'ls "Volumes/My Shared Files"')).output.split() == ["shared"]
    with pytest.raises(AnkaError, match="No such directory"):
        await anka_cli.mount("vm1", str(tmp_path / "missing"))


@pytest.mark.parametrize(("version", "arch"), [("3.8.6", "arm64"), ("3.9.1", "amd64")])
async def test_mounts_need_3_9_and_apple_silicon(
    with_template: Path, anka_cli: AnkaCLI, tmp_path: Path, version: str, arch: str
) -> None:
    control.write_config(with_template, anka_version=version, arch=arch)
    await anka_cli.clone(ANKLET, "vm1")
    with pytest.raises(AnkaError, match="not supported"):
        await anka_cli.start("vm1", mounts=[str(tmp_path)])


# --- registry, pull, disk --------------------------------------------------------------------


async def test_registry_list_show_and_misses(anka_cli: AnkaCLI, sim: SimRunner) -> None:
    listed = {row["uuid"]: row for row in await anka_cli.registry_list()}
    assert listed[ANKLET]["latest"] == "6c14r" and listed[ARM_TEMPLATE]["name"] == "26.1-arm64"
    shown = await anka_cli.registry_show(ANKLET, tag="12c20r")
    assert (shown["name"], shown["cpu_cores"], shown["ram_size"]) == ("anklet", 12, 20 * GIB)
    arm = await anka_cli.registry_show(ARM_TEMPLATE)
    assert (arm["version"], arm["cpu_cores"], arm["ram_size"]) == (
        "vanilla+port-forward-22+brew-git",
        4,
        8 * GIB,
    )
    with pytest.raises(AnkaNotFound):
        await anka_cli.registry_show("no-such-template")
    with pytest.raises(AnkaNotFound) as missing_tag:
        await anka_cli.registry_show(ANKLET, tag="99c99r")
    assert missing_tag.value.code == 3 and "not found" in missing_tag.value.message
    for args in (["registry", "--list"], ["registry", "list-repos"]):
        assert json.loads(sim("-j", *args).stdout)["body"][0]["url"] == "http://anka.registry:8089"


async def test_pull_check_download_size_and_disk_accounting(anka_cli: AnkaCLI) -> None:
    before = await anka_cli.check_download_size(ANKLET, tag="2c4r")
    assert before is not None and (before.size, before.cached, before.to_download) == (22 * GIB, 0, 22 * GIB)
    assert before.available == 500 * GIB - 40 * GIB
    await anka_cli.registry_pull(ANKLET, tag="2c4r")
    assert await anka_cli.check_download_size(ANKLET, tag="2c4r") is None
    template = await anka_cli.show(ANKLET)
    assert (template.version, template.image_size) == ("2c4r", 22 * GIB)
    other = await anka_cli.check_download_size(ANKLET, tag="3c6r")
    assert other is not None and other.cached == 18 * GIB and other.available == before.available - 22 * GIB
    await anka_cli.registry_pull(ANKLET, tag="3c6r", shrink=True)
    shown = await anka_cli.show(ANKLET)
    assert (shown.version, shown.image_size, shown.cpu_cores) == ("3c6r", 24 * GIB, 3)
    await anka_cli.delete(ANKLET)
    after = await anka_cli.check_download_size(ANKLET)
    assert after is not None and after.available == before.available and after.size == 28 * GIB


def test_local_tag_checkout_and_tag_delete(with_template: Path, sim: SimRunner) -> None:
    def body(*args: str) -> Any:
        result = sim("-j", *args)
        assert result.returncode == 0, result.stdout
        return json.loads(result.stdout.splitlines()[-1])["body"]  # pulls print progress lines first

    body("registry", "pull", "--tag", "3c6r", ANKLET)  # no --shrink: both tags stay local
    assert body("show", ANKLET, "tag") == [{"tag": "3c6r"}, {"tag": "2c4r"}]
    assert body("show", ANKLET)["image_size"] == 18 * GIB + 4 * GIB + 6 * GIB
    body("registry", "pull", "-l", "-t", "2c4r", ANKLET)
    assert body("list", ANKLET)[0]["version"] == "2c4r"
    body("delete", "--yes", "-t", "3c6r", ANKLET)
    assert body("show", ANKLET, "tag") == [{"tag": "2c4r"}]
    assert body("show", ANKLET)["image_size"] == 22 * GIB
    assert json.loads(sim("-j", "registry", "pull", "-l", "-t", "3c6r", ANKLET).stdout)["code"] == 3


async def test_pull_of_a_missing_tag_is_not_found(anka_cli: AnkaCLI) -> None:
    with pytest.raises(AnkaNotFound):
        await anka_cli.registry_pull(ANKLET, tag="nope")
    with pytest.raises(AnkaNotFound):
        await anka_cli.check_download_size("no-such-template")


async def test_killed_pull_leaves_a_marker_the_next_pull_cleans(
    anka_home: Path, anka_binary: str, anka_env: dict[str, str]
) -> None:
    control.write_config(anka_home, pull_bytes_per_second=2e9)  # 22 GiB: ~12 s simulated, 0.12 s real
    cli = AnkaCLI(
        anka_binary, env={**anka_env, "ANKA_SIM_TIME_SCALE": "0.1"}, timeouts=AnkaTimeouts(pull=0.9)
    )
    with pytest.raises(AnkaTimeout):
        await cli.registry_pull(ANKLET, tag="2c4r")
    markers = list((anka_home / "img_lib").glob(".partial-*"))
    assert len(markers) == 1
    partial = json.loads(markers[0].read_text())["downloaded"]
    assert partial > 0
    fast = AnkaCLI(anka_binary, env=anka_env)
    size = await fast.check_download_size(ANKLET, tag="2c4r")
    assert size is not None and size.available == 460 * GIB - partial  # debris still takes disk
    await fast.registry_pull(ANKLET, tag="2c4r")
    assert not list((anka_home / "img_lib").glob(".partial-*"))
    assert (await fast.show(ANKLET)).version == "2c4r"


async def test_concurrent_pull_and_clone_of_the_template_being_pulled_fail_fast(
    with_template: Path, anka_cli: AnkaCLI
) -> None:
    control.write_config(with_template, latency={"pull_overhead": 50.0})  # 0.5 s real per pull
    first = asyncio.create_task(anka_cli.registry_pull(ANKLET, tag="3c6r"))
    await asyncio.sleep(0.3)
    with pytest.raises(AnkaError, match="already in progress"):
        await anka_cli.registry_pull(ARM_TEMPLATE)
    with pytest.raises(AnkaError, match="being pulled"):
        await anka_cli.clone(ANKLET, "too-early")
    await first
    await anka_cli.clone(ANKLET, "in-time")


# --- concurrency and the call log ------------------------------------------------------------


async def test_concurrent_invocations_and_call_log(
    with_template: Path, anka_home: Path, anka_cli: AnkaCLI
) -> None:
    await asyncio.gather(
        *(anka_cli.clone(ANKLET, f"vm{i}") for i in range(4)), *(anka_cli.list_vms() for _ in range(4))
    )
    names = sorted(vm.name for vm in await anka_cli.list_vms())
    assert names == ["anklet", "vm0", "vm1", "vm2", "vm3"]
    calls = control.read_calls(anka_home)
    assert len(calls) == 9 and all(c["exit"] == 0 for c in calls)
    assert sorted(c["argv"][-1] for c in calls if c["argv"][1] == "clone") == ["vm0", "vm1", "vm2", "vm3"]
    assert all(c["argv"][0] == "-j" and c["ts"] > 0 and c["duration"] >= 0 for c in calls)
    with pytest.raises(AnkaNotFound):
        await anka_cli.show("ghost")
    assert control.read_calls(anka_home)[-1]["exit"] == 1


def test_install_shim_runs_the_simulator_as_anka(anka_home: Path, tmp_path: Path) -> None:
    import subprocess

    path = install_shim(tmp_path / "bin", home=anka_home, time_scale=0.01)
    assert path.name == "anka" and os.access(path, os.X_OK)
    env = {**os.environ, "PATH": f"{path.parent}:{os.environ['PATH']}"}
    env.pop("ANKA_SIM_HOME", None)
    result = subprocess.run(["anka", "-j", "version"], capture_output=True, text=True, env=env, check=True)
    assert json.loads(result.stdout)["body"]["version"] == "3.9.1"
    assert control.read_calls(anka_home)[-1]["argv"] == ["-j", "version"]


# --- fault injection -------------------------------------------------------------------------


async def test_fault_error_with_custom_code_message_and_exit(anka_home: Path, anka_cli: AnkaCLI) -> None:
    control.add_fault(anka_home, command="version", effect="error", count=1, code=42, message="boom", exit=9)
    with pytest.raises(AnkaError) as caught:
        await anka_cli.version()
    assert (caught.value.code, caught.value.message, caught.value.exit_status) == (42, "boom", 9)
    assert await anka_cli.version()  # count consumed
    assert control.read_faults(anka_home)[0]["count"] == 0
    assert control.read_calls(anka_home)[0]["faults"] == ["error"]


async def test_fault_not_found_and_already_exists(with_template: Path, anka_cli: AnkaCLI) -> None:
    control.add_fault(with_template, command="show", effect="not_found", match="anklet", count=1)
    control.add_fault(with_template, effect="already_exists", count=1)
    with pytest.raises(AnkaNotFound):
        await anka_cli.show("anklet")
    with pytest.raises(AnkaAlreadyExists):
        await anka_cli.clone(ANKLET, "fresh-name")
    await anka_cli.clone(ANKLET, "fresh-name")


async def test_fault_hang_times_out_and_kills_the_process_group(
    anka_home: Path, anka_binary: str, anka_env: dict[str, str]
) -> None:
    control.add_fault(anka_home, command="list", effect="hang")
    cli = AnkaCLI(anka_binary, env=anka_env, timeouts=AnkaTimeouts(query=0.5))
    started = time.monotonic()
    with pytest.raises(AnkaTimeout):
        await cli.list_vms()
    assert time.monotonic() - started < 5
    [call] = control.read_calls(anka_home)
    assert call["exit"] is None
    assert _dead(call["pid"])


async def test_fault_slow_multiplies_latency(with_template: Path, anka_cli: AnkaCLI) -> None:
    control.add_fault(
        with_template, command="clone", effect="slow", factor=100, count=1
    )  # 1 s → 100 s → 1 s real
    started = time.monotonic()
    await anka_cli.clone(ANKLET, "vm1")
    assert time.monotonic() - started >= 1.0


async def test_fault_exit_makes_run_return_125(with_template: Path, anka_cli: AnkaCLI) -> None:
    await _running_vm(anka_cli)
    control.add_fault(with_template, effect="exit", status=125, match="vm1", message="anka: guest rebooted")
    result = await anka_cli.run("vm1", "echo never")
    assert result.exit_code == 125 and "never" not in result.output and "guest rebooted" in result.output


async def test_fault_vm_failed_during_start(with_template: Path, anka_cli: AnkaCLI) -> None:
    await anka_cli.clone(ANKLET, "vm1")
    control.add_fault(with_template, effect="vm_failed", count=1)
    with pytest.raises(AnkaError, match="failed to start"):
        await anka_cli.start("vm1")
    assert (await anka_cli.show("vm1")).status == "failed"
    with pytest.raises(AnkaVMFailed):
        await anka_cli.wait_ready("vm1", timeout=5, interval=0.02)
    with pytest.raises(AnkaError, match="failed state"):
        await anka_cli.start("vm1")
    await anka_cli.stop("vm1", force=True)
    await anka_cli.start("vm1")


async def test_fault_vm_failed_later(with_template: Path, anka_cli: AnkaCLI) -> None:
    await anka_cli.clone(ANKLET, "vm1")
    control.add_fault(with_template, effect="vm_failed", after=50, count=1)  # 50 s after boot: 0.5 s real
    await anka_cli.start("vm1")
    assert (await anka_cli.show("vm1")).status == "running"
    await asyncio.sleep(0.7)
    assert (await anka_cli.show("vm1")).status == "failed"


async def test_a_vm_going_failed_takes_its_running_guest_command_down(
    with_template: Path, anka_cli: AnkaCLI
) -> None:
    await anka_cli.clone(ANKLET, "vm1")
    control.add_fault(with_template, effect="vm_failed", after=50, count=1)  # 0.5 s after boot
    await anka_cli.start("vm1")
    result = await anka_cli.run("vm1", "sleep 5; echo survived", timeout=10)
    assert result.exit_code == 125 and "survived" not in result.output, result
    assert (await anka_cli.show("vm1")).status == "failed"


async def test_fault_ip_never_makes_wait_ready_time_out(with_template: Path, anka_cli: AnkaCLI) -> None:
    await anka_cli.clone(ANKLET, "vm1")
    control.add_fault(with_template, effect="ip_never", count=1)
    await anka_cli.start("vm1")
    with pytest.raises(AnkaTimeout):
        await anka_cli.wait_ready("vm1", timeout=0.8, interval=0.1)


async def test_fault_max_instances_refuses_below_the_limit(with_template: Path, anka_cli: AnkaCLI) -> None:
    await anka_cli.clone(ANKLET, "vm1")
    control.add_fault(with_template, effect="max_instances", count=1)
    with pytest.raises(AnkaError, match="maximum number of running instances exceeded"):
        await anka_cli.start("vm1")
    await anka_cli.start("vm1")


@pytest.mark.parametrize(
    ("mode", "parses"),
    [
        ("not_json", False),
        ("empty", False),
        ("truncated", False),
        ("trailing_newline", True),
        ("extra_json", True),
        ("stderr_after", True),
    ],
)
async def test_fault_malformed_output(anka_home: Path, anka_cli: AnkaCLI, mode: str, parses: bool) -> None:
    control.add_fault(anka_home, command="version", effect="malformed", mode=mode, count=1)
    if parses:
        assert (await anka_cli.version())["version"] == "3.9.1"
    else:
        with pytest.raises(AnkaOutputError):
            await anka_cli.version()


async def test_fault_license_invalid(anka_home: Path, anka_cli: AnkaCLI) -> None:
    control.add_fault(anka_home, effect="license_invalid", status="expired", count=2)
    assert (await anka_cli.license())["status"] == "expired"
    with pytest.raises(AnkaError, match="license is not valid"):
        await anka_cli.list_vms()
    assert await anka_cli.list_vms() == []


async def test_fault_disk_full(anka_home: Path, anka_cli: AnkaCLI) -> None:
    control.add_fault(anka_home, effect="disk_full", available=GIB, count=2)
    size = await anka_cli.check_download_size(ANKLET)
    assert size is not None and size.available == GIB
    with pytest.raises(AnkaError, match="not enough free disk space") as caught:
        await anka_cli.registry_pull(ANKLET)
    assert not isinstance(caught.value, AnkaNotFound)  # a full disk must not look like a missing tag
    unfaulted = await anka_cli.check_download_size(ANKLET)
    assert unfaulted is not None and unfaulted.available > 400 * GIB


async def test_fault_registry_down(anka_home: Path, anka_cli: AnkaCLI) -> None:
    control.add_fault(anka_home, effect="registry_down", count=3)
    for call in (
        anka_cli.registry_list(),
        anka_cli.registry_pull(ANKLET),
        anka_cli.check_download_size(ANKLET),
    ):
        with pytest.raises(AnkaError, match="connection refused") as caught:
            await call
        assert not isinstance(caught.value, AnkaNotFound)
    assert await anka_cli.list_vms() == []  # local commands are unaffected
    assert await anka_cli.registry_list()


async def test_faults_from_the_environment_count_across_processes(
    anka_binary: str, anka_env: dict[str, str]
) -> None:
    rules = [
        {"command": "version", "effect": "error", "count": 2},
        {"command": "list", "effect": "error", "probability": 0},
    ]
    cli = AnkaCLI(anka_binary, env={**anka_env, "ANKA_SIM_FAULTS": json.dumps(rules)})
    for _ in range(2):
        with pytest.raises(AnkaError):
            await cli.version()
    assert await cli.version()
    assert await cli.list_vms() == []


async def test_delete_retries_without_json_after_a_json_failure(
    with_template: Path, anka_home: Path, anka_cli: AnkaCLI
) -> None:
    await anka_cli.clone(ANKLET, "vm1")
    control.add_fault(anka_home, command="delete", effect="error", machine_readable=True, count=1)
    await anka_cli.delete("vm1")
    assert [c["argv"][:2] for c in control.read_calls(anka_home)[-2:]] == [
        ["-j", "delete"],
        ["delete", "--yes"],
    ]
    with pytest.raises(AnkaNotFound):
        await anka_cli.show("vm1")


async def test_stop_survives_cancellation_of_its_caller(with_template: Path, anka_cli: AnkaCLI) -> None:
    await _running_vm(anka_cli)
    task = asyncio.create_task(anka_cli.stop("vm1"))  # graceful stop: 8 s simulated, 0.08 s real
    await asyncio.sleep(0.03)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(100):
        if (await anka_cli.show("vm1")).status == "stopped":
            break
        await asyncio.sleep(0.05)
    assert (await anka_cli.show("vm1")).status == "stopped"
