"""The leader election's decisions (controller/leader.py), without I/O.

The table tests pin client-go's rules one by one; the property tests check what the rules are
for: whatever the interleaving, clock offsets, skewed wall clocks and lost requests or
responses, two replicas never lead at the same time, and a live replica gets the Lease once the
holder goes quiet.
"""

from __future__ import annotations

import dataclasses
import os
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from controller.leader import (
    Action,
    LeaseRecord,
    Observed,
    Timing,
    decide,
    leadership_expired,
    lease_expired,
    lease_object,
    micro_time,
    next_record,
    observe,
    record_from_lease,
    released_record,
)

TIMING = Timing(lease_duration=15, renew_deadline=10, retry_period=2)
ME, OTHER = "me", "other"


def held(holder: str, *, at: float = 100.0, duration: int = 15, transitions: int = 0) -> Observed:
    record = LeaseRecord(
        holder, duration, "2020-01-01T00:00:00.000000Z", "2020-01-01T00:00:00.000000Z", transitions
    )
    return Observed(record, "7", at)


ABSENT = Observed(None, None, 100.0)


# Timing.


def test_timing_defaults_are_client_gos() -> None:
    assert (Timing().lease_duration, Timing().renew_deadline, Timing().retry_period) == (15, 10, 2)


@pytest.mark.parametrize(("lease", "renew", "retry"), [(10, 10, 2), (15, 10, 10), (15, 10, 0), (5, 10, 2)])
def test_timing_must_be_ordered(lease: float, renew: float, retry: float) -> None:
    with pytest.raises(ValueError, match="lease duration > renew deadline > retry period"):
        Timing(lease, renew, retry)


def test_fractional_lease_duration_is_written_rounded_up() -> None:
    assert Timing(2.5, 2, 0.5).lease_seconds == 3


# observe: the local clock restarts only when the Lease was written.


def test_first_observation_starts_the_clock() -> None:
    record = held(OTHER).record
    assert observe(None, record, "7", 42.0) == Observed(record, "7", 42.0)


def test_an_unchanged_lease_keeps_the_time_it_was_first_seen() -> None:
    first = observe(None, held(OTHER).record, "7", 42.0)
    assert observe(first, held(OTHER).record, "7", 50.0).changed_at == 42.0


def test_a_renewal_restarts_the_clock() -> None:
    first = observe(None, held(OTHER).record, "7", 42.0)
    assert first.record is not None
    renewed = dataclasses.replace(first.record, renew_time="2020-01-01T00:00:02.000000Z")
    assert observe(first, renewed, "8", 50.0).changed_at == 50.0


def test_a_write_with_an_identical_record_still_restarts_the_clock() -> None:
    """A holder whose wall clock stands still renews with the same renewTime: the rv moves."""
    first = observe(None, held(OTHER).record, "7", 42.0)
    assert observe(first, held(OTHER).record, "8", 50.0).changed_at == 50.0


def test_appearing_and_vanishing_restart_the_clock() -> None:
    absent = observe(None, None, None, 1.0)
    assert observe(absent, None, None, 5.0).changed_at == 1.0
    present = observe(absent, held(OTHER).record, "3", 6.0)
    assert present.changed_at == 6.0
    assert observe(present, None, None, 9.0).changed_at == 9.0


# lease_expired.


def test_expiry_is_the_duration_after_the_local_observation() -> None:
    observed = held(OTHER, at=100.0, duration=15)
    assert not lease_expired(observed, 114.999)
    assert lease_expired(observed, 115.0)


def test_absent_released_and_zero_duration_leases_are_free() -> None:
    assert lease_expired(ABSENT, 0.0)
    assert lease_expired(held("", at=100.0), 100.0)
    assert lease_expired(held(OTHER, at=100.0, duration=0), 100.0)
    assert lease_expired(held(OTHER, at=100.0, duration=-5), 100.0)


@given(
    renew=st.datetimes(timezones=st.just(UTC)),
    acquire=st.datetimes(timezones=st.just(UTC)),
    now=st.floats(min_value=0, max_value=1e6),
)
def test_remote_timestamps_never_count(renew: datetime, acquire: datetime, now: float) -> None:
    """A renewTime far in the past or the future (a skewed clock) changes nothing."""
    plain = Observed(LeaseRecord(OTHER, 15), "1", 500.0)
    stamped = Observed(LeaseRecord(OTHER, 15, micro_time(acquire), micro_time(renew)), "1", 500.0)
    assert lease_expired(plain, now) == lease_expired(stamped, now)
    assert decide(plain, now, ME, TIMING, None) == decide(stamped, now, ME, TIMING, None)


