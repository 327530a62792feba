"""The receiver's Prometheus metrics, in a registry of its own.

A registry per app (not the process-global one) lets the dev stack and the tests run several
receivers in one process (the Go version could not: two receivers panicked on duplicate routes,
§9.5 item 33). Label values come from small fixed sets — never ids, URLs or header text — so
an attacker cannot grow the series count and the exposition stays valid.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from plugins.handlers.github.constants import STATUS_ORDER
from plugins.receivers.github.events import KNOWN_EVENTS

OTHER = "other"
UNKNOWN = "unknown"  # before the signature is verified, nothing in the request is trusted
CONTENT_TYPE = CONTENT_TYPE_LATEST


def event_label(event: str | None, *, verified: bool) -> str:
    if not verified:
        return UNKNOWN
    return event if event in KNOWN_EVENTS else OTHER


def action_label(action: str | None) -> str:
    if action is None:
        return "none"
    return action if action in STATUS_ORDER else OTHER


class ReceiverMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.webhooks = Counter(
            "anklet_receiver_webhooks",
            "Webhook requests by event, action and result (created, updated, duplicate, stale, "
            "ignored, unauthorized, malformed, too_large, unsupported, error).",
            ["event", "action", "result"],
            registry=self.registry,
        )
        self.webhook_seconds = Histogram(
            "anklet_receiver_webhook_duration_seconds",
            "Time to answer a webhook, Kubernetes writes included.",
            ["result"],
            registry=self.registry,
            buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
        )
        self.kube_errors = Counter(
            "anklet_receiver_kube_errors",
            "Webhooks not stored because the Kubernetes API failed (answered 503).",
            registry=self.registry,
        )
        self.redelivery_scans = Counter(
            "anklet_receiver_redelivery_scans",
            "Scans for missed webhook deliveries, by result (ok, error, skipped: another "
            "replica holds this interval's scan slot).",
            ["result"],
            registry=self.registry,
        )
        self.redeliveries = Counter(
            "anklet_receiver_redeliveries_requested",
            "Deliveries the receiver asked GitHub to send again.",
            registry=self.registry,
        )
        self.redelivery_last_success = Gauge(
            "anklet_receiver_redelivery_last_success_timestamp_seconds",
            "Unix time of the last redelivery scan this replica completed (0 on a replica that "
            "never held the scan slot: take the max across replicas).",
            registry=self.registry,
        )

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
