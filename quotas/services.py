"""Quota services: the only code that creates, changes or deletes quotas.

Every hierarchy rule of DESIGN §3 (written once, in ``quotas.rules``) is checked
here, before anything is written, with the rows it depends on locked
(``quotas.locking.lock_quotas``):

* a child change (create, raise, lower) locks the parent: all changes to a family's
  limits are serialized on the parent row, so two siblings raised at once cannot
  together overfill it;
* a parent change locks the parent itself: its children cannot change meanwhile, for
  the same reason.

These functions open ``transaction.atomic()`` rather than a durable block because the
Django admin calls them inside its own transaction; the locks are then held until the
admin's commit, which is still one short transaction.

Each of them also writes the change to the audit trail (``quotas.audit``) in the same
transaction: who made it (``Actor``), why (``reason``) and every field's old and new
value. A change that is refused, or an update that changes nothing, records nothing.

A budget (a quota on a time-based resource, DESIGN §3a) has a period; its bounds
come from the budget clock (``quotas.budgets``). Changing the period starts the new
one at once: the quota's ``consumed`` must then be the consumption of its subtree
since the new period's start, which only the allocations app can sum (its history);
it does so on the ``quota_period_changed`` signal, under the same lock.

Other apps learn of a deletion through the ``quota_deleting`` signal, sent under the
quota's lock before anything is written; a receiver refuses it by raising a
``ServiceError`` (the allocations app refuses while the quota has active
allocations). Dependencies run one way: ``quotas`` never imports ``allocations``.
"""

import uuid
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.db import IntegrityError, transaction
from django.db.models import Max, Sum
from django.db.models.functions import Now
from django.dispatch import Signal

from horizon_quota.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from quotas import rules
from quotas.access.scoping import Scope, ensure_may_change, ensure_may_create_under
from quotas.audit import (
    UPDATABLE_FIELDS,
    Actor,
    change_reason_clean,
    record_change,
    snapshot,
)
from quotas.budgets import period_bounds
from quotas.events.services import raise_alerts
from quotas.locking import lock_quotas
from quotas.models import BudgetPeriod, ChangeAction, Quota, ResourceType
from quotas.selectors import children_limit_sum, resource_type_get

__all__ = [
    "UPDATABLE_FIELDS",
    "Actor",
    "change_reason_clean",
    "quota_create",
    "quota_delete",
    "quota_deleting",
    "quota_period_changed",
    "quota_update",
]

# Sent with ``quota`` (locked) before a quota is deleted; a receiver that raises a
# ServiceError refuses the deletion.
quota_deleting = Signal()
# Sent with ``quota`` (locked, its new period and bounds saved) when its budget
# period changes; a receiver recomputes ``consumed`` for the new period.
quota_period_changed = Signal()


def _refuse(breaches: list[rules.Breach]) -> None:
    """Raise the 400 for broken rules, each message under its field."""
    if not breaches:
        return
    fields: dict[str, list[str]] = {}
    for breach in breaches:
        fields.setdefault(breach.field, []).append(breach.message)
    raise InvalidInput(" ".join(breach.message for breach in breaches), fields=fields)


def _parent_breaches(
    *,
    parent: Quota,
    entity_type: str,
    resource_type: str,
    limit_value: Decimal,
    exclude_id: UUID | None = None,
) -> list[rules.Breach]:
    """The rules between a child and its (locked) parent, from the child's side."""
    for breach in (
        rules.parent_type_breach(
            entity_type=entity_type, parent_type=parent.entity_type
        ),
        rules.resource_type_breach(
            resource_type=resource_type,
            parent_resource_type=parent.resource_type_id,
        ),
        rules.child_limit_breach(
            limit_value=limit_value, parent_limit_value=parent.limit_value
        ),
    ):
        if breach is not None:
            return [breach]
    siblings = children_limit_sum(parent_id=parent.id, exclude_id=exclude_id)
    breach = rules.children_sum_breach(
        children_total=siblings + limit_value, parent_effective=parent.promised_limit
    )
    return [breach] if breach else []


def _family_breaches(
    *, quota: Quota, limit_value: Decimal, ratio: Decimal
) -> list[rules.Breach]:
    """The rules between a quota and its children, from the parent's side."""
    # One aggregate, not the children's rows: a team may have 100k users.
    family = Quota.objects.filter(parent_id=quota.id).aggregate(
        largest=Max("limit_value"), total=Sum("limit_value")
    )
    return rules.family_breaches(
        limit_value=limit_value,
        overcommit_ratio=ratio,
        largest_child=family["largest"],
        children_total=family["total"] or Decimal(0),
    )


def _already_exists(resource_type: str, entity_type: str, entity_id: str):
    return AlreadyExists(
        f"A {resource_type} quota for {entity_type} {entity_id!r} already exists."
    )


