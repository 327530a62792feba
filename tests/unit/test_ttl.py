"""controller.ttl: finished jobs come due when their ttlSecondsAfterFinished runs out, once each."""

from __future__ import annotations

from datetime import UTC, datetime

from anklet.models import AnkaJob
from controller.ttl import ExpiryQueue

DONE = datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def job(uid: str, ttl: int | None, *, done: bool = True) -> AnkaJob:
    status: dict[str, object] = {"phase": "Succeeded" if done else "Running"}
    if done:
        status["completionTime"] = DONE.isoformat()
    spec: dict[str, object] = {"template": "t", "handler": "script", "script": {"run": "true"}}
    if ttl is not None:
        spec["ttlSecondsAfterFinished"] = ttl
    return AnkaJob.model_validate({"metadata": {"name": uid, "uid": uid}, "spec": spec, "status": status})


def test_jobs_come_due_in_deadline_order_and_once() -> None:
    queue = ExpiryQueue()
    queue.plan(job("late", 600))
    queue.plan(job("soon", 60))
    queue.plan(job("soon", 60))  # seen again (a resync): still one entry
    t0 = DONE.timestamp()
    assert queue.next_deadline() == t0 + 60
    assert queue.due(t0 + 59) == []
    assert queue.due(t0 + 60) == ["soon"]
    assert queue.due(t0 + 60) == []
    assert queue.due(t0 + 3600) == ["late"]
    assert queue.next_deadline() is None


def test_jobs_without_a_ttl_or_not_finished_are_kept() -> None:
    queue = ExpiryQueue()
    queue.plan(job("forever", None))
    queue.plan(job("running", 0, done=False))
    assert queue.next_deadline() is None


def test_a_failed_delete_is_queued_again() -> None:
    queue = ExpiryQueue()
    queue.plan(job("a", 0))
    assert queue.due(DONE.timestamp()) == ["a"]
    queue.at("a", DONE.timestamp() + 10)
    assert queue.due(DONE.timestamp() + 10) == ["a"]
