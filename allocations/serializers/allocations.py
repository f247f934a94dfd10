"""The requests and answers of the allocation endpoints."""

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema_serializer,
)
from rest_framework import serializers

from allocations.models import AllocationStatus, HistoryOperation
from allocations.serializers.fields import (
    ALLOCATION_EXAMPLE,
    LEVELS_EXAMPLE,
    OUTSIDE_LEVEL_EXAMPLE,
    QUOTA_EXCEEDED_EXAMPLE,
    REFUSED_LEVELS_EXAMPLE,
    TEAM_QUOTA_ID,
    TTL_MAX_SECONDS,
    LevelsField,
    MetadataField,
    UUIDStringField,
)
from horizon_quota.fields import AmountField, LowerChoiceField
from quotas.models import EntityType


@extend_schema_serializer(
    examples=[
        OpenApiExample("An allocation", value=ALLOCATION_EXAMPLE, response_only=True)
    ]
)
class AllocationSerializer(serializers.Serializer):
    """A job's hold on quota for one resource type (`active`, then `released` or
    `expired`)."""

    id = serializers.UUIDField()
    quota_id = serializers.UUIDField()
    entity_type = serializers.CharField()
    entity_id = serializers.CharField()
    job_id = serializers.UUIDField()
    resource_type = serializers.CharField()
    allocated_value = AmountField()
    status = serializers.ChoiceField(choices=AllocationStatus.values)
    allocated_at = serializers.DateTimeField()
    released_at = serializers.DateTimeField(allow_null=True)
    expires_at = serializers.DateTimeField(allow_null=True)
    is_burst = serializers.BooleanField()
    version = serializers.IntegerField()
    metadata = serializers.JSONField()
    consumed_value = AmountField(
        help_text="What the job reported it consumed so far (time-based resources; "
        "0 otherwise)."
    )
    rate = AmountField(
        allow_null=True,
        help_text="Units per hour (time-based resources), used to charge a settle "
        "without a reported value.",
    )


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Granted",
            value={**ALLOCATION_EXAMPLE, "warnings": [], "levels": LEVELS_EXAMPLE},
            response_only=True,
        )
    ]
)
class AllocationGrantSerializer(AllocationSerializer):
    """A granted allocation (201), or the existing one on an identical retry (200),
    with every level of its path and the soft-limit warnings."""

    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="One per level left above its soft limit; empty when none.",
    )
    levels = LevelsField(
        help_text="Every level of the path, leaf first; above a scoped key's "
        "scope only `{scope: outside, allowed}`."
    )


class _PrebuiltFields:
    # Build a request serializer's fields once per process, not per request.
    #
    # DRF deep-copies every declared field for each serializer instance, which on
    # the allocate path costs more than validating the request. The fields of these
    # serializers keep no per-request state (errors and values live in locals of
    # ``to_internal_value``; their context is empty), so one bound copy per class
    # serves every request. (A comment, not a docstring: drf-spectacular would show
    # a docstring as the public description of the request bodies.)

    @property
    def fields(self):
        cls = type(self)
        prebuilt = cls.__dict__.get("_prebuilt_fields")
        if prebuilt is None:
            prebuilt = serializers.Serializer.fields.func(self)
            cls._prebuilt_fields = prebuilt
        return prebuilt


