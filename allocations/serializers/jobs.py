"""Requests and answers of the job endpoints (DESIGN §3b)."""

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from allocations.serializers.allocations import AllocationSerializer
from allocations.serializers.fields import (
    JOB_ID,
    TTL_MAX_SECONDS,
    LevelsField,
    MetadataField,
    UUIDStringField,
)
from horizon_quota.fields import AmountField, LowerChoiceField
from horizon_quota.schema import (
    ErrorBodySerializer,
    OneOfSerializer,
    RateLimitedErrorSerializer,
)
from quotas.models import EntityType

JOB_RESOURCES_EXAMPLE = {"concurrent_gpus": 8, "memory_gb": 512, "gpu_hours": 64}


class AmountsField(serializers.DictField):
    """Resource type → amount."""

    def __init__(self, *, positive: bool = True, **kwargs):
        super().__init__(child=AmountField(positive=positive), **kwargs)


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Eight GPUs, 512 GiB and a 64 GPU-hour estimate for one job",
            value={
                "job_id": JOB_ID,
                "entity_type": "user",
                "entity_id": "alice",
                "resources": JOB_RESOURCES_EXAMPLE,
                "rates": {"gpu_hours": 8},
                "ttl_seconds": 28800,
                "metadata": {"queue": "a100"},
            },
            request_only=True,
        )
    ]
)
class _JobRequestBase(serializers.Serializer):
    # The fields admit and check share, validated alike (a comment, not a
    # docstring: drf-spectacular would show it as a request body's description).

    entity_type = LowerChoiceField(choices=EntityType.values)
    entity_id = serializers.CharField(
        min_length=1, max_length=255, trim_whitespace=False
    )
    resources = AmountsField(
        help_text="Resource type → amount (> 0), 1 to 16 of them; a time-based "
        "amount is the job's estimate, reserved until it is consumed."
    )
    rates = AmountsField(
        required=False,
        default=dict,
        help_text="Time-based resources only: units per hour (8 for eight GPUs on "
        "gpu_hours), used to charge a release without reported values.",
    )
    allow_burst = serializers.BooleanField(required=False, default=False)
    ttl_seconds = serializers.IntegerField(
        required=False,
        allow_null=True,
        default=None,
        min_value=1,
        max_value=TTL_MAX_SECONDS,
        help_text="Lease of every allocation of the job.",
    )
    metadata = MetadataField(required=False, allow_null=True, default=dict)


class JobAdmitSerializer(_JobRequestBase):
    """Admit a job: 1 to 16 resources for one entity, all or nothing."""

    job_id = UUIDStringField()


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Would eight GPUs and 512 GiB fit?",
            value={
                "entity_type": "user",
                "entity_id": "alice",
                "resources": {"concurrent_gpus": 8, "memory_gb": 512},
            },
            request_only=True,
        )
    ]
)
class JobCheckSerializer(_JobRequestBase):
    """Would a job's resources fit? The admission predicate, without writing: the
    body is validated as admit's (less `job_id`), and a value admit refuses is
    refused alike (400); `metadata` and `ttl_seconds` are then ignored."""


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "The job used 40 GPU-hours in all",
            value={"consumed": {"gpu_hours": 40}},
            request_only=True,
        )
    ]
)
class JobReleaseSerializer(serializers.Serializer):
    """Release every active allocation of a job, with final consumptions."""

    consumed = AmountsField(
        positive=False,
        required=False,
        default=dict,
        help_text="Time-based resources only: resource type → what the job consumed "
        "in all. A resource left out is charged rate × hours held, or its whole "
        "reservation.",
    )


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Every lease of the job for another hour",
            value={"ttl_seconds": 3600},
            request_only=True,
        )
    ]
)
class JobRenewSerializer(serializers.Serializer):
    """Renew every active lease of a job: each now ends `ttl_seconds` from now."""

    ttl_seconds = serializers.IntegerField(min_value=1, max_value=TTL_MAX_SECONDS)


class JobResourceSerializer(serializers.Serializer):
    """One resource of a job check or admission."""

    requested = AmountField()
    available = AmountField(integer_digits=20, allow_null=True)
    allowed = serializers.BooleanField()
    levels = LevelsField()


class JobSerializer(serializers.Serializer):
    """A job: the allocations that share its `job_id` (any status)."""

    job_id = serializers.UUIDField()
    entity_type = serializers.CharField()
    entity_id = serializers.CharField()
    status = serializers.ChoiceField(choices=["active", "released", "expired"])
    resources = serializers.DictField(
        child=AmountField(),
        help_text="What the job holds per resource type (its active allocations, or "
        "the latest ones when none is active).",
    )
    consumed = serializers.DictField(
        child=AmountField(), help_text="What it consumed per resource type."
    )
    allocations = AllocationSerializer(many=True)


class JobAdmissionSerializer(JobSerializer):
    """An admitted job, with every resource's levels and the soft-limit warnings."""

    warnings = serializers.ListField(child=serializers.CharField())
    levels = serializers.DictField(
        child=LevelsField(), help_text="Resource type → its levels, leaf first."
    )


class JobCheckResultSerializer(serializers.Serializer):
    """Whether a job's resources fit, and every resource's levels."""

    allowed = serializers.BooleanField()
    reason = serializers.CharField(allow_null=True)
    blocking_resource = serializers.CharField(allow_null=True)
    blocking_quota_id = serializers.UUIDField(allow_null=True)
    warnings = serializers.ListField(child=serializers.CharField())
    resources = serializers.DictField(child=JobResourceSerializer())


class JobRefusedErrorSerializer(ErrorBodySerializer):
    """429 `resource_exhausted` of an admission: a level of one resource's path has
    no room. Names the resource and the blocking level (nothing above a scoped
    key's scope), and reports every resource."""

    resource_type = serializers.CharField()
    blocking_quota_id = serializers.UUIDField(allow_null=True)
    requested = AmountField()
    available = AmountField(integer_digits=20, allow_null=True)
    levels = LevelsField()
    resources = serializers.DictField(child=JobResourceSerializer())


class JobConflictErrorSerializer(ErrorBodySerializer):
    """409 `conflict` of an admission: the job holds active allocations of another
    set (named by `allocation_ids` when the key may see them)."""

    allocation_ids = serializers.ListField(
        child=serializers.UUIDField(), required=False
    )


# The one 429 of an admission: a resource has no room, or the key's write rate.
ADMIT_TOO_MANY_REQUESTS = OneOfSerializer(
    "JobRefusedOrRateLimitedError",
    [JobRefusedErrorSerializer, RateLimitedErrorSerializer],
    description="The 429 of an admission: `resource_exhausted` (a `JobRefusedError`: "
    "a resource has no room) or `rate_limited` (a `RateLimitedError`: the API key's "
    "writes are over their rate).",
)
