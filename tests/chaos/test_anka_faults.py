"""Every failure of the simulated Anka (anka-cli.md §6.2), each aimed at one job.

The jobs are created while every host is cordoned, so their uids (and thus their VM names) are
known before any host acts and each fault fires for its own job only. Faults of an attempt name
it (``<uid>-a1``), so the retry runs clean; faults of a pull name the template. Hung commands
never return: the agent's own timeouts must kill them and recover.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from anklet.dev.anka_sim import control
from tests.chaos.harness import OTHER_TEMPLATE, Chaos

TERMINAL = ("Succeeded", "Failed", "Cancelled")


@dataclass(frozen=True)
class Case:
    """One job, the faults aimed at it, and how it must end."""

    name: str
    fault: str  # for the report
    rules: list[dict[str, Any]]  # ``{a1}`` in "match" becomes the job's first attempt's VM name
    phase: str = "Succeeded"
    reason: str | None = None
    attempts: int | None = None  # exactly, for jobs that must not be retried
    retried: bool = False  # at least one retry: the fault fired and the job recovered
    spec: dict[str, Any] = field(default_factory=dict)


def first_attempt(**rule: Any) -> dict[str, Any]:
    return {"count": 1, "match": "{a1}", **rule}


PROVISIONING = [
    Case(
        "clone-clash",
        "clone: name already exists (code 18)",
        [first_attempt(command="clone", effect="already_exists")],
    ),
    Case(
        "start-no-child",
        "start: failed to start: No child processes",
        [first_attempt(command="start", effect="error", message="failed to start: No child processes")],
        retried=True,
    ),
    Case(
        "start-vm-failed",
        "start: VM goes failed (stuck until deleted)",
        [first_attempt(command="start", effect="vm_failed")],
        retried=True,
    ),
    Case(
        "ip-never",
        "start: the IP never appears (ready timeout)",
        [first_attempt(command="start", effect="ip_never")],
        retried=True,
    ),
    Case(
        "max-instances",
        "start: maximum number of running instances",
        [first_attempt(command="start", effect="max_instances")],
        retried=True,
    ),
    Case(
        "start-hangs",
        "start: hangs forever (agent timeout kills it)",
        [first_attempt(command="start", effect="hang")],
        retried=True,
    ),
    Case(
        "show-garbled",
        "show: non-JSON output",
        [first_attempt(command="show", effect="malformed", mode="not_json")],
        retried=True,
    ),
    Case(
        "licence-lapses",
        "start: licence not valid",
        [first_attempt(command="start", effect="license_invalid")],
        retried=True,
    ),
    Case(
        "pull-faults",
        "pull: disk full, then registry down, then slow (per host)",
        [
            {"command": "pull", "effect": "disk_full", "count": 1},
            {"command": "registry pull", "effect": "registry_down", "count": 1},
            {"command": "registry pull", "effect": "slow", "factor": 3},
        ],
        spec={"template": OTHER_TEMPLATE, "backoffLimit": 6},
    ),
    Case(
        "no-such-tag",
        "tag not in the registry",
        [],
        phase="Failed",
        reason="TemplateNotFound",
        attempts=1,
        spec={"tag": "no-such-tag"},
    ),
]

RUN_AND_DELETE = [
    Case(
        "exit-3",
        "run: guest command exits 3",
        [first_attempt(command="run", effect="exit", status=3, match="{a1} bash")],
        phase="Failed",
        reason="ExitCode",
        attempts=1,
    ),
    Case(
        "guest-lost",
        "run: exit 125 (guest link lost)",
        [first_attempt(command="run", effect="exit", status=125, match="{a1} bash")],
        retried=True,
    ),
    Case(
        "comm-timeout",
        "run: communication timeout (exit 1; indistinguishable from the workload's own)",
        [
            first_attempt(
                command="run", effect="exit", status=1, message="communication timeout", match="{a1} bash"
            )
        ],
        phase="Failed",
        reason="ExitCode",
        attempts=1,
    ),
    Case(
        "workload-hangs",
        "run: hangs (killed at timeoutSeconds)",
        [first_attempt(command="run", effect="hang", match="{a1} bash")],
        phase="Failed",
        reason="Timeout",
        attempts=1,
        spec={"timeoutSeconds": 3},
    ),
    Case(
        "probe-hangs",
        "run: the readiness probe hangs",
        [first_attempt(command="run", effect="hang", match="{a1} true")],
        retried=True,
    ),
    Case("slow-run", "run: 20× slower", [first_attempt(command="run", effect="slow", factor=20)], attempts=1),
    Case(
        "vm-fails-mid-run",
        "VM goes failed while the workload runs",
        [first_attempt(command="start", effect="vm_failed", after=150)],
        retried=True,
        spec={"script": "sleep 6; echo done"},
    ),
    Case(
        "delete-json-fails",
        "delete: -j fails, plain text works",
        [first_attempt(command="delete", effect="error", machine_readable=True)],
        attempts=1,
    ),
    Case(
        "delete-hangs",
        "delete: hangs once (agent timeout kills it)",
        [first_attempt(command="delete", effect="hang")],
        attempts=1,
    ),
    Case(
        "delete-keeps-failing",
        "delete: fails 8 times in a row",
        [first_attempt(command="delete", effect="error", count=8)],
        attempts=1,
    ),
    Case(
        "mount-fails",
        "mount: fails once",
        [first_attempt(command="mount", effect="error", message="mount failed")],
        retried=True,
    ),
]


async def run_cases(chaos: Chaos, cases: list[Case], tmp_path: Path) -> None:
    async with chaos.held():
        uids = {}
        for case in cases:
            spec = dict(case.spec)
            if case.name == "mount-fails":
                (tmp_path / "shared").mkdir(exist_ok=True)
                spec["mounts"] = [f"{tmp_path / 'shared'}:shared"]
            script = spec.pop("script", "echo ok")
            created = await chaos.create(case.name, script, **spec)
            uids[case.name] = created["metadata"]["uid"]
        for case in cases:
            for rule in case.rules:
                aimed = dict(rule)
                if "match" in aimed:
                    aimed["match"] = aimed["match"].replace("{a1}", f"anklet-vm-{uids[case.name]}-a1")
                elif case.spec.get("template") == OTHER_TEMPLATE:
                    aimed["match"] = OTHER_TEMPLATE
                chaos.fault_everywhere(**aimed)
            chaos.note(f"{case.name}: {case.fault}")
    for case in cases:
        status = await chaos.wait_phase(case.name, *TERMINAL, timeout=90)
        got = (status["phase"], status.get("reason"), status.get("attempts"))
        assert status["phase"] == case.phase, (case.name, status)
        assert case.reason is None or status.get("reason") == case.reason, (case.name, got)
        assert case.attempts is None or status.get("attempts") == case.attempts, (case.name, got)
        assert not case.retried or status.get("attempts", 0) >= 2, (case.name, got)


@pytest.mark.timeout(150)
async def test_anka_provisioning_faults(chaos: Chaos, tmp_path: Path) -> None:
    control.add_fault(chaos.home("mac-1"), command="list", effect="malformed", mode="empty", count=2)
    chaos.note("host-wide: `anka list` prints nothing twice")
    await run_cases(chaos, PROVISIONING, tmp_path)
    await chaos.verdict()


@pytest.mark.timeout(150)
async def test_anka_run_and_delete_faults(chaos: Chaos, tmp_path: Path) -> None:
    await run_cases(chaos, RUN_AND_DELETE, tmp_path)
    await chaos.verdict()
