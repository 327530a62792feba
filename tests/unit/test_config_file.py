"""The configuration file's pure parts: which file, which keys, Go names, problems, masking."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import SecretStr, ValidationError

from anklet import config_file as cf
from anklet.config import AgentSettings, ControllerSettings, RedisSettings
from plugins.handlers.github.handler import GitHubHandlerSettings
from plugins.handlers.github.settings import GitHubSettings
from plugins.receivers.github.config import ReceiverSettings

HOME = Path("/home/ci")


@pytest.fixture(autouse=True)
def _no_file_no_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Settings built here see no config file and none of the variables these tests set."""
    for name in ("ANKLET_CONFIG", "ANKLET_CONFIG_FILE_NAME", "LOG_LEVEL", "ANKLET_REDIS_URL"):
        monkeypatch.delenv(name, raising=False)


def schema() -> dict[str, set[str]]:
    return {
        "redis": set(cf.section_keys(RedisSettings, "redis")),
        "agent": set(cf.section_keys(AgentSettings, "agent")),
        "controller": set(cf.section_keys(ControllerSettings, "controller")),
        "receiver": set(cf.section_keys(ReceiverSettings, "receiver")),
        "plugins.github": set(cf.section_keys(GitHubSettings, "plugins.github"))
        | set(cf.section_keys(GitHubHandlerSettings, "plugins.github")),
    }


PLUGINS = ("github", "script")

# ----- which file ---------------------------------------------------------------------------------


def test_the_config_env_wins_over_the_go_file_name() -> None:
    env = {"ANKLET_CONFIG": "~/x.yaml", "ANKLET_CONFIG_FILE_NAME": "go.yml"}
    assert cf.config_path(env, HOME) == Path("~/x.yaml").expanduser()
    assert cf.config_path({"ANKLET_CONFIG_FILE_NAME": "go.yml"}, HOME) == HOME / ".config/anklet/go.yml"
    assert cf.config_path({"ANKLET_CONFIG": " "}, HOME) is None


# ----- parsing ------------------------------------------------------------------------------------


def test_bad_yaml_names_the_line() -> None:
    with pytest.raises(cf.ConfigError) as caught:
        cf.parse_document("agent:\n  name: a\n bad: [\n", Path("/f.yaml"))
    (problem,) = caught.value.problems
    assert problem.startswith("configuration file /f.yaml: invalid YAML at line ")


def test_a_document_must_be_a_mapping_and_empty_is_fine() -> None:
    with pytest.raises(cf.ConfigError, match="must be a mapping of sections"):
        cf.parse_document("- redis\n", Path("/f.yaml"))
    assert cf.parse_document("# nothing\n", Path("/f.yaml")) == {}


# ----- keys ---------------------------------------------------------------------------------------


def test_the_redis_section_maps_to_the_flat_redis_fields() -> None:
    keys = cf.section_keys(AgentSettings, "redis")
    assert keys["url"] == cf.Key("redis_url")
    assert keys["url_file"] == cf.Key("redis_url", secret_file=True)
    assert keys["connect_timeout_seconds"].field == "redis_connect_timeout_seconds"
    agent_keys = cf.section_keys(AgentSettings, "agent")
    assert "redis_url" not in agent_keys and "url" not in agent_keys, "Redis lives in its own section"


def test_secret_file_keys_are_only_next_to_secrets() -> None:
    assert cf.secret_file_keys(AgentSettings, "redis") == {"url_file"}
    assert "log_file" not in cf.secret_file_keys(AgentSettings, "agent"), "an output file, not a secret"
    github = cf.secret_file_keys(GitHubSettings, "plugins.github")
    assert github == {"token_file", "webhook_secret_file", "app_private_key_file"}


def test_a_valid_document_has_no_problems() -> None:
    document = {
        "redis": {"url": "redis://r:6379/0"},
        "agent": {"vm_slots": 2, "log_file": "agent.log"},
        "plugins": {"github": {"owner": "acme", "runner_scope": "org"}, "script": None},
    }
    assert cf.check_keys(document, schema(), PLUGINS) == []


