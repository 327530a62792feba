"""Settings read from a real file: flags > environment > Go names > file > defaults."""

from __future__ import annotations

from pathlib import Path

import pytest

from anklet import config_cli
from anklet import config_file as cf
from anklet.config import AgentSettings, ControllerSettings
from plugins.handlers.github.handler import GitHubHandlerSettings
from plugins.handlers.github.settings import GitHubSettings


@pytest.fixture
def config(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty config file, active for this test (ANKLET_CONFIG), and a clean environment."""
    for name in (
        "ANKLET_REDIS_URL",
        "REDIS_URL",
        "LOG_LEVEL",
        "ANKLET_AGENT_VM_SLOTS",
        "ANKLET_GITHUB_TOKEN",
    ):
        monkeypatch.delenv(name, raising=False)
    path = tmp_path / "anklet.yaml"
    path.write_text("")
    monkeypatch.setenv("ANKLET_CONFIG", str(path))
    return path


def test_file_beats_defaults_env_beats_file_flags_beat_env(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert AgentSettings().vm_slots is None
    config.write_text("agent:\n  vm_slots: 1\n")
    assert AgentSettings().vm_slots == 1
    monkeypatch.setenv("ANKLET_AGENT_VM_SLOTS", "2")
    assert AgentSettings().vm_slots == 2
    assert AgentSettings(vm_slots=3).vm_slots == 3


def test_redis_comes_from_its_own_section_for_every_process(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text("redis:\n  url: redis://from-file:6379/1\n  connect_timeout_seconds: 7\n")
    for cls in (AgentSettings, ControllerSettings):
        settings = cls()
        assert settings.redis_url.get_secret_value() == "redis://from-file:6379/1"
        assert settings.redis_connect_timeout_seconds == 7
    monkeypatch.setenv("ANKLET_REDIS_URL", "redis://from-env:6379/0")
    assert AgentSettings().redis_url.get_secret_value() == "redis://from-env:6379/0"
    monkeypatch.delenv("ANKLET_REDIS_URL")
    monkeypatch.setenv("REDIS_URL", "redis://someone-elses:6379/0")
    assert AgentSettings().redis_url.get_secret_value() == "redis://from-file:6379/1", "REDIS_URL is not ours"


def test_go_names_sit_between_our_environment_and_the_file(
    config: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config.write_text("plugins:\n  github:\n    token: from-file\n")
    assert _token() == "from-file"
    monkeypatch.setenv("ANKLET_GLOBAL_TOKEN", "from-go-env")
    assert _token() == "from-go-env"
    monkeypatch.setenv("ANKLET_GITHUB_TOKEN", "from-our-env")
    assert _token() == "from-our-env"


def _token() -> str:
    token = GitHubSettings().token
    assert token is not None
    return token.get_secret_value()


def test_secret_files_and_relative_paths_are_read_from_the_files_directory(config: Path) -> None:
    (config.parent / "secrets").mkdir()
    (config.parent / "secrets" / "redis-url").write_text("redis://:pw@r:6379/0\n")
    config.write_text("redis:\n  url_file: secrets/redis-url\nagent:\n  log_file: logs/agent.log\n")
    settings = AgentSettings()
    assert settings.redis_url.get_secret_value() == "redis://:pw@r:6379/0", "trailing newline dropped"
    assert settings.log_file == config.parent / "logs" / "agent.log"


def test_plugin_settings_built_lazily_read_the_active_file(config: Path) -> None:
    config.write_text("plugins:\n  github:\n    owner: acme\n    runner_scope: org\n")
    assert GitHubSettings().owner == "acme"
    assert GitHubHandlerSettings().runner_scope == "org"


def test_load_names_every_problem_of_the_file_and_the_values(config: Path) -> None:
    config.write_text(
        "redis:\n  url_file: missing-secret\nagent:\n  vm_slots: -1\n  nmae: x\nplugins:\n  nosuch: {}\n"
    )
    with pytest.raises(cf.ConfigError) as caught:
        config_cli.load("agent", config)
    assert caught.value.problems == [
        "agent.nmae: unknown key (did you mean name?)",
        "plugins.nosuch: unknown plugin (installed: github, script)",
        f"redis.url_file: cannot read {config.parent / 'missing-secret'}: No such file or directory",
        "agent.vm_slots: Input should be greater than or equal to 0",
    ]


def test_load_applies_flags_and_returns_each_class(config: Path) -> None:
    config.write_text("agent:\n  name: from-file\nplugins:\n  github:\n    owner: acme\n")
    effective = config_cli.load("agent", config, {"AgentSettings": {"name": "from-flag"}})
    assert effective.get(AgentSettings).name == "from-flag"
    assert [type(i) for i in effective.instances] == [AgentSettings], "the agent reads no plugin settings"
    controller = config_cli.load("controller", config)
    assert {type(i) for i in controller.instances} == {
        ControllerSettings,
        GitHubSettings,
        GitHubHandlerSettings,
    }


def test_the_receiver_needs_its_webhook_secret(config: Path) -> None:
    config.write_text("plugins:\n  github:\n    owner: acme\n")
    with pytest.raises(cf.ConfigError, match=r"plugins\.github\.webhook_secret: required by the receiver"):
        config_cli.load("receiver", config)
    config.write_text("plugins:\n  github:\n    owner: acme\n    webhook_secret: s3cret-s3cret\n")
    config_cli.load("receiver", config)
