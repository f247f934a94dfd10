"""The allocation engine: check, allocate, release, renew, expire.

Every write to ``quotas.used`` happens in one of the SQL functions installed by
``allocations/migrations/0002_sql_functions.py``, called here as a single statement.
Outside an atomic block that statement is its own transaction: PostgreSQL commits it
as it ends, with no extra round trip, so the rows near the root stay locked only
from their update to that commit. Called inside an atomic block (the admin, tests)
it simply joins that transaction. The lock order is the one documented in
``allocations/locking.py``.

The functions answer JSON with an ``outcome``; this module turns the outcomes into
results and domain errors. Amounts come back exact (``Decimal``).
"""

import contextlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID, uuid4

from django.db import connection, transaction
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils.dateparse import parse_datetime

from allocations.exceptions import AlreadyReleased, Conflict, NotFound, QuotaExceeded
from allocations.locking import lock_quotas
from allocations.models import Allocation, AllocationStatus, UsageRepair
from allocations.selectors import usage_drift
from horizon_quota.fields import normalize_amount as _dec
from horizon_quota.observability import ALLOCATION_OUTCOMES
from quotas.models import Quota
from quotas.scoping import (
    ensure_allocation_in_scope,
    ensure_entity_in_scope,
    quota_in_scope,
)
from quotas.selectors import resource_type_get


@dataclass
class Level:
    quota_id: UUID
    entity_type: str
    entity_id: str
    cap: Decimal
    effective_limit: Decimal
    soft_limit: Decimal | None
    used: Decimal
    available: Decimal
    allowed: bool

    @classmethod
    def from_json(cls, raw: dict) -> "Level":
        return cls(
            quota_id=UUID(raw["quota_id"]),
            entity_type=raw["entity_type"],
            entity_id=raw["entity_id"],
            cap=_dec(raw["cap"]),
            effective_limit=_dec(raw["effective_limit"]),
            soft_limit=None if raw["soft_limit"] is None else _dec(raw["soft_limit"]),
            used=_dec(raw["used"]),
            available=_dec(raw["available"]),
            allowed=raw["allowed"],
        )

    def as_dict(self) -> dict[str, Any]:
        return {
            "quota_id": self.quota_id,
            "entity_type": self.entity_type,
            "entity_id": self.entity_id,
            "cap": self.cap,
            "used": self.used,
            "available": self.available,
            "allowed": self.allowed,
        }


@dataclass
class CheckResult:
    allowed: bool
    requested: Decimal
    available: Decimal
    reason: str | None
    levels: list[Level]
    warnings: list[str]
    blocking_quota_id: UUID | None


@dataclass
class AllocationResult:
    allocation: dict[str, Any]
    replayed: bool
    levels: list[Level] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _amount(value: Decimal) -> str:
    return f"{value.normalize():f}"


def _call(function: str, *params) -> dict[str, Any]:
    placeholders = ", ".join(["%s"] * len(params))
    with connection.cursor() as cursor:
        cursor.execute(f"SELECT {function}({placeholders})::text", params)
        raw = cursor.fetchone()[0]
    return json.loads(raw, parse_float=Decimal)


def _allocation(raw: dict[str, Any]) -> dict[str, Any]:
    """The allocation row as the SQL function returned it, typed for rendering."""
    return {
        "id": UUID(raw["id"]),
        "quota_id": UUID(raw["quota_id"]),
        "entity_type": raw["entity_type"],
        "entity_id": raw["entity_id"],
        "job_id": UUID(raw["job_id"]),
        "resource_type": raw["resource_type"],
        "allocated_value": _dec(raw["allocated_value"]),
        "status": raw["status"],
        "allocated_at": parse_datetime(raw["allocated_at"]),
        "released_at": raw["released_at"] and parse_datetime(raw["released_at"]),
        "expires_at": raw["expires_at"] and parse_datetime(raw["expires_at"]),
        "is_burst": raw["is_burst"],
        "version": raw["version"],
        "metadata": raw["metadata"],
    }


