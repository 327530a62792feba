"""Checks every Anklet /metrics body must pass: valid exposition text, Prometheus naming, and
label values from closed sets (never ids, URLs or job names).

Used by the unit tests (registries filled by hand) and the integration tests (live endpoints).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

#: Label names any Anklet series may carry ("host" only on the fleet's per-host gauges).
ALLOWED_LABELS = frozenset(
    {"phase", "reason", "cause", "state", "stage", "decision", "command", "result", "event", "action"}
)
PER_HOST_PREFIX = "anklet_host_"
_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
_BAD_UNITS = ("_ms", "_milliseconds", "_minutes", "_hours", "_kib", "_mib", "_gib", "_kb", "_mb", "_percent")


def parse(text: str) -> list[Metric]:
    """Every family of an exposition body; raises on anything that is not valid text format."""
    return list(text_string_to_metric_families(text))


def check(
    families: Iterable[Metric], *, forbidden_values: Iterable[str] = (), hosts: Iterable[str] = ()
) -> list[str]:
    """Problems with these families (empty when all is well).

    `forbidden_values`: strings no label value may contain (job names, uids, URLs of the test).
    `hosts`: host names, allowed as the `host` label of `anklet_host_*` gauges only."""
    problems: list[str] = []
    forbidden = [v for v in forbidden_values if v]
    host_names = set(hosts)
    for family in families:
        name = family.name
        if not name.startswith("anklet_"):
            problems.append(f"{name}: not in the anklet_ namespace")
        if any(part in name for part in _BAD_UNITS):
            problems.append(f"{name}: not in base units (seconds, bytes, ratio)")
        if family.type == "counter" and name.endswith("_total"):
            problems.append(f"{name}: counter family named with _total twice")
        if family.type == "histogram" and not name.endswith(("_seconds", "_bytes")):
            problems.append(f"{name}: histogram without a base unit suffix")
        if not family.documentation:
            problems.append(f"{name}: no HELP text")
        for sample in family.samples:
            if family.type == "counter" and not sample.name.endswith(("_total", "_created")):
                problems.append(f"{sample.name}: counter sample without _total")
            for label, value in sample.labels.items():
                if label == "le" and family.type == "histogram":
                    continue
                if label == "host":
                    if not name.startswith(PER_HOST_PREFIX):
                        problems.append(f"{name}: host label outside the per-host gauges")
                    elif host_names and value not in host_names:
                        problems.append(f"{name}: host label {value!r} is not a registered host")
                    continue
                if label not in ALLOWED_LABELS:
                    problems.append(f"{name}: unexpected label {label!r}")
                if "://" in value or _UUID.search(value):
                    problems.append(f"{name}: label {label}={value!r} looks like a URL or an id")
                problems.extend(
                    f"{name}: label {label}={value!r} contains {bad!r}" for bad in forbidden if bad in value
                )
    return problems


def without_created(families: Iterable[Metric]) -> list[Metric]:
    """The families but prometheus_client's `<counter or histogram>_created` companions."""
    families = list(families)
    names = {f.name for f in families}
    return [f for f in families if not (f.name.endswith("_created") and f.name[: -len("_created")] in names)]


def sample_names(families: Iterable[Metric]) -> set[str]:
    """Every series name a query can use (`x_total`, `x_bucket`, ...) plus the family names."""
    names: set[str] = set()
    for family in families:
        names.add(family.name)
        names.update(sample.name for sample in family.samples)
    return names


def value(families: Iterable[Metric], sample_name: str, **labels: str) -> float | None:
    """The value of the one sample with this name and these labels (None when absent)."""
    for family in families:
        for sample in family.samples:
            if sample.name == sample_name and all(sample.labels.get(k) == v for k, v in labels.items()):
                return float(sample.value)
    return None
