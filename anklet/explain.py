"""`anklet explain JOB`: a job's story and, when it is stuck or failed, why and what would help.

Pure functions over the AnkaJob (dict or pydantic model) and the core/v1 Events about it:
- `timeline` merges what the status records (creation, the latest transition of each condition,
  start, completion) with every Event, dropping a status entry when an Event reports the same
  transition, and folding repeats of one Event into a count;
- `diagnose` says in one sentence where the job is and why (for a Pending job the scheduler's
  own message, e.g. `0/12 hosts available: 8 no free VM slot, 4 insufficient memory`) plus hints
  keyed by the scheduler's reasons and the failure reasons the agent and controller write.

The hint tables are keyed by the exact strings of `controller.scheduling.Unfit` and of the
failure reasons; unit tests keep them in step with the controller.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any

from anklet.apiobjects import Obj, dig, plain
from anklet.models import TERMINAL_PHASES, Phase
from anklet.status_views import job_row, waiting_reason
from anklet.tables import (
    Cell,
    Style,
    Styled,
    age,
    human_duration,
    iso,
    paint,
    parse_time,
    phase_cell,
    render,
)

OUTPUT_TAIL_LINES = 20
SAME_TRANSITION = timedelta(seconds=2)  # status times and Event times are written a moment apart

# What helps when hosts are unfit for one reason (keys: controller.scheduling.Unfit values).
UNFIT_HINTS = {
    "host not ready": "bring the agents of the hosts that are not ready back (`anklet hosts` lists them)",
    "host unschedulable": "uncordon a host: `anklet hosts uncordon NAME`",
    "labels do not match hostSelector": "relax spec.hostSelector, or label a host (AnkaHost spec.labels)",
    "does not serve the job's queue": (
        "set spec.queue to a queue a host serves, or add it to a host's ANKLET_AGENT_QUEUES"
    ),
    "no free VM slot": "wait for running jobs to finish (Apple allows 2 VMs per Mac), or add hosts",
    "insufficient cpu": "wait for running jobs to free CPU, lower spec.resources.cpu, or add hosts",
    "insufficient memory": (
        "wait for running jobs to free memory, lower spec.resources.memoryMiB, or add hosts"
    ),
    "mounts need Anka >= 3.9.0 on arm64": (
        "drop spec.mounts, or add an Apple-silicon host with Anka 3.9.0 or later"
    ),
    "not enough disk to pull the template": (
        "free disk on a host, or pre-pull the template there (AnkaHost spec.prePull)"
    ),
    "held for a job waiting longer": (
        "nothing: a job that has waited longer holds the host it fits on; this one follows it"
    ),
}
NO_HOSTS_HINT = "no Mac is registered: start `anklet agent` on one (`anklet hosts` lists the fleet)"
CONTROLLER_HINT = (
    "the controller has not placed it: check that `anklet controller` runs and watches this namespace"
)
RETRY_HINT = "its last attempt failed on a host; the controller places it again (up to spec.backoffLimit)"
DELETING_HINT = "it is being deleted; the finalizer holds until the host confirms its VM is gone"
SIZED_HINT = "a host learnt the template's size; the job is placed again with it (not counted as a retry)"

# What helps after a failure, by status.reason (written by the controller and the agent).
FAILURE_HINTS = {
    "ExitCode": "the workload itself exited non-zero (never retried): see the output below",
    "Timeout": "the workload ran past spec.timeoutSeconds: raise it, or make the job faster",
    "Unschedulable": "no registered host could ever fit it: lower spec.resources, or add a bigger Mac",
    "TemplateNotFound": "check spec.template and spec.tag against the registry (`anka registry list`)",
    "InvalidSpec": "fix the spec as the message says and apply the job again",
    "HostLost": "its host stopped heartbeating while it ran: check that Mac's agent (`anklet hosts`)",
    "MountFailed": "check the mount's host folder exists on the Mac, and the agent log",
    "MountsUnsupported": "drop spec.mounts, or run it on Apple silicon with Anka 3.9.0 or later",
    "InsufficientDisk": "free disk on the hosts, or pre-pull the template (AnkaHost spec.prePull)",
}
INFRA_HINT = (
    "infrastructure failures used up spec.backoffLimit: check the agent log on the host and `anka` there"
)

_AVAILABLE = re.compile(r"^0/(\d+) hosts available: (.+)$")
_PART = re.compile(r"^(\d+) (.+)$")


@dataclass(frozen=True)
class TimelineEntry:
    """One line of the timeline; from the job's status (`source` "status") or an Event."""

    time: datetime | None
    type: str  # Normal or Warning
    reason: str
    message: str
    source: str
    count: int = 1
    last: datetime | None = None
    aliases: frozenset[str] = frozenset()  # Event reasons that report the same transition
    seq: int = 0  # an Event's resourceVersion: orders Events written within the same second

    def record(self) -> dict[str, Any]:
        return {
            "time": iso(self.time),
            "lastTime": iso(self.last) if self.count > 1 else None,
            "type": self.type,
            "reason": self.reason,
            "message": self.message,
            "source": self.source,
            "count": self.count,
        }


