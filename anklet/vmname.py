"""VM names as a parsed value type: how Anklet recognises the VMs it owns on a host.

A name encodes the job's uid and attempt, so an agent that restarts can tell, from `anka list`
alone, which job a VM belongs to, and can leave foreign VMs (templates, other tools') alone.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PREFIX = "anklet-vm-"
_PATTERN = re.compile(r"^anklet-vm-(?P<uid>[0-9a-zA-Z][0-9a-zA-Z-]{0,80}?)-a(?P<attempt>[1-9][0-9]{0,5})$")


class NotManagedByAnklet(ValueError):
    """The VM name was not made by Anklet; such VMs are never touched."""


@dataclass(frozen=True, order=True)
class VMName:
    uid: str
    attempt: int

    def __str__(self) -> str:
        return f"{PREFIX}{self.uid}-a{self.attempt}"

    @classmethod
    def parse(cls, name: str) -> VMName:
        match = _PATTERN.match(name)
        if match is None:
            raise NotManagedByAnklet(name)
        return cls(uid=match["uid"], attempt=int(match["attempt"]))
