"""The receiver's pure decisions: payload parsing, ours-or-not, forward-only status, redelivery choice."""

from __future__ import annotations

import itertools
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlencode

import pytest

from anklet import models
from plugins.handlers.github.constants import (
    ANNOTATION_CONCLUSION,
    ANNOTATION_DELIVERY,
    ANNOTATION_RUNNER,
    ANNOTATION_STATUS,
    LABEL_JOB_ID,
    LABEL_REPOSITORY,
    LABEL_RUN_ID,
)
from plugins.handlers.github.schemas import HookDelivery
from plugins.receivers.github import ankajobs, events, redelivery
from plugins.receivers.github.ankajobs import Change
from plugins.receivers.github.recorder import StoredJob
from plugins.receivers.github.redelivery import JobFacts, Verdict

ACTIONS = ("queued", "waiting", "in_progress", "completed")
TEMPLATE = "84266873-da90-4e0d-903b-ed0233471f9f"


def payload(
    action: str = "queued",
    *,
    job_id: int = 101,
    run_attempt: int = 1,
    labels: list[str] | None = None,
    runner: str | None = None,
    conclusion: str | None = None,
) -> dict[str, Any]:
    """A `workflow_job` webhook body with the fields GitHub's schema requires that we read."""
    started = action in ("in_progress", "completed")
    return {
        "action": action,
        "workflow_job": {
            "id": job_id,
            "run_id": 555,
            "run_attempt": run_attempt,
            "run_url": "https://api.github.com/repos/acme/app/actions/runs/555",
            "node_id": "CR_x",
            "head_sha": "abc",
            "url": f"https://api.github.com/repos/acme/app/actions/jobs/{job_id}",
            "html_url": f"https://github.com/acme/app/actions/runs/555/job/{job_id}",
            "status": action,
            "conclusion": conclusion if action == "completed" else None,
            "started_at": "2026-01-01T00:00:00Z",
            "completed_at": None,
            "name": "build",
            "steps": [],
            "check_run_url": "https://api.github.com/x",
            "labels": labels
            if labels is not None
            else [f"anka-template:{TEMPLATE}", "anka-template-tag:2c4r"],
            "runner_id": 7 if started and runner else None,
            "runner_name": runner if started else None,
            "runner_group_id": None,
            "runner_group_name": None,
            "workflow_name": "CI",
            "head_branch": "main",
            "created_at": "2026-01-01T00:00:00Z",
        },
        "repository": {"id": 9, "name": "app", "full_name": "acme/app", "owner": {"login": "acme", "id": 1}},
        "sender": {"login": "octocat", "id": 2},
    }


def event(action: str = "queued", **kw: Any) -> events.WorkflowJobEvent:
    return events.parse_workflow_job(payload(action, **kw))


# ---- signature and parsing ------------------------------------------------------------------


def test_signature_is_hmac_sha256_over_the_raw_body() -> None:
    body = b'{"zen": "hi"}'
    header = events.sign(b"s3cret", body)
    assert header.startswith("sha256=") and len(header) == 7 + 64
    assert events.signature_valid(b"s3cret", body, header)
    assert not events.signature_valid(b"other", body, header)
    assert not events.signature_valid(b"s3cret", body + b" ", header)
    assert not events.signature_valid(b"s3cret", body, None)
    assert not events.signature_valid(b"s3cret", body, header.replace("sha256=", "sha1="))
    assert not events.signature_valid(b"s3cret", body, "sha256=é")


def test_a_valid_payload_parses_into_the_fields_we_use() -> None:
    parsed = event("in_progress", runner="anklet-vm-1")
    assert (parsed.owner, parsed.repo, parsed.action, parsed.tracked) == ("acme", "app", "in_progress", True)
    assert (parsed.workflow_job.id, parsed.workflow_job.run_id, parsed.workflow_job.runner_name) == (
        101,
        555,
        "anklet-vm-1",
    )


def test_form_encoded_bodies_are_accepted() -> None:
    body = urlencode({"payload": json.dumps(payload())}).encode()
    decoded = events.decode_body(body, "application/x-www-form-urlencoded")
    assert events.parse_workflow_job(decoded).workflow_job.id == 101