def test_unknown_keys_sections_and_plugins_are_named_with_a_suggestion() -> None:
    document = {
        "agent": {"vm_slotz": 3},
        "redis": {"url": "redis://r/0", "url_file": "/run/url"},
        "plugins": {"gitlab": {}, "github": {"tokn": "x"}, "script": {"run": "x"}},
        "controler": {},
        "global_token": "t",
    }
    assert cf.check_keys(document, schema(), PLUGINS) == [
        "agent.vm_slotz: unknown key (did you mean vm_slots?)",
        "redis.url_file: set url or url_file, not both",
        "plugins.gitlab: unknown plugin (did you mean github?) (installed: github, script)",
        "plugins.github.tokn: unknown key (did you mean token?)",
        "plugins.script.run: unknown key (this section takes no settings)",
        "controler: unknown section (did you mean controller?); expected redis, controller, agent, receiver, "
        "plugins",
        "global_token: unknown section (a Go Anklet key: use plugins.github.token); expected redis, "
        "controller, agent, receiver, plugins",
    ]


def test_misshapen_sections_are_problems() -> None:
    document: dict[str, Any] = {"agent": ["name"], "plugins": [{"name": "h1", "plugin": "github"}]}
    problems = cf.check_keys(document, schema(), PLUGINS)
    assert problems == [
        "agent: must be a mapping of key → value, not a list",
        "plugins: must be a mapping of plugin name → settings, not a list "
        "(the Go version's list of plugins is not read)",
    ]


# ----- values -------------------------------------------------------------------------------------


def test_section_values_by_field_with_secret_files_and_relative_paths() -> None:
    document = {
        "redis": {"url_file": "secrets/redis-url", "connect_timeout_seconds": 5},
        "agent": {"name": "mac-9", "log_file": "logs/agent.log", "state_dir": "/var/anklet"},
        "controller": {"resync_seconds": 1},
    }
    read: list[Path] = []

    def reader(path: Path) -> str:
        read.append(path)
        return "redis://:pw@r:6379/0"

    values = cf.section_values(document, AgentSettings, Path("/etc/anklet"), reader)
    assert values == {
        "redis_url": "redis://:pw@r:6379/0",
        "redis_connect_timeout_seconds": 5,
        "name": "mac-9",
        "log_file": Path("/etc/anklet/logs/agent.log"),
        "state_dir": Path("/var/anklet"),
    }
    assert read == [Path("/etc/anklet/secrets/redis-url")]


def test_an_unreadable_secret_file_names_its_key() -> None:
    def reader(path: Path) -> str:
        raise FileNotFoundError(2, "No such file or directory", str(path))

    with pytest.raises(cf.ConfigError) as caught:
        cf.section_values({"redis": {"url_file": "/nope"}}, AgentSettings, Path("/etc"), reader)
    assert caught.value.problems == ["redis.url_file: cannot read /nope: No such file or directory"]


# ----- the Go version's environment names ---------------------------------------------------------


def test_go_database_variables_make_a_redis_url() -> None:
    env = {
        "ANKLET_GLOBAL_DATABASE_URL": "redis.internal",
        "ANKLET_GLOBAL_DATABASE_PORT": "6380",
        "ANKLET_GLOBAL_DATABASE_USER": "anklet",
        "ANKLET_GLOBAL_DATABASE_PASSWORD": "p@ss:w/rd",
        "ANKLET_GLOBAL_DATABASE_DATABASE": "2",
    }
    assert cf.go_redis_url(env) == "redis://anklet:p%40ss%3Aw%2Frd@redis.internal:6380/2"
    assert cf.go_redis_url({"ANKLET_GLOBAL_DATABASE_URL": "localhost"}) == "redis://localhost:6379/0"
    assert cf.go_redis_url({"ANKLET_GLOBAL_DATABASE_URL": "rediss://h:1/0"}) == "rediss://h:1/0"
    assert cf.go_redis_url({}) is None
    assert cf.go_env_values(env, AgentSettings)["redis_url"].startswith("redis://anklet:")
    assert cf.go_env_values(env, ReceiverSettings) == {}, "the receiver has no Redis"


