"""The configuration file: one YAML document that every Anklet process can read.

A Mac's agent and the cluster side (controller, receiver, plugins) can share one file or use
their own; each process reads only its sections:

    redis:       {url, url_file, connect_timeout_seconds, ...}   # every process that uses Redis
    controller:  {...}                                           # ControllerSettings
    agent:       {...}                                           # AgentSettings
    receiver:    {...}                                           # ReceiverSettings
    plugins:     {<plugin name>: {...}}                          # e.g. plugins.github

The file feeds the same pydantic-settings classes as the environment, as one more *source*
(`ConfigFileSource`, a `YamlConfigSettingsSource`), so precedence is the library's and not a
merge of our own: init kwargs (CLI flags) > ``ANKLET_*`` environment > the Go version's
environment names (`GoEnvSource`) > the file > defaults.

A settings class says which section it reads with ``config_section``; fields named
``redis_<key>`` are read from ``redis.<key>`` whatever the section, so the processes' flat
``redis_url`` (env ``ANKLET_REDIS_URL``) is ``redis.url`` in the file. A key ``<name>_file``
next to a secret field ``<name>`` (a ``SecretStr``) reads the secret from that file, so the file
itself can be shared without the secrets in it. Relative paths are relative to the file.

Unknown keys are errors (see `check_keys`): a typo must not silently fall back to a default.
"""

from __future__ import annotations

import difflib
import os
import types
import typing
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar
from urllib.parse import quote

import yaml
from pydantic import AfterValidator, SecretStr, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

CONFIG_ENV = "ANKLET_CONFIG"
#: The Go version's way to pick a file: a name in ~/.config/anklet/.
GO_CONFIG_NAME_ENV = "ANKLET_CONFIG_FILE_NAME"
SECTIONS = ("redis", "controller", "agent", "receiver", "plugins")
REDIS_SECTION = "redis"
REDIS_PREFIX = "redis_"
FILE_SUFFIX = "_file"


def _log_level(value: str) -> str:
    from anklet.logformat import parse_level

    parse_level(value)  # ValueError naming the accepted values
    return value


#: A log level `setup_logging` accepts; checked here so a typo is a config error, not a crash later.
LogLevel = Annotated[str, AfterValidator(_log_level)]

#: Go configuration keys a migrating user may carry over, and where they went.
GO_KEY_HINTS = {
    "global_database_url": "redis.url",
    "global_database_port": "redis.url",
    "global_database_user": "redis.url",
    "global_database_password": "redis.url (or redis.url_file)",
    "global_database_database": "redis.url",
    "global_token": "plugins.github.token",
    "global_private_key": "plugins.github.app_private_key_file",
    "global_receiver_secret": "plugins.github.webhook_secret",
    "global_template_disk_buffer": "agent.template_disk_buffer_percent",
    "global_skip_cpu_and_memory_resource_checks": "agent.overcommit",
    "global_host_to_guest_folder_mounts": "agent.mounts",
    "log": "agent.log_file and the log_level of each section",
    "metrics": "nothing (each process serves its own /metrics)",
}


class ConfigError(ValueError):
    """The configuration cannot work; `problems` holds one line each, naming the key path.

    A ValueError, so callers that already turn a bad setting into one log line catch it too.
    """

    def __init__(self, problems: Sequence[str], path: Path | None = None) -> None:
        self.problems = list(dict.fromkeys(problems))  # de-duplicated, in order
        self.path = path
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = f" ({self.path})" if self.path is not None else ""
        return f"invalid configuration{where}: " + "; ".join(self.problems)


# ----- which file -------------------------------------------------------------------------------


def config_path(env: Mapping[str, str], home: Path) -> Path | None:
    """The file to read: ``ANKLET_CONFIG``, else the Go version's ``ANKLET_CONFIG_FILE_NAME``
    in ``~/.config/anklet/``, else none (settings then come from the environment alone)."""
    explicit = env.get(CONFIG_ENV, "").strip()
    if explicit:
        return Path(explicit).expanduser()
    name = env.get(GO_CONFIG_NAME_ENV, "").strip()
    if name:
        return home / ".config" / "anklet" / name
    return None


def activate(path: Path | None) -> Path | None:
    """Make `path` the file every settings class of this process reads (None: keep the current).

    It goes into the environment because settings are also read lazily, deep inside kopf
    handlers and plugins, where no argument can reach; children only inherit the path.
    """
    if path is not None:
        path = path.expanduser().absolute()
        os.environ[CONFIG_ENV] = str(path)
        return path
    return config_path(os.environ, Path.home())


