"""The sweep of the agent's runs directory: which leftover files go, and which must stay."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from host_agent.runsweep import RUN_FILE_GRACE_SECONDS, RunFile, run_file_vm, stale_run_files
from host_agent.supervise import lock_path, log_path, record_path

NOW = 1_800_000_000.0
OLD = NOW - RUN_FILE_GRACE_SECONDS - 1
GONE = "anklet-vm-gone-1"


def files_of(vm: str, mtime: float) -> list[RunFile]:
    return [
        RunFile(f"{vm}.json", vm, mtime),
        RunFile(f"{vm}.lock", vm, mtime),
        RunFile(f"{vm}.log", vm, mtime),
        RunFile(f".{vm}.json.4242.tmp", vm, mtime),
    ]


def sweep(files: list[RunFile], *, live: set[str] = set(), held: set[str] = set()) -> list[str]:  # noqa: B006
    return stale_run_files(files, live=live, held=held, now=NOW)


def test_every_file_of_a_gone_vm_goes_once_old_enough() -> None:
    assert sweep(files_of(GONE, OLD)) == sorted(f.name for f in files_of(GONE, OLD))


def test_files_of_a_live_vm_stay_however_old() -> None:
    """Live: the VM exists, is desired, or a task drives it (the agent passes all three)."""
    assert sweep(files_of(GONE, OLD), live={GONE}) == []


def test_files_whose_lock_a_supervisor_holds_stay() -> None:
    assert sweep(files_of(GONE, OLD), held={GONE}) == []


def test_files_younger_than_the_grace_stay() -> None:
    young = NOW - RUN_FILE_GRACE_SECONDS + 1
    assert sweep(files_of(GONE, young)) == []


def test_the_grace_is_inclusive_at_its_end() -> None:
    assert len(sweep(files_of(GONE, NOW - RUN_FILE_GRACE_SECONDS))) == 4


def test_a_vms_files_go_together_judged_by_the_newest() -> None:
    """A fresh record beside an old lock and log: none goes, so the record never loses them."""
    files = [*files_of(GONE, OLD)[1:], RunFile(f"{GONE}.json", GONE, NOW - 60)]
    assert sweep(files) == []


def test_an_mtime_in_the_future_counts_as_young() -> None:
    assert sweep(files_of(GONE, NOW + 7200)) == []


def test_each_vm_is_judged_on_its_own() -> None:
    files = [
        *files_of(GONE, OLD),
        *files_of("anklet-vm-live-1", OLD),
        *files_of("anklet-vm-held-1", OLD),
        *files_of("anklet-vm-young-1", NOW - 5),
    ]
    got = sweep(files, live={"anklet-vm-live-1"}, held={"anklet-vm-held-1"})
    assert got == sorted(f.name for f in files_of(GONE, OLD))


def test_a_longer_grace_keeps_more() -> None:
    files = files_of(GONE, NOW - 120)
    assert stale_run_files(files, live=(), held=(), now=NOW, grace=60) == sorted(f.name for f in files)
    assert stale_run_files(files, live=(), held=(), now=NOW, grace=600) == []


def test_the_grace_is_an_hour() -> None:
    assert RUN_FILE_GRACE_SECONDS == 3600.0


@pytest.mark.parametrize("make", [record_path, lock_path, log_path])
def test_the_supervisors_file_names_parse_back_to_their_vm(make: Callable[[Path, str], Path]) -> None:
    for vm in ("anklet-vm-abc-1", "a.b_c-D"):
        assert run_file_vm(make(Path("/runs"), vm).name) == vm


def test_the_supervisors_temp_file_parses_back_to_its_vm() -> None:
    # supervise.write_record writes `.{record name}.{pid}.tmp`, then renames it
    assert run_file_vm(f".{record_path(Path('/runs'), GONE).name}.123.tmp") == GONE


@pytest.mark.parametrize(
    "name",
    [
        "notes.txt",
        "pull.lock.bak",
        ".json",
        "..json",
        ".hidden.json.tmp",
        ".x.json.12.tmp.bak",
        "a b.json",
        "",
    ],
)
def test_other_files_are_not_run_files(name: str) -> None:
    assert run_file_vm(name) is None
