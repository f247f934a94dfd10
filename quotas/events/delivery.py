"""Delivering events to webhook endpoints (DESIGN §7a, P4).

A delivery pass (``manage.py deliver_webhooks``) does three things, each in short
transactions of its own, with no network I/O inside any of them:

1. **Fan out** (``deliveries_fan_out``). For each enabled endpoint, under its row
   lock (``SKIP LOCKED``: another process fanning it out is passed over), the
   events after the endpoint's ``cursor`` become one ``webhook_deliveries`` row
   each when the endpoint wants them (its event types; its scope and, for one made
   by a scoped key, that key's scope too: the event's path
   holds one of the scope entity's quotas, as the feed reads it), and the cursor
   moves past every event looked at. Public event ids are given in commit order,
   so ``id > cursor`` never misses one that commits later; ``(endpoint, event)``
   is unique, so an event is queued once per endpoint whatever happens.
2. **Claim** (``delivery_claim``), one delivery at a time, like the expiry
   sweeper: a due, unclaimed delivery is taken with ``FOR UPDATE SKIP LOCKED`` and,
   in the same statement, its ``attempts`` counted up and ``claimed_until`` set
   (the lease), then committed at once. Another process skips the row while the
   claim's transaction runs and filters it out after (the lease has not run out),
   so no two processes ever make the same attempt. A process that dies mid-send
   loses the row when the lease ends; the retry is the next attempt, with the
   same ``webhook-id``: at least once, never the same attempt twice.
3. **Send, then record** (``delivery_record``): the attempt is logged
   (``webhook_attempts``), a 2xx marks the delivery delivered, anything else
   schedules the next attempt with exponential backoff from
   ``WEBHOOK_RETRY_BASE_SECONDS``, or gives up once that would pass
   ``retry_until`` (``WEBHOOK_RETRY_HOURS`` after it was queued). The endpoint's
   ``failing_since`` is cleared by a success and set by the first failure after
   one; an endpoint that has known only failures for ``WEBHOOK_DISABLE_AFTER_DAYS``
   is disabled, with the reason.

Lock order: a transaction that locks both a delivery and its endpoint locks the
delivery first (``delivery_record``); the fan-out and endpoint changes lock an
endpoint and no existing delivery; claims, redeliveries and pruning lock
deliveries only, skipping locked ones. So no cycle, no deadlock.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass, field

from django.conf import settings
from django.db import connection, transaction

from quotas.events.models import (
    DeliveryStatus,
    Event,
    EventType,
    WebhookEndpoint,
)
from quotas.events.sending import SendResult, event_body, webhook_send

logger = logging.getLogger(__name__)

# Times come from the database clock, as statement_timestamp(): what Django's Now()
# is on PostgreSQL, so rows the ORM stamps and rows stamped here compare alike.

# How long a claim holds a delivery: the send's connect and read timeouts and a
# margin. Only a process that died mid-send ever lets a lease run out.
LEASE_MARGIN_SECONDS = 30


def lease_seconds() -> int:
    return 2 * settings.WEBHOOK_TIMEOUT_SECONDS + LEASE_MARGIN_SECONDS


# --- 1. Fan out -----------------------------------------------------------------------

_LOCK_ENDPOINT = """
SELECT cursor, event_types, scope_entity_type, scope_entity_id,
       owner_scope_entity_type, owner_scope_entity_id
  FROM webhook_endpoints
 WHERE id = %s AND enabled
   FOR UPDATE SKIP LOCKED
"""

# The window: the next committed events after the cursor, in id order (the unique
# index on events.id).
_WINDOW_END = """
SELECT max(id) FROM (
    SELECT id FROM events WHERE id > %s ORDER BY id LIMIT %s
) AS window_ids
"""

_QUEUE = """
INSERT INTO webhook_deliveries
       (endpoint_id, event_id, status, attempts, next_attempt_at, retry_until,
        created_at)