# ----- reading the document ---------------------------------------------------------------------


def parse_document(text: str, path: Path) -> dict[str, Any]:
    """The YAML text as a mapping of sections; ConfigError with a line number when it is not."""
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        raise ConfigError([f"configuration file {path}: invalid YAML{where}: {problem}"]) from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(
            [
                f"configuration file {path}: must be a mapping of sections ({', '.join(SECTIONS)}), "
                f"not a {type(data).__name__}"
            ]
        )
    return data


_CACHE: dict[Path, tuple[tuple[int, int], dict[str, Any]]] = {}


def read_document(path: Path) -> dict[str, Any]:
    """The parsed file, re-read only when it changed (settings are instantiated many times)."""
    try:
        stat = path.stat()
        stamp = (stat.st_mtime_ns, stat.st_size)
        cached = _CACHE.get(path)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError([f"configuration file {path}: not found"]) from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError([f"configuration file {path}: cannot read: {reason}"]) from None
    document = parse_document(text, path)
    _CACHE[path] = (stamp, document)
    return document


def read_secret_file(path: Path) -> str:
    """A secret kept in its own file; surrounding whitespace (the trailing newline) is not part of it."""
    return path.read_text(encoding="utf-8").strip()


def resolve(raw: object, base_dir: Path) -> Path:
    """A path from the file: ``~`` expanded, relative ones taken from the file's directory."""
    path = Path(str(raw)).expanduser()
    return path if path.is_absolute() else base_dir / path


#: Set while `check_secret_files` has already reported every unreadable secret file: the
#: sources then leave such a field unset, so the rest of its settings are still validated.
SECRETS_CHECKED: ContextVar[bool] = ContextVar("anklet_config_secrets_checked", default=False)


# ----- which keys a section has ------------------------------------------------------------------


def is_secret(field: FieldInfo | None) -> bool:
    """A SecretStr field (optional or not): one whose value may come from ``<name>_file``."""
    if field is None:
        return False
    annotation = field.annotation
    if annotation is SecretStr:
        return True
    origin = typing.get_origin(annotation)
    return origin in (typing.Union, types.UnionType) and SecretStr in typing.get_args(annotation)


def is_path(field: FieldInfo | None) -> bool:
    """A Path-typed field (Path, FilePath, optional or not): relative values are file-relative."""

    def mentions(annotation: Any) -> bool:
        if isinstance(annotation, type) and issubclass(annotation, Path):
            return True
        return any(mentions(arg) for arg in typing.get_args(annotation))

    return field is not None and mentions(field.annotation)


@dataclass(frozen=True)
class Key:
    """One key of a file section: the field it sets, and whether it names the secret's file."""

    field: str
    secret_file: bool = False  # the value is a path whose content is the field's value


def section_keys(settings_cls: type[BaseSettings], section: str) -> dict[str, Key]:
    """The keys `settings_cls` reads from `section` (``redis`` or its own), by file key."""
    fields = settings_cls.model_fields
    if section == REDIS_SECTION:
        names = {name[len(REDIS_PREFIX) :]: name for name in fields if name.startswith(REDIS_PREFIX)}
    else:
        names = {name: name for name in fields if not name.startswith(REDIS_PREFIX)}
    keys = {key: Key(field) for key, field in names.items()}
    for key, field in names.items():
        if is_secret(fields[field]) and f"{key}{FILE_SUFFIX}" not in keys:
            keys[f"{key}{FILE_SUFFIX}"] = Key(field, secret_file=True)
    return keys


def secret_file_keys(settings_cls: type[BaseSettings], section: str) -> set[str]:
    """Keys whose value is the path of a secret: generated ``<secret>_file`` keys and real
    fields such as ``app_private_key_file`` that sit next to a secret (not ``log_file``)."""
    fields = settings_cls.model_fields
    keys = section_keys(settings_cls, section)
    found = set()
    for key, spec in keys.items():
        if not key.endswith(FILE_SUFFIX):
            continue
        stem = keys.get(key[: -len(FILE_SUFFIX)])
        if spec.secret_file or (stem is not None and is_secret(fields[stem.field])):
            found.add(key)
    return found


def lookup(document: Mapping[str, Any], section: str) -> Mapping[str, Any]:
    """The mapping at a dotted section path (``plugins.github``); empty when absent or not a mapping."""
    node: Any = document
    for part in section.split("."):
        node = node.get(part) if isinstance(node, Mapping) else None
    return node if isinstance(node, Mapping) else {}