@pytest.mark.parametrize(
    "body",
    [b"not json", b"\xff\xfe", b"[1, 2]", b'"text"', b"{}", json.dumps({"action": "queued"}).encode()],
    ids=["garbage", "not-utf8", "array", "string", "empty-object", "no-workflow-job"],
)
def test_malformed_bodies_are_invalid(body: bytes) -> None:
    with pytest.raises(events.InvalidPayload):
        events.parse_workflow_job(events.decode_body(body, "application/json"))


@pytest.mark.parametrize("field", ["id", "run_id", "labels", "status"])
def test_a_missing_required_job_field_is_named(field: str) -> None:
    broken = payload()
    del broken["workflow_job"][field]
    with pytest.raises(events.InvalidPayload, match=field):
        events.parse_workflow_job(broken)


def test_unknown_actions_parse_but_are_not_tracked() -> None:
    assert not events.parse_workflow_job(payload("requested")).tracked


# ---- ours or not ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("labels", "expected"),
    [
        ([f"anka-template:{TEMPLATE}"], events.AnkaTarget(TEMPLATE)),
        ([f"anka-template:{TEMPLATE}", "anka-template-tag:2c4r"], events.AnkaTarget(TEMPLATE, "2c4r")),
        (["self-hosted", "Anka-Template:MyTemplate"], events.AnkaTarget("MyTemplate")),
        (["anka-template:a", "anka-template:b"], events.AnkaTarget("a")),
        (["ubuntu-latest"], None),
        (["anka-template-tag:2c4r"], None),  # a tag alone is not enough (Go queued these, then cancelled)
        (["anka-template:"], None),
        (["anka-template:x", "anka-template-tag:"], None),
        (["my-anka-template:x"], None),  # the Go version's substring match would have taken this
        ([], None),
        (["anka-template:\ud800"], None),  # a lone surrogate (legal in JSON) no AnkaJob can hold
        (["anka-template:a\x00b"], None),  # control characters name no template
        (["anka-template:x", "anka-template-tag:a\nb"], None),
        (["anka-template:日本語 テンプレート"], events.AnkaTarget("日本語 テンプレート")),
    ],
)
def test_a_job_is_ours_only_with_an_anka_template_label(
    labels: list[str], expected: events.AnkaTarget | None
) -> None:
    assert events.anka_target(labels) == expected


def test_a_tag_without_template_is_flagged_for_a_warning() -> None:
    assert events.wants_anka_but_no_template(["anka-template-tag:2c4r"])
    assert not events.wants_anka_but_no_template(["ubuntu-latest"])
    assert not events.wants_anka_but_no_template([f"anka-template:{TEMPLATE}"])


# ---- the AnkaJob ----------------------------------------------------------------------------


def test_the_ankajob_manifest_is_valid_and_named_after_job_and_attempt() -> None:
    parsed = event("queued", job_id=4242, run_attempt=2)
    target = events.anka_target(parsed.workflow_job.labels)
    assert target is not None
    body = ankajobs.build_ankajob(parsed, target, namespace="ci", delivery="guid-1")
    assert body["metadata"]["name"] == "gh-4242-2"
    assert body["metadata"]["namespace"] == "ci"
    assert body["metadata"]["labels"] == {
        LABEL_JOB_ID: "4242",
        LABEL_RUN_ID: "555",
        LABEL_REPOSITORY: "acme.app",
    }
    assert body["metadata"]["annotations"] == {ANNOTATION_STATUS: "queued", ANNOTATION_DELIVERY: "guid-1"}
    job = models.AnkaJob.model_validate(body)
    assert (job.spec.template, job.spec.tag, job.spec.handler) == (TEMPLATE, "2c4r", "github")
    assert job.spec.github is not None
    assert job.spec.github.model_dump(by_alias=True) == {
        "owner": "acme",
        "repo": "app",
        "jobId": 4242,
        "runId": 555,
        "runAttempt": 2,
        "labels": [f"anka-template:{TEMPLATE}", "anka-template-tag:2c4r"],
        "htmlUrl": "https://github.com/acme/app/actions/runs/555/job/4242",
        "workflowName": "CI",
        "jobName": "build",
    }
    assert job.spec.resources is None  # sizing is the controller's (template tag's size)


