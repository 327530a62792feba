"""Log context: the job, attempt, host and VM a piece of work is about, carried by contextvars.

The places that handle one job or one host (the reconciler's per-job step, the agent's worker
for one VM) enter `log_context(...)` once; every log line written in that scope, including by
helpers and by tasks created inside it (asyncio copies the context into a new task), carries
the fields. No logger has to be passed around and no call site has to repeat the job's name.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Mapping
from contextvars import ContextVar
from types import MappingProxyType

#: The fields a line may carry, in the order they are written (others follow, sorted).
FIELDS = ("job", "uid", "attempt", "host", "vm")

_EMPTY: Mapping[str, str] = MappingProxyType({})
_CONTEXT: ContextVar[Mapping[str, str]] = ContextVar("anklet_log_context", default=_EMPTY)


def current() -> Mapping[str, str]:
    """The fields in force here (read-only)."""
    return _CONTEXT.get()


@contextlib.contextmanager
def log_context(**fields: object) -> Iterator[None]:
    """Add `fields` (None values are skipped) to every log line written inside the block."""
    added = {key: str(value) for key, value in fields.items() if value is not None and value != ""}
    token = _CONTEXT.set(MappingProxyType({**_CONTEXT.get(), **added}))
    try:
        yield
    finally:
        _CONTEXT.reset(token)


def job_fields(
    namespace: str,
    name: str,
    *,
    uid: str | None = None,
    attempt: int | None = None,
    host: str | None = None,
    vm: str | None = None,
) -> dict[str, object]:
    """The standard fields for one job (attempt 0 means "not placed yet" and is left out)."""
    return {
        "job": f"{namespace}/{name}",
        "uid": uid,
        "attempt": attempt or None,
        "host": host,
        "vm": vm,
    }
