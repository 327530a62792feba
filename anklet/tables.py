"""Text output of the people-facing `anklet` commands: aligned tables, kubectl-style ages, colors,
and JSON/YAML for scripts.

Pure string building, so every view renders the same way and tests compare text without a
terminal. Color is decided once per command (`color_enabled`) and passed down: a table cell is
plain text or `Styled`, and the escape codes are added only after the column widths are measured,
so colored and plain output line up alike.
"""

from __future__ import annotations

import enum
import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TextIO

import yaml

FORMATS = ("table", "json", "yaml")


class Style(enum.StrEnum):
    """ANSI SGR codes; only the few the views need."""

    BOLD = "1"
    DIM = "2"
    RED = "31"
    GREEN = "32"
    YELLOW = "33"
    BLUE = "34"
    CYAN = "36"


@dataclass(frozen=True)
class Styled:
    """A table cell or text fragment that is colored on a terminal and plain elsewhere."""

    text: str
    style: Style | None = None


Cell = str | Styled

PHASE_STYLES = {
    "Pending": Style.YELLOW,
    "Scheduled": Style.BLUE,
    "Provisioning": Style.BLUE,
    "Running": Style.CYAN,
    "Succeeded": Style.GREEN,
    "Failed": Style.RED,
    "Cancelled": Style.DIM,
}


def color_enabled(stream: TextIO, env: Mapping[str, str]) -> bool:
    """Color only on a terminal, and never when NO_COLOR is set (any value) or TERM is dumb."""
    if "NO_COLOR" in env or env.get("TERM") == "dumb":
        return False
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def paint(cell: Cell, color: bool) -> str:
    if isinstance(cell, str):
        return cell
    if not color or cell.style is None:
        return cell.text
    return f"\x1b[{cell.style.value}m{cell.text}\x1b[0m"


def plain(cell: Cell) -> str:
    return cell if isinstance(cell, str) else cell.text


def phase_cell(phase: str) -> Styled:
    return Styled(phase, PHASE_STYLES.get(phase))


def widths(headers: Sequence[str], rows: Iterable[Sequence[Cell]], minimum: Sequence[int] = ()) -> list[int]:
    """The width of each column: its longest cell (headers included), at least `minimum`."""
    result = [len(h) for h in headers]
    for i, least in enumerate(minimum[: len(result)]):
        result[i] = max(result[i], least)
    for row in rows:
        if not result:
            result = [0] * len(row)
        for i, cell in enumerate(row):
            result[i] = max(result[i], len(plain(cell)))
    return result


def render_row(row: Sequence[Cell], column_widths: Sequence[int], color: bool) -> str:
    """One line, columns separated by three spaces as kubectl does; no trailing blanks. A cell
    wider than its column (a watch line after the header was printed) pushes the rest right."""
    parts = []
    for cell, width in zip(row, column_widths, strict=True):
        text = plain(cell)
        parts.append(paint(cell, color) + " " * max(0, width - len(text)))
    return "   ".join(parts).rstrip()


def render(headers: Sequence[str] | None, rows: Sequence[Sequence[Cell]], *, color: bool = False) -> str:
    """A whole table, newline-terminated; with `headers` None, rows only (a key/value listing)."""
    column_widths = widths(headers or (), rows)
    lines = [render_row(headers, column_widths, False)] if headers else []
    lines += [render_row(row, column_widths, color) for row in rows]
    return "\n".join(lines) + "\n" if lines else ""


def dump(data: Any, fmt: str) -> str:
    """`data` (plain JSON types) as JSON or YAML for scripts."""
    if fmt == "json":
        return json.dumps(data, indent=2) + "\n"
    if fmt == "yaml":
        return yaml.safe_dump(data, sort_keys=False, width=120)
    raise ValueError(f"unknown output format {fmt!r} (expected json or yaml)")


def parse_time(value: str | datetime | None) -> datetime | None:
    """An RFC 3339 time as Kubernetes writes it (`2025-01-02T03:04:05Z`, fractions allowed)."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=UTC)


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def human_duration(seconds: float) -> str:
    """apimachinery's `duration.HumanDuration`, so AGE reads exactly as in `kubectl get`."""
    secs = int(seconds)
    if secs < -1:
        return "<invalid>"
    if secs < 0:
        return "0s"
    if secs < 120:
        return f"{secs}s"
    minutes = secs // 60
    if minutes < 10:
        return f"{minutes}m" if secs % 60 == 0 else f"{minutes}m{secs % 60}s"
    if minutes < 180:
        return f"{minutes}m"
    hours = secs // 3600
    if hours < 8:
        return f"{hours}h" if minutes % 60 == 0 else f"{hours}h{minutes % 60}m"
    if hours < 48:
        return f"{hours}h"
    days = hours // 24
    if hours < 24 * 8:
        return f"{days}d" if hours % 24 == 0 else f"{days}d{hours % 24}h"
    if hours < 24 * 365 * 2:
        return f"{days}d"
    years = days // 365
    if hours < 24 * 365 * 8:
        return f"{years}y" if days % 365 == 0 else f"{years}y{days % 365}d"
    return f"{years}y"


def age(since: datetime | None, now: datetime) -> str:
    return "<unknown>" if since is None else human_duration((now - since).total_seconds())


def seconds_since(since: datetime | None, now: datetime) -> int | None:
    return None if since is None else int((now - since).total_seconds())


def gib(mib: int) -> str:
    """MiB as GiB the way AnkaHost's printer columns show it: `16`, `13.5`."""
    value = mib / 1024
    return f"{value:.0f}" if value == int(value) else f"{value:.1f}"
