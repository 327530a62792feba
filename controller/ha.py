"""Run the operator only while this replica holds the controller's Lease (high availability).

A standby only waits for the Lease: no kopf handlers, no reconciler, no Redis. Once it leads it
starts the operator. The election runs on its own thread and event loop, as client-go's runs in
its own goroutine: renewals do not wait behind the operator's work, and losing the Lease ends
the process from that thread at once (`os._exit`, non-zero), whatever the operator is doing.
The Deployment restarts the container, which comes back as a standby. A clean stop (SIGTERM)
stops the operator first, then releases the Lease so the standby takes over within one retry
period instead of a whole lease duration.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
import os
import signal
import sys
import threading
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp.web

from controller.kube import KubeClient
from controller.leader import ElectionConfig, LeaderElector

log = logging.getLogger("anklet.controller.ha")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_LOST_LEADERSHIP = 3  # distinct, so `kubectl describe pod` tells it from a crash


def exit_lost_leadership(lease: str) -> None:
    """Stop acting at once: the process ends here, from whichever thread noticed."""
    log.critical(
        "lost leadership of lease %s: exiting (code %d) so that this replica restarts as a standby",
        lease,
        EXIT_LOST_LEADERSHIP,
    )
    for handler in logging.getLogger().handlers:
        with contextlib.suppress(Exception):
            handler.flush()
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    os._exit(EXIT_LOST_LEADERSHIP)


class LeaseKeeper:
    """The election on a thread of its own: acquire, renew, release on request.

    `leading` resolves to True when this process holds the Lease, to False when stopped while
    standing by. After that, `on_lost` is called if the Lease is lost (it should not return).
    """

    def __init__(
        self,
        config: ElectionConfig,
        connect: Callable[[], KubeClient],
        on_lost: Callable[[str], None] = exit_lost_leadership,
    ) -> None:
        self.config = config
        self._connect, self._on_lost = connect, on_lost
        self.leading: concurrent.futures.Future[bool] = concurrent.futures.Future()
        self._loop = asyncio.new_event_loop()
        self._stop = asyncio.Event()
        self._thread = threading.Thread(target=self._run, name="lease-keeper", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        """From any thread: stop waiting, or release the Lease if leading, then end the thread."""
        with contextlib.suppress(RuntimeError):  # the loop is already closed: nothing to stop
            self._loop.call_soon_threadsafe(self._stop.set)

    def join(self, timeout: float) -> bool:
        """True when the thread has ended within `timeout` seconds."""
        self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        try:
            self._loop.run_until_complete(self._main())
        except Exception as exc:
            if not self.leading.done():  # e.g. no credentials: the main thread reports it
                self.leading.set_exception(exc)
            elif self.leading.result():  # leading and the renewals broke: stop acting
                log.exception("renewing lease %s failed", self.config.lease_ref)
                self._on_lost(self.config.lease_ref)
        finally:
            self._loop.close()

    async def _main(self) -> None:
        client = self._connect()
        try:
            elector = LeaderElector(client, self.config)
            acquired = await elector.acquire(self._stop)
            self.leading.set_result(acquired)
            if not acquired:
                return
            if not await elector.hold(self._stop):
                self._on_lost(self.config.lease_ref)
                return
            await elector.release()
        finally:
            with contextlib.suppress(Exception):
                await client.aclose()


async def run_elected(
    keeper: LeaseKeeper,
    operator: Callable[[asyncio.Event, asyncio.Event], Awaitable[int]],
    stop: asyncio.Event,
    *,
    liveness: str | None = None,
    shutdown_timeout: float = 30.0,
) -> int:
    """Stand by until `keeper` leads, then run `operator(stop, ready)`; release the Lease when
    it ends.

    `stop` (set on SIGTERM) ends the wait of a standby, or is the operator's stop flag. Once
    the operator sets `ready`, SIGINT/SIGTERM set `stop` again (see `_signals_stop`).
    While standing by, the liveness endpoint (if any) answers so that the kubelet does not
    restart a healthy standby; the operator serves its own once it runs.
    """
    log.info(
        "leader election: standing by for lease %s as %s", keeper.config.lease_ref, keeper.config.identity
    )
    keeper.start()
    try:
        async with _standby_probe(liveness):
            leading: asyncio.Future[bool] = asyncio.wrap_future(keeper.leading)
            stopped: asyncio.Future[Any] = asyncio.ensure_future(stop.wait())
            try:
                await asyncio.wait([leading, stopped], return_when=asyncio.FIRST_COMPLETED)
            finally:
                stopped.cancel()
            if not leading.done():
                log.info("stopped while standing by")
                return EXIT_OK
            if leading.exception() is not None:
                log.error("leader election failed: %s", leading.exception())
                return EXIT_FAILED
            if not leading.result():
                return EXIT_OK
        log.info("leading: starting the operator (identity %s)", keeper.config.identity)
        ready = asyncio.Event()
        signals = asyncio.create_task(_signals_stop(stop, after=ready), name="signals-stop")
        try:
            return await operator(stop, ready)
        finally:
            signals.cancel()
    finally:
        keeper.stop()
        if not await asyncio.to_thread(keeper.join, shutdown_timeout):
            log.warning("the lease keeper did not stop within %ss", shutdown_timeout)


async def _signals_stop(stop: asyncio.Event, *, after: asyncio.Event) -> None:
    """Once the operator is ready, make SIGINT/SIGTERM set `stop` again.

    kopf installs its own handlers when it starts. Given a stop flag too, a signal then stops
    kopf through its own path and leaves its stop-flag waiter pending, which kopf waits 5 s
    for as a "hung" task before the Lease can be released. Through the flag it stops at once.
    (This task exists before kopf starts, so kopf does not count it as one of its own.)
    """
    await after.wait()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(RuntimeError, ValueError):  # not the main thread: kopf's stay
            loop.add_signal_handler(signum, stop.set)


@contextlib.asynccontextmanager
async def _standby_probe(endpoint: str | None) -> AsyncIterator[None]:
    """Serve `endpoint` (kopf's liveness URL form, e.g. http://0.0.0.0:8080/healthz) while standing by."""
    if not endpoint:
        yield
        return
    parts = urllib.parse.urlsplit(endpoint)

    async def healthy(_: aiohttp.web.Request) -> aiohttp.web.Response:
        return aiohttp.web.json_response({"standby": True})

    app = aiohttp.web.Application()
    app.router.add_get(parts.path or "/", healthy)
    runner = aiohttp.web.AppRunner(app, handle_signals=False)
    await runner.setup()
    try:
        await aiohttp.web.TCPSite(runner, parts.hostname or "0.0.0.0", parts.port or 80).start()
        yield
    finally:
        await runner.cleanup()
