"""How much CPU and memory a job reserves: its own request, else its template tag's size."""

from __future__ import annotations

from collections.abc import Sequence

from anklet.models import AnkaJobSpec
from anklet.redis_protocol import HostSnapshot


def resolve_resources(spec: AnkaJobSpec, hosts: Sequence[HostSnapshot]) -> tuple[int, int]:
    """(cpu, memory MiB). Falls back to the size a host reported for the template tag; when no
    host has seen the template yet, only a VM slot is reserved (cpu and memory 0), which the
    2-VM limit still bounds."""
    if spec.resources is not None:
        return spec.resources.cpu, spec.resources.memory_mib
    for host in hosts:
        for t in host.info.templates:
            known = t.cpu is not None and t.memory_mib is not None
            if known and spec.template in (t.uuid, t.name) and (spec.tag is None or spec.tag == t.tag):
                return t.cpu or 0, t.memory_mib or 0
    return 0, 0