# leadership_expired.


def test_leadership_lasts_the_renew_deadline_from_the_last_renewal_sent() -> None:
    assert not leadership_expired(None, 1e9, TIMING)
    assert not leadership_expired(100.0, 109.999, TIMING)
    assert leadership_expired(100.0, 110.0, TIMING)


# decide: client-go's rules, one by one.


@pytest.mark.parametrize(
    ("observed", "now", "renewed_at", "expected"),
    [
        pytest.param(ABSENT, 100.0, None, Action.CREATE, id="candidate, no lease: create"),
        pytest.param(held(OTHER), 100.0, None, Action.WAIT, id="candidate, fresh lease: wait"),
        pytest.param(held(OTHER), 114.9, None, Action.WAIT, id="candidate, almost expired: wait"),
        pytest.param(held(OTHER), 115.0, None, Action.TAKE_OVER, id="candidate, expired: take over"),
        pytest.param(held(""), 100.0, None, Action.TAKE_OVER, id="candidate, released: take over at once"),
        pytest.param(held(ME), 100.0, None, Action.RENEW, id="candidate holding it (restarted): renew"),
        pytest.param(held(ME), 105.0, 100.0, Action.RENEW, id="leader in time: renew"),
        pytest.param(held(ME), 109.9, 100.0, Action.RENEW, id="leader just in time: renew"),
        pytest.param(held(ME), 110.0, 100.0, Action.STEP_DOWN, id="leader past the renew deadline"),
        pytest.param(held(OTHER), 101.0, 100.0, Action.STEP_DOWN, id="leader, someone else holds it"),
        pytest.param(held(""), 101.0, 100.0, Action.STEP_DOWN, id="leader, lease cleared under it"),
        pytest.param(ABSENT, 101.0, 100.0, Action.CREATE, id="leader, lease deleted: create again"),
        pytest.param(ABSENT, 110.0, 100.0, Action.STEP_DOWN, id="leader, deleted, past the deadline"),
    ],
)
def test_decide(observed: Observed, now: float, renewed_at: float | None, expected: Action) -> None:
    assert decide(observed, now, ME, TIMING, renewed_at) is expected


@given(
    holder=st.sampled_from([ME, OTHER, ""]),
    present=st.booleans(),
    changed_at=st.floats(min_value=0, max_value=1000),
    elapsed=st.floats(min_value=0, max_value=100),
    duration=st.integers(min_value=-1, max_value=60),
    renewed_ago=st.none() | st.floats(min_value=0, max_value=100),
)
def test_decide_exhaustively(
    holder: str, present: bool, changed_at: float, elapsed: float, duration: int, renewed_ago: float | None
) -> None:
    now = changed_at + elapsed
    observed = Observed(
        LeaseRecord(holder, duration) if present else None, "1" if present else None, changed_at
    )
    renewed_at = None if renewed_ago is None else now - renewed_ago
    action = decide(observed, now, ME, TIMING, renewed_at)
    leading = renewed_at is not None
    if action is Action.STEP_DOWN:
        assert leading
    if action is Action.CREATE:
        assert not present
    if action is Action.WAIT:
        assert not leading and present and holder not in ("", ME) and not lease_expired(observed, now)
    if action is Action.TAKE_OVER:
        assert not leading and holder != ME and lease_expired(observed, now)
    if action is Action.RENEW:
        assert holder == ME and present
    if leading and leadership_expired(renewed_at, now, TIMING):
        assert action is Action.STEP_DOWN
    if not leading and present and holder not in ("", ME) and not lease_expired(observed, now):
        assert action is Action.WAIT


# next_record / released_record: client-go's bookkeeping.


def test_create_holds_the_lease_from_now() -> None:
    record = next_record(Action.CREATE, ABSENT, ME, TIMING, "T1")
    assert record == LeaseRecord(ME, 15, "T1", "T1", 0)


def test_renewal_keeps_acquire_time_and_transitions() -> None:
    record = next_record(Action.RENEW, held(ME, transitions=4), ME, TIMING, "T2")
    assert record == LeaseRecord(ME, 15, "2020-01-01T00:00:00.000000Z", "T2", 4)


