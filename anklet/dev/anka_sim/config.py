"""The simulated host's configuration: ``ANKA_SIM_HOME/config.json``.

Created with defaults on first use so a developer can open it and see every knob. Every key
is optional in the file; missing keys take the defaults below, so old config files keep
working when keys are added. ``ANKA_SIM_TIME_SCALE`` overrides ``time_scale`` so a test can
speed up a shared home without rewriting it.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from anklet.dev.anka_sim.paths import SimPaths
from anklet.dev.anka_sim.registry import GIB, RegistryTemplate, default_templates, parse_templates

TIME_SCALE_ENV = "ANKA_SIM_TIME_SCALE"

#: Seconds each operation takes at ``time_scale`` 1.0 (anka-cli.md §4.1).
DEFAULT_LATENCY: dict[str, float] = {
    "version": 0.1,
    "license": 0.1,
    "list": 0.2,
    "show": 0.2,
    "clone": 1.0,
    "clone_copy": 120.0,
    "start": 10.0,
    "ip_delay": 5.0,
    "resume": 3.0,
    "stop": 8.0,
    "stop_force": 1.0,
    "suspend": 5.0,
    "delete": 2.0,
    "run": 0.3,
    "cp": 0.5,
    "mount": 1.0,
    "unmount": 0.5,
    "registry": 0.5,
    "check_download_size": 0.5,
    "pull_overhead": 5.0,
    "pull_local": 2.0,
}


def _default_registries() -> list[dict[str, Any]]:
    return [{"name": "anka-registry", "url": "http://anka.registry:8089", "default": True}]


@dataclass(frozen=True)
class SimConfig:
    """All simulator settings; field names are the JSON keys."""

    anka_version: str = "3.9.1"
    build: str = "216"
    product: str = "Anka Build Enterpriseplus"
    arch: str = "arm64"
    license_status: str = "valid"
    license_type: str = "com.veertu.anka.entplus"
    license_expires: str = "31-dec-2030"
    #: ``None`` means the platform's rule: 2 on arm64 (Virtualization.framework), else 255.
    max_running_vms: int | None = None
    disk_total_bytes: int = 500 * GIB
    #: Disk taken by macOS and everything that is not a VM.
    disk_reserved_bytes: int = 40 * GIB
    #: Disk a shallow clone takes once it has booted.
    clone_disk_bytes: int = 2 * GIB
    time_scale: float = 1.0
    latency: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_LATENCY))
    pull_bytes_per_second: float = 125_000_000.0
    cp_bytes_per_second: float = 100_000_000.0
    #: What a second concurrent pull does: ``fail``, ``block`` or ``corrupt`` (the real hazard).
    concurrent_pull: str = "fail"
    #: What a clone of a template that is being pulled does: ``fail``, ``block`` or ``allow``.
    clone_during_pull: str = "fail"
    #: Anka 2 refused to clone a running VM; keep that unless told otherwise.
    allow_clone_running: bool = False
    #: Print JSON progress lines before a pull's final envelope (Anklet's "last line" case).
    pull_json_progress: bool = True
    #: ``s`` (Anka 3 docs) or ``us`` (Anka 2 captures) for ISO dates.
    date_precision: str = "s"
    default_exit_status: int = 1
    registries: list[dict[str, Any]] = field(default_factory=_default_registries)
    templates: list[dict[str, Any]] = field(default_factory=default_templates)
    #: Templates present locally on first use: ``"<uuid or name>[:<tag>]"``.
    preinstalled: list[str] = field(default_factory=list)

    @property
    def version_tuple(self) -> tuple[int, int, int]:
        return version_tuple(self.anka_version)

    @property
    def running_limit(self) -> int:
        if self.max_running_vms is not None:
            return self.max_running_vms
        return 2 if self.arch == "arm64" else 255

    @property
    def catalogue(self) -> tuple[RegistryTemplate, ...]:
        return parse_templates(self.templates)

    def latency_of(self, name: str) -> float:
        return float(self.latency.get(name, DEFAULT_LATENCY.get(name, 0.0)))

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def version_tuple(text: str) -> tuple[int, int, int]:
    """Lenient ``3.9.1 (build 2)`` / ``v4.0.1`` parsing; unparsable parts count as 0."""
    head = text.strip().split(" ", 1)[0].lstrip("vV")
    numbers = []
    for part in [*head.split("."), "0", "0", "0"][:3]:
        match = re.match(r"\d+", part)
        numbers.append(int(match.group()) if match else 0)
    return numbers[0], numbers[1], numbers[2]


def from_mapping(data: Mapping[str, Any], env: Mapping[str, str] | None = None) -> SimConfig:
    """Defaults overlaid with ``data`` (unknown keys ignored) and the time-scale env var."""
    defaults = SimConfig()
    values: dict[str, Any] = {}
    for f in fields(SimConfig):
        if f.name not in data:
            continue
        raw = data[f.name]
        if f.name == "latency":
            values[f.name] = {**DEFAULT_LATENCY, **{str(k): float(v) for k, v in dict(raw).items()}}
        else:
            values[f.name] = _coerce(getattr(defaults, f.name), raw)
    scale = (os.environ if env is None else env).get(TIME_SCALE_ENV)
    if scale:
        values["time_scale"] = float(scale)
    return SimConfig(**values)


def _coerce(default: Any, raw: Any) -> Any:
    """Keep JSON values honest about their type, so a typo fails here and not mid-command."""
    if raw is None or isinstance(default, list | dict) or default is None:
        return raw
    if isinstance(default, bool):
        return bool(raw)
    if isinstance(default, int):
        return int(raw)
    if isinstance(default, float):
        return float(raw)
    return str(raw)


def load(paths: SimPaths, env: Mapping[str, str] | None = None) -> SimConfig:
    """Read the config, writing the defaults first if the file does not exist yet."""
    if not paths.config.exists():
        write(paths, SimConfig().to_json())
    data = json.loads(paths.config.read_text() or "{}")
    return from_mapping(data, env)


def write(paths: SimPaths, data: Mapping[str, Any]) -> None:
    """Atomic replace: concurrent first uses may race, and readers must never see half a file."""
    write_json_atomic(paths.config, data)


def write_json_atomic(path: Path, data: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(data, handle, indent=2, sort_keys=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
