"""GitHub settings shared by the receiver and the GitHub handler (env prefix `ANKLET_GITHUB_`).

Validated once at start so a wrong combination (a repo without an owner, a private key without
an App id, an unreadable key file) stops the process with one clear line instead of failing at
the first API call. Credentials are SecretStr: they never show in a repr, a log or a metric.
"""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Self

from pydantic import Field, PrivateAttr, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from anklet.config_file import FileSettings
from plugins.handlers.github.ratelimit import RetryPolicy
from plugins.handlers.github.scope import Scope

DEFAULT_API_URL = "https://api.github.com"


class GitHubSettings(FileSettings):
    # hide_input_in_errors: a validation error must not echo a token or key into the log
    model_config = SettingsConfigDict(env_prefix="ANKLET_GITHUB_", extra="ignore", hide_input_in_errors=True)
    config_section: ClassVar[str] = "plugins.github"  # shared with GitHubHandlerSettings

    api_url: str = Field(
        default=DEFAULT_API_URL, description="REST API base URL (GHES: https://HOST/api/v3)."
    )
    token: SecretStr | None = Field(default=None, description="Personal access token (instead of an App).")
    app_id: int | None = Field(default=None, ge=1, description="GitHub App id (with a private key).")
    app_private_key: SecretStr | None = Field(default=None, description="The App's PEM private key text.")
    app_private_key_file: Path | None = Field(default=None, description="Path of the App's PEM private key.")
    installation_id: int | None = Field(
        default=None, ge=1, description="App installation id; looked up from owner/repo when unset."
    )
    owner: str | None = Field(default=None, description="Organisation or user (org or repo scope).")
    repo: str | None = Field(default=None, description="Repository name (repo scope).")
    enterprise: str | None = Field(default=None, description="Enterprise slug (enterprise scope).")
    hook_id: int | None = Field(
        default=None, ge=1, description="Webhook id, for redelivery of missed events."
    )
    webhook_secret: SecretStr | None = Field(default=None, description="Secret the webhook signs with.")
    runner_group_id: int = Field(default=1, ge=1, description="Runner group of registered runners.")
    redelivery_hours: float = Field(default=24.0, gt=0, le=72, description="How far back to look for misses.")
    redelivery_interval_seconds: float = Field(default=300.0, gt=0, description="Period of the miss scan.")
    timeout_seconds: float = Field(default=30.0, gt=0, description="Per-request HTTP timeout.")
    max_attempts: int = Field(
        default=5, ge=1, le=20, description="Attempts per request on 5xx/network errors."
    )
    backoff_base_seconds: float = Field(default=1.0, ge=0, description="First retry delay; doubles.")
    secondary_wait_seconds: float = Field(
        default=60.0, ge=0, description="Minimum wait after a secondary rate limit without retry-after."
    )
    _private_key: SecretStr | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.enterprise and (self.owner or self.repo):
            raise ValueError("enterprise cannot be combined with owner/repo")
        if self.repo and not self.owner:
            raise ValueError("repo requires owner")
        if self.app_private_key is not None and self.app_private_key_file is not None:
            raise ValueError("set app_private_key or app_private_key_file, not both")
        has_key = self.app_private_key is not None or self.app_private_key_file is not None
        if has_key and self.app_id is None:
            raise ValueError("a GitHub App private key requires app_id")
        if self.app_id is not None and not has_key:
            raise ValueError("app_id requires app_private_key or app_private_key_file")
        key = self.app_private_key
        if self.app_private_key_file is not None:
            try:
                key = SecretStr(self.app_private_key_file.expanduser().read_text())
            except OSError as exc:
                raise ValueError(f"cannot read app_private_key_file: {exc.strerror}") from None
        if key is not None:
            _check_private_key(key)
        self._private_key = key
        return self

    def private_key(self) -> SecretStr | None:
        """The App's PEM key, from `app_private_key` or read from `app_private_key_file` at start."""
        return self._private_key

    def scope(self) -> Scope | None:
        """Repo scope with owner+repo, org with owner, enterprise with enterprise; None if unset."""
        if self.owner and self.repo:
            return Scope.repository(self.owner, self.repo)
        if self.owner:
            return Scope.organization(self.owner)
        if self.enterprise:
            return Scope.for_enterprise(self.enterprise)
        return None

    @property
    def uses_app(self) -> bool:
        return self.app_id is not None

    @property
    def has_credentials(self) -> bool:
        return self.uses_app or self.token is not None

    def retry_policy(self) -> RetryPolicy:
        return RetryPolicy(
            max_attempts=self.max_attempts,
            backoff_base=self.backoff_base_seconds,
            secondary_min_wait=self.secondary_wait_seconds,
        )


def _check_private_key(key: SecretStr) -> None:
    """Fail at start on a key that is not an RSA PEM key (the message never quotes the key)."""
    from cryptography.hazmat.primitives.asymmetric.rsa import RSAPrivateKey
    from cryptography.hazmat.primitives.serialization import load_pem_private_key

    try:
        loaded = load_pem_private_key(key.get_secret_value().encode(), password=None)
    except (ValueError, TypeError):
        raise ValueError("the GitHub App private key is not a readable unencrypted PEM key") from None
    if not isinstance(loaded, RSAPrivateKey):
        raise ValueError("the GitHub App private key must be an RSA key (GitHub signs App JWTs with RS256)")
