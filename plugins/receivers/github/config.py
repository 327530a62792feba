"""Receiver settings (env prefix `ANKLET_RECEIVER_`) plus the shared `ANKLET_GITHUB_` ones.

`load_config()` validates both at start; `describe()` turns a validation error into one log
line that names the fields and never echoes their values (a token or key must not reach logs).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import Field, ValidationError
from pydantic_settings import SettingsConfigDict

from anklet.config_file import FileSettings, LogLevel
from plugins.handlers.github.scope import Scope, ScopeKind
from plugins.handlers.github.settings import GitHubSettings

MAX_BODY_BYTES = 25 * 1024 * 1024  # GitHub caps webhook payloads at 25 MB


class ConfigError(ValueError):
    """The configuration cannot work; the message is one line for the log."""


class ReceiverSettings(FileSettings):
    model_config = SettingsConfigDict(
        env_prefix="ANKLET_RECEIVER_", extra="ignore", hide_input_in_errors=True
    )
    config_section: ClassVar[str] = "receiver"

    host: str = Field(default="0.0.0.0", description="Address to listen on.")
    port: int = Field(default=8080, ge=0, le=65535, description="Port to listen on; 0 picks a free one.")
    namespace: str = Field(default="default", min_length=1, description="Namespace of created AnkaJobs.")
    kubeconfig: str | None = Field(default=None, description="kubeconfig path; in-cluster, then $KUBECONFIG.")
    max_body_bytes: int = Field(default=MAX_BODY_BYTES, ge=1024, description="Larger bodies get 413.")
    dedupe_size: int = Field(default=10_000, ge=0, description="Delivery ids remembered per process.")
    redelivery: bool = Field(default=True, description="Scan for missed deliveries (needs hook_id).")
    log_level: LogLevel = "INFO"


@dataclass(frozen=True)
class ReceiverConfig:
    receiver: ReceiverSettings = field(default_factory=ReceiverSettings)
    github: GitHubSettings = field(default_factory=GitHubSettings)

    def __post_init__(self) -> None:
        if self.github.webhook_secret is None or not self.github.webhook_secret.get_secret_value():
            raise ConfigError("ANKLET_GITHUB_WEBHOOK_SECRET is required (the secret the webhook signs with)")

    @property
    def secret(self) -> bytes:
        assert self.github.webhook_secret is not None  # checked in __post_init__
        return self.github.webhook_secret.get_secret_value().encode()

    def hook_scope(self) -> Scope | None:
        """Where the hook lives for the deliveries API: the repo if set, else the org."""
        scope = self.github.scope()
        if scope is None or scope.kind is ScopeKind.ENTERPRISE:
            return None
        return scope

    def redelivery_skip_reason(self) -> str | None:
        """Why missed deliveries will not be scanned for, or None when they will."""
        if not self.receiver.redelivery:
            return "disabled (ANKLET_RECEIVER_REDELIVERY=false)"
        if self.github.hook_id is None:
            return "ANKLET_GITHUB_HOOK_ID is not set"
        if self.github.enterprise:
            return "GitHub has no deliveries API for enterprise hooks (redeliver from the settings UI)"
        if self.hook_scope() is None:
            return "ANKLET_GITHUB_OWNER (and ANKLET_GITHUB_REPO for a repository hook) is not set"
        if not self.github.has_credentials:
            return "no GitHub credentials (ANKLET_GITHUB_TOKEN or ANKLET_GITHUB_APP_ID + key)"
        return None


def describe(exc: ValidationError) -> str:
    """One line naming each invalid setting and why, without its value."""
    problems = exc.errors(include_input=False, include_url=False)
    parts = []
    for problem in problems:
        where = ".".join(str(p) for p in problem["loc"])
        parts.append(f"{where}: {problem['msg']}" if where else str(problem["msg"]))
    return f"{exc.title}: " + "; ".join(parts)


def load_config(**receiver_overrides: object) -> ReceiverConfig:
    """Both settings from the environment (overrides win); ConfigError with one line if invalid."""
    try:
        receiver = ReceiverSettings(**receiver_overrides)  # type: ignore[arg-type]
        github = GitHubSettings()
    except ValidationError as exc:
        raise ConfigError(describe(exc)) from None
    return ReceiverConfig(receiver=receiver, github=github)
