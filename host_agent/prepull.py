"""Pre-pulled templates: keep on disk the templates the controller names for this host.

The controller writes the host's config (``keys.host_config``, a ``HostConfig`` with
``prePull: ["<template>[:<tag>]", ...]``) and wakes the host. On every converge pass the agent calls
:meth:`PrePuller.tick`, which never waits: when no pass is running it starts one in the
background. A pass reads the config, picks the specs that are due (:func:`due_specs`, pure) and
pulls them one at a time through ``TemplateStore.prefetch``, behind the same host-wide lock as job
pulls and clones, so a job waits for at most the one pre-pull in flight and never for the rest.

A failure is logged once per distinct message and retried after ``retry_seconds`` (the resync
interval); a template pre-pulled once is checked again only after ``recheck_seconds`` (to catch a
moved "latest" tag) or when it disappears from the disk, so a quiet host does not ask the registry
on every wake-up.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from pydantic import ValidationError
from redis.exceptions import RedisError

from anklet.wire import HostConfig
from host_agent.anka import AnkaError, VMInfo
from host_agent.templates import TemplateStore, TemplateUnavailable, is_template, matches

log = logging.getLogger("anklet.agent")

RECHECK_SECONDS = 300.0


def split_spec(spec: str) -> tuple[str, str | None]:
    """``template[:tag]`` → (template UUID or name, tag or None for the registry's latest)."""
    template, _, tag = spec.strip().partition(":")
    return template, tag or None


@dataclass(frozen=True)
class SpecState:
    """What the agent remembers about one prePull spec (monotonic seconds)."""

    settled_at: float | None = None
    failed_at: float | None = None


def due_specs(
    wanted: Sequence[str],
    local: Sequence[VMInfo],
    memory: Mapping[str, SpecState],
    *,
    now: float,
    recheck: float,
    retry: float,
) -> list[str]:
    """The specs a pass should (re)try, in the controller's order, each once.

    A tagged spec whose tag is the template's current local tag is never due (``anka list``
    already proves it). A failed spec is due again after ``retry``; a settled one after
    ``recheck``, or at once when its template is gone from the disk (evicted or deleted).
    """
    templates = [vm for vm in local if is_template(vm)]
    due = []
    for spec in dict.fromkeys(s.strip() for s in wanted if s.strip()):
        template, tag = split_spec(spec)
        if tag is not None and any(matches(vm, template, tag) and vm.status != "failed" for vm in templates):
            continue
        state = memory.get(spec, SpecState())
        if state.failed_at is not None:
            if now - state.failed_at >= retry:
                due.append(spec)
            continue
        if state.settled_at is not None:
            on_disk = any(template in (vm.uuid, vm.name) for vm in templates)
            if on_disk and now - state.settled_at < recheck:
                continue
        due.append(spec)
    return due


class PrePuller:
    """Runs pre-pull passes in the background, one at a time, never blocking the caller."""

    def __init__(
        self,
        read_config: Callable[[], Awaitable[HostConfig | None]],
        templates: TemplateStore,
        *,
        retry_seconds: float,
        recheck_seconds: float = RECHECK_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._read_config = read_config
        self.templates = templates
        self.retry_seconds = retry_seconds
        self.recheck_seconds = recheck_seconds
        self._clock = clock
        self.wanted: list[str] = []
        self._memory: dict[str, SpecState] = {}
        self._logged: dict[str, str] = {}
        self._task: asyncio.Task[None] | None = None

    def pinned(self) -> set[str]:
        """Templates (UUID or name) the controller wants kept: evicted last, never for a pre-pull."""
        return {split_spec(spec)[0] for spec in self.wanted}

    def tick(self, local: Sequence[VMInfo]) -> None:
        """Start a pass unless one is running; ``local`` is the listing the caller just made."""
        task = self._task
        if task is not None and not task.done():
            return
        if task is not None and not task.cancelled() and task.exception() is not None:
            log.error("pre-pull pass crashed: %r", task.exception())
        self._task = asyncio.create_task(self._pass(list(local)), name="prepull")

    async def close(self) -> None:
        """Stop the running pass (its ``anka`` child is killed with it)."""
        if self._task is not None and not self._task.done():
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    def _once(self, key: str, message: str) -> None:
        if self._logged.get(key) != message:
            self._logged[key] = message
            log.warning("%s", message)

    async def _pass(self, local: list[VMInfo]) -> None:
        try:
            config = await self._read_config()
        except (RedisError, OSError):
            return  # the converge loop reports Redis outages; try again on the next pass
        except ValidationError as exc:
            self._once("config", f"ignoring this host's config in redis: {exc}")
            return
        self._logged.pop("config", None)
        self.wanted = list(dict.fromkeys(config.pre_pull)) if config is not None else []
        self._memory = {s: m for s, m in self._memory.items() if s in self.wanted}
        due = due_specs(
            self.wanted,
            local,
            self._memory,
            now=self._clock(),
            recheck=self.recheck_seconds,
            retry=self.retry_seconds,
        )
        for spec in due:
            template, tag = split_spec(spec)
            try:
                pulled = await self.templates.prefetch(template, tag)
            except TemplateUnavailable as exc:
                self._memory[spec] = SpecState(failed_at=self._clock())
                self._once(spec, f"pre-pull of {spec} failed ({exc.reason}): {exc}; retrying later")
                continue
            except AnkaError as exc:
                self._memory[spec] = SpecState(failed_at=self._clock())
                self._once(spec, f"pre-pull of {spec} failed: {exc}; retrying later")
                continue
            self._memory[spec] = SpecState(settled_at=self._clock())
            if self._logged.pop(spec, None) is not None or pulled:
                log.info("pre-pulled %s", spec)
