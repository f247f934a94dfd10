"""Pruning the outbox (DESIGN §7a): events older than ``EVENT_RETENTION_DAYS``,
their webhook deliveries, and delivery log entries older than that.

Each step deletes in batches, each batch its own short transaction, and claims its
rows with ``FOR UPDATE SKIP LOCKED``: rows another pruner (or a delivery in flight)
holds are left for later, so several runs at once never wait for or conflict with
each other. A delivery whose attempt is being made (a live ``claimed_until``) is
never deleted, nor, while it exists, its event.
"""

from datetime import timedelta

from django.conf import settings
from django.db import connection, transaction

from quotas.events.models import Event, WebhookAttempt, WebhookDelivery

_PRUNE_STEPS = (
    (
        "attempts",
        """DELETE FROM webhook_attempts WHERE id IN (
               SELECT id FROM webhook_attempts WHERE at < %(cutoff)s
                LIMIT %(batch)s FOR UPDATE SKIP LOCKED)""",
    ),
    (
        "deliveries",
        # Their attempts first (a delivery's log goes with it), then the rows.
        """WITH gone AS (
               SELECT d.id FROM webhook_deliveries d
                 JOIN events e ON e.row_id = d.event_id
                WHERE e.occurred_at < %(cutoff)s
                  AND (d.claimed_until IS NULL
                       OR d.claimed_until <= statement_timestamp())
                LIMIT %(batch)s FOR UPDATE OF d SKIP LOCKED),
           log AS (DELETE FROM webhook_attempts a USING gone
                    WHERE a.delivery_id = gone.id)
           DELETE FROM webhook_deliveries d USING gone WHERE d.id = gone.id""",
    ),
    (
        "events",
        """DELETE FROM events WHERE row_id IN (
               SELECT e.row_id FROM events e
                WHERE e.occurred_at < %(cutoff)s
                  AND NOT EXISTS (SELECT 1 FROM webhook_deliveries d
                                   WHERE d.event_id = e.row_id)
                LIMIT %(batch)s FOR UPDATE SKIP LOCKED)""",
    ),
)


def events_prune(
    *, days: int | None = None, batch_size: int = 1000, dry_run: bool = False
) -> dict[str, int]:
    """Delete events older than ``days`` (EVENT_RETENTION_DAYS), their deliveries,
    and delivery log rows older than that; return how many of each. In batches,
    each its own transaction; rows another process holds are skipped, so several
    runs at once (or a delivery in flight) never conflict."""
    days = days or settings.EVENT_RETENTION_DAYS
    with connection.cursor() as cursor:
        cursor.execute("SELECT statement_timestamp() - %s", [timedelta(days=days)])
        (cutoff,) = cursor.fetchone()
    counts = {}
    for name, statement in _PRUNE_STEPS:
        if dry_run:
            counts[name] = _prune_count(name, cutoff)
            continue
        counts[name] = 0
        while True:
            with transaction.atomic(durable=True), connection.cursor() as cursor:
                cursor.execute(statement, {"cutoff": cutoff, "batch": batch_size})
                deleted = cursor.rowcount
            counts[name] += deleted
            if deleted < batch_size:
                break
    return counts


def _prune_count(name: str, cutoff) -> int:
    if name == "attempts":
        return WebhookAttempt.objects.filter(at__lt=cutoff).count()
    if name == "deliveries":
        return WebhookDelivery.objects.filter(event__occurred_at__lt=cutoff).count()
    return Event.objects.filter(occurred_at__lt=cutoff).count()
