"""Settings of each process, from environment variables (``ANKLET_*``) and CLI flags.

pydantic-settings validates them at start, so a bad value stops the process with one clear
line before it does any work.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import ClassVar, Self

from pydantic import AliasChoices, Field, FilePath, SecretStr, model_validator
from pydantic_settings import SettingsConfigDict

from anklet.config_file import FileSettings, LogLevel
from anklet.redis_tls import RedisTLS, client_options


class RedisSettings(FileSettings):
    """How every process reaches Redis. The TLS fields are read from ``ANKLET_REDIS_TLS_*`` by
    every process (the agent too, whose other settings are ``ANKLET_AGENT_*``)."""

    # hide_input_in_errors: a validation error must not echo the input, which holds the Redis URL.
    model_config = SettingsConfigDict(
        env_prefix="ANKLET_", extra="ignore", populate_by_name=True, hide_input_in_errors=True
    )
    config_section: ClassVar[str] = "redis"  # the file's `redis:` section (redis_url is redis.url)

    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"),
        description="Redis URL (may carry a password, hence secret: never logged).",
    )
    redis_connect_timeout_seconds: float = Field(
        default=30.0,
        ge=0,
        validation_alias="ANKLET_REDIS_CONNECT_TIMEOUT_SECONDS",
        description="at start, how long to keep trying to reach Redis before exiting 2",
    )
    redis_tls_ca_file: FilePath | None = Field(
        default=None,
        validation_alias="ANKLET_REDIS_TLS_CA_FILE",
        description="PEM CA bundle that signed the Redis server's certificate (rediss:// only)",
    )
    redis_tls_cert_file: FilePath | None = Field(
        default=None,
        validation_alias="ANKLET_REDIS_TLS_CERT_FILE",
        description="client certificate (PEM) for a server that requires mutual TLS",
    )
    redis_tls_key_file: FilePath | None = Field(
        default=None,
        validation_alias="ANKLET_REDIS_TLS_KEY_FILE",
        description="the client certificate's private key (PEM)",
    )
    redis_tls_check_hostname: bool = Field(
        default=True,
        validation_alias="ANKLET_REDIS_TLS_CHECK_HOSTNAME",
        description="check that the server's certificate names the URL's host",
    )

    def redis_tls(self) -> RedisTLS:
        def path(p: Path | None) -> str | None:
            return None if p is None else str(p)

        return RedisTLS(
            ca_file=path(self.redis_tls_ca_file),
            cert_file=path(self.redis_tls_cert_file),
            key_file=path(self.redis_tls_key_file),
            check_hostname=self.redis_tls_check_hostname,
        )

    @model_validator(mode="after")
    def _redis_tls_fits_the_url(self) -> Self:
        client_options(self.redis_url.get_secret_value(), self.redis_tls())  # RedisTLSError is a ValueError
        return self


class ControllerSettings(RedisSettings):
    model_config = SettingsConfigDict(env_prefix="ANKLET_", extra="ignore")
    config_section: ClassVar[str] = "controller"

    kubeconfig: str | None = Field(default=None, description="kubeconfig path; in-cluster when unset")
    namespaces: list[str] = Field(default_factory=list, description="namespaces to watch; all when empty")
    resync_seconds: float = Field(default=30.0, gt=0)
    host_lost_seconds: float = Field(
        default=30.0, gt=0, description="a host whose heartbeat lease stays gone this long is lost"
    )
    leader_election: bool = Field(default=False, description="act only while holding the Lease (HA)")
    leader_election_namespace: str = Field(
        default_factory=lambda: os.environ.get("POD_NAMESPACE") or "anklet-system",
        description="namespace of the Lease (default: $POD_NAMESPACE, else anklet-system)",
    )
    leader_election_lease_name: str = Field(default="anklet-controller", min_length=1)
    leader_election_identity: str = Field(
        default_factory=lambda: os.environ.get("POD_NAME") or f"{socket.gethostname()}_{os.getpid()}",
        min_length=1,
        description="unique per replica (default: $POD_NAME, else hostname_pid)",
    )
    leader_election_lease_duration_seconds: float = Field(default=15.0, gt=0)
    leader_election_renew_deadline_seconds: float = Field(default=10.0, gt=0)
    leader_election_retry_period_seconds: float = Field(default=2.0, gt=0)
    metrics_port: int = Field(default=9090, ge=0, le=65535, description="serve GET /metrics here; 0: off")
    metrics_host: str = Field(default="0.0.0.0", description="listen address of the metrics endpoint")
    log_level: LogLevel = "INFO"

    @model_validator(mode="after")
    def _leader_election_durations(self) -> Self:
        lease = self.leader_election_lease_duration_seconds
        renew = self.leader_election_renew_deadline_seconds
        if not lease > renew > self.leader_election_retry_period_seconds:
            raise ValueError("leader election needs lease duration > renew deadline > retry period")
        return self


class AgentSettings(RedisSettings):
    model_config = SettingsConfigDict(env_prefix="ANKLET_AGENT_", extra="ignore", populate_by_name=True)
    config_section: ClassVar[str] = "agent"

    # Not "redis_url" as a second choice: as an env name it would read a foreign REDIS_URL.
    redis_url: SecretStr = Field(
        default=SecretStr("redis://127.0.0.1:6379/0"), validation_alias=AliasChoices("ANKLET_REDIS_URL")
    )
    name: str = Field(default_factory=lambda: socket.gethostname().split(".")[0])
    anka_binary: str = "anka"
    anka_timeouts: dict[str, float] = Field(
        default_factory=dict,
        description='seconds per kind of anka call, JSON, e.g. {"start": 120, "delete": 120} (kinds: '
        "query clone start stop delete suspend copy mount registry check_download_size pull run)",
    )
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
    state_dir: Path | None = Field(default=None, description="agent state and lock files (default ~/.anklet)")
    metrics_port: int = Field(default=0, ge=0, le=65535, description="serve GET /metrics here; 0: off")
    metrics_host: str = Field(default="0.0.0.0", description="listen address of the metrics endpoint")
    log_level: LogLevel = "INFO"
    log_file: Path | None = Field(
        default=None, description="also log here, rotated by size (stderr then keeps only errors)"
    )
    log_max_bytes: int = Field(default=10 * 2**20, ge=4096, description="rotate log_file at this size")
    log_backups: int = Field(default=5, ge=1, description="rotated log files kept (log_file.1 ...)")
