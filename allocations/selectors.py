from uuid import UUID

from django.db import connection
from django.db.models import QuerySet

from allocations.models import Allocation, UsageHistory
from horizon_quota.errors import NotFound
from quotas.access.scoping import Scope, by_quota_in_scope


def allocation_list(*, scope: Scope | None = None) -> QuerySet[Allocation]:
    """Every allocation, or those whose quota is in the key's scope."""
    return by_quota_in_scope(Allocation.objects.all(), scope)


def allocation_get(*, allocation_id: UUID, scope: Scope | None = None) -> Allocation:
    """The allocation; 404 when it does not exist or lies outside the scope."""
    try:
        return allocation_list(scope=scope).get(id=allocation_id)
    except Allocation.DoesNotExist:
        raise NotFound(f"Allocation {allocation_id} not found.") from None


def ensure_allocation_in_scope(allocation_id: UUID, scope: Scope | None) -> None:
    """For release and renew, before anything is written: the allocation's quota
    must exist and lie in the scope, else 404. An allocation never changes quota."""
    if scope is None:
        return
    if not allocation_list(scope=scope).filter(id=allocation_id).exists():
        raise NotFound(f"Allocation {allocation_id} not found.")


def quota_allocation_list(
    *, quota_id: UUID, scope: Scope | None = None
) -> QuerySet[Allocation]:
    return by_quota_in_scope(Allocation.objects.filter(quota_id=quota_id), scope)


def history_list(
    *, quota_id: UUID, scope: Scope | None = None
) -> QuerySet[UsageHistory]:
    """A quota's history rows; they outlive the quota itself (for unscoped keys:
    a scoped key sees only rows of existing quotas in its scope)."""
    return by_quota_in_scope(UsageHistory.objects.filter(quota_id=quota_id), scope)


USAGE_DRIFT_SQL = """
WITH RECURSIVE closure (ancestor, descendant) AS (
    SELECT id, id FROM quotas
    UNION ALL
    SELECT q.parent_id, c.descendant
      FROM closure c JOIN quotas q ON q.id = c.ancestor
     WHERE q.parent_id IS NOT NULL
),
own AS (
    SELECT quota_id, sum(allocated_value) AS total
      FROM allocations WHERE status = 'active' GROUP BY quota_id
),
scope (id) AS (
    SELECT id FROM quotas WHERE %(root)s::uuid IS NULL OR id = %(root)s::uuid
    UNION ALL
    SELECT q.id FROM quotas q JOIN scope s ON q.parent_id = s.id
     WHERE %(root)s::uuid IS NOT NULL
),
actual AS (
    SELECT c.ancestor AS quota_id, coalesce(sum(own.total), 0) AS total
      FROM closure c LEFT JOIN own ON own.quota_id = c.descendant
     GROUP BY c.ancestor
)
SELECT q.id, q.entity_type, q.entity_id, q.resource_type, q.used, actual.total
  FROM quotas q JOIN actual ON actual.quota_id = q.id
 WHERE q.used <> actual.total
   AND q.id IN (SELECT id FROM scope)
 ORDER BY q.depth, q.entity_type, q.entity_id
"""

ORPHANS_SQL = """
SELECT a.id, a.entity_type, a.entity_id, a.resource_type, a.allocated_value
  FROM allocations a LEFT JOIN quotas q ON q.id = a.quota_id
 WHERE a.status = 'active' AND q.id IS NULL
"""


def usage_drift(*, root_id: UUID | None = None) -> list[dict]:
    """Every quota whose stored ``used`` differs from the sum of the active
    allocations in its subtree (promise P2), optionally within one subtree."""
    with connection.cursor() as cursor:
        cursor.execute(USAGE_DRIFT_SQL, {"root": root_id})
        rows = cursor.fetchall()
    return [
        {
            "quota_id": quota_id,
            "entity_type": entity_type,
            "entity_id": entity_id,
            "resource_type": resource_type,
            "stored": stored,
            "actual": actual,
            "delta": stored - actual,
        }
        for quota_id, entity_type, entity_id, resource_type, stored, actual in rows
    ]


def orphan_allocations() -> list[tuple]:
    """Active allocations whose quota no longer exists (counted nowhere)."""
    with connection.cursor() as cursor:
        cursor.execute(ORPHANS_SQL)
        return cursor.fetchall()
