"""Log lines: JSON with context by default, readable text on a terminal, never a secret."""

from __future__ import annotations

import asyncio
import io
import json
import logging
from collections.abc import Iterator

import pytest

from anklet import logformat
from anklet.logcontext import current, job_fields, log_context
from anklet.logformat import JSONFormatter, TextFormatter, make_formatter, parse_level, redact, resolve_format
from anklet.logs import setup_logging

JIT = "eyJhbGciOiJIUzI1NiJ9.eyJqaXQiOiJydW5uZXItNDIifQ.c2VjcmV0LWppdC1jb25maWc"


class TTY(io.StringIO):
    def isatty(self) -> bool:
        return True


def record(msg: str, *args: object, level: int = logging.INFO, **extra: object) -> logging.LogRecord:
    rec = logging.LogRecord("anklet.controller", level, __file__, 1, msg, args, None)
    for key, value in extra.items():
        setattr(rec, key, value)
    return rec


@pytest.fixture(autouse=True)
def _no_registered_secrets() -> Iterator[None]:
    saved = set(logformat._secrets)
    logformat._secrets.clear()
    yield
    logformat._secrets.clear()
    logformat._secrets.update(saved)


def test_a_json_line_has_the_fields_and_the_context() -> None:
    with log_context(
        **job_fields("ci", "build-42", uid="u-1", attempt=2, host="mac-1", vm="anklet-vm-u-1-a2")
    ):
        line = JSONFormatter().format(record("job %s → %s", "build-42", "Running"))
    data = json.loads(line)
    assert list(data)[:4] == ["ts", "level", "logger", "msg"]
    assert data["ts"].endswith("Z") and "T" in data["ts"]
    assert (data["level"], data["logger"], data["msg"]) == (
        "INFO",
        "anklet.controller",
        "job build-42 → Running",
    )
    assert data["job"] == "ci/build-42" and data["uid"] == "u-1" and data["attempt"] == "2"
    assert data["host"] == "mac-1" and data["vm"] == "anklet-vm-u-1-a2"
    assert "\n" not in line


def test_context_nests_resets_and_follows_tasks() -> None:
    async def main() -> list[dict[str, str]]:
        seen = []

        async def worker() -> None:
            await asyncio.sleep(0)
            seen.append(dict(current()))

        with log_context(host="mac-1"):
            with log_context(job="ns/a", attempt=None):
                task = asyncio.create_task(worker())  # copies the context as it is now
            seen.append(dict(current()))
            await task
        seen.append(dict(current()))
        return seen

    outer, inner, after = asyncio.run(main())
    assert outer == {"host": "mac-1"}
    assert inner == {"host": "mac-1", "job": "ns/a"}, "None values are left out"
    assert after == {}


def test_job_fields_leave_out_an_unplaced_attempt() -> None:
    assert job_fields("ns", "a", attempt=0)["attempt"] is None


def test_an_exception_is_kept_in_the_line() -> None:
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), __import__("sys").exc_info())
    data = json.loads(JSONFormatter().format(rec))
    assert "RuntimeError: boom" in data["exc"]


def test_text_lines_with_and_without_color() -> None:
    with log_context(job="ns/a", host="mac-1"):
        plain = TextFormatter(color=False).format(record("hello", level=logging.WARNING))
        colored = TextFormatter(color=True).format(record("hello", level=logging.WARNING))
    assert "WARNING anklet.controller: hello  job=ns/a host=mac-1" in plain
    assert "\x1b[" not in plain
    assert "\x1b[33mWARNING" in colored and "hello" in colored


@pytest.mark.parametrize(
    ("fmt", "tty", "env", "expected"),
    [
        ("auto", True, {}, ("text", True)),
        ("auto", False, {}, ("json", False)),
        ("auto", True, {"NO_COLOR": "1"}, ("text", False)),
        ("text", False, {}, ("text", False)),
        ("json", True, {}, ("json", False)),
        ("TEXT", True, {}, ("text", True)),
    ],
)
def test_resolve_format(fmt: str, tty: bool, env: dict[str, str], expected: tuple[str, bool]) -> None:
    stream = TTY() if tty else io.StringIO()
    assert resolve_format(fmt, stream, env) == expected


