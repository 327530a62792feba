"""An emulated Kubernetes API server for the local dev stack and the tests.

Real kubectl (1.32) and real kopf (1.45) work against it: discovery, CRDs that register their
resources, server-side Tables with printer columns, OpenAPI v3 for validation and `explain`,
schema validation, resourceVersions with optimistic concurrency, the status subresource,
finalizers, selectors and resumable watches. It is built on kmock's `KubernetesEmulator`, whose
Kubernetes handling is replaced by `anklet.dev.kube` (see `anklet.dev.kube.routing` for why).
It is served by aiohttp's own runner rather than `kmock.Server`, which patches aiohttp's resolver
process-wide and fails unless servers are stopped in exactly the reverse order of starting.

    async with KubeApiServer() as server:
        server.install_crd(yaml.safe_load(Path("crds/ankajob.yaml").read_text()))
        server.write_kubeconfig(tmp / "kubeconfig")  # for kubectl; kopf: ConnectionInfo(server=server.url)

From a terminal: `python -m anklet.dev.kube_emulator --port 0 --kubeconfig PATH --crd crds/ankajob.yaml`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import copy
import pathlib
import signal
import threading
from collections.abc import Callable, Iterable, Iterator
from typing import Any, TypeVar

import aiohttp.web
import yaml

from anklet.dev.kube import errors
from anklet.dev.kube.audit import RequestRecorder
from anklet.dev.kube.resources import CRD_KEY, Registry, ResourceDef
from anklet.dev.kube.routing import Emulator
from anklet.dev.kube.store import Store

__all__ = ["ApiError", "KubeApiServer", "main", "serve_in_thread"]

ApiError = errors.ApiError
T = TypeVar("T")
CONTEXT = "anklet-dev"


class KubeApiServer:
    """Async context manager serving the emulated API on `host` (port 0 = pick a free port).

    The helper methods may be called from any thread: while the server runs, they are executed on
    its event loop (the store is not thread-safe and watch queues belong to that loop).
    """

    def __init__(
        self, *, host: str = "127.0.0.1", port: int = 0, history_size: int = 10_000, record: bool = False
    ) -> None:
        self.registry = Registry()
        self.store = Store(self.registry, history_size=history_size)
        self.emulator = Emulator(self.store)
        if record:
            self.emulator.recorder = RequestRecorder()
        self._host, self._port = host, port
        self._runner: aiohttp.web.ServerRunner | None = None
        self._url: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def __aenter__(self) -> KubeApiServer:
        self._loop = asyncio.get_running_loop()
        await self.emulator.__aenter__()  # kmock's machinery for its own (non-Kubernetes) reactions
        runner = aiohttp.web.ServerRunner(aiohttp.web.Server(self.emulator, handler_cancellation=True))
        try:
            await runner.setup()
            await aiohttp.web.TCPSite(runner, self._host, self._port).start()
        except BaseException:
            await runner.cleanup()
            await self.emulator.__aexit__(None, None, None)
            raise
        host, port = runner.addresses[0][:2]
        self._runner, self._url = runner, f"http://{host}:{port}"
        return self

    async def __aexit__(self, *exc: object) -> None:
        self.store.close()  # ends the watch streams, which would otherwise hold the shutdown
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = self._url = None
        await self.emulator.__aexit__(None, None, None)

    @property
    def url(self) -> str:
        """E.g. `http://127.0.0.1:45123`; only while running."""
        if self._url is None:
            raise RuntimeError("the server is not running")
        return self._url

    @property
    def failures(self) -> list[str]:
        """Tracebacks of requests that ended in a 500: tests assert that this stays empty."""
        return self.emulator.failures

    @property
    def recorder(self) -> RequestRecorder:
        """What each user asked for (only with `record=True`): see `anklet.dev.kube.audit`."""
        if self.emulator.recorder is None:
            raise RuntimeError("this server does not record requests (start it with record=True)")
        return self.emulator.recorder

    def write_kubeconfig(
        self, path: pathlib.Path, *, namespace: str = "default", user: str | None = None
    ) -> None:
        """A kubeconfig with one context, `anklet-dev`, pointing at this server.

        Without `user` it has no credentials (requests are anonymous); with `user` (recording
        servers only) it carries a bearer token that identifies its requests as that user.
        """
        credentials = {"token": self.recorder.token_for(user)} if user is not None else {}
        config = {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": CONTEXT, "cluster": {"server": self.url}}],
            "users": [{"name": CONTEXT, "user": credentials}],
            "contexts": [
                {"name": CONTEXT, "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": namespace}}
            ],
            "current-context": CONTEXT,
        }
        path.write_text(yaml.safe_dump(config, sort_keys=False))

    def install_crd(self, crd: dict[str, Any]) -> None:
        """Create the CRD as a POST would (or replace it if it exists); raises ApiError if invalid."""
        self._on_loop(lambda: self._install_crd(crd))

    def get_object(self, resource: str, namespace: str | None, name: str) -> dict[str, Any] | None:
        """A copy of an object, e.g. `get_object("anklet.dev/v1alpha1/ankajobs", "default", "x")`."""

        def read() -> dict[str, Any] | None:
            try:
                return copy.deepcopy(self.store.get(self._resource(resource), namespace, name))
            except ApiError as exc:
                if exc.code == 404:
                    return None
                raise

        return self._on_loop(read)

    def list_objects(self, resource: str, namespace: str | None = None) -> list[dict[str, Any]]:
        """Copies of a resource's objects (all namespaces if None), e.g. `list_objects("v1/events")`."""
        return self._on_loop(
            lambda: copy.deepcopy(list(self.store.objects(self._resource(resource), namespace)))
        )

    def active_watches(self, resource: str) -> int:
        """Open watch streams on a resource: lets tests wait until kubectl or kopf is watching."""
        return self._on_loop(lambda: self.store.watching(resource))

    def _resource(self, key: str) -> ResourceDef:
        res = self.registry.get(key)
        if res is None:
            raise KeyError(f"no such resource: {key!r} (expected e.g. 'anklet.dev/v1alpha1/ankajobs')")
        return res

    def _install_crd(self, crd: dict[str, Any]) -> None:
        res, name = self._resource(CRD_KEY), str(crd.get("metadata", {}).get("name", ""))
        if self.get_object(CRD_KEY, None, name) is None:
            self.store.create(res, None, crd)
        else:
            body = copy.deepcopy(crd)
            body.setdefault("metadata", {}).pop("resourceVersion", None)
            self.store.update(res, None, name, lambda _: body)

    def _on_loop(self, fn: Callable[[], T]) -> T:
        loop = self._loop
        if loop is None or not loop.is_running() or _running_loop() is loop:
            return fn()

        async def call() -> T:
            return fn()

        return asyncio.run_coroutine_threadsafe(call(), loop).result(timeout=30)


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


