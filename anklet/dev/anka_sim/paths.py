"""Where a simulated Mac keeps its files.

One directory (``ANKA_SIM_HOME``) is one simulated host: its config, VM library, locks, faults
and call log. Tests and the dev stack give each simulated Mac its own directory, the way each
macOS user has a separate Anka VM library.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

HOME_ENV = "ANKA_SIM_HOME"
DEFAULT_HOME = "~/.anka-sim"


@dataclass(frozen=True)
class SimPaths:
    """Every file the simulator reads or writes, derived from one root directory."""

    root: Path

    @classmethod
    def from_env(cls, env: os._Environ[str] | dict[str, str] | None = None) -> SimPaths:
        source = os.environ if env is None else env
        raw = source.get(HOME_ENV) or DEFAULT_HOME
        return cls(Path(raw).expanduser())

    @property
    def config(self) -> Path:
        return self.root / "config.json"

    @property
    def state(self) -> Path:
        return self.root / "state.json"

    @property
    def state_lock(self) -> Path:
        return self.root / "state.lock"

    @property
    def faults(self) -> Path:
        return self.root / "faults.json"

    @property
    def calls(self) -> Path:
        return self.root / "calls.jsonl"

    @property
    def locks(self) -> Path:
        """Per-VM lock files, like Anka's ``vm_lock_dir``."""
        return self.root / "locks"

    @property
    def pull_lock(self) -> Path:
        """Held (flock) by the one pull running on this host."""
        return self.root / "pull.lock"

    @property
    def img_lib(self) -> Path:
        """Holds ``.partial-*`` markers of pulls in progress or interrupted."""
        return self.root / "img_lib"

    @property
    def vms(self) -> Path:
        """Per-VM sandboxes; ``vms/<uuid>`` stands for the guest's ``/Users/anka``."""
        return self.root / "vms"

    def ensure(self) -> None:
        for directory in (self.root, self.locks, self.img_lib, self.vms):
            directory.mkdir(parents=True, exist_ok=True)
