"""Label and field selectors, parsed the way kube-apiserver parses `labelSelector`/`fieldSelector`.

kubectl (`get -l`, `describe` listing events, `wait`/`delete` informers with `metadata.name=`) and
kopf send them on lists and watches; ignoring them makes `describe` show other objects' events and
`wait` react to the wrong object, hence a real parser rather than a substring match.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from typing import Any, Literal

LabelOp = Literal["=", "!=", "in", "notin", "exists", "!exists"]

_KEY = r"[A-Za-z0-9][A-Za-z0-9._/-]*"
_VALUE = r"[A-Za-z0-9._-]*"
_SET_RE = re.compile(rf"^(?P<key>{_KEY})\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ_RE = re.compile(rf"^(?P<key>{_KEY})\s*(?P<op>==|!=|=)\s*(?P<value>{_VALUE})$")
_EXISTS_RE = re.compile(rf"^(?P<neg>!?)\s*(?P<key>{_KEY})$")
_VALUE_RE = re.compile(rf"^{_VALUE}$")
_FIELD_RE = re.compile(r"^(?P<path>[A-Za-z0-9_.]+)\s*(?P<op>==|!=|=)\s*(?P<value>[^,]*)$")


@dataclasses.dataclass(frozen=True)
class LabelRequirement:
    """One comma-separated term of a label selector."""

    key: str
    op: LabelOp
    values: frozenset[str] = frozenset()

    def matches(self, labels: Mapping[str, str]) -> bool:
        """Absent keys satisfy only the negative operators, as in Kubernetes."""
        present = self.key in labels
        value = labels.get(self.key)
        match self.op:
            case "exists":
                return present
            case "!exists":
                return not present
            case "=" | "in":
                return present and value in self.values
            case "!=" | "notin":
                return not present or value not in self.values


@dataclasses.dataclass(frozen=True)
class FieldRequirement:
    """One term of a field selector: a dotted path compared as a string."""

    path: str
    value: str
    negated: bool = False

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (field_value(obj, self.path) == self.value) != self.negated


def _split_terms(text: str) -> list[str]:
    """Split on commas that are not inside `in (a,b)` sets."""
    terms: list[str] = []
    depth, start = 0, 0
    for index, char in enumerate(text):
        if char == "(":
            depth += 1
        elif char == ")":
            depth -= 1
            if depth < 0:
                raise ValueError(f"unbalanced parentheses in selector {text!r}")
        elif char == "," and depth == 0:
            terms.append(text[start:index])
            start = index + 1
    if depth:
        raise ValueError(f"unbalanced parentheses in selector {text!r}")
    terms.append(text[start:])
    return [term.strip() for term in terms if term.strip()]


def parse_label_selector(text: str) -> list[LabelRequirement]:
    """Parse `a=b,c!=d,e in (x,y),f notin (z),g,!h`; raise ValueError on bad syntax (a 400 upstream)."""
    requirements: list[LabelRequirement] = []
    for term in _split_terms(text):
        if m := _SET_RE.match(term):
            values = frozenset(v.strip() for v in m["values"].split(",") if v.strip())
            if not values or not all(_VALUE_RE.match(v) for v in values):
                raise ValueError(f"invalid set of values in {term!r}")
            op: LabelOp = "in" if m["op"] == "in" else "notin"
            requirements.append(LabelRequirement(m["key"], op, values))
        elif m := _EQ_RE.match(term):
            op = "!=" if m["op"] == "!=" else "="
            requirements.append(LabelRequirement(m["key"], op, frozenset({m["value"]})))
        elif m := _EXISTS_RE.match(term):
            requirements.append(LabelRequirement(m["key"], "!exists" if m["neg"] else "exists"))
        else:
            raise ValueError(f"unable to parse requirement {term!r}")
    return requirements


def parse_field_selector(text: str) -> list[FieldRequirement]:
    """Parse `metadata.name=x,involvedObject.kind!=Pod`; raise ValueError on bad syntax."""
    requirements: list[FieldRequirement] = []
    for term in (t.strip() for t in text.split(",")):
        if not term:
            continue
        m = _FIELD_RE.match(term)
        if m is None:
            raise ValueError(f"invalid field selector term {term!r}")
        requirements.append(FieldRequirement(m["path"], m["value"].strip(), negated=m["op"] == "!="))
    return requirements


def field_value(obj: Mapping[str, Any], path: str) -> str:
    """The string form the apiserver compares: absent is "", booleans are lowercase."""
    value: Any = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, Mapping) else None
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


@dataclasses.dataclass(frozen=True)
class Selection:
    """Both selectors of one request; an empty selection matches everything."""

    labels: tuple[LabelRequirement, ...] = ()
    fields: tuple[FieldRequirement, ...] = ()

    @classmethod
    def parse(cls, label_selector: str = "", field_selector: str = "") -> Selection:
        return cls(tuple(parse_label_selector(label_selector)), tuple(parse_field_selector(field_selector)))

    def matches(self, obj: Mapping[str, Any]) -> bool:
        labels = (obj.get("metadata") or {}).get("labels") or {}
        return all(r.matches(labels) for r in self.labels) and all(r.matches(obj) for r in self.fields)
