"""Shared pieces of the allocation serializers: ids and examples for the schema, the
metadata field, and the levels of a path (a full level or one above the scope)."""

import json
import math
from decimal import Decimal

from drf_spectacular.utils import (
    extend_schema_field,
)
from rest_framework import serializers

from horizon_quota.fields import AmountField
from horizon_quota.schema import (
    OneOfSerializer,
)

METADATA_MAX_BYTES = 16 * 1024
TTL_MAX_SECONDS = 366 * 24 * 3600

# The ids of the examples: one path user alice → team acme-research → organization
# acme, on gpu_hours, and one job's allocation.
USER_QUOTA_ID = "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b"
TEAM_QUOTA_ID = "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19"
ORG_QUOTA_ID = "7c3e5a1b-2d4f-4a6c-9e8b-1f2a3b4c5d6e"
ALLOCATION_ID = "9b2f5d0e-6f4a-4a8e-9c41-2d8e7f1a3b5c"
JOB_ID = "3e1c9a57-0b7d-4c2e-8f6a-1d2c3b4a5e6f"

ALLOCATION_EXAMPLE = {
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
    "rate": None,
}
# The path after the grant of 8 above, leaf first.
LEVELS_EXAMPLE = [
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
REFUSED_LEVELS_EXAMPLE = [
    LEVELS_EXAMPLE[0],
    {**LEVELS_EXAMPLE[1], "allowed": False},
    LEVELS_EXAMPLE[2],
]
QUOTA_EXCEEDED_EXAMPLE = {
    "error": "resource_exhausted",
    "message": f"Quota exceeded at team acme-research (quota {TEAM_QUOTA_ID}): "
    "requested 500, available 392.",
    "blocking_quota_id": TEAM_QUOTA_ID,
    "requested": 500,
    "available": 392,
    "levels": REFUSED_LEVELS_EXAMPLE,
}
# The same refusal for a key scoped to team acme-research: the organization above
# its scope shows only whether it allowed the request.
OUTSIDE_LEVEL_EXAMPLE = {"scope": "outside", "allowed": False}
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