SELECT %(endpoint)s, e.row_id, 'pending', 0, statement_timestamp(),
       statement_timestamp() + make_interval(hours => %(hours)s), statement_timestamp()
  FROM events e
 WHERE e.id > %(cursor)s AND e.id <= %(end)s
   AND e.type <> %(test)s
   AND (cardinality(%(types)s::varchar[]) = 0 OR e.type = ANY (%(types)s::varchar[]))
   AND (%(scope_type)s::varchar IS NULL OR e.path && ARRAY(
        SELECT q.id FROM quotas q
         WHERE q.entity_type = %(scope_type)s AND q.entity_id = %(scope_id)s))
   AND (%(owner_type)s::varchar IS NULL OR e.path && ARRAY(
        SELECT q.id FROM quotas q
         WHERE q.entity_type = %(owner_type)s AND q.entity_id = %(owner_id)s))
 ORDER BY e.id
ON CONFLICT (endpoint_id, event_id) DO NOTHING
"""


def _fan_out_endpoint(endpoint_id, *, batch_size: int) -> tuple[int, bool]:
    """Queue the next window of events for one endpoint: (deliveries queued,
    whether more events may follow)."""
    # One endpoint per transaction, holding its row only while its window is
    # queued: an endpoint change waits at most that long.
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(_LOCK_ENDPOINT, [endpoint_id])
        row = cursor.fetchone()
        if row is None:  # disabled, deleted, or another process is on it
            return 0, False
        position, types, scope_type, scope_id, owner_type, owner_id = row
        cursor.execute(_WINDOW_END, [position, batch_size])
        (end,) = cursor.fetchone()
        if end is None:
            return 0, False
        cursor.execute(
            _QUEUE,
            {
                "endpoint": endpoint_id,
                "hours": settings.WEBHOOK_RETRY_HOURS,
                "cursor": position,
                "end": end,
                "test": EventType.TEST.value,
                "types": list(types),
                "scope_type": scope_type,
                "scope_id": scope_id,
                "owner_type": owner_type,
                "owner_id": owner_id,
            },
        )
        queued = cursor.rowcount
        cursor.execute(
            "UPDATE webhook_endpoints SET cursor = %s WHERE id = %s", [end, endpoint_id]
        )
    return queued, True


def deliveries_fan_out(
    *, batch_size: int = 500, should_stop: Callable[[], bool] | None = None
) -> int:
    """Queue a delivery of every new event to every enabled endpoint that wants it;
    return how many were queued."""
    queued = 0
    endpoint_ids = WebhookEndpoint.objects.filter(enabled=True).values_list(
        "id", flat=True
    )
    for endpoint_id in list(endpoint_ids):
        more = True
        while more and not (should_stop and should_stop()):
            count, more = _fan_out_endpoint(endpoint_id, batch_size=batch_size)
            queued += count
    return queued


# --- 2. Claim -------------------------------------------------------------------------

# Due: pending, its time has come, no live lease; its endpoint enabled (a test
# event goes to a disabled endpoint too: that is how a receiver is checked before
# enabling it again). The partial index webhook_deliveries_due_idx serves it.
_CLAIM = """
UPDATE webhook_deliveries d
   SET attempts = d.attempts + 1,
       claimed_until = statement_timestamp() + make_interval(secs => %s)
  FROM webhook_endpoints target
 WHERE target.id = d.endpoint_id
   AND d.id = (
        SELECT due.id
          FROM webhook_deliveries due
          JOIN webhook_endpoints ep ON ep.id = due.endpoint_id
          JOIN events e ON e.row_id = due.event_id
         WHERE due.status = 'pending'
           AND due.next_attempt_at <= statement_timestamp()
           AND (due.claimed_until IS NULL
                OR due.claimed_until <= statement_timestamp())
           AND (ep.enabled OR e.type = %s)
         ORDER BY due.next_attempt_at, due.id
         LIMIT 1
           FOR UPDATE OF due SKIP LOCKED)
