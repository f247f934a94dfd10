"""The allocation services: check, allocate, release, renew, expire.

Each is one call to an engine function (``allocations.engine``): one statement, one
short transaction, the lock order of ``quotas/locking.py``. This module turns the
engine's outcomes into results and domain errors. Amounts come back exact.
"""

import contextlib
import json
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db.models import F, Q
from django.db.models.functions import Now

from allocations.engine import (
    Outcome,
    budget_timezone,
    call,
    lock_budget_ms,
)
from allocations.exceptions import (
    AlreadyReleased,
    Conflict,
    InvalidInput,
    NotFound,
    QuotaExceeded,
)
from allocations.models import Allocation, AllocationStatus
from allocations.records import AllocationRecord
from allocations.selectors import ensure_allocation_in_scope
from horizon_quota.amounts import amount_text, normalize_amount
from horizon_quota.observability import ALLOCATION_OUTCOMES
from quotas import rules
from quotas.access.scoping import OutsideLevel, Scope, redact_levels
from quotas.events.services import alert_thresholds
from quotas.selectors import resource_type_get, time_based_slugs


@dataclass(frozen=True)
class Level:
    """One quota of an allocation path as a check or allocate saw it."""

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
    def from_engine(cls, raw: dict) -> "Level":
        return cls(
            quota_id=UUID(raw["quota_id"]),
            entity_type=raw["entity_type"],
            entity_id=raw["entity_id"],
            cap=normalize_amount(raw["cap"]),
            effective_limit=normalize_amount(raw["effective_limit"]),
            soft_limit=None
            if raw["soft_limit"] is None
            else normalize_amount(raw["soft_limit"]),
            used=normalize_amount(raw["used"]),
            available=normalize_amount(raw["available"]),
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


# A level of an answer: the whole level, or one above the key's scope.
Shown = Level | OutsideLevel


@dataclass(frozen=True)
class CheckResult:
    allowed: bool
    requested: Decimal
    # The room left for this request; None when a level above the key's scope
    # refuses (its numbers are not the key's to know).
    available: Decimal | None
    reason: str | None
    levels: list[Shown]
    warnings: list[str]
    blocking_quota_id: UUID | None


@dataclass(frozen=True)
class AllocationResult:
    allocation: AllocationRecord
    replayed: bool
    levels: list[Shown] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def _levels(raw: list[dict], scope: Scope | None) -> list[Shown]:
    """The engine's levels as the key may see them (quotas.access.scoping)."""
    return redact_levels([Level.from_engine(level) for level in raw], scope)


def _warnings(levels: list[Shown]) -> list[str]:
    """Soft limits never block; a level that ends above its soft limit is reported
    (never one above the key's scope)."""
    return [
        f"{level.entity_type} {level.entity_id} is above its soft limit: "
        f"{amount_text(level.used)} used of {amount_text(level.soft_limit)}."
        for level in levels
        if isinstance(level, Level)
        and rules.above_soft_limit(used=level.used, soft_limit=level.soft_limit)
    ]


def _no_quota(entity_type: str, entity_id: str, resource_type: str):
    # Only on this failure path do we look the resource type up, to tell an unknown
    # slug (400, listing the valid ones) from a missing quota (404).
    resource_type_get(slug=resource_type)
    return NotFound(f"No {resource_type} quota for {entity_type} {entity_id!r}.")


def _refusal_message(level: Shown, requested: Decimal) -> str:
    if isinstance(level, OutsideLevel):
        return (
            f"A quota above your scope has no room for {amount_text(requested)}; "
            "retry later."
        )
    return (
        f"Quota exceeded at {level.entity_type} {level.entity_id} "
        f"(quota {level.quota_id}): requested {amount_text(requested)}, "
        f"available {amount_text(level.available)}."
    )


def _refusal(levels: list[Shown], blocking: Shown, requested: Decimal) -> dict:
    """The members a refusal adds to its error body (DESIGN §5), as redacted."""
    inside = isinstance(blocking, Level)
    return {
        "blocking_quota_id": blocking.quota_id if inside else None,
        "requested": normalize_amount(requested),
        "available": blocking.available if inside else None,
        "levels": [level.as_dict() for level in levels],
    }


def allocation_check(
    *,
    entity_type: str,
    entity_id: str,
    resource_type: str,
    requested_value: Decimal,
    allow_burst: bool = False,
    rate: Decimal | None = None,
    scope: Scope | None = None,
) -> CheckResult:
    """Evaluate the allocate predicate at every level, without writing. An entity
    outside the key's scope is a 404; levels above the scope are redacted. A
    ``rate`` is refused as allocate refuses it (after the 404, as the engine does):
    on a resource that is not time-based."""
    outcome = call(
        "hq_check",
        entity_type,
        entity_id,
        resource_type,
        requested_value,
        allow_burst,
        *_scope_params(scope),
        budget_timezone(),
    )
    if outcome["outcome"] == Outcome.NO_QUOTA:
        raise _no_quota(entity_type, entity_id, resource_type)
    if rate is not None and not time_based_slugs(slugs=[resource_type]):
        # hq_allocate's bad_rate, looked up only when a rate is sent.
        raise _held_not_consumed(resource_type, "rate")
    levels = _levels(outcome["levels"], scope)
    blocking = next((level for level in levels if not level.allowed), None)
    visible = [level for level in levels if isinstance(level, Level)]
    # The warnings describe the state the allocation would leave behind.
    after = [replace(level, used=level.used + requested_value) for level in visible]
    return CheckResult(
        allowed=blocking is None,
        requested=requested_value,
        available=None
        if isinstance(blocking, OutsideLevel)
        else min(level.available for level in visible),
        reason=_refusal_message(blocking, requested_value) if blocking else None,
        levels=levels,
        warnings=_warnings(after) if blocking is None else [],
        blocking_quota_id=blocking.quota_id if isinstance(blocking, Level) else None,
    )


def _scope_params(scope: Scope | None) -> tuple[str | None, str | None]:
    return (scope.entity_type, scope.entity_id) if scope else (None, None)


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
    rate: Decimal | None = None,
    scope: Scope | None = None,
) -> AllocationResult:
    """Allocate along the whole path, or not at all; replay an identical retry.
    An entity outside the key's scope is a 404 and writes nothing (the engine
    checks before it writes); levels above the scope are redacted. On a time-based
    resource the amount is reserved (DESIGN §3a), optionally with a ``rate``."""
    arguments = (
        entity_type,
        entity_id,
        resource_type,
        job_id,
        requested_value,
        allow_burst,
        json.dumps(metadata or {}),
        ttl_seconds,
        *_scope_params(scope),
        lock_budget_ms(),
        rate,
        budget_timezone(),
        alert_thresholds(),
    )
    outcome = call("hq_allocate", *arguments)
    if outcome["outcome"] == Outcome.STALE:
        # The job's earlier allocation outlived its lease and was never swept: it
        # lies in the key's scope (the engine says `conflict` otherwise), so expire
        # it now (its own transaction); then this is a fresh allocation.
        stale_id = UUID(outcome["allocation"]["id"])
        with contextlib.suppress(AlreadyReleased, Conflict):  # someone was faster
            allocation_expire(allocation_id=stale_id)
        outcome = call("hq_allocate", *arguments)
    kind = Outcome(outcome["outcome"])
    ALLOCATION_OUTCOMES.labels(
        "not_found" if kind == Outcome.NO_QUOTA else kind.value
    ).inc()
    if kind == Outcome.GRANTED:
        levels = _levels(outcome["levels"], scope)
        return AllocationResult(
            allocation=AllocationRecord.from_engine(outcome["allocation"]),
            replayed=False,
            levels=levels,
            warnings=_warnings(levels),
        )
    if kind == Outcome.REPLAYED:
        # A replay answers like the grant it repeats: with the path's levels and
        # warnings (DESIGN §5), read as they stand now. Only replays pay this read.
        current = allocation_check(
            entity_type=entity_type,
            entity_id=entity_id,
            resource_type=resource_type,
            requested_value=Decimal("0"),
            allow_burst=allow_burst,
            scope=scope,
        )
        return AllocationResult(
            allocation=AllocationRecord.from_engine(outcome["allocation"]),
            replayed=True,
            levels=current.levels,
            warnings=current.warnings,
        )
    if kind == Outcome.CONFLICT:
        if outcome["allocation"] is None:
            # The job's allocation lies outside the key's scope: say no more.
            raise Conflict(
                f"Job {job_id} already holds an active {resource_type} allocation."
            )
        existing = AllocationRecord.from_engine(outcome["allocation"])
        raise Conflict(
            f"Job {job_id} already holds an active {resource_type} allocation "
            f"({existing.id}) with different values: "
            f"{existing.entity_type} {existing.entity_id!r}, "
            f"{amount_text(existing.allocated_value)}.",
            extra={"allocation_id": existing.id},
        )
    if kind == Outcome.NO_QUOTA:
        raise _no_quota(entity_type, entity_id, resource_type)
    if kind == Outcome.BAD_RATE:
        raise _held_not_consumed(resource_type, "rate")
    raw_levels = outcome["levels"]
    blocking_id = outcome["blocking_quota_id"]
    index = next(
        (i for i, level in enumerate(raw_levels) if level["quota_id"] == blocking_id),
        None,
    )
    if index is None:  # the blocking quota was deleted since it refused
        raise _no_quota(entity_type, entity_id, resource_type)
    levels = _levels(raw_levels, scope)
    raise QuotaExceeded(
        _refusal_message(levels[index], requested_value),
        extra=_refusal(levels, levels[index], requested_value),
    )