def section_values(
    document: Mapping[str, Any],
    settings_cls: type[FileSettings],
    base_dir: Path,
    read_secret: Callable[[Path], str] = read_secret_file,
) -> dict[str, Any]:
    """What the file sets for `settings_cls`, by field name (the keys `check_keys` accepted)."""
    values: dict[str, Any] = {}
    sections = [REDIS_SECTION]
    if settings_cls.config_section and settings_cls.config_section != REDIS_SECTION:
        sections.append(settings_cls.config_section)
    fields = settings_cls.model_fields
    for section in sections:
        keys = section_keys(settings_cls, section)
        secret_files = secret_file_keys(settings_cls, section)
        for key, value in lookup(document, section).items():
            spec = keys.get(str(key))
            if spec is None:
                continue  # check_keys reports it; other classes may read it
            if spec.secret_file:
                try:
                    values[spec.field] = (
                        None if value is None else _secret(section, key, value, base_dir, read_secret)
                    )
                except ConfigError:
                    if not SECRETS_CHECKED.get():
                        raise
            elif (key in secret_files or is_path(fields[spec.field])) and value is not None:
                values[spec.field] = resolve(value, base_dir)
            else:
                values[spec.field] = value
    return values


def _secret(section: str, key: str, raw: object, base_dir: Path, read: Callable[[Path], str]) -> str:
    path = resolve(raw, base_dir)
    try:
        return read(path)
    except OSError as exc:
        raise ConfigError([unreadable(f"{section}.{key}", path, exc)]) from None
    except UnicodeDecodeError:
        raise ConfigError([f"{section}.{key}: {path} is not UTF-8 text"]) from None


def unreadable(key_path: str, path: Path, exc: OSError) -> str:
    return f"{key_path}: cannot read {path}: {exc.strerror or exc}"


# ----- the settings base class and its sources ---------------------------------------------------

_REGISTRY: dict[str, dict[str, type[FileSettings]]] = {}


def registered(section: str) -> list[type[FileSettings]]:
    """The settings classes that read `section` (they register themselves when defined)."""
    return list(_REGISTRY.get(section, {}).values())


def registered_sections() -> list[str]:
    return list(_REGISTRY)


class FileSettings(BaseSettings):
    """Settings that also come from the configuration file's `config_section`.

    Subclasses set ``config_section`` (``"agent"``, ``"plugins.github"``, ...); that registers
    them, which is how `check_keys` knows every key a section may hold.
    """

    # hide_input_in_errors: a validation error must not echo a secret into a log line.
    model_config = SettingsConfigDict(extra="ignore", populate_by_name=True, hide_input_in_errors=True)

    config_section: ClassVar[str] = ""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs: Any) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        section = cls.__dict__.get("config_section")
        if section:
            _REGISTRY.setdefault(section, {})[f"{cls.__module__}.{cls.__qualname__}"] = cls

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (
            init_settings,
            env_settings,
            GoEnvSource(settings_cls),
            dotenv_settings,
            ConfigFileSource(settings_cls),
            file_secret_settings,
        )


class ConfigFileSource(YamlConfigSettingsSource):
    """The YAML file named by ``ANKLET_CONFIG``, narrowed to what one settings class reads."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        self._settings_cls = settings_cls
        path = config_path(os.environ, Path.home())
        if path is not None and not path.is_file():
            raise ConfigError([f"configuration file {path}: not found"], path)
        super().__init__(settings_cls, yaml_file=path)

    def _read_file(self, file_path: Any) -> dict[str, Any]:
        path = Path(file_path)
        if not issubclass(self._settings_cls, FileSettings):
            return {}
        return section_values(read_document(path), self._settings_cls, path.parent)


# ----- the Go version's environment names --------------------------------------------------------


def go_bool(raw: str) -> bool:
    """Go Anklet's rule: exactly ``true`` is true, anything else false."""
    return raw.strip() == "true"


def go_list(raw: str) -> list[str]:
    """Comma-separated, trimmed, empties dropped (Go's ``[]string`` env parsing)."""
    return [item.strip() for item in raw.split(",") if item.strip()]


def go_private_key(raw: str) -> dict[str, str]:
    """``ANKLET_GLOBAL_PRIVATE_KEY`` holds a path or the PEM text itself."""
    if "-----BEGIN" in raw:
        return {"app_private_key": raw}
    return {"app_private_key_file": raw.strip()}


