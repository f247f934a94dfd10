"""The audit trail of quota changes: who, when, why, and each field's old → new.

The quota services (``quotas.services``) record every create, update and delete
here, in the transaction that makes the change; a refused change, or an update
that changes nothing, records nothing. ``Actor`` says who made the change.
"""

import unicodedata
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from horizon_quota.amounts import amount_text
from horizon_quota.errors import InvalidInput
from quotas.events.models import EventType
from quotas.events.services import quota_event, record_events
from quotas.models import REASON_MAX_LENGTH, ActorType, ApiKey, Quota, QuotaChange

UPDATABLE_FIELDS = (
    "limit_value",
    "soft_limit",
    "burst_limit",
    "overcommit_ratio",
    "period",
    "carryover_limit",
    "alert_thresholds",
)
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


def audit_value(value):
    """A field's value as the trail stores it: exact decimals and ids as strings."""
    if value is None:
        return None
    if isinstance(value, Decimal):
        return amount_text(value)
    if isinstance(value, list | tuple):
        return [audit_value(item) for item in value]
    return str(value)


# A budget's settings at their defaults (no period, nothing carried over) are not
# recorded when a quota is created or deleted: on most quotas they mean nothing.
BUDGET_DEFAULTS = {"period": "none", "carryover_limit": Decimal(0)}


def snapshot(quota: Quota) -> dict[str, Any]:
    """The fields a create or delete records."""
    return {
        "entity_type": quota.entity_type,
        "entity_id": quota.entity_id,
        "resource_type": quota.resource_type_id,
        "parent_id": quota.parent_id,
        **{
            field: getattr(quota, field)
            for field in UPDATABLE_FIELDS
            if BUDGET_DEFAULTS.get(field, object()) != getattr(quota, field)
        },
    }


def record_change(
    *,
    quota: Quota,
    action: str,
    old: dict[str, Any],
    new: dict[str, Any],
    actor: Actor | None,
    reason: str,
) -> QuotaChange:
    """Append one row to the audit trail, inside the caller's transaction, and the
    ``quota.changed`` event that tells subscribers (DESIGN §7a): what changed and
    why, not who (an actor's name is the trail's, for admins)."""
    actor = actor or Actor.system()
    # Only what really changed: a create has no old values and records the fields
    # it sets, not the options it leaves empty (no [null, null]).
    changes = {
        field: [audit_value(old.get(field)), audit_value(new.get(field))]
        for field in AUDITED_FIELDS
        if (field in old or field in new)
        and audit_value(old.get(field)) != audit_value(new.get(field))
    }
    entry = QuotaChange.objects.create(
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
    record_events(
        [
            quota_event(
                EventType.QUOTA_CHANGED,
                quota,
                action=action,
                changes=changes,
                reason=reason,
            )
        ]
    )
    return entry
