"""Quota services: the only code that creates, changes or deletes quotas.

Every hierarchy rule of DESIGN §3 is checked here, before anything is written, with
the rows it depends on locked (``allocations.locking.lock_quotas``):

* a child change (create, raise, lower) locks the parent: all changes to a family's
  limits are serialized on the parent row, so two siblings raised at once cannot
  together overfill it;
* a parent change locks the parent itself: its children cannot change meanwhile, for
  the same reason.

These functions open ``transaction.atomic()`` rather than a durable block because the
Django admin calls them inside its own transaction; the locks are then held until the
admin's commit, which is still one short transaction.

Each of them also writes the change to the audit trail (``QuotaChange``) in the same
transaction: who made it (``Actor``), why (``reason``) and every field's old and new
value. A change that is refused, or an update that changes nothing, records nothing.
"""

import logging
import unicodedata
import uuid
from dataclasses import dataclass
from decimal import Decimal
from typing import Any
from uuid import UUID

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Max, Sum
from django.db.models.functions import Now

from allocations.locking import lock_quotas
from allocations.models import Allocation, AllocationStatus
from horizon_quota.errors import AlreadyExists, Conflict, InvalidInput, NotFound
from quotas.models import (
    PARENT_ENTITY_TYPE,
    REASON_MAX_LENGTH,
    ActorType,
    ApiKey,
    ApiKeyRole,
    ChangeAction,
    Quota,
    QuotaChange,
)
from quotas.scoping import ensure_may_change, ensure_may_create_under
from quotas.selectors import children_limit_sum, resource_type_get

UPDATABLE_FIELDS = ("limit_value", "soft_limit", "burst_limit", "overcommit_ratio")
IMMUTABLE_FIELDS = ("entity_type", "entity_id", "resource_type", "parent_id")
# The fields a create or delete records, in this order.
AUDITED_FIELDS = (*IMMUTABLE_FIELDS, *UPDATABLE_FIELDS)


@dataclass(frozen=True)
class Actor:
    """Who makes a change, as the audit trail records it."""

    type: str  # an ActorType
    id: str = ""
    name: str = ""

    @classmethod
    def for_api_key(cls, key: ApiKey) -> "Actor":
        return cls(type=ActorType.API_KEY, id=str(key.pk), name=key.name)

    @classmethod
    def for_staff_user(cls, user) -> "Actor":
        return cls(type=ActorType.STAFF_USER, id=str(user.pk), name=user.get_username())

    @classmethod
    def system(cls, name: str = "system") -> "Actor":
        """A command or other code acting on its own, e.g. ``"import_quotas"``."""
        return cls(type=ActorType.SYSTEM, name=name)


def change_reason_clean(reason: str | None, *, field: str = "reason") -> str:
    """The reason for a change, trimmed; at most REASON_MAX_LENGTH characters of
    printable text. ``field`` names the input in the error (the API's header)."""
    # Spaces and tabs around the text are not part of it (as around an HTTP header
    # value); any control character left is refused, not stripped or stored: it
    # could forge lines in whatever displays the trail, and PostgreSQL refuses NUL.
    reason = (reason or "").strip(" \t")
    if any(unicodedata.category(char) in ("Cc", "Cs") for char in reason):
        message = "Must not contain control characters."
        raise InvalidInput(f"{field}: {message}", fields={field: [message]})
    reason = reason.strip()
    if len(reason) > REASON_MAX_LENGTH:
        message = (
            f"Must be at most {REASON_MAX_LENGTH} characters (it has {len(reason)})."
        )
        raise InvalidInput(f"{field}: {message}", fields={field: [message]})
    return reason