def status_entries(obj: Obj) -> list[TimelineEntry]:
    """What the job's own object records: creation, conditions, start, completion, deletion."""
    job = plain(obj)
    status: Mapping[str, Any] = dig(job, "status") or {}
    row = job_row(job)
    entries = [
        TimelineEntry(
            time=row.created,
            type="Normal",
            reason="Created",
            message=f"template {row.template_tag}, handler {dig(job, 'spec', 'handler') or '-'}",
            source="status",
            aliases=frozenset({"Created"}),
        )
    ]
    finished = row.phase in {p.value for p in TERMINAL_PHASES}
    for condition in status.get("conditions") or []:
        if finished and condition.get("type") == "Finished":
            continue  # the completion entry below says the same, with the phase
        reason = str(condition.get("reason") or condition.get("type") or "?")
        entries.append(
            TimelineEntry(
                time=parse_time(condition.get("lastTransitionTime")),
                type="Warning" if condition.get("status") == "False" else "Normal",
                reason=reason,
                message=str(condition.get("message") or ""),
                source="status",
                aliases=frozenset({reason, str(condition.get("type"))}),
            )
        )
    started = parse_time(status.get("startTime"))
    if started is not None:
        entries.append(
            TimelineEntry(
                time=started,
                type="Normal",
                reason="Running",
                message=f"workload started on {row.host}" if row.host else "workload started",
                source="status",
                aliases=frozenset({"Running", "Started"}),
            )
        )
    completed = parse_time(status.get("completionTime"))
    if completed is not None and finished:
        message = row.message or row.phase
        if row.reason and row.reason != row.phase:
            message = f"{row.reason}: {message}"
        if row.exit_code is not None:
            message = f"{message} (exit code {row.exit_code})"
        entries.append(
            TimelineEntry(
                time=completed,
                type="Warning" if row.phase == Phase.FAILED.value else "Normal",
                reason=row.phase,
                message=message,
                source="status",
                aliases=frozenset({row.phase, row.reason or row.phase}),
            )
        )
    deleting = parse_time(dig(job, "metadata", "deletionTimestamp"))
    if deleting is not None:
        entries.append(
            TimelineEntry(
                time=deleting,
                type="Normal",
                reason="Deleting",
                message="deletion requested; the finalizer holds until the host confirms the VM is gone",
                source="status",
                aliases=frozenset({"Deleting", "Killing"}),
            )
        )
    return entries


def _event_entry(event: Mapping[str, Any]) -> TimelineEntry:
    first = (
        parse_time(event.get("firstTimestamp"))
        or parse_time(event.get("eventTime"))
        or parse_time(dig(event, "metadata", "creationTimestamp"))
    )
    last = parse_time(event.get("lastTimestamp")) or parse_time(dig(event, "series", "lastObservedTime"))
    count = event.get("count") or dig(event, "series", "count") or 1
    rv = str(dig(event, "metadata", "resourceVersion") or "")
    source = (
        dig(event, "source", "component")
        or event.get("reportingController")
        or event.get("reportingComponent")
        or "-"
    )
    return TimelineEntry(
        time=first,
        type=str(event.get("type") or "Normal"),
        reason=str(event.get("reason") or "-"),
        message=str(event.get("message") or ""),
        source=str(source),
        count=count if isinstance(count, int) and count > 0 else 1,
        last=last or first,
        seq=int(rv) if rv.isdigit() else 0,
    )


def event_entries(events: Iterable[Mapping[str, Any]], obj: Obj) -> list[TimelineEntry]:
    """The Events about this job (same name and namespace, and same uid when the Event has one,
    so a deleted and re-created job does not inherit its predecessor's story), in time order,
    with consecutive repeats of one Event folded into one entry with their summed count."""
    job = plain(obj)
    name, namespace = dig(job, "metadata", "name"), dig(job, "metadata", "namespace") or "default"
    uid = dig(job, "metadata", "uid")
    mine = []
    for event in events:
        involved = event.get("involvedObject") or {}
        if involved.get("name") != name or (involved.get("namespace") or namespace) != namespace:
            continue
        if uid and involved.get("uid") and involved.get("uid") != uid:
            continue
        if involved.get("kind") not in (None, "", "AnkaJob"):
            continue
        mine.append(_event_entry(event))
    mine.sort(key=lambda e: (e.time is None, _sort_time(e.time), e.seq))
    folded: list[TimelineEntry] = []
    for entry in mine:
        previous = folded[-1] if folded else None
        if previous is not None and (previous.type, previous.reason, previous.message, previous.source) == (
            entry.type,
            entry.reason,
            entry.message,
            entry.source,
        ):
            last = max((t for t in (previous.last, entry.last, entry.time) if t is not None), default=None)
            folded[-1] = replace(previous, count=previous.count + entry.count, last=last)
        else:
            folded.append(entry)
    return folded


