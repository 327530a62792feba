"""controller.backlog: waiting jobs kept in queue order (priority, creation, name) as versions of
them come and go, with the never-explained and the long-waiting ones at hand."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from anklet.models import AnkaJob
from controller import scheduling
from controller.backlog import Backlog

T0 = datetime(2026, 12, 6, 12, 0, tzinfo=UTC)


def job(n: int, *, priority: int = 0, age: int = 0, explained: bool = False) -> AnkaJob:
    status: dict[str, object] = {"phase": "Pending"}
    if explained:
        status["conditions"] = [
            {"type": "Scheduled", "status": "False", "reason": "Unschedulable", "message": "0/1 hosts"}
        ]
    return AnkaJob.model_validate(
        {
            "metadata": {
                "name": f"job-{n:03d}",
                "uid": f"u{n}",
                "creationTimestamp": (T0 - timedelta(seconds=age)).isoformat(),
            },
            "spec": {"template": "t", "handler": "script", "script": {"run": "true"}, "priority": priority},
            "status": status,
        }
    )


def names(backlog: Backlog, skip: frozenset[str] = frozenset()) -> list[str]:
    return [e.job.metadata.name for e in backlog.ordered(skip)]


def test_order_is_priority_then_oldest_then_name() -> None:
    backlog = Backlog()
    for j in (job(1, age=10), job(2, age=30), job(3, priority=5, age=0), job(4, age=30)):
        backlog.put(j)
    assert names(backlog) == ["job-003", "job-002", "job-004", "job-001"]
    assert names(backlog, frozenset({"u2"})) == ["job-003", "job-004", "job-001"]
    head, complete = backlog.head(2)
    assert [e.uid for e in head] == ["u3", "u2"] and not complete
    head, complete = backlog.head(4)
    assert len(head) == 4 and complete


def test_a_new_version_moves_with_its_priority_and_leaving_removes_it() -> None:
    backlog = Backlog()
    backlog.put(job(1, age=10))
    backlog.put(job(2, age=5))
    backlog.put(job(2, priority=9, age=5))
    assert names(backlog) == ["job-002", "job-001"] and len(backlog) == 2
    backlog.discard("u2")
    backlog.discard("u2")  # twice: nothing more happens
    assert names(backlog) == ["job-001"] and "u2" not in backlog


def test_the_same_version_is_not_worked_out_again() -> None:
    backlog = Backlog()
    same = job(1)
    first = backlog.put(same)
    assert backlog.put(same) is first


def test_unexplained_jobs_are_tracked_by_version() -> None:
    backlog = Backlog()
    backlog.put(job(1))
    backlog.put(job(2, explained=True))
    assert set(backlog.unexplained()) == {"u1"}
    backlog.put(job(1, explained=True))
    assert set(backlog.unexplained()) == set()
    backlog.put(job(3))
    backlog.discard("u3")
    assert set(backlog.unexplained()) == set()


def test_waiting_seconds_and_the_long_waiting_in_every_priority() -> None:
    backlog = Backlog()
    for j in (job(1, age=700), job(2, age=100), job(3, priority=1, age=900), job(4, priority=1, age=10)):
        backlog.put(j)
    first = backlog.get("u1")
    assert first is not None and first.waiting(T0.timestamp()) == 700
    cutoff = T0.timestamp() - 600
    assert sorted(e.uid for e in backlog.created_by(cutoff)) == ["u1", "u3"]


@settings(max_examples=200, deadline=None)
@given(
    ops=st.lists(
        st.tuples(
            st.sampled_from(["put", "drop"]), st.integers(0, 15), st.integers(0, 2), st.integers(0, 50)
        ),
        max_size=80,
    )
)
def test_the_order_always_equals_sorting_from_scratch(ops: list[tuple[str, int, int, int]]) -> None:
    backlog = Backlog()
    live: dict[str, AnkaJob] = {}
    for op, n, priority, age in ops:
        if op == "put":
            live[f"u{n}"] = job(n, priority=priority, age=age)
            backlog.put(live[f"u{n}"])
        else:
            live.pop(f"u{n}", None)
            backlog.discard(f"u{n}")
    now = T0.timestamp()
    requests = [
        scheduling.JobRequest(
            uid=j.metadata.uid, cpu=1, memory_mib=1, priority=j.spec.priority, waiting_seconds=e.waiting(now)
        )
        for j in sorted(live.values(), key=lambda j: (j.metadata.creation_timestamp, j.metadata.name))
        if (e := backlog.get(j.metadata.uid)) is not None
    ]
    assert [e.uid for e in backlog.ordered()] == [r.uid for r in scheduling.order(requests)]
    assert len(backlog) == len(live)
