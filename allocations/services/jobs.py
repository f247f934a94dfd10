"""Jobs: several resources admitted at once, all or nothing (DESIGN §3b).

A job is the set of allocations that share a ``job_id``. Admission, its check and a
job's release are each one call to an engine function (``hq_admit``,
``hq_check_job``, ``hq_release_job``): one statement, one transaction, the rows of
every path locked in the one global order (``quotas/locking.py``). Each
allocation follows §3 and §3a as if allocated alone: its own idempotency key,
history row, lease and budget.
"""

import contextlib
import json
from dataclasses import dataclass, field, replace
from datetime import timedelta
from decimal import Decimal
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
from allocations.selectors import allocation_list
from allocations.services.allocations import (
    Level,
    Shown,
    _allocation_refusal,
    _levels,
    _no_quota,
    _refusal_message,
    _scope_params,
    _warnings,
    allocation_expire,
)
from horizon_quota.amounts import amount_text, normalize_amount
from horizon_quota.observability import ALLOCATION_OUTCOMES
from quotas.access.scoping import OutsideLevel, Scope
from quotas.events.services import alert_thresholds
from quotas.selectors import time_based_slugs

MAX_RESOURCES = 16


@dataclass(frozen=True)
class JobLevels:
    """One resource of a job as a check or an admission saw it."""

    resource_type: str
    requested: Decimal
    levels: list[Shown]

    @property
    def allowed(self) -> bool:
        return all(level.allowed for level in self.levels)

    @property
    def available(self) -> Decimal | None:
        """The room for this resource; None when a level above the scope refuses."""
        if any(
            isinstance(level, OutsideLevel) and not level.allowed
            for level in self.levels
        ):
            return None
        return min(level.available for level in self.levels if isinstance(level, Level))

    def as_dict(self) -> dict:
        return {
            "requested": normalize_amount(self.requested),
            "available": None
            if self.available is None
            else normalize_amount(self.available),
            "allowed": self.allowed,
            "levels": [level.as_dict() for level in self.levels],
        }


@dataclass(frozen=True)
class JobResult:
    job_id: UUID
    allocations: list[AllocationRecord]
    replayed: bool = False
    resources: list[JobLevels] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class JobCheck:
    allowed: bool
    resources: list[JobLevels]
    warnings: list[str]
    reason: str | None
    blocking_resource: str | None
    blocking_quota_id: UUID | None


def _resources(resources: dict[str, Decimal]) -> dict[str, Decimal]:
    """The resource types as slugs (lower-case), 1 to 16 of them. Whether each is
    known is the engine's to find (an unknown one has no quota: a 400 listing the
    valid ones, looked up only then), so an admission stays one statement."""
    if not 1 <= len(resources) <= MAX_RESOURCES:
        message = f"A job needs 1 to {MAX_RESOURCES} resources (got {len(resources)})."
        raise InvalidInput(message, fields={"resources": [message]})
    known = {}
    for written, amount in resources.items():
        slug = (written or "").strip().lower()
        if slug in known:
            message = f"Resource type {slug} appears twice."
            raise InvalidInput(message, fields={"resources": [message]})
        known[slug] = amount
    return known


def _rates(rates: dict | None) -> dict[str, Decimal]:
    return {(slug or "").strip().lower(): rate for slug, rate in (rates or {}).items()}


def _refuse_bad_rates(rates: dict[str, Decimal], resources: dict[str, Decimal]):
    """hq_admit's bad_rate, for a check: the first rate (by resource type) for a
    resource the job does not ask for or one that is not time-based. Looked up only
    when rates are sent."""
    if not rates:
        return
    time_based = time_based_slugs(slugs=rates)
    for slug in sorted(rates):
        if slug not in resources or slug not in time_based:
            raise _bad_rate(slug, resources)


def _bad_rate(slug: str, resources: dict[str, Decimal]) -> InvalidInput:
    """A rate for a resource the job does not ask for, or for a concurrent one."""
    if slug not in resources:
        message = f"A rate for {slug}, which the job does not ask for."
    else:
        message = (
            f"{slug} is a concurrent resource: it is held, not consumed, so a rate "
            "does not apply."
        )
    return InvalidInput(message, fields={"rates": [message]})


def _as_json(values: dict[str, Decimal]) -> str:
    return json.dumps({slug: str(value) for slug, value in values.items()})


def _job_levels(
    raw: dict, amounts: dict[str, Decimal], scope: Scope | None
) -> list[JobLevels]:
    return [
        JobLevels(
            resource_type=slug,
            requested=amounts.get(slug, Decimal(0)),
            levels=_levels(levels, scope),
        )
        for slug, levels in sorted(raw.items())
    ]


