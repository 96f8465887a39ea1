"""Prometheus metrics served by the local HTTP server (`GET /metrics`).

Every metric lives in REGISTRY, a registry of our own rather than prometheus_client's global
one, so importing a library that registers its own collectors never changes what the kitchen
exposes, and tests can read values without cross-talk. The daemon sets the values; this module
only declares them and renders the exposition text.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, exposition

REGISTRY = CollectorRegistry(auto_describe=True)

# The 0.0.4 text format is what every Prometheus release scrapes; newer prometheus_client
# versions advertise 1.0.0 as "latest", which older servers do not know by name.
CONTENT_TYPE: str = getattr(
    exposition, "CONTENT_TYPE_PLAIN_0_0_4", exposition.CONTENT_TYPE_LATEST
)

events_ingested = Counter(
    "events_ingested",
    "Order events applied, by event type.",
    ["type"],
    registry=REGISTRY,
)
events_dead_lettered = Counter(
    "events_dead_lettered",
    "Messages rejected to the dead-letter topic, by kind of reason "
    "(invalid_json, schema, too_large, transition, ...).",
    ["reason_kind"],
    registry=REGISTRY,
)
events_duplicate = Counter(
    "events_duplicate",
    "Events received again under an event_id already applied (not applied twice).",
    registry=REGISTRY,
)
print_jobs = Gauge(
    "print_jobs",
    "Print jobs currently in each state.",
    ["state"],
    registry=REGISTRY,
)
# A ticket normally prints within tens of milliseconds on the LAN; a slow printer, a backup
# failover or an order scheduled ahead can take up to a minute, beyond which +Inf tells enough.
EVENT_TO_PRINT_BUCKETS = (
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
)
event_to_print_seconds = Histogram(
    "event_to_print_seconds",
    "Time from an order event's arrival to its ticket's bytes being accepted by the printer.",
    buckets=EVENT_TO_PRINT_BUCKETS,
    registry=REGISTRY,
)
printer_up = Gauge(
    "printer_up",
    "1 when the printer answers and can print, else 0.",
    ["printer"],
    registry=REGISTRY,
)
outbox_backlog = Gauge(
    "outbox_backlog",
    "Upstream records written but not yet accepted.",
    registry=REGISTRY,
)
outbox_oldest_unsent_age_seconds = Gauge(
    "outbox_oldest_unsent_age_seconds",
    "Age of the oldest upstream record not yet accepted (0 when none).",
    registry=REGISTRY,
)
orders_awaiting_acceptance = Gauge(
    "orders_awaiting_acceptance",
    "Orders a channel sent for acceptance that nobody accepted or rejected yet: marketplaces "
    "cancel unanswered orders.",
    registry=REGISTRY,
)
oldest_awaiting_acceptance_seconds = Gauge(
    "oldest_awaiting_acceptance_seconds",
    "How long the oldest order waiting for acceptance has waited (0 when none).",
    registry=REGISTRY,
)
marketplace_up = Gauge(
    "marketplace_up",
    "1 when the marketplace's last poll was answered with its orders, else 0.",
    ["marketplace"],
    registry=REGISTRY,
)
marketplace_awaiting_acceptance = Gauge(
    "marketplace_orders_awaiting_acceptance",
    "Orders of this marketplace nobody accepted or rejected yet (it cancels them if nobody "
    "does).",
    ["marketplace"],
    registry=REGISTRY,
)
marketplace_oldest_awaiting_acceptance_seconds = Gauge(
    "marketplace_oldest_awaiting_acceptance_seconds",
    "How long this marketplace's oldest order waiting for acceptance has waited (0: none).",
    ["marketplace"],
    registry=REGISTRY,
)
marketplace_calls_parked = Gauge(
    "marketplace_calls_parked",
    "Calls to this marketplace it refused (4xx), kept for the operator.",
    ["marketplace"],
    registry=REGISTRY,
)
wan_up = Gauge(
    "wan_up",
    "1 when the last upstream request got an HTTP answer, else 0.",
    registry=REGISTRY,
)

storage_ok = Gauge(
    "storage_ok",
    "1 while the disk takes the database's writes, 0 while it refuses them (full, I/O "
    "error): orders stay unacknowledged with the broker until it does again.",
    registry=REGISTRY,
)


def render_latest() -> tuple[bytes, str]:
    """The exposition body and its Content-Type, ready for an HTTP response."""
    return exposition.generate_latest(REGISTRY), CONTENT_TYPE
