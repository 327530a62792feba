"""Pure template-on-disk policies: what to evict before a pull, and what to pre-pull when.

The eviction rows follow anka-cli.md §4.6: keep a free-space buffer, delete least recently used
templates first, never one a VM uses or the one being pulled, and delete nothing when no eviction
can make room. The pre-pull rows cover ``host_agent.prepull.due_specs``.
"""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from host_agent.anka import VMInfo
from host_agent.eviction import (
    Candidate,
    CannotFit,
    Evict,
    buffer_bytes,
    eviction_order,
    plan_eviction,
    shortfall,
)
from host_agent.prepull import SpecState, due_specs, split_spec

G = 1024**3


def day(n: int) -> datetime:
    return datetime(2025, 1, n, tzinfo=UTC)


def tpl(
    name: str, size_g: int, used_day: int | None, *, in_use: bool = False, pinned: bool = False
) -> Candidate:
    return Candidate(
        uuid=f"uuid-{name}",
        name=name,
        size=size_g * G,
        access_date=day(used_day) if used_day is not None else None,
        in_use=in_use,
        pinned=pinned,
    )


# --- the buffer ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("total", "percent", "absolute", "expected"),
    [
        pytest.param(500 * G, 10.0, None, 50 * G, id="ten-percent-of-the-disk"),
        pytest.param(500 * G, 0.0, None, 0, id="no-buffer"),
        pytest.param(500 * G, 10.0, 8 * G, 8 * G, id="absolute-wins"),
        pytest.param(500 * G, 10.0, 0, 0, id="absolute-zero-wins"),
        pytest.param(1000, 2.5, None, 25, id="fraction-of-a-percent"),
    ],
)
def test_buffer_bytes(total: int, percent: float, absolute: int | None, expected: int) -> None:
    assert buffer_bytes(total, percent, absolute) == expected


@pytest.mark.parametrize(
    ("to_download", "available", "buffer", "expected"),
    [
        pytest.param(10, 30, 10, -10, id="room-to-spare"),
        pytest.param(10, 20, 10, 0, id="exactly-the-buffer-left-fits"),
        pytest.param(10, 19, 10, 1, id="one-byte-short"),
        pytest.param(0, 5, 10, 5, id="nothing-to-download-but-already-inside-the-buffer"),
    ],
)
def test_shortfall(to_download: int, available: int, buffer: int, expected: int) -> None:
    assert shortfall(to_download=to_download, available=available, buffer=buffer) == expected


# --- the plan -----------------------------------------------------------------------------------

OLD, MID, NEW = tpl("old", 10, 1), tpl("mid", 10, 5), tpl("new", 10, 9)


@pytest.mark.parametrize(
    ("to_download", "available", "candidates", "pulling", "evict_pinned", "victims"),
    [
        pytest.param(10 * G, 30 * G, [OLD, MID], (), True, [], id="fits-without-eviction"),
        pytest.param(10 * G, 15 * G, [NEW, OLD, MID], (), True, ["old"], id="least-recently-used-first"),
        pytest.param(10 * G, 5 * G, [NEW, OLD, MID], (), True, ["old", "mid"], id="as-many-as-needed"),
        pytest.param(
            10 * G,
            15 * G,
            [tpl("old", 10, 1, in_use=True), MID, NEW],
            (),
            True,
            ["mid"],
            id="in-use-is-skipped-even-when-oldest",
        ),
        pytest.param(
            10 * G, 15 * G, [OLD, MID], ("uuid-old",), True, ["mid"], id="the-template-being-pulled-is-kept"
        ),
        pytest.param(10 * G, 15 * G, [OLD, MID], ("old",), True, ["mid"], id="pulled-template-by-name"),
        pytest.param(
            10 * G,
            15 * G,
            [tpl("old", 10, 1, pinned=True), MID],
            (),
            True,
            ["mid"],
            id="pinned-evicted-after-unpinned",
        ),
        pytest.param(
            10 * G,
            5 * G,
            [tpl("old", 10, 1, pinned=True), MID],
            (),
            True,
            ["mid", "old"],
            id="pinned-evicted-when-nothing-else-frees-enough",
        ),
        pytest.param(
            10 * G,
            15 * G,
            [tpl("unknown", 10, None), OLD],
            (),
            True,
            ["unknown"],
            id="no-access-date-is-oldest",
        ),
        pytest.param(
            10 * G,
            15 * G,
            [tpl("empty", 0, 1), MID],
            (),
            True,
            ["mid"],
            id="a-template-that-frees-nothing-is-not-deleted",
        ),
    ],
)
def test_plan_evicts(
    to_download: int,
    available: int,
    candidates: list[Candidate],
    pulling: tuple[str, ...],
    evict_pinned: bool,
    victims: list[str],
) -> None:
    plan = plan_eviction(
        size=to_download,
        to_download=to_download,
        available=available,
        buffer=8 * G,
        total=100 * G,
        candidates=candidates,
        pulling=pulling,
        evict_pinned=evict_pinned,
    )
    assert isinstance(plan, Evict), plan
    assert [c.name for c in plan.victims] == victims


