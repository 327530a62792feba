"""The GitHub webhook receiver: an aiohttp app that turns `workflow_job` webhooks into AnkaJobs.

Status codes carry meaning, because GitHub shows them and the redelivery scan relies on them:
2xx only once the event is stored (or deliberately ignored), 401 for a bad signature, 400 for
a body that is not a `workflow_job` event, 413 above the size limit, 503 when Kubernetes could
not store it (the Go version answered 200 to all of these, so lost events were never retried).

    async with ReceiverApp(load_config()) as app:   # serves until the block ends
        print(app.url)
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from aiohttp import web

from plugins.handlers.github.client import GitHubClient
from plugins.receivers.github import ankajobs, events
from plugins.receivers.github.config import ConfigError, ReceiverConfig, load_config
from plugins.receivers.github.kube import AnkaJobStore
from plugins.receivers.github.metrics import CONTENT_TYPE, ReceiverMetrics, action_label, event_label
from plugins.receivers.github.recorder import Recorder, StoreUnavailable
from plugins.receivers.github.redelivery import RedeliveryScanner
from plugins.receivers.github.scanlock import ScanLock

log = logging.getLogger("anklet.receiver.github")

WEBHOOK_PATHS = ("/webhooks/github", "/jobs/v1/receiver")
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Answer:
    """One webhook's response and how it is counted."""

    status: int
    result: str
    event: str = "unknown"
    action: str = "none"
    message: str = ""
    ankajob: str | None = None

    def response(self) -> web.Response:
        body: dict[str, Any] = {"result": self.result}
        if self.message:
            body["message"] = self.message
        if self.ankajob:
            body["ankajob"] = self.ankajob
        return web.json_response(body, status=self.status)


class _Deliveries:
    """Recently stored delivery ids (bounded LRU): a duplicate is answered without a Kubernetes call.

    Per process only; across replicas the forward-only annotation check makes duplicates harmless.
    """

    def __init__(self, size: int) -> None:
        self._size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def __contains__(self, delivery: object) -> bool:
        return delivery in self._seen

    def add(self, delivery: str | None) -> None:
        if not delivery or self._size == 0:
            return
        self._seen[delivery] = None
        self._seen.move_to_end(delivery)
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)


