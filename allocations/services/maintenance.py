"""Operations on the books: reconcile ``used`` with the allocations, expire leases.

Both are safe to run during live traffic and in several processes at once: a
repair takes the allocation path's row locks (``quotas.locking``) and recomputes
under them; the sweeper claims one allocation at a time with ``SKIP LOCKED``.
"""

from collections.abc import Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from django.db import connection, transaction
from django.db.models.functions import Now

from allocations.engine import budget_timezone
from allocations.exceptions import NotFound
from allocations.models import Allocation, AllocationStatus, UsageRepair
from allocations.selectors import GONE_SQL, usage_drift
from allocations.services.allocations import allocation_expire
from quotas.events.models import EventType
from quotas.events.services import (
    alert_thresholds,
    quota_event,
    raise_alerts,
    record_events,
)
from quotas.locking import lock_quotas
from quotas.models import Quota


@dataclass
class ReconcileResult:
    run_id: UUID
    # Every drifted quota as the report found it (allocations.selectors.usage_drift).
    drifts: list[dict[str, Any]]
    # The repairs written, with the values found under the lock; a quota whose
    # drift had vanished by the time it was locked has none.
    repairs: list[UsageRepair]
    fixed: bool


# Both LATERAL subqueries keep the work proportional to the subtree: the planner
# cannot estimate a recursive term and would otherwise hash the whole quotas and
# allocations tables even for a batch of leaves (OFFSET 0 stops it from flattening
# the first one back into such a join). Each quota's own allocations are then read
# through the partial index of active allocations by quota, its history through
# history_quota_idx from the top's period start (time-based resources only).
SUBTREE_TOTALS_SQL = f"""
WITH RECURSIVE {GONE_SQL},
subtree (top, id) AS (
    SELECT id, id FROM quotas WHERE id = ANY (%s::uuid[])
    UNION ALL
    SELECT s.top, child.id
      FROM subtree s
     CROSS JOIN LATERAL (
           SELECT q.id FROM quotas q WHERE q.parent_id = s.id
           UNION ALL
           SELECT g.id FROM gone g WHERE g.parent_id = s.id
           OFFSET 0
           ) child
)
SELECT s.top, coalesce(sum(own.held), 0), coalesce(sum(spent.total), 0)
  FROM subtree s
  JOIN quotas t ON t.id = s.top
  JOIN resource_types rt ON rt.slug = t.resource_type
 CROSS JOIN LATERAL (
       SELECT sum(greatest(0, a.allocated_value - a.consumed_value)) AS held
         FROM allocations a
        WHERE a.quota_id = s.id AND a.status = 'active'
       ) own
 CROSS JOIN LATERAL (
       SELECT sum(h.consumed_delta) AS total
         FROM usage_history h
        WHERE rt.kind = 'time_based' AND h.quota_id = s.id
          AND h.timestamp >= coalesce(t.period_start, '-infinity')
       ) spent
 GROUP BY s.top
"""


SET_BOOKS_SQL = """
UPDATE quotas q SET reserved = repair.reserved, consumed = repair.consumed
  FROM unnest(%s::uuid[], %s::numeric[], %s::numeric[])
       AS repair (id, reserved, consumed)
 WHERE q.id = repair.id
"""


def subtree_totals(quota_ids: list[UUID]) -> dict[UUID, tuple[Decimal, Decimal]]:
    """(reserved, consumed) of each quota's whole subtree, from its active
    allocations and its history since the quota's period start."""
    with connection.cursor() as cursor:
        cursor.execute(SUBTREE_TOTALS_SQL, [quota_ids])
        return {top: (held, spent) for top, held, spent in cursor.fetchall()}