def _held_not_consumed(resource_type: str, what: str) -> InvalidInput:
    message = (
        f"{resource_type} is a concurrent resource: it is held, not consumed, so "
        f"{what} does not apply."
    )
    return InvalidInput(message, fields={what: [message]})


def _allocation_refusal(allocation_id: UUID, outcome: dict) -> Exception | None:
    """The domain error for an engine outcome about one allocation, or None."""
    kind = Outcome(outcome["outcome"])
    allocation = outcome.get("allocation") or {}
    if kind == Outcome.NOT_FOUND:
        return NotFound(f"Allocation {allocation_id} not found.")
    if kind == Outcome.ALREADY_RELEASED:
        return AlreadyReleased(
            f"Allocation {allocation_id} is already {allocation['status']}."
        )
    if kind == Outcome.NOT_EXPIRED:
        return Conflict(f"Allocation {allocation_id}'s lease has not run out.")
    if kind == Outcome.NOT_TIME_BASED:
        return _held_not_consumed(allocation["resource_type"], "consumed_value")
    if kind == Outcome.BELOW_REPORTED:
        message = (
            "consumed_value is cumulative: it cannot be below the "
            f"{amount_text(Decimal(allocation['consumed_value']))} already reported."
        )
        return InvalidInput(message, fields={"consumed_value": [message]})
    return None


