import re
from decimal import Decimal

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers

from horizon_quota.amounts import normalize_amount
from quotas.events.models import (
    Event,
    WebhookAttempt,
    WebhookDelivery,
    WebhookEndpoint,
)

# A UTC time as PostgreSQL's JSON writes it (``…+00:00``); the API writes ``…Z``.
_UTC_TEXT = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?\+00:00$")


def _as_answered(value):
    """``data`` in the API's own formats: amounts without trailing zeros (the
    engine writes them at the column's scale), UTC times ending in ``Z``."""
    if isinstance(value, dict):
        return {key: _as_answered(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_as_answered(item) for item in value]
    if isinstance(value, Decimal):
        return normalize_amount(value)
    if isinstance(value, str) and _UTC_TEXT.match(value):
        return value[:-6] + "Z"
    return value


class EventDataField(serializers.DictField):
    def to_representation(self, value):
        return _as_answered(value)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A team passed 80 % of its monthly GPU-hours",
            value={
                "id": 1042,
                "type": "quota.threshold_crossed",
                "occurred_at": "2026-11-27T09:30:00.123456Z",
                "quota_id": "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19",
                "entity_type": "team",
                "entity_id": "acme-research",
                "resource_type": "gpu_hours",
                "data": {"threshold": 80, "used": 3210.5, "cap": 4000},
            },
            response_only=True,
        )
    ]
)
class EventSerializer(serializers.ModelSerializer):
    """One event (DESIGN §7a). `data` depends on the type: a crossing
    (`quota.threshold_crossed`, `quota.back_under`) holds `threshold` (percent),
    `used` and `cap`; `quota.soft_limit_exceeded` `soft_limit`, `used` and `cap`;
    `allocation.overrun` and `allocation.expired` the allocation's `allocation_id`,
    `job_id`, `allocated_value` and `consumed_value`; `budget.period_closed` the
    period's bounds, `limit_value`, `carried_over`, `consumed` and
    `carried_forward`; `quota.changed` the `action`, each changed field's `[old,
    new]` and the `reason`; `usage.repaired` the stored and actual books."""

    quota_id = serializers.UUIDField(allow_null=True)
    data = EventDataField()

    class Meta:
        model = Event
        fields = [
            "id",
            "type",
            "occurred_at",
            "quota_id",
            "entity_type",
            "entity_id",
            "resource_type",
            "data",
        ]
        read_only_fields = fields


# --- Webhook endpoints (DESIGN §7a) --------------------------------------------------

ENDPOINT_EXAMPLE = {
    "id": "5f0c2a7e-9b1d-4e3f-8a6c-2d4b6f8e1a3c",
    "url": "https://alerts.example.com/horizon",
    "event_types": ["quota.threshold_crossed"],
    "scope": "team:acme-research",
    "enabled": True,
    "description": "Research's GPU-hours alerts",
    "failing_since": None,
    "disabled_reason": "",
    "created_at": "2026-11-27T09:30:00.123456Z",
}
SECRET_EXAMPLE = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw2y/IRpvVq0o="


