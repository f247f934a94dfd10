"""The error bodies of the allocate answers, typed for generated clients."""

from rest_framework import serializers

from allocations.serializers.fields import (
    LevelsField,
)
from horizon_quota.fields import AmountField
from horizon_quota.schema import (
    ErrorBodySerializer,
    OneOfSerializer,
    RateLimitedErrorSerializer,
    retry_after_field,
)

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
