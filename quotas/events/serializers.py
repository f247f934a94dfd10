from drf_spectacular.utils import OpenApiExample, extend_schema_serializer
from rest_framework import serializers

from quotas.events.models import Event


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
    data = serializers.DictField()

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