def _audit_value(value):
    """A field's value as the trail stores it: exact decimals and ids as strings."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return _amount(value)
    return str(value)


def _snapshot(quota: Quota) -> dict[str, Any]:
    return {
        "entity_type": quota.entity_type,
        "entity_id": quota.entity_id,
        "resource_type": quota.resource_type_id,
        "parent_id": quota.parent_id,
        **{field: getattr(quota, field) for field in UPDATABLE_FIELDS},
    }


def _record_change(
    *,
    quota: Quota,
    action: str,
    old: dict[str, Any],
    new: dict[str, Any],
    actor: Actor | None,
    reason: str,
) -> QuotaChange:
    """Append one row to the audit trail, inside the caller's transaction."""
    actor = actor or Actor.system()
    changes = {
        field: [_audit_value(old.get(field)), _audit_value(new.get(field))]
        for field in AUDITED_FIELDS
        if field in old or field in new
    }
    return QuotaChange.objects.create(
        quota_id=quota.id,
        entity_type=quota.entity_type,
        entity_id=quota.entity_id,
        resource_type=quota.resource_type_id,
        action=action,
        actor_type=actor.type,
        actor_id=actor.id[: QuotaChange._meta.get_field("actor_id").max_length],
        actor_name=actor.name[: QuotaChange._meta.get_field("actor_name").max_length],
        changes=changes,
        reason=reason,
    )


def _amount(value: Decimal) -> str:
    return f"{value.normalize():f}" if isinstance(value, Decimal) else str(value)


def _with_article(entity_type: str) -> str:
    """'an organization', 'a team', 'a user'."""
    entity_type = str(entity_type)
    return f"{'an' if entity_type == 'organization' else 'a'} {entity_type}"


def _check_own_limits(
    *, limit_value: Decimal, soft_limit: Decimal | None, burst_limit: Decimal | None
) -> None:
    errors = {}
    if soft_limit is not None and soft_limit > limit_value:
        errors["soft_limit"] = [
            f"soft_limit ({_amount(soft_limit)}) must not exceed limit_value "
            f"({_amount(limit_value)})."
        ]
    if burst_limit is not None and burst_limit < limit_value:
        errors["burst_limit"] = [
            f"burst_limit ({_amount(burst_limit)}) must be at least limit_value "
            f"({_amount(limit_value)})."
        ]
    if errors:
        raise InvalidInput(
            " ".join(m for ms in errors.values() for m in ms), fields=errors
        )


def _check_fits_parent(*, parent: Quota, limit_value: Decimal, exclude_id=None) -> None:
    if limit_value > parent.limit_value:
        message = (
            f"limit_value ({_amount(limit_value)}) exceeds the parent's limit_value "
            f"({_amount(parent.limit_value)})."
        )
        raise InvalidInput(message, fields={"limit_value": [message]})
    siblings = children_limit_sum(parent_id=parent.id, exclude_id=exclude_id)
    if siblings + limit_value > parent.effective_limit:
        message = (
            f"The children's limits would sum to {_amount(siblings + limit_value)}, "
            f"above the parent's effective limit ({_amount(parent.effective_limit)})."
        )
        raise InvalidInput(message, fields={"limit_value": [message]})