RETURNING d.id, d.attempts, d.endpoint_id, d.event_id, target.url, target.secret
"""


@dataclass(frozen=True)
class Claim:
    """One attempt this process holds: send it, then record it."""

    delivery_id: int
    attempt: int
    endpoint_id: object
    url: str
    secret: str
    event: Event


def delivery_claim() -> Claim | None:
    """Claim the next due delivery's next attempt; None when none is due."""
    # SKIP LOCKED: a delivery another process is claiming is passed over, never
    # waited for; the lease keeps it ours once this short transaction commits.
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(_CLAIM, [lease_seconds(), EventType.TEST.value])
        row = cursor.fetchone()
    if row is None:
        return None
    delivery_id, attempt, endpoint_id, event_row_id, url, secret = row
    return Claim(
        delivery_id=delivery_id,
        attempt=attempt,
        endpoint_id=endpoint_id,
        url=url,
        secret=secret,
        # A claimed delivery is never pruned, so neither is its event.
        event=Event.objects.get(row_id=event_row_id),
    )


# --- 3. Record ------------------------------------------------------------------------

_LOG = """
INSERT INTO webhook_attempts (delivery_id, endpoint_id, event_id, attempt,
                              status_code, duration_ms, error, next_attempt_at, at)
VALUES (%s, %s, %s, %s, %s, %s, %s, %s, statement_timestamp())
"""

# The claim still ours (attempts unchanged): the next attempt after the backoff,
# or given up when that would be past retry_until.
_FAILED = """
UPDATE webhook_deliveries
   SET claimed_until = NULL,
       next_attempt_at = statement_timestamp() + make_interval(secs => %(delay)s),
       status = CASE WHEN statement_timestamp() + make_interval(secs => %(delay)s)
                          > coalesce(retry_until, 'infinity')
                     THEN 'given_up' ELSE 'pending' END
 WHERE id = %(id)s AND attempts = %(attempt)s AND status = 'pending'
RETURNING status, next_attempt_at
"""

_DELIVERED = """
UPDATE webhook_deliveries
   SET status = 'delivered', claimed_until = NULL, delivered_at = statement_timestamp()
 WHERE id = %s AND status = 'pending'
"""

_ENDPOINT_FAILED = """
UPDATE webhook_endpoints
   SET failing_since = coalesce(failing_since, statement_timestamp()),
       enabled = enabled AND coalesce(failing_since, statement_timestamp())
                             > statement_timestamp() - make_interval(days => %(days)s),
       disabled_reason = CASE
           WHEN enabled AND coalesce(failing_since, statement_timestamp())
                            <= statement_timestamp() - make_interval(days => %(days)s)
           THEN %(reason)s ELSE disabled_reason END
 WHERE id = %(id)s
RETURNING enabled
"""


def backoff_seconds(attempt: int) -> int:
    """The wait after failed attempt number ``attempt`` (1, 2, …): the base, then
    doubling."""
    return settings.WEBHOOK_RETRY_BASE_SECONDS * 2 ** min(attempt - 1, 30)


@dataclass
class Outcome:
    status: str  # delivered, pending (to be retried) or given_up
    endpoint_disabled: bool = False


