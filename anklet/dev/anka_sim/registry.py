"""The simulated registry's catalogue and its pure arithmetic (lookups, sizes).

Kept free of I/O so the disk and download-size rules can be read and tested in one place.
The default catalogue holds the templates the Go Anklet's own tests use.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

GIB = 1024**3


@dataclass(frozen=True)
class RegistryTag:
    """One pushed tag: a layer of ``size`` bytes plus the VM shape it was committed with."""

    name: str
    size: int
    cpu_cores: int
    ram_size: int
    hard_drive: int = 100 * GIB


@dataclass(frozen=True)
class RegistryTemplate:
    """A template in the registry. ``base_size`` bytes are shared by all of its tags."""

    uuid: str
    name: str
    latest: str
    tags: tuple[RegistryTag, ...]
    base_size: int = 0
    description: str = ""

    def tag(self, name: str | None) -> RegistryTag | None:
        wanted = name or self.latest
        return next((t for t in self.tags if t.name == wanted), None)


def _tag(name: str, cores: int, ram_gib: int, size_gib: int) -> dict[str, Any]:
    return {"name": name, "cpu_cores": cores, "ram_size": ram_gib * GIB, "size": size_gib * GIB}


def default_templates() -> list[dict[str, Any]]:
    """The Go Anklet's test templates; tag names read ``<cores>c<ram GiB>r``."""
    anklet_tags = [
        _tag("2c4r", 2, 4, 22),
        _tag("3c6r", 3, 6, 24),
        _tag("6c14r", 6, 14, 28),
        _tag("8c14r", 8, 14, 31),
        _tag("12c20r", 12, 20, 38),
        _tag("12c50r", 12, 50, 66),
        _tag("20c20r", 20, 20, 44),
    ]
    return [
        {
            "uuid": "84266873-da90-4e0d-903b-ed0233471f9f",
            "name": "anklet",
            "latest": "6c14r",
            "base_size": 18 * GIB,
            "tags": anklet_tags,
        },
        {
            "uuid": "d792c6f6-198c-470f-9526-9c998efe7ab4",
            "name": "26.1-arm64",
            "latest": "vanilla+port-forward-22+brew-git",
            "base_size": 20 * GIB,
            "tags": [_tag("vanilla+port-forward-22+brew-git", 4, 8, 36)],
        },
    ]


def parse_templates(raw: Iterable[Mapping[str, Any]]) -> tuple[RegistryTemplate, ...]:
    """Build the catalogue from config JSON; a template without ``latest`` uses its last tag."""
    templates = []
    for item in raw:
        tags = tuple(
            RegistryTag(
                name=str(t["name"]),
                size=int(t["size"]),
                cpu_cores=int(t.get("cpu_cores", 4)),
                ram_size=int(t.get("ram_size", 8 * GIB)),
                hard_drive=int(t.get("hard_drive", 100 * GIB)),
            )
            for t in item.get("tags", [])
        )
        latest = str(item.get("latest") or (tags[-1].name if tags else ""))
        templates.append(
            RegistryTemplate(
                uuid=str(item["uuid"]),
                name=str(item.get("name", item["uuid"])),
                latest=latest,
                tags=tags,
                base_size=int(item.get("base_size", 0)),
                description=str(item.get("description", "")),
            )
        )
    return tuple(templates)


def find_template(templates: Iterable[RegistryTemplate], ref: str) -> RegistryTemplate | None:
    """Registry lookups accept a UUID or a name, like local ones."""
    candidates = list(templates)
    return next((t for t in candidates if t.uuid == ref), None) or next(
        (t for t in candidates if t.name == ref), None
    )


def image_size(base_size: int, tag_sizes: Iterable[int]) -> int:
    """Disk used by a local template: the shared base once, plus each tag's own layers."""
    sizes = list(tag_sizes)
    if not sizes:
        return 0
    base = min(base_size, *sizes)
    return base + sum(size - base for size in sizes)


def cached_bytes(template: RegistryTemplate, tag: RegistryTag, local_tags: Mapping[str, int] | None) -> int:
    """How much of ``tag`` is already on disk: all of it, the shared base, or nothing."""
    if local_tags is None:
        return 0
    if tag.name in local_tags:
        return tag.size
    return min(template.base_size, tag.size) if local_tags else 0