@transaction.atomic
def quota_create(
    *,
    entity_type: str,
    entity_id: str,
    resource_type: str,
    limit_value: Decimal,
    parent_id: UUID | None = None,
    soft_limit: Decimal | None = None,
    burst_limit: Decimal | None = None,
    overcommit_ratio: Decimal = Decimal("1"),
    period: str = BudgetPeriod.NONE,
    carryover_limit: Decimal = Decimal("0"),
    alert_thresholds: list[Decimal] | None = None,
    actor: Actor | None = None,
    reason: str = "",
    scope: Scope | None = None,
) -> Quota:
    """Create a quota; a scoped key only below its scope entity's quotas. On a
    time-based resource it may be a budget with a ``period`` (DESIGN §3a). Its
    ``alert_thresholds`` (percents of the cap; null: ALERT_THRESHOLDS) say when it
    raises alerts (§7a)."""
    reason = change_reason_clean(reason)
    ensure_may_create_under(parent_id, scope)
    rtype = resource_type_get(slug=resource_type)
    _refuse(
        rules.own_limit_breaches(
            limit_value=limit_value, soft_limit=soft_limit, burst_limit=burst_limit
        )
        + rules.budget_breaches(
            time_based=rtype.kind == ResourceType.Kind.TIME_BASED,
            period=period,
            carryover_limit=carryover_limit,
            limit_value=limit_value,
        )
        + rules.alert_threshold_breaches(alert_thresholds)
    )

    parent = None
    if parent_id is not None:
        # Lock the parent: its children's limits are checked against it and every
        # change to them takes this lock first, so the sum we read stays true.
        parent = lock_quotas([parent_id]).get(parent_id)
        if parent is None:
            raise InvalidInput(
                f"Parent quota {parent_id} not found.",
                fields={"parent_id": ["No quota with this id."]},
            )
        _refuse(
            _parent_breaches(
                parent=parent,
                entity_type=entity_type,
                resource_type=rtype.slug,
                limit_value=limit_value,
            )
        )

    if Quota.objects.filter(
        entity_type=entity_type, entity_id=entity_id, resource_type=rtype
    ).exists():
        raise _already_exists(rtype.slug, entity_type, entity_id)

    quota_id = uuid.uuid4()
    period_start, period_end = period_bounds(period)
    quota = Quota(
        id=quota_id,
        entity_type=entity_type,
        entity_id=entity_id,
        resource_type=rtype,
        parent=parent,
        depth=parent.depth + 1 if parent else 0,
        path=[quota_id, *parent.path] if parent else [quota_id],
        limit_value=limit_value,
        soft_limit=soft_limit,
        burst_limit=burst_limit,
        overcommit_ratio=overcommit_ratio,
        period=period,
        carryover_limit=carryover_limit,
        alert_thresholds=_sorted(alert_thresholds),
        period_start=period_start,
        period_end=period_end,
    )
    try:
        # A savepoint, so a lost race on the unique key leaves the caller's
        # transaction usable (the admin's, for one).
        with transaction.atomic():
            quota.save(force_insert=True)
    except IntegrityError:
        raise _already_exists(rtype.slug, entity_type, entity_id) from None
    quota.refresh_from_db()
    record_change(
        quota=quota,
        action=ChangeAction.CREATE,
        old={},
        new=snapshot(quota),
        actor=actor,
        reason=reason,
    )
    return quota


def _sorted(thresholds: list[Decimal] | None) -> list[Decimal] | None:
    return None if thresholds is None else sorted(thresholds)


def _not_null(values: dict[str, Any], field: str) -> None:
    if values[field] is None:
        raise InvalidInput(
            f"{field} cannot be null.", fields={field: ["May not be null."]}
        )


