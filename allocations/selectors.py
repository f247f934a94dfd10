from uuid import UUID

from django.db.models import QuerySet

from allocations.models import Allocation, UsageHistory
from horizon_quota.errors import NotFound


def allocation_list() -> QuerySet[Allocation]:
    return Allocation.objects.all()


def allocation_get(*, allocation_id: UUID) -> Allocation:
    try:
        return Allocation.objects.get(id=allocation_id)
    except Allocation.DoesNotExist:
        raise NotFound(f"Allocation {allocation_id} not found.") from None


def quota_allocation_list(*, quota_id: UUID) -> QuerySet[Allocation]:
    return Allocation.objects.filter(quota_id=quota_id)


def history_list(*, quota_id: UUID) -> QuerySet[UsageHistory]:
    """A quota's history rows; they outlive the quota itself."""
    return UsageHistory.objects.filter(quota_id=quota_id)
