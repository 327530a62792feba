"""Settings of each process, from environment variables (``ANKLET_*``) and CLI flags.

pydantic-settings validates them at start, so a bad value stops the process with one clear
line before it does any work.
"""

from __future__ import annotations

import socket

from pydantic import AliasChoices, Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class RedisSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ANKLET_", extra="ignore")

    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis URL (may carry a password, hence secret: never logged).",
    )


class ControllerSettings(RedisSettings):
    model_config = SettingsConfigDict(env_prefix="ANKLET_", extra="ignore")

    kubeconfig: str | None = Field(default=None, description="kubeconfig path; in-cluster when unset")
    namespaces: list[str] = Field(default_factory=list, description="namespaces to watch; all when empty")
    resync_seconds: float = Field(default=30.0, gt=0)
    host_lost_seconds: float = Field(
        default=30.0, gt=0, description="a host whose heartbeat lease stays gone this long is lost"
    )
    log_level: str = "INFO"


class AgentSettings(RedisSettings):
    model_config = SettingsConfigDict(env_prefix="ANKLET_AGENT_", extra="ignore", populate_by_name=True)

    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        validation_alias=AliasChoices("ANKLET_REDIS_URL", "redis_url"),
    )
    name: str = Field(default_factory=lambda: socket.gethostname().split(".")[0])
    anka_binary: str = "anka"
    vm_slots: int | None = Field(default=None, ge=0, description="max VMs; 2 on Apple silicon by default")
    overcommit: bool = False
    reserved_cpu: int = Field(default=0, ge=0, description="cores kept for the host itself")
    reserved_memory_mib: int = Field(default=0, ge=0, description="memory kept for the host itself")
    cpu: int | None = Field(default=None, ge=1, description="override the detected core count")
    memory_mib: int | None = Field(default=None, ge=1, description="override the detected memory")
    labels: dict[str, str] = Field(default_factory=dict)
    queues: list[str] = Field(default_factory=list)
    resync_seconds: float = Field(default=10.0, gt=0)
    orphan_grace_seconds: float = Field(default=30.0, ge=0)
    ready_timeout_seconds: float = Field(default=180.0, gt=0)
    ready_poll_seconds: float = Field(default=2.0, gt=0)
    output_tail_bytes: int = Field(default=16_384, ge=256)
    shutdown_grace_seconds: float = Field(
        default=30.0, ge=0, description="on SIGTERM, how long running jobs may go on before they are stopped"
    )
    template_disk_buffer_percent: float = Field(
        default=10.0, ge=0, lt=100, description="free disk a template pull must leave, % of the disk"
    )
    template_disk_buffer_bytes: int | None = Field(
        default=None, ge=0, description="the same as an absolute size; wins over the percentage"
    )
    mounts: list[str] = Field(
        default_factory=list,
        description="host-to-guest mounts host_path[:guest_name] for every VM (JSON list; Anka 3.9+, arm64)",
    )
    log_level: str = "INFO"