def _usage_repair_batch(*, run_id: UUID, quota_ids: list[UUID]) -> list[UsageRepair]:
    """Set ``reserved`` and ``consumed`` to the true subtree totals of each quota, in
    one short transaction.

    The report was read without locks, and allocations may have committed since. So
    the totals are computed again here, after the locks are taken: every allocate,
    consume and release that touches a quota's subtree also updates the quota
    itself (the path runs to the root), so while we hold the quota's row none of
    them can commit, and one that committed before is both in the row we locked and
    in the allocation and history rows the next statement reads (one still in
    flight wrote its history row uncommitted, invisible to us, and charges the row
    after our commit). The two agree exactly.
    """
    with transaction.atomic(durable=True):
        # The same locks as the allocation path, in the one global order.
        locked = lock_quotas(quota_ids)
        # A quota deleted since the report is simply absent: nothing to repair.
        totals = subtree_totals(list(locked))
        repairs, repaired = [], []
        for quota in locked.values():
            reserved, consumed = totals[quota.id]
            if (quota.reserved, quota.consumed) == (reserved, consumed):
                continue  # another run repaired it after our report
            stored, actual = quota.used, reserved + consumed
            repairs.append(
                UsageRepair(
                    run_id=run_id,
                    quota_id=quota.id,
                    entity_type=quota.entity_type,
                    entity_id=quota.entity_id,
                    resource_type=quota.resource_type_id,
                    stored=stored,
                    actual=actual,
                    delta=stored - actual,
                    stored_reserved=quota.reserved,
                    actual_reserved=reserved,
                    stored_consumed=quota.consumed,
                    actual_consumed=consumed,
                )
            )
            repaired.append((quota.id, reserved, consumed))
        if repaired:
            # One statement for the batch; its rows are all locked already, so it
            # takes no new lock and cannot upset the order.
            with connection.cursor() as cursor:
                ids, reserved, consumed = zip(*repaired, strict=True)
                cursor.execute(
                    SET_BOOKS_SQL, [list(ids), list(reserved), list(consumed)]
                )
            UsageRepair.objects.bulk_create(repairs)
            # The books changed: say so (DESIGN §7a), with the alerts of the
            # usage each quota now has; the rows are still locked.
            record_events(
                [
                    quota_event(
                        EventType.USAGE_REPAIRED,
                        locked[repair.quota_id],
                        run_id=str(run_id),
                        stored=repair.stored,
                        actual=repair.actual,
                        stored_reserved=repair.stored_reserved,
                        actual_reserved=repair.actual_reserved,
                        stored_consumed=repair.stored_consumed,
                        actual_consumed=repair.actual_consumed,
                    )
                    for repair in repairs
                ]
            )
            raise_alerts(ids)
    return repairs


def recompute_consumed_on_period_change(sender, *, quota, **kwargs) -> None:
    """Receiver of ``quotas.services.quota_period_changed``: a budget whose period
    changed starts its new period at once, and its ``consumed`` is its subtree's
    consumption since the new period's start (P2 for budgets). The quota's row is
    locked by the change, so no charge can come in between."""
    _, consumed = subtree_totals([quota.id])[quota.id]
    Quota.objects.filter(id=quota.id).update(consumed=consumed)


def _repair_batches(quota_ids: list[UUID], *, batch_size: int) -> list[list[UUID]]:
    """Leaves in batches of ``batch_size``; then every quota with children alone,
    deepest first. Such a quota's recompute reads its whole subtree while its row,
    which every allocation under it needs, is locked: no other quota's work may
    lengthen that."""
    depths = dict(Quota.objects.filter(id__in=quota_ids).values_list("id", "depth"))
    parents = set(
        Quota.objects.filter(parent_id__in=quota_ids)
        .values_list("parent_id", flat=True)
        .distinct()
    )
    leaves = [quota_id for quota_id in quota_ids if quota_id not in parents]
    inner = sorted(parents, key=lambda quota_id: (-depths[quota_id], str(quota_id)))
    return [
        leaves[start : start + batch_size]
        for start in range(0, len(leaves), batch_size)
    ] + [[quota_id] for quota_id in inner]


def usage_reconcile(
    *,
    root_id: UUID | None = None,
    fix: bool = False,
    batch_size: int = 100,
    dry_run: bool = False,
    on_progress: Callable[[int, int], None] | None = None,
) -> ReconcileResult:
    """Report every quota whose books differ from its subtree's allocations and
    history (P2, both forms: ``reserved`` and ``consumed``) and, with ``fix``,
    repair them in batches, recording each repair as a ``UsageRepair`` of one run.
    ``dry_run`` writes nothing even with ``fix``. ``on_progress(done, total)`` is
    called after each batch."""
    if root_id is not None and not Quota.objects.filter(id=root_id).exists():
        raise NotFound(f"Quota {root_id} not found.")
    drifts = usage_drift(root_id=root_id)
    run_id = uuid4()
    repairs: list[UsageRepair] = []
    fixed = fix and not dry_run
    if fixed:
        total = len(drifts)
        done = 0
        for batch in _repair_batches(
            [drift["quota_id"] for drift in drifts], batch_size=batch_size
        ):
            repairs += _usage_repair_batch(run_id=run_id, quota_ids=batch)
            done += len(batch)
            if on_progress is not None:
                on_progress(done, total)
    return ReconcileResult(run_id=run_id, drifts=drifts, repairs=repairs, fixed=fixed)


