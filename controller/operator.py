"""kopf handlers: short, and each only feeds the reconciler or waits for it.

Run with ``anklet controller``. The handlers never decide anything themselves: watch events go
into the reconciler's view, the finalizer waits until the reconciler reports the job settled
(its VM deleted on the host), and startup wires Redis and the Kubernetes client together.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import kopf

from anklet import models
from anklet.config import ControllerSettings
from anklet.redis_protocol import ControllerProtocol, connect
from controller.kube import KubeClient, load_connection
from controller.reconciler import Reconciler

FINALIZER = "anklet.dev/vm-teardown"
RESOURCE = (models.GROUP, models.VERSION, models.PLURAL)

log = logging.getLogger("anklet.controller")


@kopf.on.login()
def login(**_: Any) -> kopf.ConnectionInfo:
    """The same credentials the reconciler's client uses (in-cluster, else the kubeconfig)."""
    conn = load_connection(ControllerSettings().kubeconfig)
    return kopf.ConnectionInfo(
        server=conn.server,
        token=conn.token,
        ca_path=conn.ca_path,
        insecure=conn.insecure,
        certificate_path=conn.cert_path,
        private_key_path=conn.key_path,
    )


@kopf.on.startup()
async def start(settings: kopf.OperatorSettings, memo: kopf.Memo, **_: Any) -> None:
    config = ControllerSettings()
    settings.persistence.finalizer = FINALIZER
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix="anklet.dev")
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(prefix="anklet.dev")
    settings.posting.level = logging.WARNING
    settings.watching.server_timeout = 300
    redis = connect(config.redis_url.get_secret_value(), config.redis_tls())
    kube = KubeClient.from_environment(config.kubeconfig)
    reconciler = Reconciler(
        ControllerProtocol(redis),
        kube,
        resync_seconds=config.resync_seconds,
        host_lost_seconds=config.host_lost_seconds,
        metrics=memo.get("metrics"),  # served by `anklet controller` (cli), when it passes them
    )
    memo.redis, memo.kube, memo.reconciler = redis, kube, reconciler
    memo.tasks = [
        asyncio.create_task(reconciler.run(), name="reconciler"),
        asyncio.create_task(reconciler.follow_host_events(), name="host-events"),
    ]
    for task in memo.tasks:
        task.add_done_callback(lambda t: _loop_ended(t, memo))


def _loop_ended(task: asyncio.Task[None], memo: kopf.Memo) -> None:
    """The reconciler's loops run until cleanup cancels them; ending any other way is a bug that
    would leave the controller watching but never acting, so it is logged and made fatal."""
    if task.cancelled():
        return
    error = task.exception() or RuntimeError(f"{task.get_name()} returned")
    log.critical("controller loop %s crashed", task.get_name(), exc_info=error)
    if callable(fatal := memo.get("fatal")):
        fatal(error)


@kopf.on.cleanup()
async def stop(memo: kopf.Memo, **_: Any) -> None:
    # Cancelled again while still running: on Python 3.11 an `asyncio.wait_for` inside a loop
    # can swallow a cancellation that lands as its inner call finishes. Bounded, never a hang.
    pending: set[asyncio.Task[None]] = {task for task in memo.get("tasks", []) if not task.done()}
    for _round in range(20):
        if not pending:
            break
        for task in pending:
            task.cancel()
        _done, pending = await asyncio.wait(pending, timeout=0.5)
    if pending:
        log.warning("controller loops ignored cancellation: %s", sorted(t.get_name() for t in pending))
    if "kube" in memo:
        await memo.kube.aclose()
    if "redis" in memo:
        await memo.redis.aclose()


@kopf.on.event(*RESOURCE)
def watch(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """Every watch event updates the reconciler's view (level-triggered; events only speed it up)."""
    memo.reconciler.observe(event["object"], deleted=event["type"] == "DELETED")


@kopf.on.event(models.GROUP, models.VERSION, models.HOST_PLURAL)
def watch_hosts(event: kopf.RawEvent, memo: kopf.Memo, **_: Any) -> None:
    """AnkaHost specs (cordon, labels, prePull) feed the scheduler's view of the fleet."""
    memo.reconciler.observe_host(event["object"], deleted=event["type"] == "DELETED")


@kopf.on.delete(*RESOURCE)
async def teardown(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    """Hold the finalizer until the job's VM is gone (or never existed)."""
    reconciler: Reconciler = memo.reconciler
    reconciler.observe(body)
    if not await reconciler.wait_settled(body.metadata.uid, timeout=20.0):
        raise kopf.TemporaryError("waiting for the host to delete the job's VM", delay=1)
