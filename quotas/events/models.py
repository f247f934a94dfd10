import json
import uuid
from decimal import Decimal

from django.contrib.postgres.fields import ArrayField
from django.contrib.postgres.indexes import GinIndex
from django.db import models
from django.db.models import Q
from django.db.models.functions import Now

from quotas.models import EntityType


class EventType(models.TextChoices):
    SOFT_LIMIT_EXCEEDED = "quota.soft_limit_exceeded", "quota.soft_limit_exceeded"
    THRESHOLD_CROSSED = "quota.threshold_crossed", "quota.threshold_crossed"
    BACK_UNDER = "quota.back_under", "quota.back_under"
    PERIOD_CLOSED = "budget.period_closed", "budget.period_closed"
    OVERRUN = "allocation.overrun", "allocation.overrun"
    EXPIRED = "allocation.expired", "allocation.expired"
    QUOTA_CHANGED = "quota.changed", "quota.changed"
    USAGE_REPAIRED = "usage.repaired", "usage.repaired"
    # Only ever sent to one endpoint, from the admin's "send test event" (or POST
    # /webhooks/{id}/test): stored for its delivery, never in the feed, never fanned
    # out to other endpoints.
    TEST = "webhook.test", "webhook.test"


class ExactJSONDecoder(json.JSONDecoder):
    """Numbers with a fraction read back as exact ``Decimal`` (amounts in ``data``)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("parse_float", Decimal)
        super().__init__(*args, **kwargs)


class Event(models.Model):
    """One event of the outbox (DESIGN §7a). Append-only.

    Written in the transaction that caused it, by the engine (crossings, overruns,
    expiries, closed periods: ``hq_note``) or by the services (quota changes,
    repairs: ``quotas.events.services.record_events``). Its public ``id`` is given
    at the commit, under the event sequencer (``hq_sequence_event``, a deferred
    constraint trigger), so ids are given in commit order: a consumer that reads
    ``id > last`` never misses or repeats an event. Until then (inside the writing
    transaction) it is null. The quota's identity is copied in, with no
    database-level foreign key: events outlive their quota.
    """

    # The row's own key, in write order; only ``id`` is ever shown.
    row_id = models.BigAutoField(primary_key=True)
    id = models.BigIntegerField(unique=True, null=True, editable=False)
    type = models.CharField(max_length=40, choices=EventType.choices)
    occurred_at = models.DateTimeField(db_default=Now())
    quota = models.ForeignKey(
        "quotas.Quota",
        on_delete=models.DO_NOTHING,
        db_constraint=False,
        db_index=False,
        null=True,
        related_name="events",
    )
    entity_type = models.CharField(
        max_length=12, choices=EntityType.choices, blank=True
    )
    entity_id = models.CharField(max_length=255, blank=True)
    resource_type = models.CharField(max_length=50, blank=True)
    # The path of the quota (its id and its ancestors'), for scoped feeds.
    path = ArrayField(models.UUIDField(), default=list)
    data = models.JSONField(default=dict, decoder=ExactJSONDecoder)

    class Meta:
        db_table = "events"
        indexes = [
            # The feed filtered by type, in id order (the unique index on id serves
            # the unfiltered feed).
            models.Index(fields=["type", "id"], name="events_type_idx"),
            # A scoped feed: events whose path holds the scope entity's quotas.
            GinIndex(fields=["path"], name="events_path_gin"),
            # Pruning: events older than EVENT_RETENTION_DAYS.
            models.Index(fields=["occurred_at"], name="events_occurred_at_idx"),
        ]

    def __str__(self):
        return f"#{self.id} {self.type}"


class WebhookEndpoint(models.Model):
    """Where events are pushed (DESIGN §7a)."""

    id = models.UUIDField(primary_key=True, default=uuid.uuid4, editable=False)
    url = models.URLField(max_length=2000)
    # Empty: every type.
    event_types = ArrayField(
        models.CharField(max_length=40, choices=EventType.choices),
        default=list,
        blank=True,
    )
    # An entity, as for API keys: only events of quotas in its subtrees.
    scope_entity_type = models.CharField(
        max_length=12, choices=EntityType.choices, null=True, blank=True
    )
    scope_entity_id = models.CharField(max_length=255, null=True, blank=True)
    # The quota id the scope was given as, if it was (it names that quota's entity).
    scope_quota_id = models.UUIDField(null=True, blank=True)
    # The scope of the API key that made (or last changed) it, if that key was
    # scoped: the endpoint then gets only events inside that scope as well, and
    # only keys whose scope holds it see it. Null: made by an unscoped admin key
    # or in the admin. Entity ids may repeat across organizations, so the
    # endpoint's own scope alone could reach outside the key's subtrees.
    owner_scope_entity_type = models.CharField(
        max_length=12,
        choices=EntityType.choices,
        null=True,
        blank=True,
        editable=False,
    )
    owner_scope_entity_id = models.CharField(
        max_length=255, null=True, blank=True, editable=False
    )
    enabled = models.BooleanField(default=True)
    # Standard Webhooks secret (whsec_…): shown once, when created; kept to sign.
    secret = models.CharField(max_length=100, editable=False)
    description = models.CharField(max_length=200, blank=True)
    # The last event id fanned out into deliveries for this endpoint.
    cursor = models.BigIntegerField(default=0, editable=False)
    # Since when every delivery has failed; the endpoint is disabled after days.
    failing_since = models.DateTimeField(null=True, blank=True, editable=False)
    disabled_reason = models.CharField(max_length=200, blank=True, editable=False)
    created_at = models.DateTimeField(db_default=Now(), editable=False)

    class Meta:
        db_table = "webhook_endpoints"
        constraints = [
            models.CheckConstraint(
                condition=Q(
                    scope_entity_type__isnull=True, scope_entity_id__isnull=True
                )
                | Q(scope_entity_type__isnull=False, scope_entity_id__isnull=False),
                name="webhook_endpoints_scope_is_an_entity",
            ),
        ]

    def __str__(self):
        return self.url

    @property
    def scope(self):
        from quotas.access.scoping import Scope

        if self.scope_entity_type is None:
            return None
        return Scope(self.scope_entity_type, self.scope_entity_id)


class DeliveryStatus(models.TextChoices):
    PENDING = "pending", "pending"
    DELIVERED = "delivered", "delivered"
    GIVEN_UP = "given_up", "given up"


class WebhookDelivery(models.Model):
    """One event to send to one endpoint, until it is delivered or given up."""

    id = models.BigAutoField(primary_key=True)
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="deliveries"
    )
    event = models.ForeignKey(Event, on_delete=models.CASCADE, related_name="+")
    status = models.CharField(
        max_length=10, choices=DeliveryStatus.choices, default=DeliveryStatus.PENDING
    )
    attempts = models.PositiveIntegerField(default=0)
    next_attempt_at = models.DateTimeField(db_default=Now())
    # A delivery process's claim on the next attempt: none other takes it until
    # then (a process that died loses it then).
    claimed_until = models.DateTimeField(null=True, blank=True)
    # Retried until then (WEBHOOK_RETRY_HOURS after it was made, or redelivered).
    retry_until = models.DateTimeField(null=True, blank=True)
    created_at = models.DateTimeField(db_default=Now())
    delivered_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        db_table = "webhook_deliveries"
        constraints = [
            models.UniqueConstraint(
                fields=["endpoint", "event"], name="webhook_deliveries_once"
            ),
        ]
        indexes = [
            models.Index(
                fields=["next_attempt_at"],
                condition=Q(status="pending"),
                name="webhook_deliveries_due_idx",
            ),
        ]

    def __str__(self):
        return f"event {self.event_id} to {self.endpoint_id} ({self.status})"


class WebhookAttempt(models.Model):
    """The delivery log: one row per attempt."""

    id = models.BigAutoField(primary_key=True)
    delivery = models.ForeignKey(
        WebhookDelivery, on_delete=models.CASCADE, related_name="log"
    )
    endpoint = models.ForeignKey(
        WebhookEndpoint, on_delete=models.CASCADE, related_name="attempts"
    )
    event_id = models.BigIntegerField()
    attempt = models.PositiveIntegerField()
    status_code = models.PositiveSmallIntegerField(null=True, blank=True)
    duration_ms = models.PositiveIntegerField(null=True, blank=True)
    error = models.CharField(max_length=500, blank=True)
    next_attempt_at = models.DateTimeField(null=True, blank=True)
    at = models.DateTimeField(db_default=Now())

    class Meta:
        db_table = "webhook_attempts"
        indexes = [
            models.Index(fields=["endpoint", "-id"], name="webhook_attempts_log_idx"),
            # Pruning: attempts older than EVENT_RETENTION_DAYS.
            models.Index(fields=["at"], name="webhook_attempts_at_idx"),
        ]

    def __str__(self):
        return f"event {self.event_id}, attempt {self.attempt}: {self.status_code}"