def test_go_globals_reach_the_settings_that_read_them() -> None:
    env = {
        "LOG_LEVEL": "debug",
        "ANKLET_GLOBAL_SKIP_CPU_AND_MEMORY_RESOURCE_CHECKS": "true",
        "ANKLET_GLOBAL_HOST_TO_GUEST_FOLDER_MOUNTS": " /a:x, ,/b ",
        "ANKLET_GLOBAL_TEMPLATE_DISK_BUFFER": "15",
        "ANKLET_GLOBAL_TOKEN": "ghp_x",
        "ANKLET_GLOBAL_RECEIVER_SECRET": "",
    }
    assert cf.go_env_values(env, AgentSettings) == {
        "log_level": "debug",
        "overcommit": True,
        "mounts": ["/a:x", "/b"],
        "template_disk_buffer_percent": "15",
    }
    assert cf.go_env_values(env, ControllerSettings) == {"log_level": "debug"}
    assert cf.go_env_values(env, GitHubSettings) == {"token": "ghp_x"}, "an empty variable sets nothing"
    assert cf.go_env_values({"ANKLET_GLOBAL_SKIP_CPU_AND_MEMORY_RESOURCE_CHECKS": "TRUE"}, AgentSettings) == {
        "overcommit": False
    }, "Go's rule: exactly 'true'"


def test_go_private_key_is_a_path_or_the_pem_itself() -> None:
    pem = "-----BEGIN RSA PRIVATE KEY-----\nabc\n-----END RSA PRIVATE KEY-----\n"
    assert cf.go_env_values({"ANKLET_GLOBAL_PRIVATE_KEY": pem}, GitHubSettings) == {"app_private_key": pem}
    assert cf.go_env_values({"ANKLET_GLOBAL_PRIVATE_KEY": "~/k.pem"}, GitHubSettings) == {
        "app_private_key_file": "~/k.pem"
    }


# ----- problems and masking -----------------------------------------------------------------------


def test_validation_problems_name_the_key_path_never_the_value() -> None:
    with pytest.raises(ValidationError) as caught:
        AgentSettings(vm_slots=-1, redis_connect_timeout_seconds=-5, labels={"a": ["secret-ish"]})
    problems = cf.validation_problems(caught.value, AgentSettings)
    assert problems == [
        "redis.connect_timeout_seconds: Input should be greater than or equal to 0",
        "agent.vm_slots: Input should be greater than or equal to 0",
        "agent.labels.a: Input should be a valid string",
    ]
    assert not any("secret-ish" in p for p in problems)


def test_model_level_problems_name_the_section() -> None:
    with pytest.raises(ValidationError) as caught:
        GitHubSettings(repo="app")
    assert cf.validation_problems(caught.value, GitHubSettings) == ["plugins.github: repo requires owner"]


def test_a_log_level_typo_is_a_config_problem() -> None:
    with pytest.raises(ValidationError) as caught:
        AgentSettings(log_level="loud")
    (problem,) = cf.validation_problems(caught.value, AgentSettings)
    assert problem.startswith("agent.log_level: invalid log level 'loud'")
    assert AgentSettings(log_level="DEBUG-PRETTY").log_level == "DEBUG-PRETTY", "the Go values are fine"


def test_the_effective_document_masks_every_secret() -> None:
    agent = AgentSettings(redis_url=SecretStr("redis://:hunter2@r:6379/0"), name="mac-1")
    github = GitHubSettings(token=SecretStr("ghp_topsecret"), owner="acme")
    document = cf.effective_document([agent, github])
    assert list(document) == ["redis", "agent", "plugins"]
    assert document["redis"]["url"] == "**********"
    assert document["agent"]["name"] == "mac-1"
    assert document["plugins"]["github"]["token"] == "**********"
    assert document["plugins"]["github"]["owner"] == "acme"
    assert "hunter2" not in repr(document) and "topsecret" not in repr(document)


def test_config_error_is_one_line_without_duplicates() -> None:
    error = cf.ConfigError(["a: x", "b: y", "a: x"], Path("/f.yaml"))
    assert error.problems == ["a: x", "b: y"]
    assert error.one_line() == "invalid configuration (/f.yaml): a: x; b: y"