def _warnings(levels: list[Level]) -> list[str]:
    """Soft limits never block; a level that ends above its soft limit is reported."""
    return [
        f"{level.entity_type} {level.entity_id} is above its soft limit: "
        f"{_amount(level.used)} used of {_amount(level.soft_limit)}."
        for level in levels
        if level.soft_limit is not None and level.used > level.soft_limit
    ]


def _no_quota(entity_type: str, entity_id: str, resource_type: str):
    # Only on this failure path do we look the resource type up, to tell an unknown
    # slug (400, listing the valid ones) from a missing quota (404).
    resource_type_get(slug=resource_type)
    return NotFound(f"No {resource_type} quota for {entity_type} {entity_id!r}.")


def _refusal_message(level: Level, requested: Decimal) -> str:
    return (
        f"Quota exceeded at {level.entity_type} {level.entity_id} "
        f"(quota {level.quota_id}): requested {_amount(requested)}, "
        f"available {_amount(level.available)}."
    )


def allocation_check(
    *,
    entity_type: str,
    entity_id: str,
    resource_type: str,
    requested_value: Decimal,
    allow_burst: bool = False,
    scope_id: UUID | None = None,
) -> CheckResult:
    """Evaluate the allocate predicate at every level, without writing. An entity
    outside the key's scope (``scope_id``) is a 404."""
    ensure_entity_in_scope(
        entity_type=entity_type,
        entity_id=entity_id,
        resource_type=resource_type,
        scope_id=scope_id,
    )
    outcome = _call(
        "hq_check", entity_type, entity_id, resource_type, requested_value, allow_burst
    )
    if outcome["outcome"] == "no_quota":
        raise _no_quota(entity_type, entity_id, resource_type)
    levels = [Level.from_json(raw) for raw in outcome["levels"]]
    blocking = next((level for level in levels if not level.allowed), None)
    # The warnings describe the state the allocation would leave behind.
    after = [
        Level(**{**level.__dict__, "used": level.used + requested_value})
        for level in levels
    ]
    return CheckResult(
        allowed=blocking is None,
        requested=requested_value,
        available=min(level.available for level in levels),
        reason=_refusal_message(blocking, requested_value) if blocking else None,
        levels=levels,
        warnings=_warnings(after) if blocking is None else [],
        blocking_quota_id=blocking.quota_id if blocking else None,
    )


