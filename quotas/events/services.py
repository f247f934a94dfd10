"""Writing events (DESIGN §7a, P4) from Python: quota changes and usage repairs.

Every writer of the outbox takes the event sequencer first — a transaction-level
advisory lock, held until the commit — and only then takes ids. So events commit in
id order, and a feed reader that has seen event N has seen every event below N that
will ever exist: reading ``id > last`` never misses one that commits later. The
engine does the same at the end of its functions (allocations/sql/hq_emit.sql),
after every quota row it locks: the sequencer is the last lock of any transaction
(quotas/locking.py). Events are rare (edges, not allocations), so the sequencer is
seldom waited for.
"""

from typing import Any

from django.conf import settings
from django.db import connection

from quotas.events.models import Event

# The advisory lock key of the event sequencer (the same number in hq_emit.sql).
SEQUENCER_KEY = 72_651_004


def default_thresholds() -> list[int]:
    """ALERT_THRESHOLDS: percents of the cap that quotas alert at by default."""
    return list(settings.ALERT_THRESHOLDS)


def record_events(events: list[dict[str, Any]]) -> None:
    """Append events in the caller's transaction, after its other locks. Each is a
    dict of Event fields (``type``, ``quota``, ``data``…)."""
    if not events:
        return
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_advisory_xact_lock(%s)", [SEQUENCER_KEY])
    Event.objects.bulk_create([Event(**event) for event in events])


def quota_event(event_type: str, quota, **data) -> dict[str, Any]:
    """The fields of an event about ``quota``."""
    return {
        "type": event_type,
        "quota_id": quota.id,
        "entity_type": quota.entity_type,
        "entity_id": quota.entity_id,
        "resource_type": quota.resource_type_id,
        "path": list(quota.path),
        "data": data,
    }
