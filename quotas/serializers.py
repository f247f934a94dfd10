from decimal import Decimal

from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from horizon_quota.fields import AmountField, LowerChoiceField
from quotas.models import BudgetPeriod, ClosedPeriod, EntityType, Quota, QuotaChange


def _thresholds_field(**kwargs):
    return serializers.ListField(
        child=AmountField(integer_digits=4, places=2),
        allow_null=True,
        help_text="Percents of the cap at which the quota raises "
        "`quota.threshold_crossed` events (DESIGN §7a): above 0, at most 1000, each "
        "once, at most ten; null for the server's ALERT_THRESHOLDS, [] for none.",
        **kwargs,
    )


def _ratio_field(**kwargs):
    return AmountField(
        integer_digits=3,
        places=2,
        minimum=Decimal("1"),
        maximum=Decimal("999.99"),
        **kwargs,
    )


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A team quota",
            value={
                "id": "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19",
                "entity_type": "team",
                "entity_id": "acme-research",
                "parent_id": "7c3e5a1b-2d4f-4a6c-9e8b-1f2a3b4c5d6e",
                "resource_type": "gpu_hours",
                "limit_value": 4000,
                "soft_limit": 3500,
                "burst_limit": 4500,
                "overcommit_ratio": 1,
                "period": "month",
                "carryover_limit": 500,
                "alert_thresholds": [50, 80, 100],
                "period_start": "2026-11-01T00:00:00Z",
                "period_end": "2026-12-01T00:00:00Z",
                "reserved": 250.5,
                "consumed": 1000,
                "carried_over": 120,
                "effective_limit": 4120,
                "used": 1250.5,
                "available": 2869.5,
                "version": 3,
                "created_at": "2026-11-27T08:00:00Z",
                "updated_at": "2026-11-27T09:30:00Z",
            },
            response_only=True,
        )
    ]
)
class QuotaSerializer(serializers.ModelSerializer):
    """A quota: one entity's limits on one resource type, with its use. `used`
    counts every active allocation in the quota's whole subtree;
    `effective_limit = limit_value × overcommit_ratio` and
    `available = max(0, effective_limit − used)`."""

    resource_type = serializers.CharField(source="resource_type_id")
    parent_id = serializers.UUIDField(allow_null=True)
    limit_value = AmountField()
    soft_limit = AmountField(allow_null=True)
    burst_limit = AmountField(allow_null=True)
    overcommit_ratio = _ratio_field()
    carryover_limit = AmountField()
    alert_thresholds = _thresholds_field()
    reserved = AmountField(
        integer_digits=20,
        help_text="Held by the subtree's active allocations and not yet consumed.",
    )
    consumed = AmountField(
        integer_digits=20,
        help_text="Consumed by the subtree in the current period (time-based "
        "resources; 0 otherwise).",
    )
    carried_over = AmountField(
        help_text="Unused budget brought into this period; it adds to the limits."
    )
    effective_limit = AmountField(
        integer_digits=20,
        help_text="(limit_value + carried_over) × overcommit_ratio.",
    )
    used = AmountField(integer_digits=20, help_text="reserved + consumed.")
    available = AmountField(integer_digits=20)

    class Meta:
        model = Quota
        fields = [
            "id",
            "entity_type",
            "entity_id",
            "parent_id",
            "resource_type",
            "limit_value",
            "soft_limit",
            "burst_limit",
            "overcommit_ratio",
            "period",
            "carryover_limit",
            "alert_thresholds",
            "period_start",
            "period_end",
            "reserved",
            "consumed",
            "carried_over",
            "effective_limit",
            "used",
            "available",
            "version",
            "created_at",
            "updated_at",
        ]
        read_only_fields = fields


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Create a team quota under an organization",
            value={
                "entity_type": "team",
                "entity_id": "acme-research",
                "parent_id": "7c3e5a1b-2d4f-4a6c-9e8b-1f2a3b4c5d6e",
                "resource_type": "gpu_hours",
                "limit_value": 4000,
                "soft_limit": 3500,
                "burst_limit": 4500,
            },
            request_only=True,
        )
    ]
)
class QuotaCreateSerializer(serializers.Serializer):
    """A new quota for an entity on a resource type. A team's parent is an
    organization's quota, a user's parent a team's; a quota without a parent may be
    of any type. The hierarchy rules are checked before anything is written."""

    entity_type = LowerChoiceField(choices=EntityType.values)
    entity_id = serializers.CharField(
        min_length=1, max_length=255, trim_whitespace=False
    )
    resource_type = serializers.CharField(max_length=50)
    parent_id = serializers.UUIDField(required=False, allow_null=True, default=None)
    limit_value = AmountField()
    soft_limit = AmountField(required=False, allow_null=True, default=None)
    burst_limit = AmountField(required=False, allow_null=True, default=None)
    # null means the default, as the Rust service's clients send an absent option.
    overcommit_ratio = _ratio_field(required=False, allow_null=True, default=None)
    period = LowerChoiceField(
        choices=BudgetPeriod.choices,
        required=False,
        default=BudgetPeriod.NONE,
        help_text="Time-based resources only: how often the budget starts afresh "
        "(calendar periods in BUDGET_TIMEZONE); none is a lifetime budget.",
    )
    carryover_limit = AmountField(
        required=False,
        default=Decimal("0"),
        help_text="Time-based resources only: how much unused budget moves into the "
        "next period (at most limit_value).",
    )
    alert_thresholds = _thresholds_field(required=False, default=None)

    def validate_overcommit_ratio(self, value):
        return Decimal("1") if value is None else value

    def validate_entity_id(self, value):
        if not value.strip():
            raise serializers.ValidationError("Must not be blank.")
        if "\x00" in value:
            raise serializers.ValidationError("Must not contain NUL characters.")
        return value


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "Raise a limit and clear the burst limit",
            value={"limit_value": 5000, "burst_limit": None},
            request_only=True,
        )
    ]
)
class QuotaUpdateSerializer(serializers.Serializer):
    """A change to a quota's limits. Every field is optional: absent means unchanged,
    `null` clears the soft or burst limit. Identity fields may be repeated with their
    current value; any other value is refused (they never change)."""

    # null for limit_value or overcommit_ratio means "unchanged" (the Rust service's
    # clients send absent options as null); null clears soft_limit and burst_limit.
    limit_value = AmountField(required=False, allow_null=True)
    soft_limit = AmountField(required=False, allow_null=True)
    burst_limit = AmountField(required=False, allow_null=True)
    overcommit_ratio = _ratio_field(required=False, allow_null=True)
    period = LowerChoiceField(choices=BudgetPeriod.choices, required=False)
    carryover_limit = AmountField(required=False)
    alert_thresholds = _thresholds_field(required=False)
    force = serializers.BooleanField(required=False, default=False)
    version = serializers.IntegerField(
        required=False,
        min_value=1,
        help_text="Optional optimistic-concurrency check: refused with 409 when the "
        "quota is no longer at this version.",
    )
    parent_id = serializers.UUIDField(required=False, allow_null=True)
    entity_type = LowerChoiceField(choices=EntityType.values, required=False)
    entity_id = serializers.CharField(required=False, trim_whitespace=False)
    resource_type = serializers.CharField(required=False)

    def validate(self, attrs):
        for unchanged_when_null in ("limit_value", "overcommit_ratio"):
            if attrs.get(unchanged_when_null, 0) is None:
                del attrs[unchanged_when_null]
        quota = self.context["quota"]
        current = {
            "parent_id": quota.parent_id,
            "entity_type": quota.entity_type,
            "entity_id": quota.entity_id,
            "resource_type": quota.resource_type_id,
        }
        errors = {}
        for field, value in current.items():
            if field not in attrs:
                continue
            sent = attrs.pop(field)
            if field == "resource_type" and isinstance(sent, str):
                sent = sent.strip().lower()
            if sent != value:
                errors[field] = [f"{field} cannot change after creation."]
        if errors:
            raise serializers.ValidationError(errors)
        return attrs