def go_redis_url(env: Mapping[str, str]) -> str | None:
    """A Redis URL from ``ANKLET_GLOBAL_DATABASE_URL`` (a host in Go) and its PORT, USER,
    PASSWORD and DATABASE companions; None when the host is not set."""
    host = env.get("ANKLET_GLOBAL_DATABASE_URL", "").strip()
    if not host:
        return None
    if "://" in host:
        return host
    port = env.get("ANKLET_GLOBAL_DATABASE_PORT", "").strip() or "6379"
    database = env.get("ANKLET_GLOBAL_DATABASE_DATABASE", "").strip() or "0"
    user = env.get("ANKLET_GLOBAL_DATABASE_USER", "").strip()
    password = env.get("ANKLET_GLOBAL_DATABASE_PASSWORD", "")
    auth = ""
    if user or password:
        auth = quote(user, safe="") + (":" + quote(password, safe="") if password else "") + "@"
    return f"redis://{auth}{host}:{port}/{database}"


@dataclass(frozen=True)
class GoEnv:
    """One Go environment name and the file key it sets (`convert` may pick the key)."""

    name: str
    section: str
    key: str
    convert: Callable[[str], Any] | None = None

    def values(self, raw: str) -> dict[str, Any]:
        converted = raw if self.convert is None else self.convert(raw)
        return converted if isinstance(converted, dict) else {self.key: converted}


GO_ENV: tuple[GoEnv, ...] = (
    GoEnv("LOG_LEVEL", "controller", "log_level"),
    GoEnv("LOG_LEVEL", "agent", "log_level"),
    GoEnv("LOG_LEVEL", "receiver", "log_level"),
    GoEnv("ANKLET_GLOBAL_TOKEN", "plugins.github", "token"),
    GoEnv("ANKLET_GLOBAL_PRIVATE_KEY", "plugins.github", "app_private_key", go_private_key),
    GoEnv("ANKLET_GLOBAL_RECEIVER_SECRET", "plugins.github", "webhook_secret"),
    GoEnv("ANKLET_GLOBAL_TEMPLATE_DISK_BUFFER", "agent", "template_disk_buffer_percent"),
    GoEnv("ANKLET_GLOBAL_SKIP_CPU_AND_MEMORY_RESOURCE_CHECKS", "agent", "overcommit", go_bool),
    GoEnv("ANKLET_GLOBAL_HOST_TO_GUEST_FOLDER_MOUNTS", "agent", "mounts", go_list),
)


def go_env_values(env: Mapping[str, str], settings_cls: type[FileSettings]) -> dict[str, Any]:
    """What the Go version's environment names set for `settings_cls`, by field name.

    Empty values are ignored, as in Go (an empty variable never wipes a setting).
    """
    section = settings_cls.config_section
    values: dict[str, Any] = {}
    redis_keys = section_keys(settings_cls, REDIS_SECTION)
    url = go_redis_url(env)
    if url is not None and "url" in redis_keys:
        values[redis_keys["url"].field] = url
    own = section_keys(settings_cls, section) if section and section != REDIS_SECTION else {}
    for entry in GO_ENV:
        raw = env.get(entry.name, "")
        if entry.section != section or not raw.strip():
            continue
        for key, value in entry.values(raw).items():
            if key in own:
                values[own[key].field] = value
    return values


