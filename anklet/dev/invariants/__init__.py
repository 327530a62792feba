"""A reusable checker for Anklet's reliability invariants (docs/reliability.md).

Point a :class:`Monitor` at a running system (a Kubernetes API URL, a Redis URL, the simulated
Macs' ``ANKA_SIM_HOME`` directories and, optionally, the fake GitHub's URL); it samples while a
scenario runs and, once the system is quiet, checks that

1. every AnkaJob reaches a terminal phase, or is still progressing with an explanation;
2. never two VMs exist for one job attempt, and a job never runs twice;
3. no host exceeds its VM slots, CPU or memory (unless overcommit is on);
4. after quiescence no VM, reservation, Redis key or GitHub runner is left without an owner;
5. every state change is visible in AnkaJob status or an Event, with a reason.

The checks are pure functions over plain snapshots (``checks``, ``model``); ``collect`` reads the
live system into those snapshots.
"""

from anklet.dev.invariants.collect import Target
from anklet.dev.invariants.model import INVARIANTS, Violation
from anklet.dev.invariants.monitor import Monitor, Report

__all__ = ["INVARIANTS", "Monitor", "Report", "Target", "Violation"]
