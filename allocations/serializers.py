import json
import math
from decimal import Decimal

from drf_spectacular.utils import (
    OpenApiExample,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers

from allocations.models import AllocationStatus, HistoryOperation
from horizon_quota.fields import AmountField, LowerChoiceField
from horizon_quota.schema import (
    ErrorBodySerializer,
    OneOfSerializer,
    RateLimitedErrorSerializer,
    retry_after_field,
)
from quotas.models import EntityType

METADATA_MAX_BYTES = 16 * 1024
TTL_MAX_SECONDS = 366 * 24 * 3600

# The ids of the examples: one path user alice → team acme-research → organization
# acme, on gpu_hours, and one job's allocation.
USER_QUOTA_ID = "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b"
TEAM_QUOTA_ID = "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19"
ORG_QUOTA_ID = "7c3e5a1b-2d4f-4a6c-9e8b-1f2a3b4c5d6e"
ALLOCATION_ID = "9b2f5d0e-6f4a-4a8e-9c41-2d8e7f1a3b5c"
JOB_ID = "3e1c9a57-0b7d-4c2e-8f6a-1d2c3b4a5e6f"

_ALLOCATION_EXAMPLE = {
    "id": ALLOCATION_ID,
    "quota_id": USER_QUOTA_ID,
    "entity_type": "user",
    "entity_id": "alice",
    "job_id": JOB_ID,
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
# The path after the grant of 8 above, leaf first.
_LEVELS_EXAMPLE = [
    {
        "quota_id": USER_QUOTA_ID,
        "entity_type": "user",
        "entity_id": "alice",
        "cap": 1000,
        "used": 48,
        "available": 952,
        "allowed": True,
    },
    {
        "quota_id": TEAM_QUOTA_ID,
        "entity_type": "team",
        "entity_id": "acme-research",
        "cap": 4000,
        "used": 3608,
        "available": 392,
        "allowed": True,
    },
    {
        "quota_id": ORG_QUOTA_ID,
        "entity_type": "organization",
        "entity_id": "acme",
        "cap": 10000,
        "used": 9000,
        "available": 1000,
        "allowed": True,
    },
]
# The same path asked for 500: the team has 392 left and refuses.
_REFUSED_LEVELS_EXAMPLE = [
    _LEVELS_EXAMPLE[0],
    {**_LEVELS_EXAMPLE[1], "allowed": False},
    _LEVELS_EXAMPLE[2],
]
QUOTA_EXCEEDED_EXAMPLE = {
    "error": "resource_exhausted",
    "message": f"Quota exceeded at team acme-research (quota {TEAM_QUOTA_ID}): "
    "requested 500, available 392.",
    "blocking_quota_id": TEAM_QUOTA_ID,
    "requested": 500,
    "available": 392,
    "levels": _REFUSED_LEVELS_EXAMPLE,
}
# The same refusal for a key scoped to team acme-research: the organization above
# its scope shows only whether it allowed the request.
_OUTSIDE_LEVEL_EXAMPLE = {"scope": "outside", "allowed": False}
JOB_CONFLICT_EXAMPLE = {
    "error": "conflict",
    "message": f"Job {JOB_ID} already holds an active gpu_hours allocation "
    f"({ALLOCATION_ID}) with different values: user 'alice', 8.",
    "allocation_id": ALLOCATION_ID,
}


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
    """One quota of the allocation path (user → team → organization), as the
    request saw it: its cap, its use and its room, and whether it allows the
    requested amount. After a grant, `used` and `available` include it."""

    quota_id = serializers.UUIDField()
    entity_type = serializers.CharField()
    entity_id = serializers.CharField()
    cap = AmountField(
        integer_digits=20,
        help_text="The effective limit, or the burst cap when `allow_burst` is set "
        "and the quota has a burst limit.",
    )
    used = AmountField(integer_digits=20)
    available = AmountField(integer_digits=20, help_text="max(0, cap − used).")
    allowed = serializers.BooleanField(
        help_text="Whether this level has room for the requested amount."
    )


class OutsideLevelSerializer(serializers.Serializer):
    """A level above the API key's scope: only whether it allows the request; its
    identity and numbers are not the key's to know."""

    scope = serializers.ChoiceField(choices=["outside"])
    allowed = serializers.BooleanField()


@extend_schema_field(
    OneOfSerializer(
        "PathLevel",
        [LevelSerializer, OutsideLevelSerializer],
        description="A level of the path: a full `Level`, or an `OutsideLevel` when "
        "it lies above the API key's scope.",
        many=True,
    )
)
class LevelsField(serializers.ListField):
    """Every level of the path, leaf first: a full ``Level``, or an
    ``OutsideLevel`` above a scoped key's scope (documentation only: the views
    build these answers directly)."""


@extend_schema_serializer(
    examples=[
        OpenApiExample("An allocation", value=_ALLOCATION_EXAMPLE, response_only=True)
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
            value={**_ALLOCATION_EXAMPLE, "warnings": [], "levels": _LEVELS_EXAMPLE},
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
    """Would `requested_value` of a resource type fit for this entity, at every
    level of its path? The same rule as allocate, without writing anything."""


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
                "levels": _REFUSED_LEVELS_EXAMPLE,
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
                    _LEVELS_EXAMPLE[0],
                    {**_LEVELS_EXAMPLE[1], "available": 3392, "used": 608},
                    _OUTSIDE_LEVEL_EXAMPLE,
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


# --- Error bodies of the allocate answers ---------------------------------------------


class QuotaExceededErrorSerializer(ErrorBodySerializer):
    """429 `resource_exhausted`: a level of the path has no room for the amount.
    Names the blocking level, the amount requested and the room left there, and
    reports every level. Above a scoped key's scope nothing is named: the message
    says a quota above your scope has no room, and `blocking_quota_id` and
    `available` are null."""

    blocking_quota_id = serializers.UUIDField(
        allow_null=True,
        help_text="The first level that refuses; null when it lies above the key's "
        "scope.",
    )
    requested = AmountField()
    available = AmountField(
        integer_digits=20,
        allow_null=True,
        help_text="The room left at the blocking level; null when it lies above "
        "the key's scope.",
    )
    levels = LevelsField(
        help_text="Every level of the path, leaf first, before the request; above "
        "a scoped key's scope only `{scope: outside, allowed}`."
    )


class AllocationConflictErrorSerializer(ErrorBodySerializer):
    """409 `conflict` of an allocate: the job already holds an active allocation of
    this resource type with other values (`allocation_id` names it when the key may
    see it), or a row lock timed out (`retry_after`: retry then)."""

    allocation_id = serializers.UUIDField(
        required=False,
        help_text="The job's existing active allocation of this resource type.",
    )
    retry_after = retry_after_field(required=False)


# The one 429 of an allocate: the quota is exhausted, or the key's write rate is.
ALLOCATE_TOO_MANY_REQUESTS = OneOfSerializer(
    "QuotaExceededOrRateLimitedError",
    [QuotaExceededErrorSerializer, RateLimitedErrorSerializer],
    description="The 429 of an allocate: `resource_exhausted` (a `QuotaExceededError`: "
    "the quota has no room) or `rate_limited` (a `RateLimitedError`: the API key's "
    "writes are over their rate).",
)
