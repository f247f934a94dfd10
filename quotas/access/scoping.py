"""API key scopes (DESIGN §6, promise P3): the one place that confines a key to a
quota subtree.

A key scoped to quota S sees exactly the quotas whose ``path`` (their own id and
their ancestors' ids) contains S: ``path @> ARRAY[S]``, served by the GIN index
``quotas_path_gin`` (quotas migration 0006). Everything hanging off a quota
(allocations, usage history, the audit trail) is in scope when its quota is; rows
whose quota is gone are visible to unscoped keys only.

Outside its scope every object answers 404, as if it did not exist, and lists leave
it out. Inside, a scoped key may not create a root quota nor change or delete its own
root (the scope quota itself): those are 403.

``scope_id`` is ``None`` for an unscoped key (and for the admin and commands): every
function here is then a no-op.
"""

from uuid import UUID

from django.db.models import QuerySet

from horizon_quota.errors import Forbidden, NotFound
from quotas.models import Quota


def scope_of(api_key) -> UUID | None:
    """The scope of a request's key (``request.auth``), or None."""
    return getattr(api_key, "scope_id", None)


def quotas_in_scope(queryset: QuerySet, scope_id: UUID | None) -> QuerySet:
    """``queryset`` (of quotas) narrowed to the scope's subtree."""
    if scope_id is None:
        return queryset
    return queryset.filter(path__contains=[scope_id])


def by_quota_in_scope(
    queryset: QuerySet, scope_id: UUID | None, *, field: str = "quota_id"
) -> QuerySet:
    """``queryset`` (rows naming a quota in ``field``) narrowed to rows whose quota
    exists and lies in the scope's subtree."""
    if scope_id is None:
        return queryset
    inside = Quota.objects.filter(path__contains=[scope_id]).values("id")
    return queryset.filter(**{f"{field}__in": inside})


def quota_in_scope(quota_id: UUID, scope_id: UUID | None) -> bool:
    """Whether the quota exists and lies in the scope (always True unscoped)."""
    if scope_id is None:
        return True
    return Quota.objects.filter(id=quota_id, path__contains=[scope_id]).exists()


def ensure_entity_in_scope(
    *, entity_type: str, entity_id: str, resource_type: str, scope_id: UUID | None
) -> None:
    """For check and allocate, before anything is written: the entity's quota must
    lie in the scope, else the same 404 as for an entity without a quota. The path
    never changes after creation, so this answer cannot go stale."""
    if scope_id is None:
        return
    inside = Quota.objects.filter(
        entity_type=(entity_type or "").strip().lower(),
        entity_id=entity_id,
        resource_type_id=(resource_type or "").strip().lower(),
        path__contains=[scope_id],
    ).exists()
    if not inside:
        raise NotFound(f"No {resource_type} quota for {entity_type} {entity_id!r}.")


def ensure_may_create_under(parent_id: UUID | None, scope_id: UUID | None) -> None:
    """A scoped key creates quotas only inside its subtree, never a root."""
    if scope_id is None:
        return
    if parent_id is None:
        raise Forbidden("A scoped API key cannot create a root quota.")
    if not quota_in_scope(parent_id, scope_id):
        raise NotFound(f"Parent quota {parent_id} not found.")


def ensure_may_change(quota_id: UUID, scope_id: UUID | None) -> None:
    """A scoped key changes or deletes quotas inside its subtree, not its root."""
    if scope_id is None:
        return
    if not quota_in_scope(quota_id, scope_id):
        raise NotFound(f"Quota {quota_id} not found.")
    if str(quota_id) == str(scope_id):
        raise Forbidden(
            "A scoped API key cannot change or delete the quota it is scoped to."
        )