def test_take_over_counts_a_transition() -> None:
    record = next_record(Action.TAKE_OVER, held(OTHER, transitions=4), ME, TIMING, "T3")
    assert record == LeaseRecord(ME, 15, "T3", "T3", 5)


@pytest.mark.parametrize("action", [Action.WAIT, Action.STEP_DOWN])
def test_waiting_and_stepping_down_write_nothing(action: Action) -> None:
    with pytest.raises(ValueError, match="writes nothing"):
        next_record(action, held(OTHER), ME, TIMING, "T")


def test_release_empties_the_holder_and_shortens_the_lease() -> None:
    assert released_record(LeaseRecord(ME, 15, "A", "B", 3), "T") == LeaseRecord("", 1, "T", "T", 3)


# The Lease object.


def test_lease_object_round_trips_and_carries_the_resource_version() -> None:
    record = LeaseRecord(ME, 15, "2026-01-02T03:04:05.000006Z", "2026-01-02T03:04:06.000000Z", 2)
    body = lease_object("anklet-system", "anklet-controller", record, "42")
    assert body["apiVersion"] == "coordination.k8s.io/v1" and body["kind"] == "Lease"
    assert body["metadata"] == {
        "name": "anklet-controller",
        "namespace": "anklet-system",
        "resourceVersion": "42",
    }
    assert body["spec"]["holderIdentity"] == ME and body["spec"]["leaseDurationSeconds"] == 15
    assert record_from_lease(body) == record
    assert "resourceVersion" not in lease_object("ns", "n", record, None)["metadata"]


def test_a_malformed_lease_reads_as_free() -> None:
    record = record_from_lease({"spec": {"holderIdentity": None, "leaseDurationSeconds": "soon"}})
    assert record == LeaseRecord("", 0, None, None, 0)
    assert record_from_lease({}) == LeaseRecord("", 0)


def test_micro_time_is_utc_with_microseconds() -> None:
    assert micro_time(datetime(2026, 1, 2, 3, 4, 5, 6, tzinfo=UTC)) == "2026-01-02T03:04:05.000006Z"


# The protocol as a whole: replicas stepping against one Lease with optimistic concurrency.


@dataclasses.dataclass
class Replica:
    identity: str
    offset: float  # the local monotonic clock is t + offset: unrelated between machines
    skew: float  # the wall clock written into the Lease is off by this much
    observed: Observed | None = None
    renewed_at: float | None = None

    def valid_leader(self, t: float) -> bool:
        """Leading and still within the renew deadline: the only time a leader may act."""
        return self.renewed_at is not None and not leadership_expired(
            self.renewed_at, t + self.offset, TIMING
        )


@dataclasses.dataclass
class Server:
    record: LeaseRecord | None = None
    rv: int = 0

    def step(self, replica: Replica, t: float, outcome: str) -> None:
        """One round of `LeaderElector.step`, with the request or its response possibly lost."""
        now = t + replica.offset
        rv = str(self.rv) if self.record is not None else None
        replica.observed = observe(replica.observed, self.record, rv, now)
        action = decide(replica.observed, now, replica.identity, TIMING, replica.renewed_at)
        if action is Action.STEP_DOWN:
            replica.renewed_at = None
        if action in (Action.WAIT, Action.STEP_DOWN) or outcome == "request lost":
            return
        wall = micro_time(datetime.fromtimestamp(1.7e9 + t + replica.skew, UTC))
        record = next_record(action, replica.observed, replica.identity, TIMING, wall)
        fits = self.record is None if action is Action.CREATE else rv == replica.observed.resource_version
        if not fits:
            return  # 409
        self.record, self.rv = record, self.rv + 1
        if outcome == "ok":  # else the write happened but the answer never came back
            replica.observed = observe(replica.observed, record, str(self.rv), now)
            replica.renewed_at = now


events = st.lists(
    st.tuples(
        # time passing before the event: often around the retry period and the deadlines
        st.sampled_from([0.0, 0.5, 1.0, 2.0, 2.0, 2.0, 5.0, 9.5, 10.0, 14.5, 15.0, 16.0])
        | st.floats(min_value=0, max_value=20),
        st.integers(min_value=0, max_value=1) | st.integers(min_value=0, max_value=2),  # who steps
        st.sampled_from(["ok", "ok", "ok", "request lost", "response lost"]),
    ),
    max_size=60,
)


