"""Fault injection: make chosen API calls, webhooks and runners misbehave on purpose.

Every fault is counted ("the next N ..."), so a test states exactly what goes wrong and the
fake is well-behaved again afterwards. The same faults can be set out of process through
``POST /_sim/faults`` (see :meth:`Faults.apply`). Everything here runs on the server's event
loop, so consuming a count needs no lock.

A request rejected by a ``fail`` or ``rate_limit`` fault never reaches its handler: it has no
effect, exactly as GitHub promises for rate-limited calls. ``fail(..., effect=True)`` is the
opposite case, a call that took effect but whose answer was lost (a 502 from a proxy), which is
what exercises a client's idempotency.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

RATE_LIMIT_KINDS = ("primary", "secondary")


@dataclass
class FailRule:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    headers: dict[str, str] = field(default_factory=dict)
    body: Any = None
    effect: bool = False

    def matches(self, method: str, path: str) -> bool:
        if self.method not in ("*", method.upper()):
            return False
        # /_sim/ paths (control API, runner protocol, releases) are only hit by rules that name them,
        # so a catch-all ".*" rule cannot break the test harness itself.
        if path.startswith("/_sim/") and "_sim" not in self.pattern.pattern:
            return False
        return self.pattern.search(path) is not None


@dataclass
class RateLimitRule:
    kind: str
    remaining: int
    reset_in: float
    status: int


@dataclass(frozen=True)
class RateLimitHit:
    """An active rate-limit window: every API request until ``until`` is rejected."""

    kind: str
    until: float
    status: int

    def retry_after(self, now: float) -> int:
        return max(1, math.ceil(self.until - now))


@dataclass
class WebhookRule:
    action: str | None
    remaining: int
    status_code: int = 502

    def matches(self, action: str | None) -> bool:
        return self.action is None or self.action == action


class Faults:
    """Pending faults. Methods that add faults are the public API; ``take_*`` consume them."""

    def __init__(self) -> None:
        self.clear()

    def clear(self) -> None:
        """Forget every pending fault and end any rate-limit window."""
        self._fail: list[FailRule] = []
        self._rate: list[RateLimitRule] = []
        self._window: RateLimitHit | None = None
        self._drop: list[WebhookRule] = []
        self._duplicate: list[WebhookRule] = []
        self._reorder = 0
        self._never_take = 0
        self.webhook_delay = 0.0

    # --- adding faults -------------------------------------------------------------------------

    def fail(
        self,
        method: str = "*",
        path_regex: str = ".*",
        status: int = 500,
        count: int = 1,
        headers: Mapping[str, str] | None = None,
        body: Any = None,
        *,
        effect: bool = False,
    ) -> None:
        """The next ``count`` requests whose method matches (``*``: any) and whose path matches
        ``path_regex`` (``re.search``; query excluded) are answered with ``status``, ``headers`` and
        ``body`` (default: GitHub's error body). With ``effect=True`` the request is handled first
        and only its answer is replaced."""
        self._fail.append(
            FailRule(
                method=method.upper(),
                pattern=re.compile(path_regex),
                status=status,
                remaining=count,
                headers=dict(headers or {}),
                body=body,
                effect=effect,
            )
        )

    def rate_limit(
        self, kind: str = "primary", count: int = 1, reset_in: float = 1.0, status: int = 403
    ) -> None:
        """The next API request opens a rate-limit window of ``reset_in`` seconds; every API request
        in the window is rejected (a client that retries early keeps failing, as on GitHub). After
        the window the next request opens another one, ``count`` windows in all.

        ``primary``: ``status`` (403, or 429) with ``x-ratelimit-remaining: 0`` and
        ``x-ratelimit-reset`` at the window's end. ``secondary``: ``status`` with ``retry-after``
        and GitHub's secondary-limit message."""
        if kind not in RATE_LIMIT_KINDS:
            raise ValueError(f"rate-limit kind must be one of {RATE_LIMIT_KINDS}, not {kind!r}")
        self._rate.append(RateLimitRule(kind=kind, remaining=count, reset_in=reset_in, status=status))

    def drop_webhooks(self, action: str | None = None, count: int = 1, status_code: int = 502) -> None:
        """The next ``count`` webhooks (of ``action``, or any) never reach the receiver; each is
        recorded as a failed delivery (``status_code``, default 502 as when a proxy in front of the
        receiver is down) so a redelivery scan finds it."""
        self._drop.append(WebhookRule(action=action, remaining=count, status_code=status_code))

    def duplicate_webhooks(self, action: str | None = None, count: int = 1) -> None:
        """The next ``count`` webhooks (of ``action``, or any) are delivered twice (same GUID,
        two delivery ids), as GitHub's at-least-once delivery may do."""
        self._duplicate.append(WebhookRule(action=action, remaining=count))

    def reorder_webhooks(self, count: int = 1) -> None:
        """The next ``count`` webhooks are held back and sent right after the following webhook of
        the same job (or after a hold timeout when none follows)."""
        self._reorder += count

    def delay_webhooks(self, seconds: float) -> None:
        """Delay every webhook by ``seconds`` from now on (0 turns it off); order is kept."""
        self.webhook_delay = max(0.0, float(seconds))

    def runner_never_takes_job(self, count: int = 1) -> None:
        """The next ``count`` runner sessions are never assigned a job (another machine took it,
        or GitHub lost the runner): the job stays queued unless another runner matches."""
        self._never_take += count

    def apply(self, spec: Mapping[str, Any]) -> None:
        """Add a fault from JSON: ``{"fault": "fail", "method": "GET", "path_regex": "...", ...}``;
        ``{"fault": "clear"}`` clears everything. Keys are the methods' keyword arguments.
        ``kind`` is accepted instead of ``fault`` except for ``rate_limit``, whose own ``kind``
        parameter (primary/secondary) it would collide with."""
        params = dict(spec)
        name = params.pop("fault", None)
        if name is None and params.get("kind") not in (None, *RATE_LIMIT_KINDS):
            name = params.pop("kind")  # accepted alias: {"kind": "drop_webhooks", ...}
        adders: dict[str, Callable[..., None]] = {
            "fail": self.fail,
            "rate_limit": self.rate_limit,
            "drop_webhooks": self.drop_webhooks,
            "duplicate_webhooks": self.duplicate_webhooks,
            "reorder_webhooks": self.reorder_webhooks,
            "delay_webhooks": self.delay_webhooks,
            "runner_never_takes_job": self.runner_never_takes_job,
        }
        if name == "clear":
            self.clear()
            return
        if name not in adders:
            raise ValueError(f"unknown fault {name!r}; known: clear, {', '.join(sorted(adders))}")
        try:
            adders[name](**params)
        except TypeError as exc:
            raise ValueError(f"bad parameters for {name}: {exc}") from exc

    def snapshot(self) -> dict[str, Any]:
        """What is still pending (for ``GET /_sim/faults`` and debugging)."""
        return {
            "fail": [
                {
                    "method": r.method,
                    "path_regex": r.pattern.pattern,
                    "status": r.status,
                    "count": r.remaining,
                }
                for r in self._fail
            ],
            "rate_limit": [
                {"kind": r.kind, "count": r.remaining, "reset_in": r.reset_in} for r in self._rate
            ],
            "rate_limit_window": None
            if self._window is None
            else {"kind": self._window.kind, "until": self._window.until},
            "drop_webhooks": [{"action": r.action, "count": r.remaining} for r in self._drop],
            "duplicate_webhooks": [{"action": r.action, "count": r.remaining} for r in self._duplicate],
            "reorder_webhooks": self._reorder,
            "delay_webhooks": self.webhook_delay,
            "runner_never_takes_job": self._never_take,
        }

    # --- consuming faults ----------------------------------------------------------------------

    def take_fail(self, method: str, path: str) -> FailRule | None:
        for rule in self._fail:
            if rule.remaining > 0 and rule.matches(method, path):
                rule.remaining -= 1
                self._fail = [r for r in self._fail if r.remaining > 0]
                return rule
        return None

    def take_rate_limit(self, now: float) -> RateLimitHit | None:
        if self._window is not None and now < self._window.until:
            return self._window
        self._window = None
        for rule in self._rate:
            if rule.remaining > 0:
                rule.remaining -= 1
                self._rate = [r for r in self._rate if r.remaining > 0]
                self._window = RateLimitHit(kind=rule.kind, until=now + rule.reset_in, status=rule.status)
                return self._window
        return None

    @staticmethod
    def _take(rules: list[WebhookRule], action: str | None) -> WebhookRule | None:
        for rule in rules:
            if rule.remaining > 0 and rule.matches(action):
                rule.remaining -= 1
                rules[:] = [r for r in rules if r.remaining > 0]
                return rule
        return None

    def take_drop(self, action: str | None) -> int | None:
        """The status code to record for a dropped webhook, or None to send it."""
        rule = self._take(self._drop, action)
        return None if rule is None else rule.status_code

    def take_duplicate(self, action: str | None) -> bool:
        return self._take(self._duplicate, action) is not None

    def take_reorder(self) -> bool:
        if self._reorder > 0:
            self._reorder -= 1
            return True
        return False

    def take_never_take(self) -> bool:
        if self._never_take > 0:
            self._never_take -= 1
            return True
        return False
