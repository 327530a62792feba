"""The redelivery scan's slot (one scan per interval across receiver replicas): pure decisions."""

from __future__ import annotations

from pathlib import Path

import pytest

from anklet.dev import kustomize
from controller.leader import LeaseRecord, Observed, observe
from plugins.receivers.github.scanlock import (
    LEASE_NAME,
    TIMER_SLACK,
    Claim,
    claim_record,
    decide,
    default_identity,
)

ME, OTHER = "receiver-a_1_aaaaaa", "receiver-b_1_bbbbbb"
SLOT = 300.0
WALL = "2026-01-02T03:04:05.000000Z"


def seen(holder: str | None, at: float = 1000.0, duration: int = 300) -> Observed:
    """The Lease as first seen at local time `at` (None: there is no Lease)."""
    record = None if holder is None else LeaseRecord(holder, duration, WALL, WALL, 2)
    return observe(None, record, None if record is None else "7", at)


def claim(observed: Observed, now: float, claimed_at: float | None = None, slot: float = SLOT) -> Claim:
    return decide(observed, now, identity=ME, claimed_at=claimed_at, slot=slot)


def test_no_lease_yet_creates_it() -> None:
    assert claim(seen(None), 1000.0) is Claim.CREATE


def test_another_replicas_slot_is_respected_until_it_ends_as_seen_here() -> None:
    observed = seen(OTHER, at=1000.0)
    assert claim(observed, 1000.0) is Claim.SKIP
    assert claim(observed, 1000.0 + 0.9 * SLOT) is Claim.SKIP
    assert claim(observed, 1000.0 + SLOT) is Claim.TAKE  # its holder did not claim again


def test_another_replicas_slot_lasts_its_own_duration_not_ours() -> None:
    observed = seen(OTHER, at=1000.0, duration=600)
    assert claim(observed, 1000.0 + SLOT) is Claim.SKIP
    assert claim(observed, 1000.0 + 600) is Claim.TAKE


def test_a_new_claim_by_the_other_replica_restarts_the_local_clock() -> None:
    """Expiry is judged from when *this* process saw the Lease change, never from renewTime."""
    first = seen(OTHER, at=1000.0)
    renewed = observe(first, LeaseRecord(OTHER, 300, WALL, WALL, 2), "8", 1290.0)
    assert claim(renewed, 1000.0 + SLOT) is Claim.SKIP
    assert claim(renewed, 1290.0 + SLOT) is Claim.TAKE
    unchanged = observe(first, LeaseRecord(OTHER, 300, WALL, WALL, 2), "7", 1290.0)
    assert claim(unchanged, 1000.0 + SLOT) is Claim.TAKE


def test_our_own_slot_runs_from_the_tick_that_claimed_it() -> None:
    observed = seen(ME, at=1000.4)  # written a moment after the tick began at 1000.0
    assert claim(observed, 1000.4, claimed_at=1000.0) is Claim.SKIP
    assert claim(observed, 1000.0 + SLOT / 2, claimed_at=1000.0) is Claim.SKIP
    # the next tick, exactly one interval after the last one began: ours again, no gap
    assert claim(observed, 1000.0 + SLOT, claimed_at=1000.0) is Claim.TAKE


def test_timer_slack_lets_a_slightly_early_tick_claim() -> None:
    observed = seen(ME, at=1000.0)
    early = 1000.0 + SLOT * (1 - TIMER_SLACK)
    assert claim(observed, early, claimed_at=1000.0) is Claim.TAKE
    assert claim(observed, early - 0.01, claimed_at=1000.0) is Claim.SKIP
    assert 0 < TIMER_SLACK <= 0.05, "small: a slot must still de-duplicate scans"


def test_our_identity_without_a_claim_of_ours_counts_as_another_replicas() -> None:
    """A Lease naming us that this process never wrote (an earlier process by that name)."""
    observed = seen(ME, at=1000.0)
    assert claim(observed, 1000.0 + 10) is Claim.SKIP
    assert claim(observed, 1000.0 + SLOT) is Claim.TAKE


def test_a_cleared_holder_is_free() -> None:
    assert claim(seen("", at=1000.0), 1000.0) is Claim.TAKE


@pytest.mark.parametrize("duration", [0, -5])
def test_a_malformed_duration_is_over_at_once(duration: int) -> None:
    assert claim(seen(OTHER, at=1000.0, duration=duration), 1000.0) is Claim.TAKE


def test_a_first_claim_starts_the_count() -> None:
    assert claim_record(None, ME, 299.5, WALL) == LeaseRecord(ME, 300, WALL, WALL, 0)


def test_claiming_again_keeps_acquire_time_and_transitions() -> None:
    previous = LeaseRecord(ME, 300, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:05:00.000000Z", 4)
    assert claim_record(previous, ME, SLOT, WALL) == LeaseRecord(
        ME, 300, "2026-01-01T00:00:00.000000Z", WALL, 4
    )


def test_taking_over_counts_a_transition() -> None:
    previous = LeaseRecord(OTHER, 300, "2026-01-01T00:00:00.000000Z", "2026-01-01T00:05:00.000000Z", 4)
    assert claim_record(previous, ME, SLOT, WALL) == LeaseRecord(ME, 300, WALL, WALL, 5)


def test_a_sub_second_slot_is_written_as_one_second() -> None:
    assert claim_record(None, ME, 0.2, WALL).duration_seconds == 1


def test_identities_differ_within_one_process() -> None:
    assert default_identity() != default_identity()


def test_the_receivers_role_may_use_exactly_this_lease() -> None:
    """The Role names the Lease (get/update): renaming one without the other would 403 in a cluster."""
    objects = kustomize.render(Path(__file__).resolve().parents[2] / "manifests" / "overlays" / "production")
    role = next(o for o in objects if o["kind"] == "Role" and o["metadata"]["name"] == "anklet-receiver")
    leases = [r for r in role["rules"] if "leases" in r["resources"]]
    assert {v for r in leases if r.get("resourceNames") == [LEASE_NAME] for v in r["verbs"]} == {
        "get",
        "update",
    }
    assert [r["verbs"] for r in leases if not r.get("resourceNames")] == [["create"]]