def _blocking(resources: list[JobLevels]) -> tuple[JobLevels, Shown] | None:
    """The level an admission would stop at: it walks every path deepest level
    first (the lock order), so the refusing level nearest a leaf, across all
    resources; ties by resource type."""
    refusing = [
        # (depth from the root, negated: deepest first; then the quota's id, which
        # a level above the key's scope keeps unseen, as the engine walks them)
        (index - len(resource.levels), str(level.quota_id), resource, level)
        for resource in resources
        for index, level in enumerate(resource.levels)
        if not level.allowed
    ]
    if not refusing:
        return None
    _, _, resource, level = min(refusing, key=lambda item: item[:2])
    return resource, level


def job_check(
    *,
    entity_type: str,
    entity_id: str,
    resources: dict[str, Decimal],
    rates: dict[str, Decimal] | None = None,
    allow_burst: bool = False,
    scope: Scope | None = None,
) -> JobCheck:
    """Evaluate a job's admission without writing: every resource's levels. Its
    ``rates`` are refused as the admission refuses them (before anything else, as
    the engine does)."""
    amounts = _resources(resources)
    _refuse_bad_rates(_rates(rates), amounts)
    outcome = call(
        "hq_check_job",
        entity_type,
        entity_id,
        _as_json(amounts),
        allow_burst,
        *_scope_params(scope),
        budget_timezone(),
    )
    if outcome["outcome"] == Outcome.NO_QUOTA:
        raise _no_quota(entity_type, entity_id, outcome["resource_type"])
    checked = _job_levels(outcome["levels"], amounts, scope)
    blocking = _blocking(checked)
    after = [
        replace(level, used=level.used + resource.requested)
        for resource in checked
        for level in resource.levels
        if isinstance(level, Level)
    ]
    return JobCheck(
        allowed=blocking is None,
        resources=checked,
        warnings=_warnings(after) if blocking is None else [],
        reason=_job_refusal_message(*blocking) if blocking else None,
        blocking_resource=blocking[0].resource_type if blocking else None,
        blocking_quota_id=blocking[1].quota_id
        if blocking and isinstance(blocking[1], Level)
        else None,
    )


def _job_refusal_message(resource: JobLevels, level: Shown) -> str:
    return f"{resource.resource_type}: " + _refusal_message(level, resource.requested)


def job_admit(
    *,
    entity_type: str,
    entity_id: str,
    job_id: UUID,
    resources: dict[str, Decimal],
    rates: dict[str, Decimal] | None = None,
    allow_burst: bool = False,
    metadata: dict | None = None,
    ttl_seconds: int | None = None,
    scope: Scope | None = None,
) -> JobResult:
    """Admit every resource of a job, or none: one allocation per resource. An
    identical retry answers with the same allocations; a different set for a job
    holding active allocations is a 409 naming nothing outside the key's scope."""
    amounts = _resources(resources)
    arguments = (
        entity_type,
        entity_id,
        job_id,
        _as_json(amounts),
        _as_json(_rates(rates)),
        allow_burst,
        json.dumps(metadata or {}),
        ttl_seconds,
        *_scope_params(scope),
        lock_budget_ms(),
        budget_timezone(),
        alert_thresholds(),
    )
    outcome = call("hq_admit", *arguments)
    if outcome["outcome"] == Outcome.STALE:
        # Leases that ran out before the sweeper came (in the key's scope: the
        # engine says `conflict` otherwise): expire them, then admit afresh.
        for held in outcome["allocations"]:
            with contextlib.suppress(AlreadyReleased, Conflict):
                allocation_expire(allocation_id=UUID(held["id"]))
        outcome = call("hq_admit", *arguments)
    kind = Outcome(outcome["outcome"])
    if kind == Outcome.BAD_RATE:
        raise _bad_rate(outcome["resource_type"], amounts)
    ALLOCATION_OUTCOMES.labels(
        "not_found" if kind == Outcome.NO_QUOTA else kind.value
    ).inc()
    if kind == Outcome.GRANTED:
        checked = _job_levels(outcome["levels"], {}, scope)
        return JobResult(
            job_id=job_id,
            allocations=[
                AllocationRecord.from_engine(a) for a in outcome["allocations"]
            ],
            resources=checked,
            warnings=_warnings([lv for r in checked for lv in r.levels]),
        )
    if kind == Outcome.REPLAYED:
        current = job_check(
            entity_type=entity_type,
            entity_id=entity_id,
            resources={slug: Decimal(0) for slug in amounts},
            allow_burst=allow_burst,
            scope=scope,
        )
        return JobResult(
            job_id=job_id,
            allocations=[
                AllocationRecord.from_engine(a) for a in outcome["allocations"]
            ],
            replayed=True,
            resources=current.resources,
            warnings=current.warnings,
        )
    if kind == Outcome.CONFLICT:
        held = outcome["allocations"]
        if not held:
            raise Conflict(f"Job {job_id} already holds active allocations.")
        raise Conflict(
            f"Job {job_id} already holds active allocations of another set: "
            + ", ".join(
                f"{a['resource_type']} {amount_text(Decimal(a['allocated_value']))} "
                f"for {a['entity_type']} {a['entity_id']!r}"
                for a in held
            )
            + ".",
            extra={"allocation_ids": [a["id"] for a in held]},
        )
    if kind == Outcome.NO_QUOTA:
        raise _no_quota(entity_type, entity_id, outcome["resource_type"])
    checked = _job_levels(outcome["levels"], amounts, scope)
    blocking_resource = next(
        r for r in checked if r.resource_type == outcome["resource_type"]
    )
    blocking_index = next(
        (
            index
            for index, raw in enumerate(outcome["levels"][outcome["resource_type"]])
            if raw["quota_id"] == outcome["blocking_quota_id"]
        ),
        None,
    )
    if blocking_index is None:  # deleted since it refused
        raise _no_quota(entity_type, entity_id, outcome["resource_type"])
    level = blocking_resource.levels[blocking_index]
    inside = isinstance(level, Level)
    raise QuotaExceeded(
        _job_refusal_message(blocking_resource, level),
        extra={
            "resource_type": blocking_resource.resource_type,
            "blocking_quota_id": level.quota_id if inside else None,
            "requested": normalize_amount(blocking_resource.requested),
            "available": level.available if inside else None,
            "levels": [level.as_dict() for level in blocking_resource.levels],
            "resources": {r.resource_type: r.as_dict() for r in checked},
        },
    )


