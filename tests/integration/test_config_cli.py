"""`anklet config check` as a user runs it: the example file, masking, one line per problem."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
EXAMPLE = ROOT / "examples" / "config" / "anklet.yaml"


def check(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("ANKLET_", "LOG_LEVEL"))}
    return subprocess.run(
        [sys.executable, "-m", "anklet.cli", "config", "check", *args],
        capture_output=True,
        text=True,
        env={**clean, **(env or {})},
        timeout=60,
        check=False,
    )


@pytest.mark.parametrize("component", ["all", "controller", "agent", "receiver"])
def test_the_example_file_is_valid_for_every_component(component: str) -> None:
    done = check(str(EXAMPLE), "--component", component)
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""
    effective = yaml.safe_load(done.stdout)
    sections = {"all": {"redis", "controller", "agent", "receiver", "plugins"}}
    expected = sections.get(
        component,
        {
            "controller": {"redis", "controller", "plugins"},
            "agent": {"redis", "agent"},
            "receiver": {"receiver", "plugins"},
        }.get(component),
    )
    assert set(effective) == expected


def test_the_effective_config_masks_secrets_and_shows_defaults() -> None:
    done = check(str(EXAMPLE))
    assert done.returncode == 0, done.stderr
    effective = yaml.safe_load(done.stdout)
    assert effective["redis"]["url"] == "**********"
    assert effective["plugins"]["github"]["token"] == "**********"
    assert effective["plugins"]["github"]["webhook_secret"] == "**********"
    for secret in ("change-me", "replace-with-a-github-token", "replace-with-the-webhook-secret"):
        assert secret not in done.stdout
    assert effective["agent"]["name"] == "mac-mini-01"
    assert effective["agent"]["resync_seconds"] == 10.0, "a default the file does not set"
    assert effective["agent"]["log_file"] == str(Path("~/Library/Logs/anklet/agent.log").expanduser())


def test_the_environment_overrides_the_file_in_the_effective_config() -> None:
    done = check(
        str(EXAMPLE), "--component", "agent", env={"ANKLET_AGENT_VM_SLOTS": "1", "LOG_LEVEL": "DEBUG"}
    )
    assert done.returncode == 0, done.stderr
    agent = yaml.safe_load(done.stdout)["agent"]
    assert agent["vm_slots"] == 1
    assert agent["log_level"] == "DEBUG", "the Go LOG_LEVEL is environment too: it beats the file"


def test_problems_are_one_line_each_with_the_key_path(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text(
        "redis:\n  url: redis://:hunter2@r:6379/0\n"
        "agent:\n  vm_slots: -1\n  labels: [a]\n  vm_slotz: 2\n"
        "plugins:\n  github:\n    webhook_secret_file: ./nope\n"
    )
    done = check(str(bad))
    assert done.returncode == 2
    assert done.stdout == ""
    assert done.stderr.splitlines() == [
        "agent.vm_slotz: unknown key (did you mean vm_slots?)",
        f"plugins.github.webhook_secret_file: cannot read {tmp_path / 'nope'}: No such file or directory",
        "agent.vm_slots: Input should be greater than or equal to 0",
        "agent.labels: Input should be a valid dictionary",
    ]
    assert "hunter2" not in done.stderr


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        (None, "configuration file {path}: not found"),
        ("agent: [1\n", "configuration file {path}: invalid YAML at line 2, column 1:"),
        ("- a\n", "configuration file {path}: must be a mapping of sections"),
    ],
)
def test_a_bad_file_is_one_clear_line(tmp_path: Path, content: str | None, expected: str) -> None:
    path = tmp_path / "c.yaml"
    if content is not None:
        path.write_text(content)
    done = check(str(path))
    assert done.returncode == 2
    assert "Traceback" not in done.stderr
    (line,) = done.stderr.splitlines()
    assert line.startswith(expected.format(path=path))


def test_the_file_defaults_to_anklet_config(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("agent:\n  name: from-env-file\n")
    done = check("--component", "agent", env={"ANKLET_CONFIG": str(path)})
    assert done.returncode == 0, done.stderr
    assert yaml.safe_load(done.stdout)["agent"]["name"] == "from-env-file"
    assert check().returncode == 2