# now() is the transaction's start time: the same clock hq_release's own check reads
# later in the transaction (Django's Now() is the statement's time, a little later).
CLAIM_DUE_SQL = """
SELECT id FROM allocations
 WHERE status = 'active' AND expires_at <= now()
 ORDER BY expires_at
 LIMIT 1
   FOR UPDATE SKIP LOCKED
"""


def _expire_one() -> bool:
    """Claim one allocation whose lease has run out and expire it; False when no
    unclaimed one is left."""
    with transaction.atomic(durable=True):
        # SKIP LOCKED: a row another sweeper has claimed is passed over, never waited
        # for, and ours stays claimed until we commit. One allocation per
        # transaction: it then locks the allocation row and its quota path in the
        # same order as an API release, and the hot rows near the root are held
        # only from their update to the commit.
        with connection.cursor() as cursor:
            cursor.execute(CLAIM_DUE_SQL)
            claimed = cursor.fetchone()
        if claimed is None:
            return False
        # Cannot be refused: we hold the row, and the lease check reads the same
        # now() as the claim.
        allocation_expire(allocation_id=claimed[0])
    return True


def allocations_expire(
    *,
    batch_size: int = 100,
    dry_run: bool = False,
    should_stop: Callable[[], bool] | None = None,
) -> int:
    """Expire every active allocation whose lease has run out (database clock), each
    with its history row; return how many this call expired. Safe to run in several
    processes at once: each allocation is expired, and counted, by exactly one.

    Works in batches of ``batch_size`` allocations and asks ``should_stop()``
    between batches. ``dry_run`` only counts the allocations it would expire.
    """
    due = Allocation.objects.filter(
        status=AllocationStatus.ACTIVE, expires_at__lte=Now()
    )
    if dry_run:
        return due.count()
    expired = 0
    while should_stop is None or not should_stop():
        in_batch = 0
        while in_batch < batch_size and _expire_one():
            in_batch += 1
        expired += in_batch
        if in_batch < batch_size:
            break
    return expired


# The budget clock's now, read once per transaction (hq_now is STABLE). The partial
# index quotas_period_end_idx serves the ORDER BY and the bound.
CLAIM_ENDED_SQL = """
SELECT id FROM quotas
 WHERE period_end IS NOT NULL AND period_end <= hq_now()
 ORDER BY period_end
 LIMIT 1
   FOR UPDATE SKIP LOCKED
"""


def _roll_one() -> bool:
    """Claim one budget whose period has ended and roll it over; False when no
    unclaimed one is left."""
    # SKIP LOCKED: a budget another roller (or an allocation) holds is passed over,
    # never waited for; ours stays claimed until we commit. One quota per
    # transaction, holding one row: it waits for no other lock, so it cannot be part
    # of a deadlock, and the row is held only for its own rollover.
    with transaction.atomic(durable=True), connection.cursor() as cursor:
        cursor.execute(CLAIM_ENDED_SQL)
        claimed = cursor.fetchone()
        if claimed is None:
            return False
        # Under our lock, as the engine rolls a level: every closed period is
        # recorded once (budget_periods_once is the backstop) and written as an
        # event, with the alerts of the usage the new period starts with.
        cursor.execute(
            "SELECT hq_alerts(ARRAY[hq_roll(%s, hq_now(), %s)], %s)",
            [claimed[0], budget_timezone(), alert_thresholds()],
        )
    return True


def budgets_roll(
    *, batch_size: int = 100, should_stop: Callable[[], bool] | None = None
) -> int:
    """Roll over every budget whose period has ended (by the budget clock), without
    waiting for traffic to do it, so reports and the admin are right at any time.
    Safe to run in several processes at once. Returns how many budgets this call
    rolled; asks ``should_stop()`` between batches."""
    rolled = 0
    while should_stop is None or not should_stop():
        in_batch = 0
        while in_batch < batch_size and _roll_one():
            in_batch += 1
        rolled += in_batch
        if in_batch < batch_size:
            break
    return rolled
