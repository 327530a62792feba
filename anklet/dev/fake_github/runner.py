"""Stand-in for the GitHub Actions runner, run inside a (simulated) Anklet VM.

Served inside the fake's runner tarball (``/_sim/releases/...``) as ``runner.py`` next to
``run.sh``, so the real in-VM install script fetches, verifies and starts it like the real
runner. Standard library only: it runs under whatever ``python3`` the "VM" has.

Behaviour, like an ephemeral JIT runner: read the JIT config (``--jitconfig X`` or the env var
``ACTIONS_RUNNER_INPUT_JITCONFIG``), connect, listen for one job, "run" its steps (spending
``run_seconds`` in all, stopping early when the job is cancelled), report the result, print
``Job <name> completed with result: <Result>`` and exit 0. Exit 1 when the JIT config is bad,
spent or revoked (the runner was deleted) or GitHub stays unreachable; exit 2 when no job
arrives within ``ANKLET_FAKE_RUNNER_IDLE_TIMEOUT`` seconds (default 600).
``ANKLET_FAKE_GITHUB_URL`` overrides the API URL in the JIT config (e.g. across a NAT).
"""

from __future__ import annotations

import base64
import binascii
import json
import os
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

JIT_ENV = "ACTIONS_RUNNER_INPUT_JITCONFIG"
IDLE_TIMEOUT_ENV = "ANKLET_FAKE_RUNNER_IDLE_TIMEOUT"
URL_ENV = "ANKLET_FAKE_GITHUB_URL"
DEFAULT_IDLE_TIMEOUT = 600.0
POLL_WAIT = 30.0
HEARTBEAT_WAIT = 10.0
#: How long to keep retrying while the fake is unreachable or answers 5xx.
RETRY_FOR = 30.0
EXIT_OK, EXIT_ERROR, EXIT_IDLE = 0, 1, 2
RESULTS = {
    "success": "Succeeded",
    "neutral": "Succeeded",
    "failure": "Failed",
    "timed_out": "Failed",
    "cancelled": "Canceled",
    "skipped": "Skipped",
}


class RunnerError(Exception):
    """The fake refused us for good (bad, spent or revoked JIT config)."""


class Gone(RunnerError):
    """The runner no longer exists (deleted, or its one job is done)."""


def say(message: str) -> None:
    print(f"{time.strftime('%Y-%m-%d %H:%M:%SZ', time.gmtime())}: {message}", flush=True)


def jit_from_args(argv: list[str]) -> str | None:
    """``--jitconfig X`` / ``--jitconfig=X`` as the real ``run.sh`` takes it; other flags (``--once``,
    ``--startuptype``) are accepted and ignored."""
    for index, arg in enumerate(argv):
        if arg == "--jitconfig" and index + 1 < len(argv):
            return argv[index + 1]
        if arg.startswith("--jitconfig="):
            return arg.split("=", 1)[1]
    return None


def decode_jit_config(encoded: str) -> dict[str, Any]:
    try:
        config = json.loads(base64.b64decode(encoded.strip(), validate=True))
    except (binascii.Error, ValueError) as exc:
        raise RunnerError(f"invalid JIT config (not base64-encoded JSON): {exc}") from exc
    if not isinstance(config, dict):
        raise RunnerError("invalid JIT config (not a JSON object)")
    for key, kind in (("runner_id", int), ("runner_name", str), ("url", str), ("token", str)):
        if not isinstance(config.get(key), kind):
            raise RunnerError(f"invalid JIT config: {key!r} is missing")
    return config