class ReceiverApp:
    """The receiver, startable in-process (tests, dev stack) or through `serve()` (the CLI)."""

    def __init__(
        self,
        config: ReceiverConfig,
        *,
        store: AnkaJobStore | None = None,
        github: GitHubClient | None = None,
    ) -> None:
        self.config = config
        self.metrics = ReceiverMetrics()
        self._store = store
        self._owns_store = store is None
        self._github = github
        self._owns_github = github is None
        self._recorder: Recorder | None = None
        self.scanner: RedeliveryScanner | None = None
        self._scan_task: asyncio.Task[None] | None = None
        self._runner: web.AppRunner | None = None
        self._url: str | None = None
        self._deliveries = _Deliveries(config.receiver.dedupe_size)
        self.app = self._build()

    # ---- lifecycle ------------------------------------------------------------------------

    def _build(self) -> web.Application:
        app = web.Application(client_max_size=self.config.receiver.max_body_bytes + 1)
        for path in WEBHOOK_PATHS:
            app.router.add_post(path, self._webhook)
        app.router.add_get("/healthz", self._healthz)
        app.router.add_get("/metrics", self._metrics)
        return app

    @property
    def url(self) -> str:
        """E.g. `http://127.0.0.1:43121`; only while running."""
        if self._url is None:
            raise RuntimeError("the receiver is not running")
        return self._url

    @property
    def recorder(self) -> Recorder:
        if self._recorder is None:
            raise RuntimeError("the receiver is not running")
        return self._recorder

    async def start(self) -> str:
        """Connect to Kubernetes, listen, start the redelivery scan; ConfigError if that cannot work."""
        settings = self.config.receiver
        if self._store is None:
            try:
                self._store = AnkaJobStore.from_environment(settings.kubeconfig)
            except Exception as exc:  # the kubernetes loaders raise their own exception types
                raise ConfigError(f"cannot load Kubernetes credentials: {exc}") from None
        self._recorder = Recorder(self._store, settings.namespace)
        runner = web.AppRunner(self.app, handle_signals=False)
        await runner.setup()
        try:
            await web.TCPSite(runner, settings.host, settings.port).start()
        except OSError as exc:
            await runner.cleanup()
            await self._close_clients()
            raise ConfigError(
                f"cannot listen on {settings.host}:{settings.port}: {exc.strerror or exc}"
            ) from None
        host, port = runner.addresses[0][:2]
        self._runner, self._url = runner, f"http://{host}:{port}"
        log.info(
            "receiver listening on %s (webhooks at %s; AnkaJobs in namespace %s)",
            self._url,
            ", ".join(WEBHOOK_PATHS),
            settings.namespace,
        )
        self._start_scan()
        return self._url

    def _start_scan(self) -> None:
        reason = self.config.redelivery_skip_reason()
        scope = self.config.hook_scope()
        hook_id = self.config.github.hook_id
        if reason is not None or scope is None or hook_id is None:
            log.info("not scanning for missed webhook deliveries: %s", reason)
            return
        if self._github is None:
            self._github = GitHubClient.from_settings(self.config.github)
        assert self._store is not None  # start() set it
        self.scanner = RedeliveryScanner(
            self._github,
            self.recorder,
            scope=scope,
            hook_id=hook_id,
            hours=self.config.github.redelivery_hours,
            metrics=self.metrics,
            # every replica runs this task; the Lease lets one of them scan per interval
            lock=ScanLock(self._store, self.config.receiver.namespace),
        )
        self._scan_task = asyncio.create_task(
            self.scanner.run(self.config.github.redelivery_interval_seconds), name="redelivery-scan"
        )

    async def stop(self) -> None:
        if self._scan_task is not None:
            self._scan_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scan_task
            self._scan_task = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._url = None
        await self._close_clients()

    async def _close_clients(self) -> None:
        if self._owns_github and self._github is not None:
            await self._github.aclose()
            self._github = None
        if self._owns_store and self._store is not None:
            await self._store.aclose()
            self._store = None

    async def __aenter__(self) -> ReceiverApp:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    # ---- endpoints ------------------------------------------------------------------------

    async def _healthz(self, request: web.Request) -> web.Response:
        return web.Response(text="ok\n")

    async def _metrics(self, request: web.Request) -> web.Response:
        return web.Response(body=self.metrics.exposition(), headers={"Content-Type": CONTENT_TYPE})

    async def _webhook(self, request: web.Request) -> web.Response:
        started = time.monotonic()
        answer = await self._answer(request)
        self.metrics.webhooks.labels(event=answer.event, action=answer.action, result=answer.result).inc()
        self.metrics.webhook_seconds.labels(result=answer.result).observe(time.monotonic() - started)
        return answer.response()

    async def _read_body(self, request: web.Request) -> bytes | None:
        """The raw body, or None once it exceeds the limit (checked before and while reading)."""
        limit = self.config.receiver.max_body_bytes
        if request.content_length is not None and request.content_length > limit:
            return None
        body = bytearray()
        async for chunk in request.content.iter_chunked(CHUNK):
            body += chunk
            if len(body) > limit:
                return None
        return bytes(body)

    async def _answer(self, request: web.Request) -> Answer:
        body = await self._read_body(request)
        if body is None:
            return Answer(413, "too_large", message=f"body above {self.config.receiver.max_body_bytes} bytes")
        if not events.signature_valid(self.config.secret, body, request.headers.get("X-Hub-Signature-256")):
            missing = "X-Hub-Signature-256" not in request.headers
            log.warning("rejected a webhook with a %s signature", "missing" if missing else "wrong")
            return Answer(401, "unauthorized", message="missing signature" if missing else "bad signature")
        kind = request.headers.get("X-GitHub-Event", "")
        delivery = request.headers.get("X-GitHub-Delivery") or None
        label = event_label(kind, verified=True)
        if kind == events.PING:
            log.info("ping from GitHub (hook %s)", request.headers.get("X-GitHub-Hook-ID", "?"))
            return Answer(200, "ignored", event=label, message="pong")
        if kind != events.WORKFLOW_JOB:
            return Answer(
                400,
                "unsupported",
                event=label,
                message=f"event {kind!r} not handled; subscribe to Workflow jobs only",
            )
        if delivery is not None and delivery in self._deliveries:
            return Answer(200, "duplicate", event=label, message="delivery already processed")
        try:
            event = events.parse_workflow_job(events.decode_body(body, request.content_type))
        except events.InvalidPayload as exc:
            log.warning("rejected workflow_job delivery %s: %s", delivery, exc)
            return Answer(400, "malformed", event=label, message=str(exc))
        return await self._record(event, delivery, label)

    async def _record(self, event: events.WorkflowJobEvent, delivery: str | None, label: str) -> Answer:
        action = action_label(event.action)
        job = event.workflow_job
        if not event.tracked:
            self._deliveries.add(delivery)
            return Answer(
                200, "ignored", event=label, action=action, message=f"action {event.action!r} not tracked"
            )
        target = events.anka_target(job.labels)
        if target is None:
            if events.wants_anka_but_no_template(job.labels):
                log.warning(
                    "job %d of %s/%s has Anka labels but no usable 'anka-template:<template>' label; ignored",
                    job.id,
                    event.owner,
                    event.repo,
                )
            self._deliveries.add(delivery)
            return Answer(200, "ignored", event=label, action=action, message="no anka-template label")
        try:
            outcome = await self.recorder.record(event, target, delivery)
        except StoreUnavailable as exc:
            self.metrics.kube_errors.inc()
            log.error("could not store %s for job %d (delivery %s): %s", event.action, job.id, delivery, exc)
            return Answer(
                503, "error", event=label, action=action, message="could not store the event; retry later"
            )
        self._deliveries.add(delivery)
        return Answer(200, outcome.value, event=label, action=action, ankajob=ankajobs.name_for(event))


async def serve(config: ReceiverConfig | None = None) -> None:
    """Run the receiver until cancelled (the CLI does on SIGINT/SIGTERM); ConfigError if it cannot start."""
    async with ReceiverApp(config or load_config()):
        await asyncio.Event().wait()