def allocation_create(
    *,
    entity_type: str,
    entity_id: str,
    resource_type: str,
    job_id: UUID,
    requested_value: Decimal,
    allow_burst: bool = False,
    metadata: dict | None = None,
    ttl_seconds: int | None = None,
    scope_id: UUID | None = None,
) -> AllocationResult:
    """Allocate along the whole path, or not at all; replay an identical retry.
    An entity outside the key's scope (``scope_id``) is a 404 and writes nothing:
    it is checked before the engine runs."""
    ensure_entity_in_scope(
        entity_type=entity_type,
        entity_id=entity_id,
        resource_type=resource_type,
        scope_id=scope_id,
    )
    arguments = (
        entity_type,
        entity_id,
        resource_type,
        job_id,
        requested_value,
        allow_burst,
        json.dumps(metadata or {}),
        ttl_seconds,
    )
    outcome = _call("hq_allocate", *arguments)
    if outcome["outcome"] == "stale":
        # The job's earlier allocation outlived its lease and was never swept:
        # expire it now (its own transaction), then this is a fresh allocation.
        stale_id = UUID(outcome["allocation"]["id"])
        with contextlib.suppress(AlreadyReleased, Conflict):  # someone was faster
            allocation_expire(allocation_id=stale_id)
        outcome = _call("hq_allocate", *arguments)
    kind = outcome["outcome"]
    ALLOCATION_OUTCOMES.labels(kind if kind != "no_quota" else "not_found").inc()
    if kind == "granted":
        levels = [Level.from_json(raw) for raw in outcome["levels"]]
        return AllocationResult(
            allocation=_allocation(outcome["allocation"]),
            replayed=False,
            levels=levels,
            warnings=_warnings(levels),
        )
    if kind == "replayed":
        # A replay answers like the grant it repeats: with the path's levels and
        # warnings (DESIGN §5), read as they stand now. Only replays pay this read.
        current = allocation_check(
            entity_type=entity_type,
            entity_id=entity_id,
            resource_type=resource_type,
            requested_value=Decimal("0"),
            allow_burst=allow_burst,
            scope_id=scope_id,
        )
        return AllocationResult(
            allocation=_allocation(outcome["allocation"]),
            replayed=True,
            levels=current.levels,
            warnings=current.warnings,
        )
    if kind == "conflict":
        existing = _allocation(outcome["allocation"])
        if not quota_in_scope(existing["quota_id"], scope_id):
            # The job's allocation lies outside the key's scope: say no more.
            raise Conflict(
                f"Job {job_id} already holds an active {resource_type} allocation."
            )
        raise Conflict(
            f"Job {job_id} already holds an active {resource_type} allocation "
            f"({existing['id']}) with different values: "
            f"{existing['entity_type']} {existing['entity_id']!r}, "
            f"{_amount(existing['allocated_value'])}.",
            extra={"allocation_id": existing["id"]},
        )
    if kind == "no_quota":
        raise _no_quota(entity_type, entity_id, resource_type)
    levels = [Level.from_json(raw) for raw in outcome["levels"]]
    blocking_id = UUID(outcome["blocking_quota_id"])
    blocking = next((level for level in levels if level.quota_id == blocking_id), None)
    if blocking is None:  # the blocking quota was deleted since it refused
        raise _no_quota(entity_type, entity_id, resource_type)
    raise QuotaExceeded(
        _refusal_message(blocking, requested_value),
        extra={
            "blocking_quota_id": blocking_id,
            "requested": _dec(requested_value),
            "available": blocking.available,
            "levels": [level.as_dict() for level in levels],
        },
    )


def _release(allocation_id: UUID, status: str, only_expired: bool) -> dict[str, Any]:
    outcome = _call("hq_release", allocation_id, status, only_expired)
    kind = outcome["outcome"]
    if kind == "released":
        ALLOCATION_OUTCOMES.labels(status).inc()
    if kind == "not_found":
        raise NotFound(f"Allocation {allocation_id} not found.")
    if kind == "already_released":
        current = outcome["allocation"]
        raise AlreadyReleased(
            f"Allocation {allocation_id} is already {current['status']}."
        )
    if kind == "not_expired":
        raise Conflict(f"Allocation {allocation_id}'s lease has not run out.")
    return _allocation(outcome["allocation"])


def allocation_release(
    *, allocation_id: UUID, scope_id: UUID | None = None
) -> dict[str, Any]:
    """Return the allocation's amount to every level of its path, exactly once.
    An allocation outside the key's scope is a 404 and is left alone."""
    ensure_allocation_in_scope(allocation_id, scope_id)
    return _release(allocation_id, AllocationStatus.RELEASED, only_expired=False)


def allocation_expire(*, allocation_id: UUID) -> dict[str, Any]:
    """Release an allocation whose lease has run out, recording it as expired."""
    return _release(allocation_id, AllocationStatus.EXPIRED, only_expired=True)


def allocation_renew(
    *, allocation_id: UUID, ttl_seconds: int, scope_id: UUID | None = None
) -> Allocation:
    """Extend an active allocation's lease to ``ttl_seconds`` from now (database
    clock). Touches no quota row. Outside the key's scope it is a 404."""
    ensure_allocation_in_scope(allocation_id, scope_id)
    # A lease that has run out is over, even before the sweeper releases it.
    renewed = Allocation.objects.filter(
        Q(expires_at__isnull=True) | Q(expires_at__gt=Now()),
        id=allocation_id,
        status=AllocationStatus.ACTIVE,
    ).update(
        expires_at=Now() + timedelta(seconds=ttl_seconds),
        version=F("version") + 1,
    )
    if not renewed:
        current = Allocation.objects.filter(id=allocation_id).only("status").first()
        if current is None:
            raise NotFound(f"Allocation {allocation_id} not found.")
        if current.status == AllocationStatus.ACTIVE:
            raise Conflict(
                f"Allocation {allocation_id}'s lease has run out; allocate again."
            )
        raise AlreadyReleased(
            f"Allocation {allocation_id} is {current.status}; only an active one can "
            "be renewed."
        )
    return Allocation.objects.get(id=allocation_id)