class Client:
    """JSON over HTTP to the fake, retrying transient failures for up to ``RETRY_FOR`` seconds."""

    def __init__(self, base_url: str, runner_id: int, token: str) -> None:
        self.base = f"{base_url.rstrip('/')}/_sim/runner/{runner_id}"
        self.token = token

    def call(
        self, method: str, path: str, body: dict[str, Any] | None = None, wait: float = 0.0
    ) -> dict[str, Any]:
        deadline = time.monotonic() + RETRY_FOR
        delay = 0.5
        while True:
            try:
                return self._once(method, path, body, wait)
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                if isinstance(exc, urllib.error.HTTPError):
                    self._refuse(exc)
                if time.monotonic() > deadline:
                    raise RunnerError(f"GitHub unreachable for {RETRY_FOR:g} s: {exc}") from exc
                time.sleep(delay)
                delay = min(delay * 2, 4.0)

    def _once(self, method: str, path: str, body: dict[str, Any] | None, wait: float) -> dict[str, Any]:
        url = f"{self.base}/{path}" + (f"?wait={wait:.2f}" if wait else "")
        data = None if body is None else json.dumps(body).encode()
        request = urllib.request.Request(url, data=data, method=method)
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=wait + 15) as response:
            payload = json.loads(response.read() or b"{}")
        return payload if isinstance(payload, dict) else {}

    @staticmethod
    def _refuse(exc: urllib.error.HTTPError) -> None:
        """4xx: give up with GitHub's message; 5xx: return, so the call is retried."""
        if exc.code >= 500:
            return
        try:
            message = json.loads(exc.read()).get("message", exc.reason)
        except ValueError:
            message = exc.reason
        if exc.code == 404:
            raise Gone(str(message))
        raise RunnerError(f"{exc.code}: {message}")


def idle_timeout() -> float:
    try:
        return float(os.environ.get(IDLE_TIMEOUT_ENV, DEFAULT_IDLE_TIMEOUT))
    except ValueError:
        return DEFAULT_IDLE_TIMEOUT


def wait_for_job(client: Client, timeout: float) -> dict[str, Any] | None:
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return None
        job = client.call("GET", "job", wait=max(0.01, min(POLL_WAIT, remaining))).get("job")
        if isinstance(job, dict):
            return job


def spend(client: Client, job_id: int, step: int, seconds: float) -> bool:
    """Spend ``seconds`` on a step, heartbeating (the heartbeat long-polls, so it is also our
    sleep); True as soon as the job is cancelled."""
    end = time.monotonic() + seconds
    while True:
        remaining = end - time.monotonic()
        reply = client.call(
            "POST",
            "heartbeat",
            {"job_id": job_id, "step": step},
            wait=max(0.0, min(HEARTBEAT_WAIT, remaining)),
        )
        if reply.get("cancel"):
            return True
        if end - time.monotonic() <= 0:
            return False


def run_job(client: Client, job: dict[str, Any]) -> str:
    name = str(job.get("name", "job"))
    steps = [str(s) for s in job.get("steps") or ["Run"]]
    per_step = float(job.get("run_seconds", 0)) / len(steps)
    say(f"Running job: {name}")
    conclusion = str(job.get("conclusion", "success"))
    for number, step in enumerate(steps, 1):
        print(f"  [{number}/{len(steps)}] {step}", flush=True)
        if spend(client, int(job["id"]), number, per_step):
            print(f"  [{number}/{len(steps)}] {step}: the job was cancelled", flush=True)
            conclusion = "cancelled"
            break
    try:
        reply = client.call("POST", "complete", {"job_id": job["id"], "conclusion": conclusion})
        conclusion = str(reply.get("conclusion") or conclusion)
    except Gone:
        pass  # a retried "complete" whose first attempt got through: the runner is already gone
    return conclusion


def runner_version() -> str:
    try:
        return (Path(__file__).resolve().parent / ".runner-version").read_text().strip()
    except OSError:
        return "unknown"


def main(argv: list[str] | None = None) -> int:
    encoded = jit_from_args(sys.argv[1:] if argv is None else argv) or os.environ.get(JIT_ENV)
    if not encoded:
        print(f"error: no JIT config: pass --jitconfig <config> or set {JIT_ENV}", file=sys.stderr)
        return EXIT_ERROR
    version = runner_version()
    try:
        config = decode_jit_config(encoded)
        client = Client(os.environ.get(URL_ENV) or config["url"], config["runner_id"], config["token"])
        client.call("POST", "session", {"version": version})
        print(f"\n√ Connected to GitHub\n\nCurrent runner version: '{version}'", flush=True)
        say("Listening for Jobs")
        timeout = idle_timeout()
        job = wait_for_job(client, timeout)
        if job is None:
            say(f"No job was assigned within {timeout:g} s; exiting")
            return EXIT_IDLE
        conclusion = run_job(client, job)
    except Gone as exc:
        print(f"error: the runner is not registered (any more): {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    except RunnerError as exc:
        print(f"error: {exc}", file=sys.stderr, flush=True)
        return EXIT_ERROR
    say(f"Job {job.get('name', 'job')} completed with result: {RESULTS.get(conclusion, conclusion)}")
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