@contextlib.contextmanager
def serve_in_thread(
    *, host: str = "127.0.0.1", port: int = 0, crds: Iterable[dict[str, Any]] = ()
) -> Iterator[KubeApiServer]:
    """Run a server on its own event loop in a thread, for synchronous callers (e.g. tests that drive
    kubectl with `subprocess.run`, which would block an in-loop server)."""
    server = KubeApiServer(host=host, port=port)
    for crd in crds:
        server.install_crd(crd)
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, name="kube-api-server", daemon=True)
    thread.start()
    try:
        asyncio.run_coroutine_threadsafe(server.__aenter__(), loop).result(timeout=30)
        try:
            yield server
        finally:
            asyncio.run_coroutine_threadsafe(server.__aexit__(), loop).result(timeout=30)
    finally:
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=30)
        loop.close()


async def _serve(args: argparse.Namespace, crds: list[dict[str, Any]]) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(signum, stop.set)
    async with KubeApiServer(host=args.host, port=args.port) as server:
        for crd in crds:
            server.install_crd(crd)
        if args.kubeconfig:
            server.write_kubeconfig(args.kubeconfig, namespace=args.namespace)
        print(server.url, flush=True)
        await stop.wait()


def main(argv: list[str] | None = None) -> int:
    """Serve until SIGINT/SIGTERM, then exit 0; prints the URL as the first line of stdout."""
    parser = argparse.ArgumentParser(
        prog="python -m anklet.dev.kube_emulator", description="Serve an emulated Kubernetes API."
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--kubeconfig", type=pathlib.Path, help="write a kubeconfig for this server here")
    parser.add_argument("--namespace", default="default", help="the kubeconfig context's namespace")
    parser.add_argument(
        "--crd", type=pathlib.Path, action="append", default=[], help="CRD YAML file to install"
    )
    args = parser.parse_args(argv)
    crds = [doc for path in args.crd for doc in yaml.safe_load_all(path.read_text()) if doc]
    asyncio.run(_serve(args, crds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
