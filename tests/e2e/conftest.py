"""The whole dev stack (emulated API, real Redis, controller, simulated Macs) for e2e tests."""

from __future__ import annotations

import asyncio
import io
import json
import os
import shutil
import subprocess
import threading
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest

from anklet.dev.stack import DevStack

ROOT = Path(__file__).resolve().parents[2]
T = TypeVar("T")


class Kubectl:
    """Runs the real kubectl against the dev stack's kubeconfig, bounded in time."""

    def __init__(self, kubeconfig: str, cache: Path) -> None:
        self.kubeconfig = kubeconfig
        self.env = {**os.environ, "KUBECACHEDIR": str(cache)}

    def __call__(self, *args: str, check: bool = True, timeout: float = 60, stdin: str | None = None) -> str:
        result = subprocess.run(
            ["kubectl", "--kubeconfig", self.kubeconfig, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
            input=stdin,
            check=False,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed ({result.returncode}): {result.stderr}")
        return result.stdout + (result.stderr if not check else "")

    def job(self, name: str) -> dict[str, Any]:
        data: dict[str, Any] = json.loads(self("get", "ankajob", name, "-o", "json"))
        return data

    def wait_phase(self, name: str, phase: str, timeout: float = 60) -> dict[str, Any]:
        self(
            "wait",
            f"--for=jsonpath={{.status.phase}}={phase}",
            f"ankajob/{name}",
            f"--timeout={int(timeout)}s",
            timeout=timeout + 10,
        )
        return self.job(name)


class StackThread:
    """The dev stack on its own event loop in a thread, so blocking kubectl calls can't stall it."""

    def __init__(self, stack: DevStack) -> None:
        self.stack = stack
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="dev-stack", daemon=True)

    def call(self, coro: Coroutine[Any, Any, T], timeout: float = 120) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def __enter__(self) -> DevStack:
        self.thread.start()
        self.call(self.stack.start())
        return self.stack

    def __exit__(self, *exc: object) -> None:
        try:
            self.call(self.stack.stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)


@pytest.fixture(scope="session")
def stack_thread(tmp_path_factory: pytest.TempPathFactory) -> Iterator[StackThread]:
    if shutil.which("kubectl") is None:
        pytest.skip("the e2e tests drive the real kubectl, which is not on PATH")
    dev = DevStack(hosts=2, state_dir=tmp_path_factory.mktemp("dev"), time_scale=0.02, out=io.StringIO())
    runner = StackThread(dev)
    with runner:
        yield runner


@pytest.fixture(scope="session")
def stack(stack_thread: StackThread) -> DevStack:
    return stack_thread.stack


@pytest.fixture(scope="session")
def kubectl(stack: DevStack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kubectl]:
    yield Kubectl(stack.endpoints["kubeconfig"], tmp_path_factory.mktemp("kubecache"))
