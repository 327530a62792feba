"""Host-to-guest folder mounts: which specs a VM gets, and whether this host can mount at all.

A mount is ``host_path[:guest_folder_name]`` (anka-cli.md §2.13); the guest sees it at
``/Volumes/My Shared Files/<name>``, the name defaulting to the host folder's basename. The host's
own mounts (``ANKLET_AGENT_MOUNTS``) come first, then the job's (``spec.mounts``). Host paths are
resolved through symlinks before they are handed to ``anka mount``, so two spellings of one folder
are mounted once (as the Go Anklet does), and a missing folder fails the job before any VM exists
rather than after a pull and a boot.

Everything here is pure except the one ``resolve`` seam (``realpath`` + "is it a directory?"),
which tests replace with a table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from host_agent.anka_model import parse_version

MIN_ANKA_VERSION = (3, 9, 0)
GUEST_ROOT = "/Volumes/My Shared Files"


class MountError(ValueError):
    """A mount spec that cannot be honoured on this host (bad syntax, missing folder, name clash)."""


@dataclass(frozen=True)
class MountSpec:
    host_path: str
    name: str

    @property
    def arg(self) -> str:
        """What ``anka mount <vm>`` takes: always with an explicit name, so resolving a symlink
        cannot change the folder name the workload expects."""
        return f"{self.host_path}:{self.name}"

    @property
    def guest_path(self) -> str:
        return f"{GUEST_ROOT}/{self.name}"


def real_directory(path: str) -> str | None:
    """The default ``resolve``: the symlink-free path of an existing directory, else ``None``."""
    real = os.path.realpath(os.path.expanduser(path))
    return real if os.path.isdir(real) else None


def split_spec(raw: str) -> tuple[str, str | None]:
    """``host_path[:name]`` → (host path, name or None). A colon followed by something with a ``/``
    belongs to the path, so ``/a:b/c`` is a path, not a mount named ``b/c``."""
    text = raw.strip()
    host, sep, name = text.rpartition(":")
    if not sep or not host or "/" in name:
        return text, None
    return host, name or None


def resolve_mounts(
    raw: Iterable[str], resolve: Callable[[str], str | None] = real_directory
) -> list[MountSpec]:
    """Validate, resolve and de-duplicate mount specs in order; raises :class:`MountError`."""
    specs: list[MountSpec] = []
    by_name: dict[str, MountSpec] = {}
    for entry in raw:
        host, name = split_spec(entry)
        if not host:
            raise MountError(f"empty mount spec {entry!r}")
        if not os.path.isabs(os.path.expanduser(host)):
            raise MountError(f"mount {entry!r}: the host path must be absolute")
        real = resolve(host)
        if real is None:
            raise MountError(f"mount {entry!r}: host folder {host} does not exist on this host")
        spec = MountSpec(real, name or os.path.basename(real.rstrip("/")) or "root")
        if spec.name in (".", "..") or spec.name.startswith("/"):
            raise MountError(f"mount {entry!r}: invalid guest folder name {spec.name!r}")
        seen = by_name.get(spec.name)
        if seen == spec:
            continue
        if seen is not None:
            raise MountError(
                f"mount {entry!r}: guest folder {spec.name!r} is already taken by {seen.host_path}"
            )
        by_name[spec.name] = spec
        specs.append(spec)
    return specs


def unsupported_reason(anka_version: str, arch: str) -> str | None:
    """Why this host cannot mount host folders into guests (``None``: it can).

    Mounts need Anka 3.9.0 or later on Apple silicon; Intel hosts never had them.
    """
    if arch != "arm64":
        return f"host-to-guest mounts need an Apple-silicon (arm64) host; this one is {arch}"
    try:
        version = parse_version(anka_version)
    except ValueError:
        return f"host-to-guest mounts need Anka >= 3.9.0; cannot read the version {anka_version!r}"
    if version < MIN_ANKA_VERSION:
        return f"host-to-guest mounts need Anka >= 3.9.0; this host has {anka_version}"
    return None