class UsageSerializer(serializers.Serializer):
    """A quota's usage statistics (its whole subtree). `utilization_percent` is
    usage / effective_limit × 100, uncapped; 0 when the effective limit is 0. A
    budget (time-based resource) adds its period, what it holds in reserve and has
    consumed, and when it is projected to run out."""

    quota_id = serializers.UUIDField(source="id")
    entity_type = serializers.CharField()
    entity_id = serializers.CharField()
    resource_type = serializers.CharField(source="resource_type_id")
    limit = AmountField(source="limit_value")
    effective_limit = AmountField(integer_digits=20)
    usage = AmountField(source="used", integer_digits=20)
    available = AmountField(integer_digits=20)
    utilization_percent = AmountField(integer_digits=20, places=2)
    reserved = AmountField(integer_digits=20)
    consumed = AmountField(integer_digits=20)
    carried_over = AmountField()
    period = serializers.CharField()
    period_start = serializers.DateTimeField(allow_null=True)
    period_end = serializers.DateTimeField(allow_null=True)
    projected_exhaustion = serializers.DateTimeField(
        allow_null=True,
        help_text="When usage reaches the cap at this period's average rate of "
        "consumption; null when it will not before the period ends.",
    )


class ClosedPeriodSerializer(serializers.ModelSerializer):
    """A budget period that has ended, as it stood when it closed."""

    quota_id = serializers.UUIDField(read_only=True)
    limit_value = AmountField()
    carried_over = AmountField(help_text="What the period began with.")
    consumed = AmountField(integer_digits=20)
    carried_forward = AmountField(help_text="What it handed on to the next period.")

    class Meta:
        model = ClosedPeriod
        fields = [
            "id",
            "quota_id",
            "entity_type",
            "entity_id",
            "resource_type",
            "period",
            "period_start",
            "period_end",
            "limit_value",
            "carried_over",
            "consumed",
            "carried_forward",
            "closed_at",
        ]
        read_only_fields = fields


@extend_schema_serializer(
    examples=[
        OpenApiExample(
            "A limit raised with an admin key",
            value={
                "id": 1042,
                "quota_id": "0d2b7c8a-1e9f-4c6b-8a7d-6e5f4c3b2a19",
                "entity_type": "team",
                "entity_id": "acme-research",
                "resource_type": "gpu_hours",
                "action": "update",
                "actor_type": "api_key",
                "actor_id": "7",
                "actor_name": "ops-console",
                "changes": {
                    "limit_value": ["4000", "5000"],
                    "burst_limit": ["4500", None],
                },
                "reason": "Q4 training push, approved in OPS-1234",
                "created_at": "2026-11-27T09:30:00.123456Z",
            },
            response_only=True,
        )
    ]
)
class QuotaChangeSerializer(serializers.ModelSerializer):
    """One entry of a quota's audit trail."""

    quota_id = serializers.UUIDField(read_only=True)
    changes = serializers.DictField(
        read_only=True,
        child=serializers.ListField(
            child=serializers.CharField(allow_null=True), min_length=2, max_length=2
        ),
        help_text="Field → [old, new]. Amounts are exact decimal strings; null means "
        "none (a create has no old values, a delete no new ones).",
    )

    class Meta:
        model = QuotaChange
        fields = [
            "id",
            "quota_id",
            "entity_type",
            "entity_id",
            "resource_type",
            "action",
            "actor_type",
            "actor_id",
            "actor_name",
            "changes",
            "reason",
            "created_at",
        ]
        read_only_fields = fields
