import json
import math
from decimal import Decimal

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from allocations.models import AllocationStatus, HistoryOperation
from horizon_quota.fields import AmountField, LowerChoiceField
from quotas.models import EntityType

METADATA_MAX_BYTES = 16 * 1024
TTL_MAX_SECONDS = 366 * 24 * 3600

_ALLOCATION_EXAMPLE = {
    "id": "9b2f5d0e-6f4a-4a8e-9c41-2d8e7f1a3b5c",
    "quota_id": "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b",
    "entity_type": "user",
    "entity_id": "alice",
    "job_id": "3e1c9a57-0b7d-4c2e-8f6a-1d2c3b4a5e6f",
    "resource_type": "gpu_hours",
    "allocated_value": 8,
    "status": "active",
    "allocated_at": "2026-11-27T08:00:00Z",
    "released_at": None,
    "expires_at": "2026-11-27T09:00:00Z",
    "is_burst": False,
    "version": 1,
    "metadata": {"queue": "a100"},
    "consumed_value": 0,
    "rate": 8,
}
_LEVELS_EXAMPLE = [
    {
        "quota_id": "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b",
        "entity_type": "user",
        "entity_id": "alice",
        "cap": 100,
        "used": 48,
        "available": 52,
        "allowed": True,
    },
    {
        "quota_id": "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19",
        "entity_type": "team",
        "entity_id": "acme-research",
        "cap": 4000,
        "used": 3608,
        "available": 392,
        "allowed": True,
    },
]


class UUIDStringField(serializers.UUIDField):
    """A UUID sent as a string (DRF would also take an integer)."""

    def to_internal_value(self, data):
        if not isinstance(data, str):
            self.fail("invalid", value=data)
        return super().to_internal_value(data)


def _json_native(value):
    """The parsed request JSON with its numbers as JSON numbers again.

    The request parser reads every non-integer number as a ``Decimal`` (to keep
    amounts exact); stringifying those would store ``{"n": 1.5}`` as ``{"n": "1.5"}``.
    PostgreSQL's jsonb cannot hold a NUL character, so one is refused here rather
    than failing in the database.
    """
    if isinstance(value, dict):
        return {_json_native(key): _json_native(item) for key, item in value.items()}
    if isinstance(value, str):
        if "\x00" in value:
            raise serializers.ValidationError(
                "Strings must not contain NUL characters."
            )
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate such as "\ud800"
            raise serializers.ValidationError(
                "Strings must be valid Unicode (no lone surrogates)."
            ) from None
        return value
    if isinstance(value, list):
        return [_json_native(item) for item in value]
    if isinstance(value, Decimal):
        number = float(value)
        if not math.isfinite(number):
            raise serializers.ValidationError("Numbers must be finite.")
        return number
    return value


class MetadataField(serializers.JSONField):
    def to_internal_value(self, data):
        if not isinstance(data, dict):
            raise serializers.ValidationError("Must be a JSON object.")
        try:
            metadata = _json_native(data)
            size = len(json.dumps(metadata, ensure_ascii=False).encode())
        except RecursionError:
            raise serializers.ValidationError("Nested too deeply.") from None
        if size > METADATA_MAX_BYTES:
            raise serializers.ValidationError(
                f"Must be at most {METADATA_MAX_BYTES} bytes of JSON (got {size})."
            )
        return metadata


class LevelSerializer(serializers.Serializer):
    quota_id = serializers.UUIDField()
    entity_type = serializers.CharField()
    entity_id = serializers.CharField()
    cap = AmountField(integer_digits=20)
    used = AmountField(integer_digits=20)
    available = AmountField(integer_digits=20)
    allowed = serializers.BooleanField()


@extend_schema_serializer(
    examples=[
        OpenApiExample("An allocation", value=_ALLOCATION_EXAMPLE, response_only=True)
    ]
)
class AllocationSerializer(serializers.Serializer):
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
            value={**_ALLOCATION_EXAMPLE, "warnings": [], "levels": _LEVELS_EXAMPLE},
            response_only=True,
        )
    ]
)
class AllocationGrantSerializer(AllocationSerializer):
    warnings = serializers.ListField(child=serializers.CharField())
    levels = LevelSerializer(many=True)


class _PrebuiltFields:
    """Build a request serializer's fields once per process, not per request.

    DRF deep-copies every declared field for each serializer instance, which on the
    allocate path costs more than validating the request. The fields of these
    serializers keep no per-request state (errors and values live in locals of
    ``to_internal_value``; their context is empty), so one bound copy per class
    serves every request.
    """

    @property
    def fields(self):
        cls = type(self)
        prebuilt = cls.__dict__.get("_prebuilt_fields")
        if prebuilt is None:
            prebuilt = serializers.Serializer.fields.func(self)
            cls._prebuilt_fields = prebuilt
        return prebuilt


class _RequestBase(_PrebuiltFields, serializers.Serializer):
    entity_type = LowerChoiceField(choices=EntityType.values)
    entity_id = serializers.CharField(
        min_length=1, max_length=255, trim_whitespace=False
    )
    resource_type = serializers.CharField(max_length=50)
    requested_value = AmountField(positive=True)
    allow_burst = serializers.BooleanField(required=False, default=False)

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
    job_id = UUIDStringField()
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
    pass


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Refused at the team level",
            value={
                "allowed": False,
                "requested": 500,
                "available": 392,
                "reason": "Quota exceeded at team acme-research (quota "
                "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19): requested 500, available 392.",
                "warnings": [],
                "blocking_quota_id": "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19",
                "levels": [
                    {**_LEVELS_EXAMPLE[0], "allowed": True},
                    {**_LEVELS_EXAMPLE[1], "allowed": False},
                ],
            },
            response_only=True,
        )
    ]
)
class CheckResultSerializer(serializers.Serializer):
    allowed = serializers.BooleanField()
    available = AmountField(integer_digits=20)
    requested = AmountField()
    reason = serializers.CharField(allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField())
    blocking_quota_id = serializers.UUIDField(allow_null=True)
    levels = LevelSerializer(many=True)


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