def _check_holds_children(
    *, quota: Quota, limit_value: Decimal, ratio: Decimal
) -> None:
    # One aggregate, not the children's rows: a team may have 100k users.
    family = Quota.objects.filter(parent_id=quota.id).aggregate(
        largest=Max("limit_value"), total=Sum("limit_value")
    )
    largest, total = family["largest"], family["total"] or 0
    if largest is not None and largest > limit_value:
        message = (
            f"limit_value ({_amount(limit_value)}) is below a child's limit_value "
            f"({_amount(largest)})."
        )
        raise InvalidInput(message, fields={"limit_value": [message]})
    if total > limit_value * ratio:
        message = (
            f"The children's limits sum to {_amount(total)}, above the new effective "
            f"limit ({_amount(limit_value * ratio)})."
        )
        raise InvalidInput(message, fields={"limit_value": [message]})


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
    actor: Actor | None = None,
    reason: str = "",
    scope_id: UUID | None = None,
) -> Quota:
    """Create a quota; a key scoped to ``scope_id`` only inside its subtree."""
    reason = change_reason_clean(reason)
    ensure_may_create_under(parent_id, scope_id)
    rtype = resource_type_get(slug=resource_type)
    _check_own_limits(
        limit_value=limit_value, soft_limit=soft_limit, burst_limit=burst_limit
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
        expected = PARENT_ENTITY_TYPE.get(entity_type)
        if expected is None or parent.entity_type != expected:
            message = (
                f"{_with_article(entity_type).capitalize()} cannot have "
                f"{_with_article(parent.entity_type)} parent"
                + (
                    f"; its parent must be {_with_article(expected)}."
                    if expected
                    else "; an organization has no parent."
                )
            )
            raise InvalidInput(message, fields={"parent_id": [message]})
        if parent.resource_type_id != rtype.slug:
            message = (
                f"The parent's resource_type is {parent.resource_type_id}, not "
                f"{rtype.slug}."
            )
            raise InvalidInput(message, fields={"resource_type": [message]})
        _check_fits_parent(parent=parent, limit_value=limit_value)

    if Quota.objects.filter(
        entity_type=entity_type, entity_id=entity_id, resource_type=rtype
    ).exists():
        raise AlreadyExists(
            f"A {rtype.slug} quota for {entity_type} {entity_id!r} already exists."
        )

    quota_id = uuid.uuid4()
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
    )
    try:
        # A savepoint, so a lost race on the unique key leaves the caller's
        # transaction usable (the admin's, for one).
        with transaction.atomic():
            quota.save(force_insert=True)
    except IntegrityError:
        raise AlreadyExists(
            f"A {rtype.slug} quota for {entity_type} {entity_id!r} already exists."
        ) from None
    quota.refresh_from_db()
    _record_change(
        quota=quota,
        action=ChangeAction.CREATE,
        old={},
        new=_snapshot(quota),
        actor=actor,
        reason=reason,
    )
    return quota


@transaction.atomic
def quota_update(
    *,
    quota_id: UUID,
    changes: dict[str, Any],
    force: bool = False,
    expected_version: int | None = None,
    actor: Actor | None = None,
    reason: str = "",
    scope_id: UUID | None = None,
) -> Quota:
    """Apply ``changes`` (a subset of UPDATABLE_FIELDS; ``None`` clears soft and
    burst limits) after checking every rule from both sides of the hierarchy."""
    reason = change_reason_clean(reason)
    ensure_may_change(quota_id, scope_id)
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
    if values["limit_value"] is None:
        raise InvalidInput(
            "limit_value cannot be null.", fields={"limit_value": ["May not be null."]}
        )
    if values["overcommit_ratio"] is None:
        raise InvalidInput(
            "overcommit_ratio cannot be null.",
            fields={"overcommit_ratio": ["May not be null."]},
        )
    _check_own_limits(
        limit_value=values["limit_value"],
        soft_limit=values["soft_limit"],
        burst_limit=values["burst_limit"],
    )
    limit_value, ratio = values["limit_value"], values["overcommit_ratio"]
    family_changed = limit_value != quota.limit_value or ratio != quota.overcommit_ratio
    if family_changed:
        parent = locked.get(quota.parent_id)
        if parent is not None and limit_value != quota.limit_value:
            _check_fits_parent(
                parent=parent, limit_value=limit_value, exclude_id=quota.id
            )
        _check_holds_children(quota=quota, limit_value=limit_value, ratio=ratio)
        # Only a lowering needs force: after a forced lowering, usage may sit above
        # the limit, and raising the limit part of the way back must not need it.
        new_effective = limit_value * ratio
        lowered = new_effective < quota.effective_limit
        if lowered and new_effective < quota.used and not force:
            raise Conflict(
                f"The new effective limit ({_amount(limit_value * ratio)}) is below "
                f"current usage ({_amount(quota.used)}); resend with force=true to "
                "lower it anyway (running jobs keep their quota, new allocations are "
                "refused until usage drops)."
            )

    if all(values[field] == getattr(quota, field) for field in UPDATABLE_FIELDS):
        return quota
    changed = [f for f in UPDATABLE_FIELDS if values[f] != getattr(quota, f)]
    old = {field: getattr(quota, field) for field in changed}
    for field in UPDATABLE_FIELDS:
        setattr(quota, field, values[field])
    quota.version += 1
    quota.updated_at = Now()
    quota.save(update_fields=[*UPDATABLE_FIELDS, "version", "updated_at"])
    quota.refresh_from_db()
    _record_change(
        quota=quota,
        action=ChangeAction.UPDATE,
        old=old,
        new={field: getattr(quota, field) for field in changed},
        actor=actor,
        reason=reason,
    )
    return quota