@transaction.atomic
def quota_update(
    *,
    quota_id: UUID,
    changes: dict[str, Any],
    force: bool = False,
    expected_version: int | None = None,
    actor: Actor | None = None,
    reason: str = "",
    scope: Scope | None = None,
) -> Quota:
    """Apply ``changes`` (a subset of UPDATABLE_FIELDS; ``None`` clears soft and
    burst limits) after checking every rule from both sides of the hierarchy."""
    reason = change_reason_clean(reason)
    ensure_may_change(quota_id, scope)
    unknown = set(changes) - set(UPDATABLE_FIELDS)
    if unknown:
        raise InvalidInput(f"Cannot change: {', '.join(sorted(unknown))}.")
    # parent_id never changes, so reading it before the lock is safe.
    current = Quota.objects.filter(id=quota_id).values("parent_id").first()
    if current is None:
        raise NotFound(f"Quota {quota_id} not found.")
    # Lock the quota and, when its limit_value changes, its parent (in the global
    # order, the quota first): the parent serializes its children's limit changes.
    # Other edits leave the parent, often a hot row near the root, alone.
    limit_changes = "limit_value" in changes
    locked = lock_quotas([quota_id, current["parent_id"] if limit_changes else None])
    quota = locked.get(quota_id)
    if quota is None:
        raise NotFound(f"Quota {quota_id} not found.")
    if expected_version is not None and expected_version != quota.version:
        raise Conflict(
            f"Quota {quota_id} is at version {quota.version}, not {expected_version}; "
            "re-read it and retry."
        )

    values = {field: getattr(quota, field) for field in UPDATABLE_FIELDS}
    values.update(changes)
    _not_null(values, "limit_value")
    _not_null(values, "overcommit_ratio")
    _not_null(values, "period")
    _not_null(values, "carryover_limit")
    limit_value, ratio = values["limit_value"], values["overcommit_ratio"]
    _refuse(
        rules.own_limit_breaches(
            limit_value=limit_value,
            soft_limit=values["soft_limit"],
            burst_limit=values["burst_limit"],
        )
        + rules.budget_breaches(
            time_based=quota.resource_type.kind == ResourceType.Kind.TIME_BASED,
            period=values["period"],
            carryover_limit=values["carryover_limit"],
            limit_value=limit_value,
        )
        + rules.alert_threshold_breaches(values["alert_thresholds"])
    )
    values["alert_thresholds"] = _sorted(values["alert_thresholds"])
    if limit_value != quota.limit_value or ratio != quota.overcommit_ratio:
        parent = locked.get(quota.parent_id)
        if parent is not None and limit_value != quota.limit_value:
            _refuse(
                _parent_breaches(
                    parent=parent,
                    entity_type=quota.entity_type,
                    resource_type=quota.resource_type_id,
                    limit_value=limit_value,
                    exclude_id=quota.id,
                )
            )
        _refuse(_family_breaches(quota=quota, limit_value=limit_value, ratio=ratio))
        new_effective = rules.effective_limit(limit_value, ratio, quota.carried_over)
        if not force and rules.lowering_needs_force(
            old_effective=quota.effective_limit,
            new_effective=new_effective,
            used=quota.used,
        ):
            raise Conflict(
                rules.below_usage_message(new_effective=new_effective, used=quota.used)
                + "; resend with force=true to lower it anyway (running jobs keep "
                "their quota, new allocations are refused until usage drops)."
            )

    changed = [f for f in UPDATABLE_FIELDS if values[f] != getattr(quota, f)]
    if not changed:
        return quota
    old = {field: getattr(quota, field) for field in changed}
    for field in UPDATABLE_FIELDS:
        setattr(quota, field, values[field])
    saved = [*UPDATABLE_FIELDS, "version", "updated_at"]
    if "period" in changed:
        # The new period starts now; what was carried over belonged to the old
        # schedule. `consumed` follows on the signal, under this lock.
        quota.period_start, quota.period_end = period_bounds(quota.period)
        quota.carried_over = Decimal(0)
        saved += ["period_start", "period_end", "carried_over"]
    if "alert_thresholds" in changed:
        # New thresholds start unfired: those usage has already reached fire now.
        quota.alerted_level = Decimal(0)
        saved.append("alerted_level")
    quota.version += 1
    quota.updated_at = Now()
    quota.save(update_fields=saved)
    if "period" in changed:
        quota_period_changed.send(sender=Quota, quota=quota)
    quota.refresh_from_db()
    record_change(
        quota=quota,
        action=ChangeAction.UPDATE,
        old=old,
        new={field: getattr(quota, field) for field in changed},
        actor=actor,
        reason=reason,
    )
    # A new cap, soft limit or set of thresholds may cross one (still locked).
    raise_alerts([quota.id])
    quota.refresh_from_db()
    return quota


@transaction.atomic
def quota_delete(
    *,
    quota_id: UUID,
    actor: Actor | None = None,
    reason: str = "",
    scope: Scope | None = None,
) -> None:
    reason = change_reason_clean(reason)
    ensure_may_change(quota_id, scope)
    # Lock the quota: a child created concurrently locks it as its parent first,
    # so "no children" stays true until we commit.
    quota = lock_quotas([quota_id]).get(quota_id)
    if quota is None:
        raise NotFound(f"Quota {quota_id} not found.")
    if Quota.objects.filter(parent_id=quota_id).exists():
        raise Conflict(f"Quota {quota_id} has child quotas; delete them first.")
    # What is reserved is held by active allocations; what a budget consumed is
    # history, which outlives the quota.
    if quota.reserved > 0:
        raise Conflict(f"Quota {quota_id} has active allocations in its subtree.")
    quota_deleting.send(sender=Quota, quota=quota)
    # Recorded first: deleting clears the instance's primary key.
    record_change(
        quota=quota,
        action=ChangeAction.DELETE,
        old=snapshot(quota),
        new={},
        actor=actor,
        reason=reason,
    )
    quota.delete()