def delivery_record(claim: Claim, result: SendResult) -> Outcome:
    """Log the attempt and move the delivery and its endpoint on."""
    days = settings.WEBHOOK_DISABLE_AFTER_DAYS
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        # The delivery's row first, then its endpoint's (the lock order above).
        if result.delivered:
            cursor.execute(_DELIVERED, [claim.delivery_id])
            status, next_at = DeliveryStatus.DELIVERED, None
        else:
            cursor.execute(
                _FAILED,
                {
                    "id": claim.delivery_id,
                    "attempt": claim.attempt,
                    "delay": backoff_seconds(claim.attempt),
                },
            )
            row = cursor.fetchone()
            # None: pruned, redelivered or taken over meanwhile; logged all the same.
            status, next_at = row if row else (DeliveryStatus.PENDING, None)
            if status == DeliveryStatus.GIVEN_UP:
                next_at = None
        cursor.execute(
            "SELECT 1 FROM webhook_deliveries WHERE id = %s", [claim.delivery_id]
        )
        if cursor.fetchone() is None:
            return Outcome(status)  # pruned meanwhile: nothing left to log against
        cursor.execute(
            _LOG,
            [
                claim.delivery_id,
                claim.endpoint_id,
                claim.event.id,
                claim.attempt,
                result.status_code,
                result.duration_ms,
                result.error,
                next_at,
            ],
        )
        if result.delivered:
            cursor.execute(
                "UPDATE webhook_endpoints SET failing_since = NULL "
                "WHERE id = %s AND failing_since IS NOT NULL",
                [claim.endpoint_id],
            )
            return Outcome(status)
        cursor.execute(
            "SELECT enabled FROM webhook_endpoints WHERE id = %s FOR UPDATE",
            [claim.endpoint_id],
        )
        was = cursor.fetchone()
        cursor.execute(
            _ENDPOINT_FAILED,
            {
                "id": claim.endpoint_id,
                "days": days,
                "reason": f"Every delivery failed for {days} days.",
            },
        )
        row = cursor.fetchone()
    # Disabled by this failure (not before it, by hand or by another process).
    disabled = bool(was and was[0] and row and not row[0])
    if disabled:
        logger.warning("webhook endpoint %s disabled", claim.endpoint_id)
    return Outcome(status, endpoint_disabled=disabled)


# --- A pass ---------------------------------------------------------------------------


@dataclass
class PassSummary:
    queued: int = 0
    counts: dict = field(
        default_factory=lambda: {"delivered": 0, "failed": 0, "given_up": 0}
    )

    def __str__(self) -> str:
        counts = self.counts
        return (
            f"delivered {counts['delivered']}, failed {counts['failed']}, "
            f"given up {counts['given_up']} (queued {self.queued})"
        )


Sender = Callable[[Claim], SendResult]


def claim_send(claim: Claim) -> SendResult:
    """Send a claimed attempt (no transaction is open here)."""
    return webhook_send(
        url=claim.url,
        secret=claim.secret,
        message_id=str(claim.event.id),
        body=event_body(claim.event),
    )


def webhooks_deliver(
    *,
    batch_size: int = 100,
    should_stop: Callable[[], bool] | None = None,
    sender: Sender = claim_send,
) -> PassSummary:
    """One delivery pass: fan out new events, then make every due attempt (at most
    ``batch_size`` between two looks at ``should_stop``). Safe to run in several
    processes at once."""
    summary = PassSummary(queued=deliveries_fan_out(should_stop=should_stop))
    while should_stop is None or not should_stop():
        made = 0
        while made < batch_size:
            claim = delivery_claim()
            if claim is None:
                return summary
            outcome = delivery_record(claim, sender(claim))
            key = {"delivered": "delivered", "given_up": "given_up"}.get(
                outcome.status, "failed"
            )
            summary.counts[key] += 1
            made += 1
    return summary


# --- Redelivery -----------------------------------------------------------


def deliveries_redeliver(*, delivery_ids: list[int]) -> int:
    """Send these deliveries again, now, with a new retry window (whatever their
    status). One being sent right now is left alone. Returns how many. Not a
    durable block: the admin's action may call it inside its own transaction."""
    with transaction.atomic(), connection.cursor() as cursor:
        # SKIP LOCKED: a delivery being claimed or recorded is passed over.
        cursor.execute(
            """
            UPDATE webhook_deliveries
               SET status = 'pending', next_attempt_at = statement_timestamp(),
                   claimed_until = NULL,
                   retry_until = statement_timestamp() + make_interval(hours => %s)
             WHERE id IN (SELECT id FROM webhook_deliveries
                           WHERE id = ANY (%s)
                             AND (claimed_until IS NULL
                                  OR claimed_until <= statement_timestamp())
                             FOR UPDATE SKIP LOCKED)
            """,
            [settings.WEBHOOK_RETRY_HOURS, list(delivery_ids)],
        )
        return cursor.rowcount