@transaction.atomic
def quota_delete(
    *,
    quota_id: UUID,
    actor: Actor | None = None,
    reason: str = "",
    scope_id: UUID | None = None,
) -> None:
    reason = change_reason_clean(reason)
    ensure_may_change(quota_id, scope_id)
    # Lock the quota: a child created concurrently locks it as its parent first,
    # so "no children" stays true until we commit.
    quota = lock_quotas([quota_id]).get(quota_id)
    if quota is None:
        raise NotFound(f"Quota {quota_id} not found.")
    if Quota.objects.filter(parent_id=quota_id).exists():
        raise Conflict(f"Quota {quota_id} has child quotas; delete them first.")
    # Allocations insert their row before they lock the quota: one still in flight
    # finds the quota gone when it reaches it and undoes itself.
    if (
        quota.used > 0
        or Allocation.objects.filter(
            quota_id=quota_id, status=AllocationStatus.ACTIVE
        ).exists()
    ):
        raise Conflict(f"Quota {quota_id} has active allocations in its subtree.")
    # Recorded first: deleting clears the instance's primary key.
    _record_change(
        quota=quota,
        action=ChangeAction.DELETE,
        old=_snapshot(quota),
        new={},
        actor=actor,
        reason=reason,
    )
    quota.delete()


def api_key_create(
    *,
    name: str,
    role: str,
    scope_id: UUID | str | None = None,
    expires_at=None,
) -> tuple[ApiKey, str]:
    """Create a key; return it with the raw secret, which is never stored."""
    if role not in ApiKeyRole.values:
        raise InvalidInput(
            f"Unknown role {role!r}; valid: {', '.join(ApiKeyRole.values)}."
        )
    if not name or not name.strip():
        raise InvalidInput("A key needs a name.")
    scope = None
    if scope_id is not None:
        try:
            scope = Quota.objects.get(id=scope_id)
        except (Quota.DoesNotExist, ValidationError, ValueError):
            raise InvalidInput(f"No quota {scope_id} to scope the key to.") from None
    prefix, raw_key = ApiKey.generate()
    key = ApiKey.objects.create(
        name=name.strip(),
        role=role,
        scope=scope,
        expires_at=expires_at,
        prefix=prefix,
        key_hash=ApiKey.hash_key(raw_key),
    )
    return key, raw_key


_key_log = logging.getLogger(__name__)


def _api_key_lookup(key_id_or_prefix) -> ApiKey:
    """The key with this prefix or, failing that, this numeric id; locked."""
    value = str(key_id_or_prefix).strip()
    keys = ApiKey.objects.select_for_update()
    key = keys.filter(prefix=value).first() if value else None
    if key is None and value.isdigit() and len(value) < 19:
        key = keys.filter(id=int(value)).first()
    if key is None:
        raise NotFound(f"No API key with prefix or id {value!r}.")
    return key


def api_key_revoke(*, key_id_or_prefix, actor: Actor | None = None) -> ApiKey:
    """Revoke a key (``revoked_at`` = the database clock) and forget it in this
    process's authentication cache; other processes refuse it within
    API_KEY_CACHE_SECONDS. Revoking a revoked key is a ``Conflict``."""
    with transaction.atomic():
        key = _api_key_lookup(key_id_or_prefix)
        if key.revoked_at is not None:
            raise Conflict(
                f"API key {key.prefix} ({key.name}) was already revoked at "
                f"{key.revoked_at:%Y-%m-%dT%H:%M:%SZ}."
            )
        ApiKey.objects.filter(pk=key.pk).update(revoked_at=Now())
        key.refresh_from_db(fields=["revoked_at"])
    from quotas.authentication import forget_verified_key

    forget_verified_key(key.pk)
    actor = actor or Actor.system()
    _key_log.info(
        "API key %s (%s) revoked by %s %s", key.prefix, key.name, actor.type, actor.name
    )
    return key
