"""Finished AnkaJobs waiting for their `ttlSecondsAfterFinished` to run out, soonest first."""

from __future__ import annotations

import heapq
from datetime import timedelta

from anklet.models import AnkaJob


class ExpiryQueue:
    """A heap of (deadline, uid); each job is planned once until it comes due."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, str]] = []
        self._planned: set[str] = set()

    def plan(self, job: AnkaJob) -> None:
        """Queue a finished job with a TTL (a job without one, or not finished, is kept)."""
        ttl = job.spec.ttl_seconds_after_finished
        done = job.status.completion_time
        if ttl is None or done is None:
            return
        self.at(job.metadata.uid, (done + timedelta(seconds=ttl)).timestamp())

    def at(self, uid: str, deadline: float) -> None:
        """Queue `uid` for `deadline` (Unix time) unless it is queued already."""
        if uid in self._planned:
            return
        self._planned.add(uid)
        heapq.heappush(self._heap, (deadline, uid))

    def next_deadline(self) -> float | None:
        return self._heap[0][0] if self._heap else None

    def due(self, now: float) -> list[str]:
        """Take the jobs whose deadline has passed."""
        due = []
        while self._heap and self._heap[0][0] <= now:
            uid = heapq.heappop(self._heap)[1]
            self._planned.discard(uid)
            due.append(uid)
        return due
