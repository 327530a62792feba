"""The launchd job definition and the launchctl command lines, as plain data."""

from __future__ import annotations

import plistlib
from pathlib import Path

import yaml

from anklet import launchd

HOME = Path("/Users/ci")


def test_layout_puts_files_where_macos_expects_them() -> None:
    layout = launchd.Layout(HOME, "dev.anklet.agent")
    assert layout.plist == HOME / "Library/LaunchAgents/dev.anklet.agent.plist"
    assert layout.config == HOME / ".config/anklet/agent.yaml"
    assert layout.log_dir == HOME / "Library/Logs/anklet"
    assert {layout.log_file.parent, layout.stdout.parent, layout.stderr.parent} == {layout.log_dir}


def test_program_arguments_run_the_agent_with_the_installed_config() -> None:
    config = HOME / ".config/anklet/agent.yaml"
    assert launchd.program_arguments(["/opt/venv/bin/anklet"], config, None) == [
        "/opt/venv/bin/anklet", "agent", "run", "--config", str(config),
    ]  # fmt: skip
    with_log = launchd.program_arguments(["/opt/venv/bin/anklet"], config, HOME / "Library/Logs/anklet/a.log")
    assert with_log[-2:] == ["--log-file", str(HOME / "Library/Logs/anklet/a.log")]


def test_the_plist_restarts_on_crash_not_after_a_clean_stop() -> None:
    layout = launchd.Layout(HOME, "dev.anklet.agent")
    argv = ["/opt/venv/bin/anklet", "agent", "run", "--config", str(layout.config)]
    definition = launchd.plist(layout, argv, shutdown_grace_seconds=300)
    assert definition["Label"] == "dev.anklet.agent"
    assert definition["ProgramArguments"] == argv
    assert definition["RunAtLoad"] is True
    assert definition["KeepAlive"] == {"SuccessfulExit": False}
    assert definition["ThrottleInterval"] >= 10, "a crash loop must stay slow"
    assert definition["ProcessType"] == "Standard", "Background throttles I/O; Interactive is for UIs"
    assert definition["ExitTimeOut"] > 300, "the drain gets its whole grace before SIGKILL"
    assert definition["StandardOutPath"] == str(layout.stdout)
    assert definition["StandardErrorPath"] == str(layout.stderr)
    path = definition["EnvironmentVariables"]["PATH"].split(":")
    assert "/usr/local/bin" in path and "/opt/homebrew/bin" in path, "where anka is installed"


def test_the_plist_is_valid_xml_plist() -> None:
    layout = launchd.Layout(HOME)
    definition = launchd.plist(layout, ["/a/anklet", "agent", "run"], shutdown_grace_seconds=30)
    data = launchd.plist_bytes(definition)
    assert data.startswith(b"<?xml")
    assert plistlib.loads(data) == definition


def test_load_boots_out_a_loaded_job_first() -> None:
    plist = HOME / "Library/LaunchAgents/x.plist"
    assert launchd.load_commands(501, "x", plist, loaded=False) == [
        ["launchctl", "bootstrap", "gui/501", str(plist)]
    ]
    assert launchd.load_commands(501, "x", plist, loaded=True) == [
        ["launchctl", "bootout", "gui/501/x"],
        ["launchctl", "bootstrap", "gui/501", str(plist)],
    ]
    assert launchd.print_command(501, "x") == ["launchctl", "print", "gui/501/x"]


def test_the_anklet_program_is_the_console_script_next_to_python(tmp_path: Path) -> None:
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "anklet").write_text("#!/bin/sh\n")
    python = str(bin_dir / "python")
    assert launchd.anklet_program(python, lambda _: None) == [str(bin_dir / "anklet")]
    (bin_dir / "anklet").unlink()
    assert launchd.anklet_program(python, lambda _: "/usr/local/bin/anklet") == ["/usr/local/bin/anklet"]
    assert launchd.anklet_program(python, lambda _: None) == [python, "-m", "anklet.cli"]


def test_the_starter_config_survives_yaml_special_characters() -> None:
    url = "redis://anklet:p#ss: w@r:6379/0"
    document = yaml.safe_load(launchd.starter_config(url, "mac-1"))
    assert document == {"redis": {"url": url}, "agent": {"name": "mac-1"}}
    assert yaml.safe_load(launchd.starter_config(url))["agent"] == {}
