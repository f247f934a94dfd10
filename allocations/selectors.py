from datetime import timedelta
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


# Quotas deleted since: their rows are gone, but their history stays and their
# consumption was charged to their ancestors' periods, so they still belong to their
# ancestors' subtrees. Their parent comes from the audit trail (the delete entry's
# old parent_id). A quota deleted without an audit entry is not known here.
GONE_SQL = """
gone (id, parent_id) AS MATERIALIZED (
    SELECT c.quota_id, (c.changes -> 'parent_id' ->> 0)::uuid
      FROM quota_changes c
     WHERE c.action = 'delete'
       AND NOT EXISTS (SELECT 1 FROM quotas q WHERE q.id = c.quota_id)
)"""

# P2 and P2 for budgets (DESIGN §4), for every quota or one subtree: ``reserved``
# is the sum of what the subtree's active allocations have not consumed;
# ``consumed`` is the sum of the subtree's history since the quota's period start
# (time-based resources only: a concurrent resource consumes nothing).
#
# A row's ancestors come from its quota's ``path`` (the quota and its ancestors),
# so the work is one pass over the active allocations and one over the history rows
# that consumed something, hashed against ``quotas``: no closure of the whole tree,
# whose size the planner cannot estimate (on DESIGN §8's size a closure-based plan
# ran for many minutes). A deleted quota's rows count for the ancestors it had: up
# its deleted parents (the audit trail) to the first quota that still exists, then
# that one's path.
USAGE_DRIFT_SQL = f"""
WITH RECURSIVE {GONE_SQL},
gone_chain (id, up) AS (
    SELECT id, parent_id FROM gone
    UNION ALL
    SELECT c.id, g.parent_id FROM gone_chain c JOIN gone g ON g.id = c.up
),
paths (id, path) AS (
    SELECT id, path FROM quotas
    UNION ALL
    SELECT c.id, q.path FROM gone_chain c JOIN quotas q ON q.id = c.up
),
held AS (
    SELECT quota_id, sum(greatest(0, allocated_value - consumed_value)) AS total
      FROM allocations WHERE status = 'active' GROUP BY quota_id
),
reserved AS (
    SELECT a.id AS quota_id, sum(held.total) AS total
      FROM held
      JOIN paths p ON p.id = held.quota_id
     CROSS JOIN LATERAL unnest(p.path) AS a (id)
     GROUP BY a.id
),
spent AS (
    SELECT quota_id, timestamp, consumed_delta
      FROM usage_history WHERE consumed_delta <> 0
),
consumed AS (
    SELECT q.id AS quota_id, sum(s.consumed_delta) AS total
      FROM spent s
      JOIN paths p ON p.id = s.quota_id
     CROSS JOIN LATERAL unnest(p.path) AS a (id)
      JOIN quotas q ON q.id = a.id
      JOIN resource_types rt ON rt.slug = q.resource_type AND rt.kind = 'time_based'
     WHERE s.timestamp >= coalesce(q.period_start, '-infinity')
     GROUP BY q.id
),
scope (id) AS (
    SELECT id FROM quotas WHERE %(root)s::uuid IS NULL OR id = %(root)s::uuid
    UNION ALL
    SELECT q.id FROM quotas q JOIN scope s ON q.parent_id = s.id
     WHERE %(root)s::uuid IS NOT NULL
)
SELECT q.id, q.entity_type, q.entity_id, q.resource_type,
       q.reserved, coalesce(reserved.total, 0), q.consumed, coalesce(consumed.total, 0)
  FROM quotas q
  LEFT JOIN reserved ON reserved.quota_id = q.id
  LEFT JOIN consumed ON consumed.quota_id = q.id
 WHERE (q.reserved <> coalesce(reserved.total, 0)
        OR q.consumed <> coalesce(consumed.total, 0))
   AND q.id IN (SELECT id FROM scope)
 ORDER BY q.depth, q.entity_type, q.entity_id
"""

ORPHANS_SQL = """
SELECT a.id, a.entity_type, a.entity_id, a.resource_type, a.allocated_value
  FROM allocations a LEFT JOIN quotas q ON q.id = a.quota_id
 WHERE a.status = 'active' AND q.id IS NULL
"""


def usage_drift(*, root_id: UUID | None = None) -> list[dict]:
    """Every quota whose stored ``reserved`` or ``consumed`` differs from what its
    subtree's allocations and history say (P2, both forms), optionally within one
    subtree. ``stored``, ``actual`` and ``delta`` are of ``used`` (their sum)."""
    with connection.cursor() as cursor:
        cursor.execute(USAGE_DRIFT_SQL, {"root": root_id})
        rows = cursor.fetchall()
    return [
        drift_row(
            quota_id=quota_id,
            entity_type=entity_type,
            entity_id=entity_id,
            resource_type=resource_type,
            stored_reserved=stored_reserved,
            actual_reserved=actual_reserved,
            stored_consumed=stored_consumed,
            actual_consumed=actual_consumed,
        )
        for (
            quota_id,
            entity_type,
            entity_id,
            resource_type,
            stored_reserved,
            actual_reserved,
            stored_consumed,
            actual_consumed,
        ) in rows
    ]