def scope_text(endpoint: WebhookEndpoint) -> str | None:
    """The endpoint's scope as it was given: a quota id, or ``type:id``."""
    if endpoint.scope_entity_type is None:
        return None
    if endpoint.scope_quota_id is not None:
        return str(endpoint.scope_quota_id)
    return f"{endpoint.scope_entity_type}:{endpoint.scope_entity_id}"


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "An endpoint for one team's threshold alerts",
            value=ENDPOINT_EXAMPLE,
            response_only=True,
        )
    ]
)
class WebhookEndpointSerializer(serializers.ModelSerializer):
    """A webhook endpoint: where events are pushed, signed per Standard Webhooks.
    `event_types` empty means every type; `scope` (an entity such as
    `team:acme-research`, or a quota id meaning its entity; null for every quota)
    keeps the events of quotas in that entity's subtrees. `failing_since` is when
    the current run of failed deliveries began; an endpoint failing for
    WEBHOOK_DISABLE_AFTER_DAYS is disabled, with `disabled_reason`. The secret is
    never shown again after the create answer."""

    scope = serializers.SerializerMethodField()
    event_types = serializers.ListField(child=serializers.CharField())

    class Meta:
        model = WebhookEndpoint
        fields = [
            "id",
            "url",
            "event_types",
            "scope",
            "enabled",
            "description",
            "failing_since",
            "disabled_reason",
            "created_at",
        ]
        read_only_fields = fields

    @extend_schema_field(serializers.CharField(allow_null=True))
    def get_scope(self, endpoint) -> str | None:
        return scope_text(endpoint)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A new endpoint with its secret",
            value={**ENDPOINT_EXAMPLE, "secret": SECRET_EXAMPLE},
            response_only=True,
        )
    ]
)
class WebhookEndpointCreatedSerializer(WebhookEndpointSerializer):
    """A webhook endpoint just created, with its `secret` (`whsec_…`): keep it to
    verify signatures; it is shown this once."""

    class Meta(WebhookEndpointSerializer.Meta):
        fields = [*WebhookEndpointSerializer.Meta.fields, "secret"]
        read_only_fields = fields


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Disable an endpoint",
            value={"enabled": False},
            request_only=True,
        )
    ]
)
class WebhookEndpointUpdateSerializer(serializers.Serializer):
    """The fields of a webhook endpoint that may change; absent ones stay as they
    are. The URL must be http or https and reach a public address (unless the
    server allows private ones); event types are those of the feed."""

    url = serializers.CharField(max_length=2000, trim_whitespace=True)
    event_types = serializers.ListField(
        child=serializers.CharField(max_length=40), max_length=20
    )
    scope = serializers.CharField(
        allow_null=True,
        allow_blank=True,
        max_length=300,
        help_text="organization:ID, team:ID, user:ID or a quota id (meaning its "
        "entity); null for every quota.",
    )
    enabled = serializers.BooleanField()
    description = serializers.CharField(allow_blank=True, max_length=200)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Threshold alerts of one team",
            value={
                "url": "https://alerts.example.com/horizon",
                "event_types": ["quota.threshold_crossed"],
                "scope": "team:acme-research",
                "description": "Research's GPU-hours alerts",
            },
            request_only=True,
        )
    ]
)
class WebhookEndpointCreateSerializer(WebhookEndpointUpdateSerializer):
    """A new webhook endpoint: `url` is required; `event_types` (default: every
    type), `scope` (default null), `enabled` (default true) and `description`
    are optional."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["url"].required = True


ATTEMPT_EXAMPLE = {
    "id": 7,
    "delivery_id": 12,
    "event_id": 1042,
    "attempt": 2,
    "status_code": 503,
    "duration_ms": 41,
    "error": "HTTP 503: busy",
    "next_attempt_at": "2026-11-27T09:31:20.123456Z",
    "at": "2026-11-27T09:31:00.123456Z",
}


@extend_schema_serializer(
    examples=[
        OpenApiExample("A failed attempt", value=ATTEMPT_EXAMPLE, response_only=True)
    ]
)
class WebhookAttemptSerializer(serializers.ModelSerializer):
    """One attempt to deliver an event (the delivery log): the answer's status
    (null when none came: refused target, no connection, timeout), how long it
    took, the error, and when the next attempt is due (null once delivered or
    given up)."""

    delivery_id = serializers.IntegerField()

    class Meta:
        model = WebhookAttempt
        fields = [
            "id",
            "delivery_id",
            "event_id",
            "attempt",
            "status_code",
            "duration_ms",
            "error",
            "next_attempt_at",
            "at",
        ]
        read_only_fields = fields


TEST_QUEUED_EXAMPLE = OpenApiExample(
    "A test event queued",
    value={
        "id": 13,
        "event_id": 1043,
        "status": "pending",
        "attempts": 0,
        "next_attempt_at": "2026-11-27T09:30:00.123456Z",
        "created_at": "2026-11-27T09:30:00.123456Z",
    },
    response_only=True,
)


class WebhookDeliverySerializer(serializers.ModelSerializer):
    """One event to deliver to one endpoint: pending until delivered or given up."""

    event_id = serializers.IntegerField(source="event.id")

    class Meta:
        model = WebhookDelivery
        fields = [
            "id",
            "event_id",
            "status",
            "attempts",
            "next_attempt_at",
            "created_at",
        ]
        read_only_fields = fields