@pytest.mark.parametrize(
    ("size", "to_download", "available", "candidates", "evict_pinned", "reclaimable", "words"),
    [
        pytest.param(
            30 * G,
            30 * G,
            15 * G,
            [tpl("old", 10, 1, in_use=True), MID],
            True,
            10 * G,
            "evicting every unused template would free only 10.0 GiB",
            id="in-use-would-be-needed",
        ),
        pytest.param(10 * G, 10 * G, 5 * G, [], True, 0, "5.0 GiB is free", id="nothing-to-evict"),
        pytest.param(
            150 * G,
            150 * G,
            90 * G,
            [OLD],
            True,
            0,
            "more than this host's whole disk",
            id="bigger-than-disk",
        ),
        pytest.param(
            95 * G,
            95 * G,
            95 * G,
            [OLD],
            True,
            0,
            "more than this host's whole disk",
            id="template-plus-buffer-bigger-than-disk",
        ),
        pytest.param(
            10 * G,
            10 * G,
            15 * G,
            [tpl("old", 10, 1, pinned=True)],
            False,
            0,
            "would free only 0.0 GiB",
            id="a-pre-pull-never-evicts-a-pinned-template",
        ),
    ],
)
def test_plan_cannot_fit_deletes_nothing(
    size: int,
    to_download: int,
    available: int,
    candidates: list[Candidate],
    evict_pinned: bool,
    reclaimable: int,
    words: str,
) -> None:
    plan = plan_eviction(
        size=size,
        to_download=to_download,
        available=available,
        buffer=8 * G,
        total=100 * G,
        candidates=candidates,
        evict_pinned=evict_pinned,
    )
    assert isinstance(plan, CannotFit), plan
    assert plan.reclaimable == reclaimable
    assert words in plan.describe("tpl:tag")


def test_unknown_disk_size_skips_the_whole_disk_check() -> None:
    plan = plan_eviction(
        size=150 * G, to_download=10 * G, available=100 * G, buffer=8 * G, total=None, candidates=[]
    )
    assert plan == Evict((), 10 * G + 8 * G - 100 * G)


def test_eviction_order_is_deterministic_for_equal_dates() -> None:
    a, b = tpl("a", 1, 3), tpl("b", 1, 3)
    assert eviction_order([b, a]) == [a, b]


# --- pre-pull -----------------------------------------------------------------------------------

T = "84266873-da90-4e0d-903b-ed0233471f9f"


def vm(name: str, uuid: str, version: str | None, status: str = "stopped") -> VMInfo:
    return VMInfo(name=name, uuid=uuid, status=status, version=version)


ANKLET_2C4R = vm("anklet", T, "2c4r")


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        pytest.param(f"{T}:2c4r", (T, "2c4r"), id="uuid-and-tag"),
        pytest.param("anklet", ("anklet", None), id="latest"),
        pytest.param(" anklet: ", ("anklet", None), id="empty-tag-is-latest"),
        pytest.param("t:vanilla+brew", ("t", "vanilla+brew"), id="tag-with-punctuation"),
    ],
)
def test_split_spec(spec: str, expected: tuple[str, str | None]) -> None:
    assert split_spec(spec) == expected


@pytest.mark.parametrize(
    ("wanted", "local", "memory", "due"),
    [
        pytest.param([f"{T}:2c4r"], [], {}, [f"{T}:2c4r"], id="missing-is-due"),
        pytest.param([f"{T}:2c4r", "anklet:2c4r"], [ANKLET_2C4R], {}, [], id="current-tag-on-disk"),
        pytest.param([f"{T}:3c6r"], [ANKLET_2C4R], {}, [f"{T}:3c6r"], id="other-tag-on-disk-is-checked"),
        pytest.param(
            [f"{T}:2c4r"],
            [vm("anklet", T, "2c4r", status="failed")],
            {},
            [f"{T}:2c4r"],
            id="failed-template-is-due",
        ),
        pytest.param(
            [f"{T}:2c4r"], [vm("anklet-vm-x-1", "c", None)], {}, [f"{T}:2c4r"], id="clones-are-not-templates"
        ),
        pytest.param(["anklet", "anklet", " "], [], {}, ["anklet"], id="duplicates-and-blanks-dropped"),
        pytest.param(
            ["anklet"], [ANKLET_2C4R], {"anklet": SpecState(settled_at=95)}, [], id="settled-recently"
        ),
        pytest.param(
            ["anklet"], [ANKLET_2C4R], {"anklet": SpecState(settled_at=0)}, ["anklet"], id="settled-long-ago"
        ),
        pytest.param(
            ["anklet"], [], {"anklet": SpecState(settled_at=95)}, ["anklet"], id="settled-then-evicted"
        ),
        pytest.param(["nope"], [], {"nope": SpecState(failed_at=98)}, [], id="failed-waits-for-retry"),
        pytest.param(["nope"], [], {"nope": SpecState(failed_at=80)}, ["nope"], id="failed-retried"),
    ],
)
def test_due_specs(
    wanted: list[str], local: list[VMInfo], memory: dict[str, SpecState], due: list[str]
) -> None:
    assert due_specs(wanted, local, memory, now=100, recheck=60, retry=10) == due
