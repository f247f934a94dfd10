from datetime import UTC

import django_filters
from rest_framework.exceptions import ValidationError

from allocations.models import AllocationStatus, HistoryOperation
from quotas.filters import LowerChoiceFilter, ResourceTypeFilter


class AllocationFilter(django_filters.FilterSet):
    """Every status unless ``status`` narrows (``all`` is accepted, as on a quota's
    allocations)."""

    job_id = django_filters.UUIDFilter(field_name="job_id")
    status = LowerChoiceFilter(
        field_name="status", choices=[*AllocationStatus.values, "all"], every="all"
    )
    entity_id = django_filters.CharFilter(field_name="entity_id")
    resource_type = ResourceTypeFilter(field_name="resource_type")


class QuotaAllocationFilter(django_filters.FilterSet):
    """Active allocations by default; ``status=released|expired|all`` widens."""

    status = django_filters.CharFilter(method="filter_status")

    def filter_status(self, queryset, name, value):
        value = (value or "").strip().lower()
        if value == "all":
            return queryset
        if value not in AllocationStatus.values:
            raise ValidationError(
                {
                    "status": [
                        f"Must be one of: {', '.join(AllocationStatus.values)}, all."
                    ]
                }
            )
        return queryset.filter(status=value)

    @property
    def qs(self):
        queryset = super().qs
        if not self.data.get("status"):
            queryset = queryset.filter(status=AllocationStatus.ACTIVE)
        return queryset


class UTCIsoDateTimeFilter(django_filters.IsoDateTimeFilter):
    """An ISO 8601 instant, converted to UTC before it reaches the database: Python
    accepts offsets up to ±23:59, PostgreSQL only up to ±15:59."""

    def filter(self, qs, value):
        if value is not None:
            value = value.astimezone(UTC)
        return super().filter(qs, value)


class HistoryFilter(django_filters.FilterSet):
    since = UTCIsoDateTimeFilter(field_name="timestamp", lookup_expr="gte")
    until = UTCIsoDateTimeFilter(field_name="timestamp", lookup_expr="lt")
    operation = LowerChoiceFilter(
        field_name="operation", choices=HistoryOperation.values
    )
