"""Measure dispatch latency and idle memory on the dev stack (`make measure`).

Dispatch latency: from invoking `kubectl apply` for an AnkaJob to the agent's first `anka clone`
for it (read from the simulator's call log), over N sequential jobs with the template already on
both simulated Macs. Idle RSS: the controller's and an agent's resident memory after the stack
has settled with no work. Prints a small table; asserts nothing (it is a measurement).
"""

from __future__ import annotations

import argparse
import asyncio
import io
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from anklet.dev.anka_sim import control
from anklet.dev.stack import DevStack

TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"


def kubectl(kubeconfig: str, *args: str, stdin: str | None = None) -> str:
    env = {**os.environ, "KUBECACHEDIR": str(Path(tempfile.gettempdir()) / "anklet-measure-kubecache")}
    out = subprocess.run(
        ["kubectl", "--kubeconfig", kubeconfig, *args],
        input=stdin,
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        check=True,
    )
    return out.stdout


def job(name: str) -> str:
    return (
        "apiVersion: anklet.dev/v1alpha1\nkind: AnkaJob\n"
        f"metadata: {{name: {name}}}\n"
        f"spec: {{template: {TEMPLATE}, tag: 2c4r, handler: script, "
        "resources: {cpu: 2, memoryMiB: 4096}, script: {run: 'true'}}\n"
    )


def first_clone_ts(stack: DevStack, uid: str, deadline: float) -> float:
    while time.monotonic() < deadline:
        for host in stack.endpoints["hosts"]:
            for call in control.read_calls(stack.dir / "hosts" / host / "anka"):
                if "clone" in call["argv"] and any(uid in str(a) for a in call["argv"]):
                    return float(call["ts"])
        time.sleep(0.005)
    raise TimeoutError(f"no clone seen for {uid}")


def rss_mib(pid: int) -> float:
    return psutil.Process(pid).memory_info().rss / (1024 * 1024)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=20)
    args = parser.parse_args()
    stack = DevStack(hosts=2, time_scale=0.02, out=io.StringIO())
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()

    def call(coro):  # type: ignore[no-untyped-def]
        return asyncio.run_coroutine_threadsafe(coro, loop).result(180)

    call(stack.start())
    try:
        kubeconfig = stack.endpoints["kubeconfig"]
        for host in stack.endpoints["hosts"]:  # the template on both Macs: measure dispatch, not pulls
            env = {
                **os.environ,
                "ANKA_SIM_HOME": str(stack.dir / "hosts" / host / "anka"),
                "ANKA_SIM_TIME_SCALE": "0.02",
            }
            subprocess.run(
                [str(stack.dir / "bin" / "anka"), "-j", "registry", "pull", TEMPLATE, "--tag", "2c4r"],
                env=env, capture_output=True, check=True, timeout=120,
            )  # fmt: skip
        time.sleep(5)  # let every process settle before reading idle memory
        pids = {c.name: c.process.pid for c in stack.children}
        idle = {name: rss_mib(pid) for name, pid in pids.items()}
        latencies = []
        for i in range(args.jobs):
            name = f"measure-{i}"
            t0 = time.time()
            kubectl(kubeconfig, "apply", "-f", "-", stdin=job(name))
            uid = kubectl(kubeconfig, "get", "ankajob", name, "-o", "jsonpath={.metadata.uid}")
            t1 = first_clone_ts(stack, uid, time.monotonic() + 60)
            latencies.append((t1 - t0) * 1000)
            kubectl(kubeconfig, "wait", "--for=jsonpath={.status.phase}=Succeeded", f"ankajob/{name}",
                    "--timeout=60s")  # fmt: skip
        latencies.sort()
        print(f"dispatch latency, kubectl apply -> first `anka clone` ({args.jobs} jobs, sequential):")
        print(f"  median {statistics.median(latencies):7.1f} ms")
        print(f"  p90    {latencies[int(0.9 * (len(latencies) - 1))]:7.1f} ms")
        print(f"  min    {latencies[0]:7.1f} ms   max {latencies[-1]:7.1f} ms")
        print("idle RSS (MiB):")
        for name, value in sorted(idle.items()):
            print(f"  {name:12s} {value:6.1f}")
        return 0
    finally:
        call(stack.stop())
        loop.call_soon_threadsafe(loop.stop)


if __name__ == "__main__":
    sys.exit(main())