def _reported(entry: TimelineEntry, events: Sequence[TimelineEntry]) -> bool:
    """Whether an Event already tells this status entry's transition (same reason, same moment)."""
    if entry.time is None:
        return False
    for event in events:
        if event.reason not in entry.aliases or event.time is None:
            continue
        last = event.last or event.time
        if event.time - SAME_TRANSITION <= entry.time <= last + SAME_TRANSITION:
            return True
    return False


def timeline(obj: Obj, events: Iterable[Mapping[str, Any]]) -> list[TimelineEntry]:
    """The job's story in time order: its Events plus the status facts no Event reports."""
    from_events = event_entries(events, obj)
    from_status = [e for e in status_entries(obj) if e.reason == "Created" or not _reported(e, from_events)]
    # Within one second: creation first, then the Events (in write order), then other status facts.
    ordered = [(e, 0 if e.reason == "Created" else 2, i) for i, e in enumerate(from_status)]
    ordered += [(e, 1, i) for i, e in enumerate(from_events)]
    ordered.sort(key=lambda t: (t[0].time is None, _sort_time(t[0].time), t[1], t[2]))
    return [entry for entry, _, _ in ordered]


def _sort_time(value: datetime | None) -> float:
    return value.timestamp() if value is not None else 0.0


# ----- diagnosis ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Diagnosis:
    """Where the job is, why, in one sentence, and what would help."""

    phase: str
    summary: str
    hints: tuple[str, ...] = ()
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    output_tail: str | None = None

    def record(self) -> dict[str, Any]:
        return {
            "phase": self.phase,
            "summary": self.summary,
            "hints": list(self.hints),
            "reason": self.reason,
            "message": self.message,
            "exitCode": self.exit_code,
            "outputTail": self.output_tail,
        }


def _sentence(text: str) -> str:
    text = text.strip()
    return text if not text or text[-1] in ".!?" else f"{text}."


def unfit_counts(message: str) -> list[tuple[int, str]]:
    """`0/12 hosts available: 8 no free VM slot, 4 insufficient memory` → [(8, …), (4, …)]."""
    match = _AVAILABLE.match(message.strip())
    if match is None:
        return []
    parts = []
    for part in match.group(2).split(", "):
        counted = _PART.match(part.strip())
        if counted is not None:
            parts.append((int(counted.group(1)), counted.group(2)))
    return parts


def pending_hints(reason: str, message: str, waited: float | None) -> tuple[str, ...]:
    """What would help a Pending job, from why it waits."""
    if reason == "Unschedulable":
        if re.match(r"^0/0 hosts", message):
            return (NO_HOSTS_HINT,)
        hints = [UNFIT_HINTS[text] for _, text in unfit_counts(message) if text in UNFIT_HINTS]
        return tuple(dict.fromkeys(hints))
    if reason == "Waiting":
        return (CONTROLLER_HINT,) if waited is not None and waited >= 30 else ()
    if reason == "TemplateSized":
        return (SIZED_HINT,)
    return (RETRY_HINT,)


def failure_hints(reason: str | None) -> tuple[str, ...]:
    if reason is None:
        return ()
    return (FAILURE_HINTS.get(reason, INFRA_HINT),)


def _tail(output: str | None, lines: int = OUTPUT_TAIL_LINES) -> str | None:
    if not output:
        return None
    return "\n".join(output.rstrip("\n").splitlines()[-lines:])


