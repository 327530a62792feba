"""Server-side `Table` rendering (meta.k8s.io/v1), which is where kubectl gets printer columns from.

kubectl asks for `as=Table` on `get` (and `get -w`) and prints what the server renders: without it,
a CRD's `additionalPrinterColumns` never show up. Dates are rendered as ages by the server, with the
same rounding as apimachinery's `duration.HumanDuration`, so `5s`, `3m20s`, `2h`, `4d` read as usual.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

NAME_COLUMN: dict[str, Any] = {
    "name": "Name",
    "type": "string",
    "format": "name",
    "description": "Name must be unique within a namespace.",
    "priority": 0,
}
AGE_COLUMN: dict[str, Any] = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "description": "CreationTimestamp is the server time when this object was created.",
}

_PATH_TOKEN = re.compile(r"\.([^.\[\]]+)|\[(\d+)\]|\['([^']+)'\]")


def human_duration(seconds: float) -> str:
    """Port of apimachinery's `duration.HumanDuration`: two significant units while they matter."""
    secs = int(seconds)  # truncates toward zero, like Go's int(d.Seconds())
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


def parse_timestamp(text: str) -> datetime.datetime | None:
    """RFC 3339 as Kubernetes writes it (`2025-01-02T03:04:05Z`, fractions allowed)."""
    try:
        stamp = datetime.datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp if stamp.tzinfo else stamp.replace(tzinfo=datetime.UTC)


def wants_table(accept: str) -> bool:
    """Whether the first media type we can serve in `Accept` is a meta.k8s.io Table."""
    for media in accept.split(","):
        kind, *raw_params = (part.strip() for part in media.split(";"))
        params = dict(p.split("=", 1) for p in raw_params if "=" in p)
        if params.get("as") == "Table" and params.get("g") == "meta.k8s.io":
            return True
        if kind in ("application/json", "*/*", "application/*") and "as" not in params:
            return False
    return False


def jsonpath(obj: Any, path: str) -> Any:
    """The simple JSONPaths CRDs use for columns (`.status.phase`, `.a[0].b`); None when absent."""
    path = path.strip().removeprefix("{").removesuffix("}")
    position, value = 0, obj
    for match in _PATH_TOKEN.finditer(path):
        if match.start() != position:
            return None  # filters and other unsupported syntax
        position = match.end()
        key, index, quoted = match.groups()
        if index is not None:
            value = value[int(index)] if isinstance(value, list) and int(index) < len(value) else None
        else:
            value = value.get(key or quoted) if isinstance(value, Mapping) else None
        if value is None:
            return None
    return value if position == len(path) else None


def cell(column: Mapping[str, Any], obj: Mapping[str, Any], now: datetime.datetime) -> Any:
    """One cell, typed like apiextensions' table convertor: a mistyped value becomes null."""
    value = jsonpath(obj, column.get("jsonPath", ""))
    kind = column.get("type", "string")
    if value is None:
        return None
    if kind == "integer" and isinstance(value, int | float) and not isinstance(value, bool):
        return int(value)
    if kind == "number" and isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    if kind == "boolean" and isinstance(value, bool):
        return value
    if kind == "string":
        return value if isinstance(value, str) else json.dumps(value)
    if kind == "date" and isinstance(value, str):
        stamp = parse_timestamp(value)
        return "<invalid>" if stamp is None else human_duration((now - stamp).total_seconds())
    return None


def column_definitions(columns: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Name first, then the resource's columns; `priority` > 0 is shown only by `-o wide`."""
    return [NAME_COLUMN] + [
        {
            "name": c["name"],
            "type": c.get("type", "string"),
            "format": c.get("format", ""),
            "description": c.get("description", ""),
            "priority": c.get("priority", 0),
        }
        for c in columns
    ]


def build_table(
    objects: Iterable[Mapping[str, Any]],
    columns: Sequence[Mapping[str, Any]],
    resource_version: str,
    *,
    now: datetime.datetime | None = None,
    with_headers: bool = True,
) -> dict[str, Any]:
    """A Table whose rows carry PartialObjectMetadata (kubectl's `-A`, `--show-labels` read it)."""
    now = now or datetime.datetime.now(datetime.UTC)
    rows = [
        {
            "cells": [obj.get("metadata", {}).get("name"), *(cell(c, obj, now) for c in columns)],
            "object": {
                "kind": "PartialObjectMetadata",
                "apiVersion": "meta.k8s.io/v1",
                "metadata": obj.get("metadata", {}),
            },
        }
        for obj in objects
    ]
    return {
        "kind": "Table",
        "apiVersion": "meta.k8s.io/v1",
        "metadata": {"resourceVersion": resource_version},
        "columnDefinitions": column_definitions(columns) if with_headers else [],
        "rows": rows,
    }
