"""What `anklet hosts` shows: the AnkaHost printer columns plus templates, and drain progress.

Pure functions over AnkaHost objects (plain dicts or `anklet.models` models). The columns come
from the CRD's own printer columns (`anklet.crd`), so `anklet hosts` and `kubectl get ah` can
never drift apart; `anklet hosts` adds the templates count and colors on a terminal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from anklet import crd
from anklet.apiobjects import Obj, as_int, dig, plain
from anklet.tables import Cell, Style, Styled, age, iso, parse_time, seconds_since

TEMPLATES_HEADER = "TEMPLATES"


def host_columns(*, wide: bool = False) -> list[dict[str, Any]]:
    """The AnkaHost printer columns of the CRD (so `anklet hosts` matches `kubectl get ah`)."""
    columns: list[dict[str, Any]] = crd.build_host_crd()["spec"]["versions"][0]["additionalPrinterColumns"]
    return [c for c in columns if wide or not c.get("priority")]


def host_headers(columns: Sequence[Mapping[str, Any]]) -> list[str]:
    """NAME, the printer columns, and TEMPLATES right before AGE (AGE stays last, as in kubectl)."""
    names = [str(c["name"]).upper() for c in columns]
    at = names.index("AGE") if "AGE" in names else len(names)
    return ["NAME", *names[:at], TEMPLATES_HEADER, *names[at:]]


def _column_value(obj: Mapping[str, Any], column: Mapping[str, Any], now: datetime) -> str:
    """A printer-column cell rendered as kubectl renders it (`true`, `<none>`, `5m`)."""
    value = dig(obj, *str(column["jsonPath"]).strip(".").split("."))
    kind = column.get("type")
    if value is None:
        return "<none>"
    if kind == "date":
        return age(parse_time(value), now)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _host_style(header: str, text: str) -> Style | None:
    if header == "READY":
        return Style.GREEN if text == "true" else Style.RED
    if header == "CORDONED" and text == "true":
        return Style.YELLOW
    return None


def host_row(obj: Obj, columns: Sequence[Mapping[str, Any]], now: datetime) -> list[Cell]:
    host = plain(obj)
    cells: list[Cell] = [str(dig(host, "metadata", "name") or "?")]
    templates = str(len(dig(host, "status", "templates") or []))
    for column in columns:
        header = str(column["name"]).upper()
        if header == "AGE":
            cells.append(templates)
        text = _column_value(host, column, now)
        style = _host_style(header, text)
        cells.append(Styled(text, style) if style else text)
    if not any(str(c["name"]).upper() == "AGE" for c in columns):
        cells.append(templates)
    return cells


def host_rows(objs: Iterable[Obj], columns: Sequence[Mapping[str, Any]], now: datetime) -> list[list[Cell]]:
    hosts = sorted((plain(o) for o in objs), key=lambda h: str(dig(h, "metadata", "name")))
    return [host_row(h, columns, now) for h in hosts]


def host_record(obj: Obj, now: datetime) -> dict[str, Any]:
    """One host for `anklet hosts -o json`: the table's facts, typed, plus its jobs."""
    host = plain(obj)
    status: Mapping[str, Any] = dig(host, "status") or {}
    created = parse_time(dig(host, "metadata", "creationTimestamp"))
    return {
        "name": dig(host, "metadata", "name"),
        "ready": bool(status.get("ready", False)),
        "cordoned": bool(dig(host, "spec", "unschedulable")),
        "draining": is_draining(host),
        "vms": status.get("vms"),
        "cpu": status.get("cpu"),
        "memory": status.get("memory"),
        "capacity": status.get("capacity") or {},
        "allocated": status.get("allocated") or {},
        "templates": len(status.get("templates") or []),
        "pulling": status.get("pulling"),
        "ankaVersion": status.get("ankaVersion"),
        "jobs": list(status.get("jobs") or []),
        "created": iso(created),
        "ageSeconds": seconds_since(created, now),
    }


def is_draining(obj: Obj) -> bool:
    """Taking no new work while VMs are still on it: the agent itself stopping (status.draining),
    or cordoned by an operator with VMs left (what `anklet hosts drain` waits out)."""
    host = plain(obj)
    if dig(host, "status", "draining"):
        return True
    return (
        bool(dig(host, "spec", "unschedulable")) and as_int(dig(host, "status", "allocated", "vmSlots")) > 0
    )


@dataclass(frozen=True)
class DrainProgress:
    """Where a drain stands: VMs still on the host and the jobs holding them."""

    host: str
    vms: int
    jobs: tuple[str, ...]

    @property
    def done(self) -> bool:
        return self.vms == 0

    def line(self) -> str:
        if self.done:
            return f"ankahost/{self.host} drained"
        vms = f"{self.vms} VM{'s' if self.vms != 1 else ''}"
        if not self.jobs:
            return f"ankahost/{self.host}: {vms} left"
        jobs = f"{len(self.jobs)} job{'s' if len(self.jobs) != 1 else ''}"
        return f"ankahost/{self.host}: {jobs} left ({vms}): {', '.join(self.jobs)}"


def drain_progress(obj: Obj) -> DrainProgress:
    host = plain(obj)
    return DrainProgress(
        host=str(dig(host, "metadata", "name") or "?"),
        vms=as_int(dig(host, "status", "allocated", "vmSlots")),
        jobs=tuple(dig(host, "status", "jobs") or ()),
    )