def diagnose(obj: Obj, now: datetime) -> Diagnosis:
    job = plain(obj)
    row = job_row(job)
    status: Mapping[str, Any] = dig(job, "status") or {}
    started = parse_time(status.get("startTime"))
    completed = parse_time(status.get("completionTime"))
    attempts = f"{row.attempts} attempt{'s' if row.attempts != 1 else ''}"
    deleting = dig(job, "metadata", "deletionTimestamp") is not None
    extra = (DELETING_HINT,) if deleting else ()
    if row.phase == Phase.PENDING.value:
        reason, message = waiting_reason(job)
        waited = (now - row.created).total_seconds() if row.created else None
        why = message or reason
        if reason not in ("Unschedulable", "Waiting") and reason not in why:
            why = f"{why} ({reason})"
        return Diagnosis(
            phase=row.phase,
            summary=_sentence(f"Pending for {age(row.created, now)}: {why}"),
            hints=pending_hints(reason, message, waited) + extra,
            reason=reason,
            message=message,
        )
    if row.phase == Phase.FAILED.value:
        detail = f"{row.reason}: {row.message}" if row.reason and row.message else row.reason or row.message
        summary = f"Failed after {attempts}" + (f": {detail}" if detail else "")
        return Diagnosis(
            phase=row.phase,
            summary=_sentence(summary),
            hints=failure_hints(row.reason) + extra,
            reason=row.reason,
            message=row.message,
            exit_code=row.exit_code,
            output_tail=_tail(status.get("output")),
        )
    if row.phase == Phase.SUCCEEDED.value:
        begin = started or row.created
        took = completed - begin if completed is not None and begin is not None else None
        where = f" on {row.host}" if row.host else ""
        during = f" in {human_duration(took.total_seconds())}" if took is not None else ""
        return Diagnosis(
            phase=row.phase,
            summary=_sentence(f"Succeeded{where}{during} after {attempts}"),
            hints=extra,
            reason=row.reason,
            message=row.message,
            exit_code=row.exit_code,
            output_tail=_tail(status.get("output")),
        )
    if row.phase == Phase.CANCELLED.value:
        return Diagnosis(
            phase=row.phase,
            summary=_sentence(f"Cancelled: {row.message or 'cancelled'}"),
            hints=extra,
            reason=row.reason,
            message=row.message,
        )
    where = f" on {row.host}" if row.host else ""
    since = f" for {age(started, now)}" if row.phase == Phase.RUNNING.value and started else ""
    detail = f": {row.message}" if row.message else ""
    return Diagnosis(
        phase=row.phase,
        summary=_sentence(f"{row.phase}{where}{since} (attempt {row.attempts}){detail}"),
        hints=extra,
        reason=row.reason,
        message=row.message,
    )


# ----- the whole explanation ----------------------------------------------------------------


@dataclass(frozen=True)
class Explanation:
    job: Mapping[str, Any]
    diagnosis: Diagnosis
    timeline: list[TimelineEntry]

    def record(self, now: datetime) -> dict[str, Any]:
        return {
            "job": job_row(self.job).record(now),
            "diagnosis": self.diagnosis.record(),
            "timeline": [e.record() for e in self.timeline],
        }


def explain(obj: Obj, events: Iterable[Mapping[str, Any]], now: datetime) -> Explanation:
    job = plain(obj)
    return Explanation(job=job, diagnosis=diagnose(job, now), timeline=timeline(job, events))


TIMELINE_HEADERS = ("AFTER", "TYPE", "REASON", "FROM", "MESSAGE")


def _offset(entry: TimelineEntry, created: datetime | None) -> str:
    if entry.time is None or created is None:
        return "?"
    return "+" + human_duration(max(0.0, (entry.time - created).total_seconds()))


def timeline_rows(entries: Sequence[TimelineEntry], created: datetime | None) -> list[list[Cell]]:
    rows: list[list[Cell]] = []
    for entry in entries:
        message = " ".join(entry.message.split())
        if entry.count > 1:
            span = ""
            if entry.last is not None and entry.time is not None and entry.last > entry.time:
                span = f" over {human_duration((entry.last - entry.time).total_seconds())}"
            message = f"{message} (×{entry.count}{span})"
        kind: Cell = Styled(entry.type, Style.YELLOW) if entry.type == "Warning" else entry.type
        rows.append([_offset(entry, created), kind, entry.reason, entry.source, message])
    return rows


def render_explanation(explanation: Explanation, now: datetime, *, color: bool = False) -> str:
    """The text `anklet explain` prints: facts, why, what would help, output tail, timeline."""
    row = job_row(explanation.job)
    d = explanation.diagnosis
    created = iso(row.created) or "?"
    summary_style = {"Failed": Style.RED, "Pending": Style.YELLOW, "Succeeded": Style.GREEN}.get(d.phase)
    lines = [
        f"AnkaJob {row.namespace}/{row.name}",
        f"  phase:    {paint(phase_cell(row.phase), color)} (attempts {row.attempts})",
        f"  template: {row.template_tag}",
        f"  host:     {row.host or '-'}",
        f"  created:  {created} ({age(row.created, now)} ago)",
    ]
    if d.exit_code is not None:
        lines.append(f"  exit:     {d.exit_code}")
    lines.append("")
    lines.append(paint(Styled(d.summary, summary_style), color))
    for hint in d.hints:
        lines.append(f"  → {hint}")
    if d.output_tail and d.phase == Phase.FAILED.value:
        lines.append("")
        lines.append(f"Output (last {OUTPUT_TAIL_LINES} lines):")
        lines += [f"  | {line}" for line in d.output_tail.splitlines()]
    lines.append("")
    text = "\n".join(lines) + "\n"
    if explanation.timeline:
        text += render(TIMELINE_HEADERS, timeline_rows(explanation.timeline, row.created), color=color)
    return text
