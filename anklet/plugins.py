"""The plugin API: handler plugins turn an AnkaJob into the workload its VM runs.

Plugins are found through Python entry points (group ``anklet.handlers``), so a third-party
package adds a CI platform with ``pip install``; nothing in Anklet lists them by hand.
"""

from __future__ import annotations

from functools import cache
from importlib.metadata import entry_points
from typing import Protocol, runtime_checkable

from anklet.models import AnkaJob, AnkaJobSpec
from anklet.wire import Workload

HANDLERS_GROUP = "anklet.handlers"
RECEIVERS_GROUP = "anklet.receivers"


class InvalidJob(ValueError):
    """The job's handler settings cannot work; the message names the field and the cause."""


@runtime_checkable
class HandlerPlugin(Protocol):
    """What the controller asks of a handler plugin (runs in the controller, never on a Mac)."""

    name: str

    def validate(self, spec: AnkaJobSpec) -> None:
        """Raise InvalidJob when the spec lacks what this handler needs."""

    def workload(self, job: AnkaJob) -> Workload:
        """The script (and environment) the host agent runs inside the job's VM."""


class UnknownPlugin(LookupError):
    pass


@cache
def handler_plugins() -> dict[str, HandlerPlugin]:
    """Every installed handler plugin by name (loaded once per process)."""
    found: dict[str, HandlerPlugin] = {}
    for ep in entry_points(group=HANDLERS_GROUP):
        plugin = ep.load()
        if not isinstance(plugin, HandlerPlugin):
            raise TypeError(f"entry point {ep.name} ({ep.value}) is not a HandlerPlugin")
        found[ep.name] = plugin
    return found


def handler(name: str) -> HandlerPlugin:
    plugins = handler_plugins()
    if name not in plugins:
        known = ", ".join(sorted(plugins)) or "none"
        raise UnknownPlugin(f"unknown handler {name!r} (installed: {known})")
    return plugins[name]