def test_an_ankajob_created_from_a_late_event_records_that_status() -> None:
    parsed = event("completed", runner="vm-1", conclusion="success")
    body = ankajobs.build_ankajob(parsed, events.AnkaTarget(TEMPLATE), namespace="default", delivery=None)
    assert body["metadata"]["annotations"] == {
        ANNOTATION_STATUS: "completed",
        ANNOTATION_CONCLUSION: "success",
        ANNOTATION_RUNNER: "vm-1",
    }


def _apply(
    stored: dict[str, str] | None, ev: events.WorkflowJobEvent
) -> tuple[dict[str, str], Change | None]:
    """What the recorder would store after this event (None: the AnkaJob did not exist)."""
    if stored is None:
        return ankajobs.recorded_facts(ev, "d"), None
    decision = ankajobs.forward_decision(stored, ev, "d")
    return {**stored, **decision.annotations}, decision.change


def _four(runner: str = "vm-1") -> dict[str, events.WorkflowJobEvent]:
    return {
        "queued": event("queued"),
        "waiting": event("waiting"),
        "in_progress": event("in_progress", runner=runner),
        "completed": event("completed", runner=runner, conclusion="success"),
    }


@pytest.mark.parametrize("order", list(itertools.permutations(ACTIONS)), ids="-".join)
def test_every_ordering_ends_completed_and_never_moves_backwards(order: tuple[str, ...]) -> None:
    evs = _four()
    stored: dict[str, str] | None = None
    highest = -1
    for action in order:
        stored, change = _apply(stored, evs[action])
        rank = ankajobs.rank(stored[ANNOTATION_STATUS])
        assert rank >= highest, f"status moved back to {stored[ANNOTATION_STATUS]} after {order}"
        if change is not None:
            assert (change is Change.STALE) == (ankajobs.rank(action) < highest)
        highest = rank
    assert stored is not None
    assert stored[ANNOTATION_STATUS] == "completed"
    assert stored[ANNOTATION_CONCLUSION] == "success"
    assert stored[ANNOTATION_RUNNER] == "vm-1"


@pytest.mark.parametrize("action", ACTIONS)
def test_a_duplicate_event_changes_nothing(action: str) -> None:
    ev = _four()[action]
    stored, _ = _apply(None, ev)
    decision = ankajobs.forward_decision(stored, ev, "another-delivery")
    assert decision.change is Change.DUPLICATE and not decision.writes


def test_the_same_status_may_fill_in_a_missing_runner_name_only() -> None:
    stored = {ANNOTATION_STATUS: "in_progress"}
    decision = ankajobs.forward_decision(stored, event("in_progress", runner="vm-9"), "d2")
    assert decision.change is Change.FILL
    assert decision.annotations == {ANNOTATION_RUNNER: "vm-9"}  # neither status nor delivery rewritten
    existing = {ANNOTATION_STATUS: "in_progress", ANNOTATION_RUNNER: "vm-1"}
    assert not ankajobs.forward_decision(existing, event("in_progress", runner="vm-9"), "d3").writes


def test_an_unknown_stored_status_is_overwritten_by_any_event() -> None:
    decision = ankajobs.forward_decision({ANNOTATION_STATUS: "bogus"}, event("queued"), "d")
    assert decision.change is Change.ADVANCE


# ---- redelivery -----------------------------------------------------------------------------

T0 = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
SINCE = T0 - timedelta(hours=24)


def delivery(
    id_: int,
    guid: str,
    action: str | None = "queued",
    *,
    code: int = 502,
    minutes: int = 0,
    event_: str = "workflow_job",
) -> HookDelivery:
    return HookDelivery(
        id=id_,
        guid=guid,
        delivered_at=T0 + timedelta(minutes=minutes),
        redelivery=False,
        status="x",
        status_code=code,
        event=event_,
        action=action,
    )


def test_failed_deliveries_skips_successes_pings_other_events_and_old_ones() -> None:
    deliveries = [
        delivery(1, "g-ok", code=200),
        delivery(2, "g-fail", code=500, minutes=1),
        delivery(3, "g-fixed", code=503, minutes=2),
        delivery(4, "g-fixed", code=202, minutes=3),  # a later successful redelivery of the same event
        delivery(5, "g-ping", None, code=500, event_="ping"),
        delivery(6, "g-push", "opened", code=500, event_="issues"),
        delivery(7, "g-old", code=500, minutes=-25 * 60),
        delivery(8, "g-unknown-action", "requested", code=500),
        delivery(9, "g-timeout", code=0, minutes=4),  # no response at all (GitHub reports 0)
    ]
    assert [d.id for d in redelivery.failed_deliveries(deliveries, since=SINCE)] == [2, 9]


