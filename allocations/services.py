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

import json
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import connection
from django.db.models import F, Q
from django.db.models.functions import Now
from django.utils.dateparse import parse_datetime

from allocations.exceptions import AlreadyReleased, Conflict, NotFound, QuotaExceeded
from allocations.models import Allocation, AllocationStatus
from horizon_quota.fields import normalize_amount as _dec
from horizon_quota.observability import ALLOCATION_OUTCOMES
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
) -> CheckResult:
    """Evaluate the allocate predicate at every level, without writing."""
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
) -> AllocationResult:
    """Allocate along the whole path, or not at all; replay an identical retry."""
    outcome = _call(
        "hq_allocate",
        entity_type,
        entity_id,
        resource_type,
        job_id,
        requested_value,
        allow_burst,
        json.dumps(metadata or {}),
        ttl_seconds,
    )
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
        return AllocationResult(
            allocation=_allocation(outcome["allocation"]), replayed=True
        )
    if kind == "conflict":
        existing = _allocation(outcome["allocation"])
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
    blocking = next(level for level in levels if level.quota_id == blocking_id)
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


def allocation_release(*, allocation_id: UUID) -> dict[str, Any]:
    """Return the allocation's amount to every level of its path, exactly once."""
    return _release(allocation_id, AllocationStatus.RELEASED, only_expired=False)


def allocation_expire(*, allocation_id: UUID) -> dict[str, Any]:
    """Release an allocation whose lease has run out, recording it as expired."""
    return _release(allocation_id, AllocationStatus.EXPIRED, only_expired=True)


def allocation_renew(*, allocation_id: UUID, ttl_seconds: int) -> Allocation:
    """Extend an active allocation's lease to ``ttl_seconds`` from now (database
    clock). Touches no quota row."""
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
