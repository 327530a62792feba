"""Lenient read access to Kubernetes API objects for the people-facing views.

The views take objects as the API returns them (plain dicts) or as the pydantic models of
`anklet.models`, and must not crash on an object written by an older or newer controller: a
missing or mistyped field reads as None (or 0), and the view shows `-`.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

Obj = Mapping[str, Any] | BaseModel


def plain(obj: Obj) -> Mapping[str, Any]:
    """An API object as a plain mapping, whether it came as JSON or as a pydantic model."""
    if isinstance(obj, BaseModel):
        dumped: dict[str, Any] = obj.model_dump(mode="json", by_alias=True, exclude_none=True)
        return dumped
    return obj


def dig(obj: Mapping[str, Any], *path: str) -> Any:
    """`obj[a][b]…`, or None as soon as a level is missing or not a mapping."""
    value: Any = obj
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def as_int(value: Any) -> int:
    """An integer field, 0 when absent or not an integer (booleans are not counts)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0