def test_failed_deliveries_keeps_one_attempt_per_event_the_latest() -> None:
    deliveries = [
        delivery(10, "g", code=502, minutes=0),
        delivery(11, "g", code=503, minutes=5),
        delivery(12, "h", code=500, minutes=1),
    ]
    assert [d.id for d in redelivery.failed_deliveries(deliveries, since=SINCE)] == [12, 11]


def test_an_earlier_success_of_the_same_event_also_means_stored() -> None:
    deliveries = [delivery(20, "g", code=200, minutes=0), delivery(21, "g", code=500, minutes=5)]
    assert redelivery.failed_deliveries(deliveries, since=SINCE) == []


NAME = "gh-101-1"


@pytest.mark.parametrize(
    ("action", "facts", "verdict"),
    [
        ("queued", JobFacts(StoredJob(exists=False)), Verdict.REDELIVER),
        ("queued", JobFacts(StoredJob(exists=False), github_status="queued"), Verdict.REDELIVER),
        ("queued", JobFacts(StoredJob(exists=True, status="queued")), Verdict.STORED),
        ("queued", JobFacts(StoredJob(exists=True, status="completed")), Verdict.STORED),
        ("in_progress", JobFacts(StoredJob(exists=True, status="queued")), Verdict.REDELIVER),
        ("completed", JobFacts(StoredJob(exists=True, status="in_progress")), Verdict.REDELIVER),
        ("completed", JobFacts(StoredJob(exists=True, status="completed")), Verdict.STORED),
        ("completed", JobFacts(StoredJob(exists=True, status=None)), Verdict.REDELIVER),
        ("queued", JobFacts(StoredJob(exists=False), github_status="completed"), Verdict.TOO_LATE),
        ("queued", JobFacts(StoredJob(exists=False), github_status="in_progress"), Verdict.TOO_LATE),
        ("completed", JobFacts(StoredJob(exists=False)), Verdict.REDELIVER),
        ("queued", None, Verdict.REDELIVER),
    ],
)
def test_redeliver_only_what_kubernetes_is_missing(
    action: str, facts: JobFacts | None, verdict: Verdict
) -> None:
    assert redelivery.decide(event(action, runner="vm", conclusion="success"), facts) is verdict


def test_jobs_that_are_not_ours_and_unreadable_payloads_are_never_redelivered() -> None:
    foreign = (delivery(1, "a"), event(labels=["ubuntu-latest"]))
    unreadable = (delivery(2, "b"), None)
    verdicts = redelivery.plan([foreign, unreadable], {})
    assert [v for _, v in verdicts] == [Verdict.NOT_OURS, Verdict.UNREADABLE]
    assert redelivery.to_redeliver(verdicts) == []


def test_per_job_only_the_most_advanced_missing_event_is_redelivered() -> None:
    queued = (delivery(1, "q", "queued", minutes=0), event("queued"))
    progress = (delivery(2, "p", "in_progress", minutes=1), event("in_progress", runner="vm"))
    done = (delivery(3, "c", "completed", minutes=2), event("completed", runner="vm", conclusion="success"))
    other_job = (delivery(4, "o", "queued", minutes=3), event("queued", job_id=202))
    for ordering in itertools.permutations([queued, progress, done, other_job]):
        facts = {NAME: JobFacts(StoredJob(exists=True, status="queued"))}
        verdicts = dict((d.id, v) for d, v in redelivery.plan(list(ordering), facts))
        assert verdicts == {
            1: Verdict.STORED,
            2: Verdict.SUPERSEDED,
            3: Verdict.REDELIVER,
            4: Verdict.REDELIVER,
        }


def test_a_job_that_finished_without_us_gets_nothing_redelivered() -> None:
    candidates = [
        (delivery(1, "q", "queued", minutes=0), event("queued")),
        (delivery(2, "c", "completed", minutes=9), event("completed", conclusion="cancelled")),
    ]
    facts = {NAME: JobFacts(StoredJob(exists=False), github_status="completed")}
    assert redelivery.to_redeliver(redelivery.plan(candidates, facts)) == []
