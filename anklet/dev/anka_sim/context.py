"""What every command handler receives: config, library, output, the faults of this call, time."""

from __future__ import annotations

import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from anklet.dev.anka_sim.config import SimConfig
from anklet.dev.anka_sim.faults import Fault
from anklet.dev.anka_sim.output import Emitter, not_found
from anklet.dev.anka_sim.paths import SimPaths
from anklet.dev.anka_sim.state import VM, State, Store


@dataclass
class Ctx:
    paths: SimPaths
    config: SimConfig
    store: Store
    emitter: Emitter
    command: str
    env: Mapping[str, str]
    faults: list[Fault] = field(default_factory=list)

    @property
    def machine_readable(self) -> bool:
        return self.emitter.machine_readable

    def fault(self, effect: str) -> Fault | None:
        return next((f for f in self.faults if f.effect == effect), None)

    @property
    def slow_factor(self) -> float:
        factor = 1.0
        for f in self.faults:
            if f.effect == "slow":
                factor *= float(f.get("factor", 10.0))
        return factor

    def scaled(self, seconds: float) -> float:
        """Real seconds for ``seconds`` of simulated time (time scale and ``slow`` faults)."""
        return max(0.0, seconds) * self.config.time_scale * self.slow_factor

    def seconds(self, name: str, extra: float = 0.0) -> float:
        return self.scaled(self.config.latency_of(name) + extra)

    def pause(self, name: str, extra: float = 0.0) -> None:
        """Block for the operation's latency; callers must not hold the global lock."""
        delay = self.seconds(name, extra)
        if delay > 0:
            time.sleep(delay)

    def say(self, text: str) -> None:
        """Human progress, on stderr, as real ``anka`` prints it."""
        sys.stderr.write(text + "\n")
        sys.stderr.flush()

    @staticmethod
    def resolve(state: State, ref: str) -> VM:
        vm = state.find(ref)
        if vm is None:
            raise not_found(ref)
        return vm
