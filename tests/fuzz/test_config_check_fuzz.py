"""Fuzzing `anklet config check` with random YAML: an answer, never a traceback.

Whatever the file holds (broken YAML, the wrong shapes, known keys with values of any type, deep
nesting, aliases, bytes that are not UTF-8), the check exits 0 (valid: the effective configuration
on stdout) or 2 (one line per problem on stderr) — and it does so through the loader's own
ConfigError, not through the command's last-resort `config check failed: <exception>` line, which
would mean some input made the loader raise something it does not own. Most examples call the
command's function in-process (fast); the explicit ones also run the real CLI as a subprocess.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import example, given, note
from hypothesis import strategies as st
from hypothesis.control import currently_in_test_context

from anklet import config_cli
from tests.fuzz.budget import examples, fuzz_settings

pytestmark = [pytest.mark.fuzz, pytest.mark.timeout(examples(300))]

SLOW = 10.0
SECTIONS = ("redis", "controller", "agent", "receiver", "plugins")
KEYS, _ = config_cli.schema_for(("redis", "controller", "agent", "receiver"))
_files = itertools.count(1)

# ---- generators --------------------------------------------------------------------------------------

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.integers(-(10**40), 10**40),
    st.floats(),
    st.text(max_size=20),
    st.sampled_from(
        ["", "0", "-1", "1e9", "yes", "off", "~", "redis://127.0.0.1:1", "/nonexistent/x", ".", "*"]
    ),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=3), st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)


@st.composite
def documents(draw: st.DrawFn) -> Any:
    """A mapping of (mostly known) sections to (mostly known) keys with values of any type."""
    document: dict[Any, Any] = {}
    for section in draw(st.lists(st.sampled_from([*SECTIONS, "nope", "Agent"]), unique=True, max_size=4)):
        if section == "plugins":
            names = st.sampled_from(["github", "script", "nope", ""])
            document[section] = draw(st.one_of(st.dictionaries(names, values, max_size=2), values))
            continue
        keys = sorted(KEYS.get(section, {"x"}))
        known = st.dictionaries(st.sampled_from(keys), values, max_size=4)
        document[section] = draw(st.one_of(known, known, values))
    return document


def _render(document: Any, style: str) -> bytes:
    if style == "flow":
        return yaml.safe_dump(document, default_flow_style=True).encode()
    return yaml.safe_dump(document, sort_keys=False, allow_unicode=True).encode()


LAUGHS = b"a: &a [x, x, x, x, x, x, x, x, x]\n" + b"".join(
    b"%c: &%c [*%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c, *%c]\n" % ((n, n) + (n - 1,) * 9)
    for n in range(ord("b"), ord("i"))
)  # 9^8 ≈ 43 million leaves if anything walked the aliases out
raw_texts = st.one_of(
    st.binary(max_size=200),
    st.text(max_size=200).map(str.encode),
    st.sampled_from(
        [
            b"",
            b"---\n",
            b"--- 1\n--- 2\n",  # two documents
            b"[1, 2",
            b"agent: {cpu: [}",
            b"agent:\n\tcpu: 1\n",  # a tab
            b"!!python/object:os.system {}\n",
            b"agent: !!binary aGVsbG8=\n",
            b"agent: &x {cpu: *x}\n",  # a recursive alias
            b"agent:\n  labels: &l {a: b}\n  mounts: *l\n",
            LAUGHS,
            LAUGHS.replace(b"a: &a", b"agent: {cpu: 1}\nreceiver: {port: *i}\na: &a"),
            b"\xff\xfe\x00a\x00:",
            b"redis:\n  url_file: /nonexistent/secret\n",
            b"redis:\n  url_file: .\n",  # a directory
            b"plugins:\n  github:\n    webhook_secret_file: []\n",
            b"receiver: {port: 99999999999999999999999999}\n",
            b"agent: {cpu: .inf, memory_mib: .nan}\n",
        ]
    ),
)
files = st.one_of(
    raw_texts,
    st.builds(_render, documents(), st.sampled_from(["block", "flow"])),
)

# ---- running the check ----------------------------------------------------------------------------


@contextlib.contextmanager
def _isolated_environ() -> Iterator[None]:
    """The loader exports ANKLET_CONFIG for the process's children: keep that out of other tests."""
    saved = dict(os.environ)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def check_in_process(path: Path, component: str) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    started = time.monotonic()
    with _isolated_environ(), contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = config_cli.run_check(argparse.Namespace(file=str(path), component=component))
    assert time.monotonic() - started < SLOW, "config check took too long"
    return code, out.getvalue(), err.getvalue()


def check_subprocess(path: Path, component: str) -> tuple[int, str, str]:
    env = {key: value for key, value in os.environ.items() if not key.startswith("ANKLET_")}
    proc = subprocess.run(
        [sys.executable, "-m", "anklet.cli", "config", "check", "--component", component, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    return proc.returncode, proc.stdout, proc.stderr


def assert_clean_answer(code: int, out: str, err: str) -> None:
    if currently_in_test_context():
        note(f"exit {code}\nstdout: {out[:500]}\nstderr: {err[:1000]}")
    assert code in (0, 2), f"exit {code}"
    assert "Traceback" not in err + out
    lines = [line for line in err.splitlines() if line.strip()]
    if code == 0:
        assert out.startswith("# effective configuration of ")
        return
    assert lines, "exit 2 without saying why"
    leaked = [line for line in lines if line.startswith("config check failed: ")]
    assert not leaked, f"the loader raised an exception it does not own: {leaked}"


@fuzz_settings(150)
@given(content=files, component=st.sampled_from(config_cli.COMPONENTS))
@example(content=b"agent: &x {cpu: *x}\n", component="all")
@example(content=LAUGHS, component="all")
def test_random_yaml_never_crashes_config_check(
    tmp_path_factory: pytest.TempPathFactory, content: bytes, component: str
) -> None:
    path = tmp_path_factory.getbasetemp() / f"fuzz-config-{next(_files)}.yaml"  # new path: no stale cache
    path.write_bytes(content)
    note(repr(content[:500]))
    assert_clean_answer(*check_in_process(path, component))


@pytest.mark.parametrize(
    "content",
    [b"agent: &x {cpu: *x}\n", b"[1, 2", b"agent: {cpu: lots}\n", b"\xff\xfe", b"agent: {}\n"],
    ids=["recursive-alias", "broken-yaml", "wrong-type", "not-utf8", "valid"],
)
def test_the_real_cli_answers_in_one_line_per_problem(tmp_path: Path, content: bytes) -> None:
    path = tmp_path / "anklet.yaml"
    path.write_bytes(content)
    code, out, err = check_subprocess(path, "agent")
    assert_clean_answer(code, out, err)
    assert (code == 0) == (content == b"agent: {}\n")