class _RequestBase(_PrebuiltFields, serializers.Serializer):
    # The fields check and allocate share. Each public subclass has a docstring of
    # its own: it is the request body's description in the schema.

    entity_type = LowerChoiceField(choices=EntityType.values)
    entity_id = serializers.CharField(
        min_length=1, max_length=255, trim_whitespace=False
    )
    resource_type = serializers.CharField(max_length=50)
    requested_value = AmountField(positive=True)
    allow_burst = serializers.BooleanField(required=False, default=False)
    # Validated alike on check, which then ignores them: a check answers what the
    # allocate would, its 400s included.
    # null is accepted as "no metadata", as the Rust service's clients send it.
    metadata = MetadataField(required=False, allow_null=True, default=dict)
    ttl_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        max_value=TTL_MAX_SECONDS,
        help_text="Lease length; the allocation expires unless renewed.",
    )
    rate = AmountField(
        positive=True,
        required=False,
        allow_null=True,
        default=None,
        help_text="Time-based resources only: units per hour (8 for eight GPUs on "
        "gpu_hours). A release without a reported value then charges rate × hours "
        "held instead of the whole reservation.",
    )

    def validate_resource_type(self, value):
        return value.strip().lower()


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Allocate 8 GPU-hours for a job, with a one-hour lease",
            value={
                "entity_type": "user",
                "entity_id": "alice",
                "job_id": "3e1c9a57-0b7d-4c2e-8f6a-1d2c3b4a5e6f",
                "resource_type": "gpu_hours",
                "requested_value": 8,
                "metadata": {"queue": "a100"},
                "ttl_seconds": 3600,
                "allow_burst": False,
            },
            request_only=True,
        )
    ]
)
class AllocationCreateSerializer(_RequestBase):
    """Allocate `requested_value` of a resource type to an entity for a job, at
    every level of the entity's path, or not at all. `(job_id, resource_type)` is
    the idempotency key: an identical retry answers 200 with the same allocation."""

    job_id = UUIDStringField()


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Would 8 GPU-hours fit?",
            value={
                "entity_type": "user",
                "entity_id": "alice",
                "resource_type": "gpu_hours",
                "requested_value": 8,
            },
            request_only=True,
        )
    ]
)
class AllocationCheckSerializer(_RequestBase):
    """Would `requested_value` of a resource type fit for this entity, at every
    level of its path? The same rule as allocate, without writing anything: the
    body is validated as allocate's (less `job_id`), and a value allocate refuses is
    refused alike (400); `metadata` and `ttl_seconds` are then ignored."""


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Refused at the team level",
            value={
                "allowed": False,
                "requested": 500,
                "available": 392,
                "reason": QUOTA_EXCEEDED_EXAMPLE["message"],
                "warnings": [],
                "blocking_quota_id": TEAM_QUOTA_ID,
                "levels": REFUSED_LEVELS_EXAMPLE,
            },
            response_only=True,
        ),
        OpenApiExample(
            "Refused above a scoped key's scope",
            value={
                "allowed": False,
                "requested": 500,
                "available": None,
                "reason": "A quota above your scope has no room for 500; retry later.",
                "warnings": [],
                "blocking_quota_id": None,
                "levels": [
                    LEVELS_EXAMPLE[0],
                    {**LEVELS_EXAMPLE[1], "available": 3392, "used": 608},
                    OUTSIDE_LEVEL_EXAMPLE,
                ],
            },
            response_only=True,
        ),
    ]
)
class CheckResultSerializer(serializers.Serializer):
    """Whether the amount would fit at every level of the path, and each level's
    state. Nothing is written."""

    allowed = serializers.BooleanField()
    available = AmountField(
        integer_digits=20,
        allow_null=True,
        help_text="The room for this request: the smallest `available` of the levels "
        "the key may see; null when a level above the key's scope refuses.",
    )
    requested = AmountField()
    reason = serializers.CharField(
        allow_null=True, help_text="Why it would be refused; null when allowed."
    )
    warnings = serializers.ListField(
        child=serializers.CharField(),
        help_text="Levels the amount would take above their soft limit (when "
        "allowed); empty when none.",
    )
    blocking_quota_id = serializers.UUIDField(
        allow_null=True,
        help_text="The first level that refuses; null when allowed or when that "
        "level lies above the key's scope.",
    )
    levels = LevelsField(
        help_text="Every level of the path, leaf first; above a scoped key's "
        "scope only `{scope: outside, allowed}`."
    )


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Extend the lease by an hour from now",
            value={"ttl_seconds": 3600},
            request_only=True,
        )
    ]
)
class RenewSerializer(serializers.Serializer):
    """Renew an active allocation's lease: it now ends `ttl_seconds` from now."""

    ttl_seconds = serializers.IntegerField(min_value=1, max_value=TTL_MAX_SECONDS)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "The job has used 12.5 GPU-hours so far",
            value={"consumed_value": 12.5},
            request_only=True,
        )
    ]
)
class ConsumeSerializer(serializers.Serializer):
    """A running job's consumption so far (cumulative, never below the last
    report)."""

    consumed_value = AmountField(
        help_text="Cumulative: what the job has consumed since it started."
    )


class ReleaseSerializer(serializers.Serializer):
    """Optional final consumption of a time-based allocation being released."""

    consumed_value = AmountField(
        required=False,
        allow_null=True,
        default=None,
        help_text="Time-based resources only: what the job consumed in all. Without "
        "it the release charges rate × hours held, or else the whole reservation.",
    )


class HistorySerializer(serializers.Serializer):
    """One row of a quota's usage history: an allocate, release or expiry, with the
    entity's identity copied in (it outlives the quota)."""

    id = serializers.UUIDField()
    quota_id = serializers.UUIDField()
    allocation_id = serializers.UUIDField(allow_null=True)
    entity_type = serializers.CharField()
    entity_id = serializers.CharField()
    resource_type = serializers.CharField()
    allocated_value = AmountField()
    operation = serializers.ChoiceField(choices=HistoryOperation.values)
    consumed_delta = AmountField(
        help_text="What this operation charged to the budget (consume, and the "
        "release or expiry of a time-based allocation); 0 otherwise."
    )
    job_id = serializers.UUIDField(allow_null=True)
    timestamp = serializers.DateTimeField()
    metadata = serializers.JSONField()