class GoEnvSource(InitSettingsSource):
    """The Go Anklet's ``ANKLET_GLOBAL_*`` and ``LOG_LEVEL`` names, below our own names."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        values = go_env_values(os.environ, settings_cls) if issubclass(settings_cls, FileSettings) else {}
        super().__init__(settings_cls, values)


# ----- checking a document and reporting problems -------------------------------------------------


def suggest(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(key, list(known), n=1, cutoff=0.6)
    return f" (did you mean {close[0]}?)" if close else ""


def check_keys(
    document: Mapping[str, Any], schema: Mapping[str, Collection[str]], plugins: Collection[str]
) -> list[str]:
    """Every unknown section, plugin or key, and every misshapen section, as one line each.

    `schema` maps a section path (``agent``, ``plugins.github``) to the keys it may hold;
    `plugins` are the installed plugin names (a plugin without settings has no schema entry).
    """
    problems: list[str] = []
    for section, body in document.items():
        name = str(section)
        if name not in SECTIONS:
            hint = GO_KEY_HINTS.get(name)
            why = f" (a Go Anklet key: use {hint})" if hint else suggest(name, SECTIONS)
            problems.append(f"{name}: unknown section{why}; expected {', '.join(SECTIONS)}")
            continue
        if body is None:
            continue
        if not isinstance(body, Mapping):
            extra = " (the Go version's list of plugins is not read)" if name == "plugins" else ""
            what = "plugin name → settings" if name == "plugins" else "key → value"
            problems.append(f"{name}: must be a mapping of {what}, not a {type(body).__name__}{extra}")
            continue
        if name == "plugins":
            for plugin, settings in body.items():
                path = f"plugins.{plugin}"
                if plugin not in plugins:
                    installed = ", ".join(sorted(plugins)) or "none"
                    problems.append(
                        f"{path}: unknown plugin{suggest(str(plugin), plugins)} (installed: {installed})"
                    )
                elif settings is not None and not isinstance(settings, Mapping):
                    problems.append(
                        f"{path}: must be a mapping of key → value, not a {type(settings).__name__}"
                    )
                elif settings:
                    problems += _unknown_keys(path, settings, schema.get(path, ()))
            continue
        problems += _unknown_keys(name, body, schema.get(name, ()))
    return problems


def _unknown_keys(path: str, body: Mapping[str, Any], known: Collection[str]) -> list[str]:
    problems = []
    for key in body:
        if key not in known:
            detail = suggest(str(key), known) if known else " (this section takes no settings)"
            problems.append(f"{path}.{key}: unknown key{detail}")
        elif str(key).endswith(FILE_SUFFIX) and str(key)[: -len(FILE_SUFFIX)] in body:
            stem = str(key)[: -len(FILE_SUFFIX)]
            problems.append(f"{path}.{key}: set {stem} or {key}, not both")
    return problems


def check_secret_files(
    document: Mapping[str, Any], secret_keys: Mapping[str, Collection[str]], base_dir: Path
) -> list[str]:
    """Every secret file the document names that cannot be read or is empty (one line each)."""
    problems = []
    for section, keys in secret_keys.items():
        body = lookup(document, section)
        for key in keys:
            raw = body.get(key)
            if raw is None:
                continue
            path = resolve(raw, base_dir)
            try:
                content = read_secret_file(path)
            except OSError as exc:
                problems.append(unreadable(f"{section}.{key}", path, exc))
                continue
            except UnicodeDecodeError:
                problems.append(f"{section}.{key}: {path} is not UTF-8 text")
                continue
            if not content:
                problems.append(f"{section}.{key}: {path} is empty")
    return problems


def key_path(settings_cls: type[FileSettings], field: str) -> str:
    """Where a field lives in the file: ``redis.url`` for ``redis_url``, else ``<section>.<field>``."""
    if field.startswith(REDIS_PREFIX) and field in settings_cls.model_fields:
        return f"{REDIS_SECTION}.{field[len(REDIS_PREFIX) :]}"
    return f"{settings_cls.config_section}.{field}" if settings_cls.config_section else field


def field_for(settings_cls: type[BaseSettings], loc: str) -> str:
    """The field a validation error's first location names (it may be an env alias)."""
    if loc in settings_cls.model_fields:
        return loc
    for name, info in settings_cls.model_fields.items():
        alias = info.validation_alias
        choices = getattr(alias, "choices", [alias])
        if any(str(choice).lower() == loc.lower() for choice in choices if choice is not None):
            return name
    return loc


def validation_problems(exc: ValidationError, settings_cls: type[FileSettings]) -> list[str]:
    """One line per error, named by key path, never quoting the value (it may be a secret)."""
    problems = []
    for error in exc.errors(include_input=False, include_url=False, include_context=False):
        loc = [str(part) for part in error["loc"]]
        message = str(error["msg"]).removeprefix("Value error, ")
        if loc:
            path = ".".join([key_path(settings_cls, field_for(settings_cls, loc[0])), *loc[1:]])
        else:
            path = settings_cls.config_section or settings_cls.__name__
        problems.append(f"{path}: {message}")
    return problems


def set_path(document: dict[str, Any], path: str, value: Any) -> None:
    """Set a dotted key path in a nested dict (keeps a value set before: the first wins)."""
    *parents, last = path.split(".")
    node = document
    for part in parents:
        node = node.setdefault(part, {})
    node.setdefault(last, value)


def effective_document(instances: Iterable[FileSettings]) -> dict[str, Any]:
    """The settings as a file would hold them, every secret shown as ``**********``."""
    document: dict[str, Any] = {}
    for instance in instances:
        for field, value in instance.model_dump(mode="json").items():
            set_path(document, key_path(type(instance), field), value)
    ordered = {section: document.pop(section) for section in SECTIONS if section in document}
    return {**ordered, **document}
