"""How much CPU and memory a job reserves: its own request, else its template tag's size."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from anklet.models import AnkaJobSpec
from anklet.redis_protocol import HostSnapshot, size_key


def resolve_resources(
    spec: AnkaJobSpec, hosts: Sequence[HostSnapshot], sizes: Mapping[str, tuple[int, int]] | None = None
) -> tuple[int, int]:
    """(cpu, memory MiB): the job's request; else the size a host reported for the template tag
    (on its disk, or learnt from the registry). When nobody knows it yet, (0, 0): only a VM slot
    is reserved, and the host that gets the job looks the size up and hands the job back, so
    the next placement reserves the real size (see `host_agent.worker`)."""
    if spec.resources is not None:
        return spec.resources.cpu, spec.resources.memory_mib
    for host in hosts:
        for t in host.info.templates:
            known = t.cpu is not None and t.memory_mib is not None
            if known and spec.template in (t.uuid, t.name) and (spec.tag is None or spec.tag == t.tag):
                return t.cpu or 0, t.memory_mib or 0
    if sizes and size_key(spec.template, spec.tag) in sizes:
        return sizes[size_key(spec.template, spec.tag)]
    return 0, 0