def test_bad_format_and_level_are_clear_errors() -> None:
    with pytest.raises(ValueError, match="invalid log format 'xml'"):
        resolve_format("xml", io.StringIO())
    with pytest.raises(ValueError, match="invalid log level 'LOUD'"):
        parse_level("LOUD")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("info", (logging.INFO, False)),
        ("DEBUG", (logging.DEBUG, False)),
        ("warn", (logging.WARNING, False)),
        ("ERROR", (logging.ERROR, False)),
        ("DEBUG-PRETTY", (logging.DEBUG, True)),
        ("dev", (logging.DEBUG, True)),
    ],
)
def test_log_levels_of_the_go_version(value: str, expected: tuple[int, bool]) -> None:
    assert parse_level(value) == expected


@pytest.mark.parametrize(
    ("text", "secret"),
    [
        (f"env {{'ACTIONS_RUNNER_INPUT_JITCONFIG': '{JIT}'}}", JIT),
        (f"ACTIONS_RUNNER_INPUT_JITCONFIG={JIT} ./run.sh", JIT),
        (f'{{"encoded_jit_config": "{JIT}"}}', JIT),
        ("redis at redis://anklet:hunter2-pass@10.0.0.5:6379/0 is down", "hunter2-pass"),
        ("rediss://:p4ssw0rd@redis:6380", "p4ssw0rd"),
        ("using token ghp_abcdefghijklmnopqrstuvwxyz0123456789", "ghp_abcdefghijklmnopqrstuvwxyz0123456789"),
        ("ghs_0123456789abcdefghijABCDEFGHIJ was refused", "ghs_0123456789abcdefghijABCDEFGHIJ"),
        ("Authorization: Bearer eyJ0eXAiOiJKV1QiLCJhbGc.abc.def", "eyJ0eXAiOiJKV1QiLCJhbGc.abc.def"),
        ("webhook_secret=s3cr3t-value-123", "s3cr3t-value-123"),
        ("key -----BEGIN RSA PRIVATE KEY-----\nMIIEow\n-----END RSA PRIVATE KEY----- end", "MIIEow"),
    ],
)
def test_secrets_are_masked(text: str, secret: str) -> None:
    masked = redact(text)
    assert secret not in masked
    assert logformat.MASK in masked


def test_ordinary_lines_are_left_alone() -> None:
    for text in (
        "job ci/build-42 Pending → Scheduled (attempt 1 placed on mac-1)",
        "0/2 hosts available: 2 insufficient cpu",
        "reservation of build-42 on mac-1 refused (no_vm_slot); rescheduling",
        "receiver listening on http://127.0.0.1:8080 (webhooks at /webhooks/github)",
    ):
        assert redact(text) == text


def test_configured_secrets_are_masked_wherever_they_appear() -> None:
    logformat.register_env_secrets(
        {
            "ANKLET_GITHUB_WEBHOOK_SECRET": "a-webhook-secret-1234",
            "ANKLET_AGENT_NAME": "mac-1",
            "X_TOKEN": "short",
        }
    )
    assert redact("signature check with a-webhook-secret-1234 failed") == "signature check with *** failed"
    assert redact("host mac-1") == "host mac-1", "not a secret"
    assert "short" in redact("short"), "too short to mask safely"


def test_every_formatter_masks_message_context_and_exception() -> None:
    with log_context(job="ns/a", extra=f"ACTIONS_RUNNER_INPUT_JITCONFIG={JIT}"):
        rec = record("env %s", {"ACTIONS_RUNNER_INPUT_JITCONFIG": JIT})
        for formatter in (JSONFormatter(), TextFormatter(color=True)):
            assert JIT not in formatter.format(rec)


def test_setup_logging_writes_json_lines_when_not_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANKLET_LOG_FORMAT", raising=False)
    monkeypatch.setenv("ANKLET_GITHUB_TOKEN", "ghp_dev_0123456789abcdef0123456789abcdef")
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    try:
        setup_logging("INFO", stream=out)
        with log_context(job="ns/a"):
            logging.getLogger("anklet.test").info("token is %s", "ghp_dev_0123456789abcdef0123456789abcdef")
            logging.getLogger("anklet.test").debug("not at INFO")
    finally:
        root.handlers[:], root.level = saved
    [line] = out.getvalue().splitlines()
    data = json.loads(line)
    assert data["msg"] == "token is ***" and data["job"] == "ns/a"


def test_setup_logging_pretty_levels_mean_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ANKLET_LOG_FORMAT", raising=False)
    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    out = io.StringIO()
    try:
        setup_logging("DEBUG-PRETTY", stream=out)
        assert root.level == logging.DEBUG
        logging.getLogger("anklet.test").debug("details")
    finally:
        root.handlers[:], root.level = saved
    assert "DEBUG   anklet.test: details" in out.getvalue()
    assert isinstance(make_formatter("json"), JSONFormatter)