def drift_row(**values) -> dict:
    """One drift: the quota, both forms stored and actual, and ``used``."""
    stored = values["stored_reserved"] + values["stored_consumed"]
    actual = values["actual_reserved"] + values["actual_consumed"]
    return {**values, "stored": stored, "actual": actual, "delta": stored - actual}


def orphan_allocations() -> list[tuple]:
    """Active allocations whose quota no longer exists (counted nowhere)."""
    with connection.cursor() as cursor:
        cursor.execute(ORPHANS_SQL)
        return cursor.fetchall()


# --- the admin's pictures of history (issue 14) -------------------------------------

# A quota's subtree: its own id is in the path of every descendant (and its own),
# answered by quotas_path_gin.
SUBTREE_SQL = "SELECT id FROM quotas WHERE path @> ARRAY[%(quota)s]::uuid[]"

# What each history row of a subtree did to ``reserved`` and ``consumed``, summed per
# time bucket (date_bin) on the database side: at most ``buckets`` rows whatever
# the size of the history. Only the rows after ``start`` are read
# (history_quota_idx: quota_id, -timestamp, for each quota of the subtree).
#
# A row's change of ``reserved`` follows the engine (hq_consume.sql,
# hq_release.sql): an allocate reserves its value; a consume takes its increment
# out of what remains of the reservation; a release or expiry returns whatever
# remains. What remained before a row is the allocation's value less what it had
# consumed before the row: its final ``consumed_value`` less the increments of this
# row and every later one (all of which lie after ``start`` too).
USAGE_SERIES_SQL = f"""
WITH subtree AS MATERIALIZED ({SUBTREE_SQL}),
rows AS (
    SELECT h.timestamp, h.operation, h.consumed_delta,
           coalesce(a.allocated_value, h.allocated_value) AS allocated,
           coalesce(a.consumed_value, 0)
             - sum(h.consumed_delta) OVER (
                   PARTITION BY h.allocation_id ORDER BY h.timestamp DESC, h.id DESC
                   ROWS UNBOUNDED PRECEDING) AS consumed_before
      FROM usage_history h
      LEFT JOIN allocations a ON a.id = h.allocation_id
     WHERE h.quota_id IN (SELECT id FROM subtree)
       AND h.timestamp > %(start)s AND h.timestamp <= %(end)s
)
SELECT date_bin(%(width)s, timestamp, %(start)s) AS bucket,
       sum(CASE operation
           WHEN 'allocate' THEN allocated
           WHEN 'consume' THEN
               -least(consumed_delta, greatest(0, allocated - consumed_before))
           ELSE -greatest(0, allocated - consumed_before)
       END) AS reserved_change,
       sum(consumed_delta) AS consumed_change,
       count(*) AS operations
  FROM rows
 GROUP BY 1
 ORDER BY 1
"""


def usage_series(
    *, quota, start, end, buckets: int = 60
) -> list[tuple[object, object, object]]:
    """``(moment, reserved, consumed)`` of the quota over (start, end]: one point at
    ``start`` and one at the end of every time bucket that saw a change, at most
    ``buckets`` + 1 points, whatever the size of the history.

    The books are walked back from the quota's current ``reserved`` and
    ``consumed``, so ``end`` is now. A budget's ``consumed`` starts afresh with
    each period: ``start`` must not lie before its current period's start.
    History of deleted descendants is not read (their quotas are gone from the
    tree).
    """
    width = max((end - start) / buckets, timedelta(seconds=1))
    with connection.cursor() as cursor:
        cursor.execute(
            USAGE_SERIES_SQL,
            {"quota": quota.id, "start": start, "end": end, "width": width},
        )
        changes = cursor.fetchall()
    reserved, consumed = quota.reserved, quota.consumed
    points = []
    for bucket, reserved_change, consumed_change, _ in reversed(changes):
        points.append((min(bucket + width, end), reserved, consumed))
        reserved -= reserved_change
        consumed -= consumed_change
    points.append((start, reserved, consumed))
    points.reverse()
    return points


# The latest rows of each quota of the subtree (an index range of
# history_quota_idx each), then the latest of those: at most ``limit`` rows per
# quota are read, however long the history.
SUBTREE_HISTORY_SQL = f"""
SELECT h.*
  FROM ({SUBTREE_SQL}) AS subtree
 CROSS JOIN LATERAL (
       SELECT * FROM usage_history
        WHERE quota_id = subtree.id AND timestamp >= %(since)s
        ORDER BY timestamp DESC, id DESC
        LIMIT %(limit)s) AS h
 ORDER BY h.timestamp DESC, h.id DESC
 LIMIT %(limit)s
"""


def subtree_history(*, quota, since, limit: int) -> list[UsageHistory]:
    """The latest ``limit`` history rows of the quota's subtree (history lives on
    the quotas allocations are made on, the users'). A user's own rows are an index
    range (history_quota_idx), whatever their age; a subtree's are read since
    ``since`` only, through quotas_path_gin and then history_quota_idx per quota,
    so the cost follows the subtree, not the size of the history."""
    if quota.entity_type == "user":
        rows = UsageHistory.objects.filter(quota_id=quota.id)
        return list(rows.order_by("-timestamp", "-id")[:limit])
    return list(
        UsageHistory.objects.raw(
            SUBTREE_HISTORY_SQL, {"quota": quota.id, "since": since, "limit": limit}
        )
    )