def _job_allocations(job_id: UUID, scope: Scope | None) -> list[Allocation]:
    return list(
        allocation_list(scope=scope)
        .filter(job_id=job_id)
        .order_by("resource_type", "-allocated_at", "-id")
    )


def job_get(*, job_id: UUID, scope: Scope | None = None) -> JobResult:
    """Every allocation of the job (any status) the key may see; 404 if none."""
    allocations = _job_allocations(job_id, scope)
    if not allocations:
        raise NotFound(f"Job {job_id} not found.")
    return JobResult(
        job_id=job_id,
        allocations=[AllocationRecord.from_model(a) for a in allocations],
    )


def job_release(
    *,
    job_id: UUID,
    consumed: dict[str, Decimal] | None = None,
    scope: Scope | None = None,
) -> JobResult:
    """Release every active allocation of the job in one transaction, settling
    time-based ones with the final values in ``consumed`` (DESIGN §3b). 409
    ``already_released`` when none is active."""
    consumed = {
        (slug or "").strip().lower(): value for slug, value in (consumed or {}).items()
    }
    outcome = call(
        "hq_release_job",
        job_id,
        _as_json(consumed) if consumed else None,
        *_scope_params(scope),
        lock_budget_ms(),
        budget_timezone(),
        alert_thresholds(),
    )
    kind = Outcome(outcome["outcome"])
    if kind == Outcome.NONE_ACTIVE:
        if _job_allocations(job_id, scope):
            raise AlreadyReleased(f"Job {job_id} holds no active allocation.")
        raise NotFound(f"Job {job_id} not found.")
    if kind == Outcome.NOT_HELD:
        message = (
            f"The job holds no active {outcome['resource_type']} allocation to "
            "report consumption for."
        )
        raise InvalidInput(message, fields={"consumed": [message]})
    refusal = _allocation_refusal(job_id, outcome)
    if refusal is not None:
        raise refusal
    for _ in outcome["allocations"]:
        ALLOCATION_OUTCOMES.labels("released").inc()
    return JobResult(
        job_id=job_id,
        allocations=[AllocationRecord.from_engine(a) for a in outcome["allocations"]],
    )


def job_renew(
    *, job_id: UUID, ttl_seconds: int, scope: Scope | None = None
) -> JobResult:
    """Extend every active lease of the job to ``ttl_seconds`` from now, in one
    statement. Touches no quota row."""
    renewed = (
        allocation_list(scope=scope)
        .filter(
            Q(expires_at__isnull=True) | Q(expires_at__gt=Now()),
            job_id=job_id,
            status=AllocationStatus.ACTIVE,
        )
        .update(
            expires_at=Now() + timedelta(seconds=ttl_seconds),
            version=F("version") + 1,
        )
    )
    if not renewed:
        allocations = _job_allocations(job_id, scope)
        if not allocations:
            raise NotFound(f"Job {job_id} not found.")
        if any(a.status == AllocationStatus.ACTIVE for a in allocations):
            raise Conflict(f"Job {job_id}'s leases have run out; admit it again.")
        raise AlreadyReleased(
            f"Job {job_id} holds no active allocation; only active ones can be renewed."
        )
    return job_get(job_id=job_id, scope=scope)
