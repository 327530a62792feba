"""Chaos scenarios: every test here is marked ``chaos`` and gets (``chaos``) the package's dev stack,
reset and checked clean, with the invariant monitor running; each ends with the monitor's verdict.

With ``ANKLET_CHAOS_RESULTS=<file>`` (``make chaos`` sets it) the session writes the scenario
table of docs/reliability.md: scenario, faults injected, invariant results, outcome, seconds.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path
from typing import Any

import pytest

from anklet.dev.invariants import INVARIANTS
from tests.chaos.harness import Chaos, ChaosSession

_RESULTS: list[dict[str, Any]] = []
_KEY = pytest.StashKey[dict[str, Any]]()


@pytest.hookimpl(tryfirst=True)  # before `-m chaos` deselects
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in item.path.parents:
            item.add_marker(pytest.mark.chaos)


@pytest.fixture(scope="package")  # one stack for tests/chaos, stopped when they are done
def chaos_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosSession]:
    session = ChaosSession(tmp_path_factory.mktemp("chaos"))
    try:
        yield session
    finally:
        asyncio.run(session.finish())


@pytest.fixture(scope="package")  # the same, with Redis as primary + replica + three Sentinels
def sentinel_session(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ChaosSession]:
    session = ChaosSession(tmp_path_factory.mktemp("chaos-sentinel"), sentinel=True)
    try:
        yield session
    finally:
        asyncio.run(session.finish())


async def _scenario(request: pytest.FixtureRequest, session: ChaosSession) -> AsyncIterator[Chaos]:
    started = time.monotonic()
    system = await session.fresh()
    record: dict[str, Any] = {"scenario": request.node.name}
    request.node.stash[_KEY] = record
    begun = time.monotonic()
    try:
        yield system
    finally:
        record["seconds"] = round(time.monotonic() - begun, 1)
        record["setup"] = round(begun - started, 1)
        record["faults"] = list(system.faults)
        record["results"] = system.report.results() if system.report is not None else {}
        await system.close()


@pytest.fixture
async def chaos(request: pytest.FixtureRequest, chaos_session: ChaosSession) -> AsyncIterator[Chaos]:
    async for system in _scenario(request, chaos_session):
        yield system


@pytest.fixture
async def chaos_sentinel(
    request: pytest.FixtureRequest, sentinel_session: ChaosSession
) -> AsyncIterator[Chaos]:
    async for system in _scenario(request, sentinel_session):
        yield system


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Generator[None, Any, None]:
    outcome = yield
    report = outcome.get_result()
    record = item.stash.get(_KEY, None)
    if record is None:
        return
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        record["outcome"] = "xfail" if hasattr(report, "wasxfail") else report.outcome
    if report.when == "teardown" and record not in _RESULTS:
        _RESULTS.append(record)


def pytest_sessionfinish(session: pytest.Session) -> None:
    target = os.environ.get("ANKLET_CHAOS_RESULTS")
    if not target or not _RESULTS:
        return
    lines = [
        "| scenario | faults injected | "
        + " | ".join(f"inv {n}" for n in INVARIANTS)
        + " | result | seconds |",
        "|---|---|" + "---|" * len(INVARIANTS) + "---|---|",
    ]
    for r in _RESULTS:
        results = r.get("results", {})
        cells = [str(results.get(n, "—")) for n in INVARIANTS]
        lines.append(
            f"| `{r['scenario']}` | {'; '.join(r.get('faults', [])) or '—'} | "
            + " | ".join(cells)
            + f" | {r.get('outcome', '?')} | {r.get('seconds', '?')} |"
        )
    lines.append(f"\n{len(_RESULTS)} scenarios.")
    Path(target).parent.mkdir(parents=True, exist_ok=True)
    Path(target).write_text("\n".join(lines) + "\n")
