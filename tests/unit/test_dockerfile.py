"""The Dockerfile, checked without Docker (no image can be pulled here): its instructions are parsed.

What matters: a multi-stage build on python:3.11-slim, a final stage that runs as a non-root uid
(the same the manifests demand), `anklet` as the entrypoint (a console script the package
installs) with `controller` as the default command, nothing secret baked in, and a build context
(after .dockerignore) that holds every file the COPY lines need.
"""

from __future__ import annotations

import fnmatch
import json
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

import yaml

from anklet.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
SECRET_WORDS = re.compile(r"(TOKEN|PASSWORD|SECRET|PRIVATE|API_KEY|CREDENTIAL)", re.IGNORECASE)


@dataclass(frozen=True)
class Instruction:
    keyword: str
    value: str


def parse(text: str) -> list[list[Instruction]]:
    """Stages of instructions; continuation lines joined, comments dropped."""
    logical: list[str] = []
    pending = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        logical.append(pending + line)
        pending = ""
    stages: list[list[Instruction]] = []
    for line in logical:
        keyword, _, value = line.partition(" ")
        instruction = Instruction(keyword.upper(), value.strip())
        if instruction.keyword == "FROM":
            stages.append([])
        assert stages, f"{line!r} before the first FROM"
        stages[-1].append(instruction)
    return stages


STAGES = parse((ROOT / "Dockerfile").read_text())
FINAL = STAGES[-1]


def _last(keyword: str) -> str:
    values = [i.value for i in FINAL if i.keyword == keyword]
    assert values, f"the final stage has no {keyword}"
    return values[-1]


def test_multi_stage_on_python_311_slim() -> None:
    assert len(STAGES) >= 2
    for stage in STAGES:
        assert stage[0].value.split()[0] == "python:3.11-slim", stage[0]
    assert any("--from=build" in i.value for i in FINAL if i.keyword == "COPY")
    assert not any(i.keyword in ("ADD",) for stage in STAGES for i in stage), (
        "COPY, not ADD (no URLs, no tars)"
    )


def test_runs_as_the_non_root_uid_the_manifests_demand() -> None:
    user = _last("USER")
    uid, _, gid = user.partition(":")
    assert uid.isdigit() and int(uid) != 0, "a numeric uid lets runAsNonRoot verify it"
    assert gid.isdigit() and int(gid) != 0
    assert any(f"--uid {uid}" in i.value for i in FINAL if i.keyword == "RUN")
    for path in (ROOT / "manifests" / "base").glob("*.yaml"):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc and doc.get("kind") == "Deployment":
                assert doc["spec"]["template"]["spec"]["securityContext"]["runAsUser"] == int(uid), path.name


def test_entrypoint_is_the_anklet_console_script_with_controller_as_default() -> None:
    entrypoint, command = json.loads(_last("ENTRYPOINT")), json.loads(_last("CMD"))
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["scripts"]
    assert entrypoint == ["anklet"] and "anklet" in scripts
    assert command == ["controller"]
    parser = build_parser()
    assert parser.parse_args(command).command == "controller"
    assert parser.parse_args(["receiver"]).command == "receiver"


def test_nothing_secret_is_baked_in() -> None:
    for stage in STAGES:
        for instruction in stage:
            if instruction.keyword in ("ENV", "ARG", "LABEL"):
                assert not SECRET_WORDS.search(instruction.value), instruction
            if instruction.keyword == "COPY":
                assert not re.search(r"\.(pem|key|env)\b|kubeconfig|\.git\b", instruction.value), instruction


def _ignored(patterns: list[str], relative: str) -> bool:
    """Docker's rules, for the patterns used here: last match wins, `**/` matches any depth."""
    ignored = False
    for line in patterns:
        negate = line.startswith("!")
        pattern = line.lstrip("!").rstrip("/")
        candidates = [pattern, pattern.removeprefix("**/")] if pattern.startswith("**/") else [pattern]
        parts = relative.split("/")
        prefixes = ["/".join(parts[: i + 1]) for i in range(len(parts))]
        hit = any(
            fnmatch.fnmatch(prefix, candidate) or (candidate != pattern and fnmatch.fnmatch(part, candidate))
            for candidate in candidates
            for prefix, part in zip(prefixes, parts, strict=True)
        )
        if hit:
            ignored = not negate
    return ignored


def test_the_build_context_has_what_copy_needs_and_no_secrets() -> None:
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    sources = [
        part
        for stage in STAGES
        for i in stage
        if i.keyword == "COPY" and not i.value.startswith("--from")
        for part in i.value.split()[:-1]
    ]
    assert {"pyproject.toml", "README.md", "anklet", "controller", "host_agent", "plugins"} <= set(sources)
    for source in sources:
        assert (ROOT / source).exists(), source
        assert not _ignored(patterns, source), f"{source} is excluded by .dockerignore"
    assert not _ignored(patterns, "plugins/handlers/github/vm/run-runner.bash"), "the in-VM script ships"
    excluded = [
        ".git/config",
        ".venv/bin/python",
        ".state/dev/kubeconfig",
        "tests/conftest.py",
        "anklet/__pycache__/cli.cpython-311.pyc",
        "x/.env",
        "keys/app.pem",
    ]
    for path in excluded:
        assert _ignored(patterns, path), f"{path} would be sent to the Docker daemon"
