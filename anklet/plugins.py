"""The plugin API: handler plugins turn an AnkaJob into the workload its VM runs.

Plugins are found through Python entry points (group ``anklet.handlers``), so a third-party
package adds a CI platform with ``pip install``; nothing in Anklet lists them by hand. Handlers
run in the controller only: hosts receive the resolved workload (and, separately, per-run
secrets) through Redis.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from anklet.models import AnkaJob, AnkaJobSpec, Phase
from anklet.wire import Observation, Workload

log = logging.getLogger("anklet.plugins")

HANDLERS_GROUP = "anklet.handlers"
RECEIVERS_GROUP = "anklet.receivers"


class InvalidJob(ValueError):
    """The job's handler settings cannot work; the message names the field and the cause."""


class NotYet(Exception):
    """The handler cannot decide yet (it waits for an upstream fact); ask again on the next event."""


@dataclass(frozen=True)
class Stop:
    """The handler says the job's VM must go now, e.g. its CI job was cancelled upstream.

    The job then ends in `phase`, or with `retry` goes back to Pending for a new attempt
    (within backoffLimit) once the VM is gone.
    """

    reason: str
    message: str
    phase: Phase = Phase.CANCELLED
    retry: bool = False


@dataclass(frozen=True)
class Verdict:
    """The handler's reading of a finished workload: the final phase, or (phase None) a retry."""

    phase: Phase | None
    reason: str
    message: str


@runtime_checkable
class HandlerPlugin(Protocol):
    """What the controller asks of a handler plugin. Subclass `Handler` for the defaults."""

    name: str

    def validate(self, spec: AnkaJobSpec) -> None:
        """Raise InvalidJob when the spec lacks what this handler needs."""

    def workload(self, job: AnkaJob) -> Workload:
        """The script (and non-secret environment) the agent runs inside the job's VM."""

    async def secrets(self, job: AnkaJob, *, vm_name: str, attempt: int) -> Mapping[str, str]:
        """Per-run secrets for the VM (only when `workload().needs_secrets`); called after the
        host's capacity is reserved, and again whenever they are missing (must be idempotent)."""

    async def check(self, job: AnkaJob) -> Stop | None:
        """Called for every active job: a Stop ends it (tearing down its VM if any)."""

    async def judge(self, job: AnkaJob, obs: Observation) -> Verdict | None:
        """The final phase of a finished workload; None keeps the exit-code rule; may raise NotYet."""

    async def cleanup(self, job: AnkaJob) -> None:
        """After the job ended: remove what it left outside Anklet (idempotent, best effort)."""

    def status_fields(self, job: AnkaJob) -> Mapping[str, object] | None:
        """Handler-specific status to mirror (e.g. {"github": {...}}), or None."""

    async def sweep(self, jobs: Collection[AnkaJob]) -> None:
        """Periodic (each resync): remove leftovers no job owns any more, e.g. orphan runners."""


class Handler:
    """Defaults for the optional parts of `HandlerPlugin`."""

    name = ""

    def validate(self, spec: AnkaJobSpec) -> None:
        return None

    def workload(self, job: AnkaJob) -> Workload:
        raise NotImplementedError

    async def secrets(self, job: AnkaJob, *, vm_name: str, attempt: int) -> Mapping[str, str]:
        return {}

    async def check(self, job: AnkaJob) -> Stop | None:
        return None

    async def judge(self, job: AnkaJob, obs: Observation) -> Verdict | None:
        return None

    async def cleanup(self, job: AnkaJob) -> None:
        return None

    def status_fields(self, job: AnkaJob) -> Mapping[str, object] | None:
        return None

    async def sweep(self, jobs: Collection[AnkaJob]) -> None:
        return None


class UnknownPlugin(LookupError):
    pass


@cache
def _load_handlers() -> tuple[dict[str, HandlerPlugin], dict[str, str]]:
    found: dict[str, HandlerPlugin] = {}
    broken: dict[str, str] = {}
    for ep in entry_points(group=HANDLERS_GROUP):
        try:
            plugin = ep.load()
        except Exception as exc:  # a broken plugin must not take the others down
            log.error("cannot load handler plugin %s (%s): %s", ep.name, ep.value, exc)
            broken[ep.name] = f"{type(exc).__name__}: {exc}"
            continue
        if not isinstance(plugin, HandlerPlugin):
            log.error("handler plugin %s (%s) does not implement HandlerPlugin", ep.name, ep.value)
            broken[ep.name] = "does not implement HandlerPlugin"
            continue
        found[ep.name] = plugin
    return found, broken


def handler_plugins() -> dict[str, HandlerPlugin]:
    """Every installed handler plugin that loaded, by name (loaded once per process)."""
    return _load_handlers()[0]


def handler(name: str) -> HandlerPlugin:
    plugins, broken = _load_handlers()
    if name in broken:
        raise UnknownPlugin(f"handler {name!r} is installed but failed to load: {broken[name]}")
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        raise UnknownPlugin(f"unknown handler {name!r} (installed: {known})")
    return plugins[name]
