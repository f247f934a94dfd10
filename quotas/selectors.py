from uuid import UUID

from django.db.models import QuerySet, Sum

from horizon_quota.errors import InvalidInput, NotFound
from quotas.access.scoping import Scope, by_quota_in_scope, quotas_in_scope
from quotas.models import ClosedPeriod, Quota, QuotaChange, ResourceType


def quota_list(*, scope: Scope | None = None) -> QuerySet[Quota]:
    """Every quota, or those in the key's scope (quotas/access/scoping.py)."""
    return quotas_in_scope(Quota.objects.select_related("resource_type"), scope)


def quota_get(*, quota_id: UUID, scope: Scope | None = None) -> Quota:
    """The quota; 404 when it does not exist or lies outside the scope."""
    try:
        return quota_list(scope=scope).get(id=quota_id)
    except Quota.DoesNotExist:
        raise NotFound(f"Quota {quota_id} not found.") from None


def quota_path(*, quota: Quota) -> list[Quota]:
    """The quota and its ancestors, leaf first."""
    by_id = {q.id: q for q in Quota.objects.filter(id__in=quota.path)}
    return [by_id[quota_id] for quota_id in quota.path]


def quota_change_list(
    *, quota_id: UUID, scope: Scope | None = None
) -> QuerySet[QuotaChange]:
    """A quota's audit trail; it outlives the quota itself (for unscoped keys)."""
    return by_quota_in_scope(QuotaChange.objects.filter(quota_id=quota_id), scope)


def quota_has_existed(*, quota_id: UUID, scope: Scope | None = None) -> bool:
    """Whether the quota exists, or existed and left an audit trail behind. For a
    scoped key: whether it exists in the scope (a deleted quota's trail is for
    unscoped keys only)."""
    if scope is not None:
        return quota_list(scope=scope).filter(id=quota_id).exists()
    return (
        Quota.objects.filter(id=quota_id).exists()
        or QuotaChange.objects.filter(quota_id=quota_id).exists()
    )


def children_limit_sum(*, parent_id: UUID, exclude_id: UUID | None = None):
    children = Quota.objects.filter(parent_id=parent_id)
    if exclude_id is not None:
        children = children.exclude(id=exclude_id)
    return children.aggregate(total=Sum("limit_value"))["total"] or 0


def resource_type_get(*, slug: str) -> ResourceType:
    normalized = (slug or "").strip().lower()
    try:
        return ResourceType.objects.get(slug=normalized)
    except ResourceType.DoesNotExist:
        valid = ", ".join(ResourceType.objects.values_list("slug", flat=True))
        raise InvalidInput(
            f"Unknown resource_type {slug!r}; valid: {valid}.",
            fields={"resource_type": [f"Unknown resource type. Valid: {valid}."]},
        ) from None


def time_based_slugs(*, slugs) -> set[str]:
    """Which of these resource types are time-based (the others are concurrent or
    unknown)."""
    return set(
        ResourceType.objects.filter(
            slug__in=list(slugs), kind=ResourceType.Kind.TIME_BASED
        ).values_list("slug", flat=True)
    )


def closed_period_list(
    *, quota_id: UUID, scope: Scope | None = None
) -> QuerySet[ClosedPeriod]:
    """A budget's closed periods; like history, they outlive the quota (for
    unscoped keys)."""
    return by_quota_in_scope(ClosedPeriod.objects.filter(quota_id=quota_id), scope)