@settings(max_examples=1000, deadline=None)
@given(
    events=events,
    offsets=st.lists(st.floats(min_value=-1e5, max_value=1e5), min_size=3, max_size=3),
    skews=st.lists(st.floats(min_value=-1e5, max_value=1e5), min_size=3, max_size=3),
)
def test_never_two_leaders(
    events: list[tuple[float, int, str]], offsets: list[float], skews: list[float]
) -> None:
    replicas = [Replica(f"r{i}", offsets[i], skews[i]) for i in range(3)]
    server, t = Server(), 0.0
    for delay, who, outcome in events:
        t += delay
        server.step(replicas[who], t, outcome)
        leaders = [r.identity for r in replicas if r.valid_leader(t)]
        assert len(leaders) <= 1, f"two leaders at t={t}: {leaders}"


def test_a_standby_never_takes_a_lease_that_keeps_being_renewed() -> None:
    leader, standby = Replica("r0", 0.0, 0.0), Replica("r1", 5e4, -3e4)
    server, t = Server(), 0.0
    while t < 120:
        server.step(leader, t, "ok")
        server.step(standby, t + 1, "ok")
        assert leader.valid_leader(t + 1) and standby.renewed_at is None
        t += TIMING.retry_period
    leader.renewed_at = None  # it dies; the standby takes over one lease duration after the last renewal
    last_renewal = t - TIMING.retry_period
    while standby.renewed_at is None:
        server.step(standby, t, "ok")
        t += 1
    assert last_renewal + TIMING.lease_duration <= t - 1 <= last_renewal + TIMING.lease_duration + 1


@settings(max_examples=100, deadline=None)
@given(events=events, offset=st.floats(min_value=-1e5, max_value=1e5))
def test_a_quiet_holder_is_replaced_within_lease_duration_plus_retry(
    events: list[tuple[float, int, str]], offset: float
) -> None:
    """Whatever happened before, once only r0 runs (every retry period, answers arriving), it
    leads within one lease duration plus one retry period."""
    replicas = [Replica(f"r{i}", offset * i, 0.0) for i in range(3)]
    server, t = Server(), 0.0
    for delay, who, outcome in events:
        t += delay
        server.step(replicas[who], t, outcome)
    quiet_from, r0 = t, replicas[0]
    server.step(r0, t, "ok")
    while not r0.valid_leader(t):
        t += TIMING.retry_period
        assert t - quiet_from <= TIMING.lease_duration + TIMING.retry_period
        server.step(r0, t, "ok")


# The settings behind `anklet controller --leader-election` (anklet/config.py).


def test_settings_default_to_the_pod_and_client_gos_durations(monkeypatch: pytest.MonkeyPatch) -> None:
    from anklet.config import ControllerSettings

    for name in (
        "ANKLET_LEADER_ELECTION",
        "ANKLET_LEADER_ELECTION_NAMESPACE",
        "ANKLET_LEADER_ELECTION_IDENTITY",
    ):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("POD_NAMESPACE", "ci")
    monkeypatch.setenv("POD_NAME", "anklet-controller-7d9f-abcde")
    s = ControllerSettings()
    assert not s.leader_election
    assert (s.leader_election_namespace, s.leader_election_identity) == ("ci", "anklet-controller-7d9f-abcde")
    assert s.leader_election_lease_name == "anklet-controller"
    durations = (
        s.leader_election_lease_duration_seconds,
        s.leader_election_renew_deadline_seconds,
        s.leader_election_retry_period_seconds,
    )
    assert durations == (15, 10, 2)

    monkeypatch.delenv("POD_NAMESPACE")
    monkeypatch.delenv("POD_NAME")
    monkeypatch.setenv("ANKLET_LEADER_ELECTION", "true")
    s = ControllerSettings()
    assert s.leader_election and s.leader_election_namespace == "anklet-system"
    assert s.leader_election_identity.endswith(f"_{os.getpid()}")


def test_settings_refuse_durations_out_of_order(monkeypatch: pytest.MonkeyPatch) -> None:
    from pydantic import ValidationError

    from anklet.config import ControllerSettings

    monkeypatch.setenv("ANKLET_LEADER_ELECTION_RETRY_PERIOD_SECONDS", "12")
    with pytest.raises(ValidationError, match="lease duration > renew deadline > retry period"):
        ControllerSettings()
