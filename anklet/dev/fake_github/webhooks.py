"""Webhook deliveries: signing, sending in the background, recording, redelivery, faults.

Sending never blocks an API handler: every webhook is a background task, chained per job so a
job's webhooks arrive in the order its transitions happened (unless a reorder fault says
otherwise); different jobs' webhooks go out concurrently. Every attempt, including dropped,
failed and redelivered ones, is recorded as a delivery of the one configured hook, so the hook
deliveries API and a receiver's redelivery scan see what GitHub would show.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import itertools
import json
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any

import aiohttp

from anklet.dev.fake_github.faults import Faults
from anklet.dev.fake_github.state import DELIVERY_ID_START

USER_AGENT = "GitHub-Hookshot/8e0b0c5"
RESPONSE_BODY_LIMIT = 4096


@dataclass
class Outgoing:
    """One webhook event, its payload frozen when the transition happened."""

    event: str
    action: str | None
    payload: dict[str, Any]
    key: str
    repository_id: int | None = None
    repository: str | None = None  # owner/name, for the repo-scoped deliveries endpoint
    owner: str | None = None
    installation_id: int | None = None
    target_id: int | None = None
    guid: str = field(default_factory=lambda: str(uuid.uuid4()))
    drop_status: int | None = None


@dataclass
class Delivery:
    """One delivery attempt, as the hook deliveries API describes it."""

    id: int
    message: Outgoing
    redelivery: bool
    delivered_at: float
    url: str = ""
    duration: float = 0.0
    status: str = ""
    status_code: int = 0
    request_headers: dict[str, str] = field(default_factory=dict)
    response_headers: dict[str, str] = field(default_factory=dict)
    response_body: str | None = None

    @property
    def success(self) -> bool:
        return 200 <= self.status_code < 300


def signature(secret: str, body: bytes, digest: str = "sha256") -> str:
    mac = hmac.new(secret.encode(), body, getattr(hashlib, digest)).hexdigest()
    return f"{digest}={mac}"


class WebhookSender:
    def __init__(
        self,
        *,
        hook_id: int,
        faults: Faults,
        url: str | None,
        secret: str,
        timeout: float = 10.0,
        reorder_hold: float = 5.0,
    ) -> None:
        self.hook_id = hook_id
        self.faults = faults
        self.url = url
        self.secret = secret
        self.timeout = timeout
        self.reorder_hold = reorder_hold
        self.deliveries: list[Delivery] = []
        self._ids = itertools.count(DELIVERY_ID_START)
        self._tails: dict[str, asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._held: dict[str, Outgoing] = {}
        self._hold_timers: dict[str, asyncio.TimerHandle] = {}
        self._session: aiohttp.ClientSession | None = None

    def configure(self, url: str | None, secret: str) -> None:
        self.url = url
        self.secret = secret

    def find(self, delivery_id: int) -> Delivery | None:
        return next((d for d in self.deliveries if d.id == delivery_id), None)

    # --- emitting ------------------------------------------------------------------------------

    def emit(self, message: Outgoing) -> None:
        """Queue a webhook (applying reorder, duplicate and drop faults)."""
        if self.faults.take_reorder():
            self._flush_held(message.key)  # at most one held message per job
            self._held[message.key] = message
            loop = asyncio.get_running_loop()
            self._hold_timers[message.key] = loop.call_later(self.reorder_hold, self._flush_held, message.key)
            return
        self._emit_now(message)
        self._flush_held(message.key)

    def _flush_held(self, key: str) -> None:
        timer = self._hold_timers.pop(key, None)
        if timer is not None:
            timer.cancel()
        held = self._held.pop(key, None)
        if held is not None:
            self._emit_now(held)

    def _emit_now(self, message: Outgoing) -> None:
        message.drop_status = self.faults.take_drop(message.action)
        self._enqueue(message.key, message, redelivery=False)
        if self.faults.take_duplicate(message.action):
            copy = replace(message, drop_status=None)
            self._enqueue(message.key, copy, redelivery=False)

    def redeliver(self, delivery: Delivery) -> None:
        """``POST .../deliveries/{id}/attempts``: the same payload and GUID, a new delivery id,
        ``redelivery: true``; not subject to drop/duplicate/reorder faults."""
        message = replace(delivery.message, drop_status=None)
        self._enqueue(f"redelivery:{delivery.id}", message, redelivery=True)

    def _enqueue(self, key: str, message: Outgoing, *, redelivery: bool) -> None:
        previous = self._tails.get(key)
        task = asyncio.create_task(self._after(previous, message, redelivery))
        self._tails[key] = task
        self._tasks.add(task)
        task.add_done_callback(lambda t: self._done(key, t))

    def _done(self, key: str, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if self._tails.get(key) is task:
            del self._tails[key]

    async def _after(self, previous: asyncio.Task[None] | None, message: Outgoing, redelivery: bool) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        await self._deliver(message, redelivery=redelivery)

    # --- sending -------------------------------------------------------------------------------

    def _headers(self, message: Outgoing, body: bytes) -> dict[str, str]:
        headers = {
            "Accept": "*/*",
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-GitHub-Delivery": message.guid,
            "X-GitHub-Event": message.event,
            "X-GitHub-Hook-ID": str(self.hook_id),
            "X-GitHub-Hook-Installation-Target-ID": str(message.target_id or 0),
            "X-GitHub-Hook-Installation-Target-Type": "repository",
        }
        if self.secret:
            headers["X-Hub-Signature"] = signature(self.secret, body, "sha1")
            headers["X-Hub-Signature-256"] = signature(self.secret, body)
        return headers

    async def _deliver(self, message: Outgoing, *, redelivery: bool) -> None:
        if self.faults.webhook_delay:
            await asyncio.sleep(self.faults.webhook_delay)
        body = json.dumps(message.payload, separators=(",", ":")).encode()
        delivery = Delivery(
            id=next(self._ids),
            message=message,
            redelivery=redelivery,
            delivered_at=time.time(),
            url=self.url or "",
        )
        delivery.request_headers = self._headers(message, body)
        started = time.monotonic()
        if message.drop_status is not None:
            delivery.status_code = message.drop_status
            delivery.status = f"Invalid HTTP Response: {message.drop_status}"
        elif not self.url:
            delivery.status = "failed to connect to host"
        else:
            await self._post(delivery, body)
        delivery.duration = round(time.monotonic() - started, 3)
        self.deliveries.append(delivery)

    async def _post(self, delivery: Delivery, body: bytes) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession()
        try:
            async with self._session.post(
                delivery.url,
                data=body,
                headers=delivery.request_headers,
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                allow_redirects=False,
            ) as response:
                text = await response.text(errors="replace")
                delivery.status_code = response.status
                delivery.response_headers = {k: v for k, v in response.headers.items()}
                delivery.response_body = text[:RESPONSE_BODY_LIMIT]
                delivery.status = "OK" if delivery.success else f"Invalid HTTP Response: {response.status}"
        except TimeoutError:
            delivery.status = "timed out"
        except aiohttp.ClientError:
            delivery.status = "failed to connect to host"

    async def idle(self, timeout: float = 30.0) -> None:
        """Wait until nothing is queued or held (tests; the dev stack's shutdown)."""
        deadline = time.monotonic() + timeout
        while (self._tasks or self._held) and time.monotonic() < deadline:
            if self._tasks:
                await asyncio.wait(set(self._tasks), timeout=max(0.0, deadline - time.monotonic()))
            else:
                await asyncio.sleep(0.05)

    async def close(self) -> None:
        for timer in self._hold_timers.values():
            timer.cancel()
        self._hold_timers.clear()
        self._held.clear()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            with contextlib.suppress(Exception):
                await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._session is not None:
            await self._session.close()
            self._session = None