def _release(
    allocation_id: UUID,
    status: str,
    only_expired: bool,
    consumed_value: Decimal | None = None,
) -> AllocationRecord:
    outcome = call(
        "hq_release",
        allocation_id,
        status,
        only_expired,
        consumed_value,
        lock_budget_ms(),
        budget_timezone(),
        alert_thresholds(),
    )
    refusal = _allocation_refusal(allocation_id, outcome)
    if refusal is not None:
        raise refusal
    ALLOCATION_OUTCOMES.labels(status).inc()
    return AllocationRecord.from_engine(outcome["allocation"])


def allocation_release(
    *,
    allocation_id: UUID,
    consumed_value: Decimal | None = None,
    scope: Scope | None = None,
) -> AllocationRecord:
    """Return the allocation's amount to every level of its path, exactly once. A
    time-based allocation is settled (DESIGN §3a): ``consumed_value`` is the job's
    final consumption; without it the release charges rate × hours held, or the
    whole reservation. An allocation outside the key's scope is a 404 and is left
    alone."""
    ensure_allocation_in_scope(allocation_id, scope)
    return _release(
        allocation_id,
        AllocationStatus.RELEASED,
        only_expired=False,
        consumed_value=consumed_value,
    )


def allocation_consume(
    *,
    allocation_id: UUID,
    consumed_value: Decimal,
    scope: Scope | None = None,
) -> AllocationRecord:
    """Charge a running job's consumption so far (cumulative) to every level of its
    path, each in its current period (DESIGN §3a). Never refused for lack of room:
    an overrun is charged all the same. The same value again changes nothing."""
    ensure_allocation_in_scope(allocation_id, scope)
    outcome = call(
        "hq_consume",
        allocation_id,
        consumed_value,
        lock_budget_ms(),
        budget_timezone(),
        alert_thresholds(),
    )
    refusal = _allocation_refusal(allocation_id, outcome)
    if refusal is not None:
        raise refusal
    return AllocationRecord.from_engine(outcome["allocation"])


def allocation_expire(*, allocation_id: UUID) -> AllocationRecord:
    """Release an allocation whose lease has run out, recording it as expired."""
    return _release(allocation_id, AllocationStatus.EXPIRED, only_expired=True)


def allocation_renew(
    *, allocation_id: UUID, ttl_seconds: int, scope: Scope | None = None
) -> AllocationRecord:
    """Extend an active allocation's lease to ``ttl_seconds`` from now (database
    clock). Touches no quota row. Outside the key's scope it is a 404."""
    ensure_allocation_in_scope(allocation_id, scope)
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
    return AllocationRecord.from_model(Allocation.objects.get(id=allocation_id))


def refuse_quota_delete_while_allocated(sender, *, quota, **kwargs) -> None:
    """Receiver of ``quotas.services.quota_deleting``: a quota whose own active
    allocations are not yet counted in ``used`` cannot be deleted either.

    Allocations insert their row before they lock the quota: one still in flight
    finds the quota gone when it reaches it and undoes itself; a committed one is
    refused here even if ``used`` had drifted to 0.
    """
    if Allocation.objects.filter(
        quota_id=quota.id, status=AllocationStatus.ACTIVE
    ).exists():
        raise Conflict(f"Quota {quota.id} has active allocations in its subtree.")