# --- Operations: reconcile usage, expire leases ---------------------------------------


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
# through the partial index of active allocations by quota.
SUBTREE_TOTALS_SQL = """
WITH RECURSIVE subtree (top, id) AS (
    SELECT id, id FROM quotas WHERE id = ANY (%s::uuid[])
    UNION ALL
    SELECT s.top, child.id
      FROM subtree s
     CROSS JOIN LATERAL (
           SELECT q.id FROM quotas q WHERE q.parent_id = s.id OFFSET 0
           ) child
)
SELECT s.top, coalesce(sum(own.total), 0)
  FROM subtree s
 CROSS JOIN LATERAL (
       SELECT sum(a.allocated_value) AS total
         FROM allocations a
        WHERE a.quota_id = s.id AND a.status = 'active'
       ) own
 GROUP BY s.top
"""


SET_USED_SQL = """
UPDATE quotas q SET used = repair.used
  FROM unnest(%s::uuid[], %s::numeric[]) AS repair (id, used)
 WHERE q.id = repair.id
"""


def _subtree_totals(quota_ids: list[UUID]) -> dict[UUID, Decimal]:
    """The sum of the active allocations in each quota's whole subtree."""
    with connection.cursor() as cursor:
        cursor.execute(SUBTREE_TOTALS_SQL, [quota_ids])
        return dict(cursor.fetchall())


def _usage_repair_batch(*, run_id: UUID, quota_ids: list[UUID]) -> list[UsageRepair]:
    """Set ``used`` to the true subtree total of each quota, in one short transaction.

    The report was read without locks, and allocations may have committed since. So
    the totals are computed again here, after the locks are taken: every allocate and
    release that touches a quota's subtree also updates the quota itself (the path
    runs to the root), so while we hold the quota's row none of them can commit, and
    one that committed before is both in the row we locked and in the allocation rows
    the next statement reads. The two agree exactly.
    """
    with transaction.atomic(durable=True):
        # The same locks as the allocation path, in the one global order.
        locked = lock_quotas(quota_ids)
        # A quota deleted since the report is simply absent: nothing to repair.
        totals = _subtree_totals(list(locked))
        repairs, repaired = [], []
        for quota in locked.values():
            actual = totals[quota.id]
            if quota.used == actual:
                continue  # another run repaired it after our report
            repairs.append(
                UsageRepair(
                    run_id=run_id,
                    quota_id=quota.id,
                    entity_type=quota.entity_type,
                    entity_id=quota.entity_id,
                    resource_type=quota.resource_type_id,
                    stored=quota.used,
                    actual=actual,
                    delta=quota.used - actual,
                )
            )
            quota.used = actual
            repaired.append(quota)
        if repaired:
            # One statement for the batch; its rows are all locked already, so it
            # takes no new lock and cannot upset the order.
            with connection.cursor() as cursor:
                cursor.execute(
                    SET_USED_SQL,
                    [
                        [quota.id for quota in repaired],
                        [quota.used for quota in repaired],
                    ],
                )
            UsageRepair.objects.bulk_create(repairs)
    return repairs


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
    """Report every quota whose ``used`` differs from the active allocations of its
    subtree (promise P2) and, with ``fix``, repair them in batches, recording each
    repair as a ``UsageRepair`` of one run. ``dry_run`` writes nothing even with
    ``fix``. ``on_progress(done, total)`` is called after each batch."""
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
