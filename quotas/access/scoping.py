"""API key scopes (DESIGN §6, promise P3): the one place that confines a key.

A key may be scoped to an **entity** — an organization or a team (a user too) — across
every resource type, including types created after the key. It sees exactly the
quotas whose ``path`` (their own id and their ancestors' ids) holds a quota of that
entity: ``path && ARRAY(SELECT id FROM quotas WHERE entity = scope)``, one lookup
through the entity's unique index and then the GIN index ``quotas_path_gin``.
Everything hanging off a quota (allocations, usage history, the audit trail) is in
scope when its quota is; rows whose quota is gone are visible to unscoped keys only.

Outside its scope every object answers 404, as if it did not exist, and lists leave
it out. Inside, a scoped key may not create a quota whose parent lies above its scope
(a root, or the scope entity's own quotas) nor change or delete the scope entity's
own quotas: those are 403 (or 404 for a parent it cannot see).

The levels of an allocation path above the scope are redacted wherever they would
be reported (``redact_levels``): a scoped key learns nothing about them but whether
they allowed the request. The allocation engine itself refuses an entity outside the
scope before it writes anything (``allocations/sql/hq_in_scope.sql``).

``scope`` is ``None`` for an unscoped key (and for the admin and commands): every
function here is then a no-op.
"""

from dataclasses import dataclass, field
from uuid import UUID

from django.contrib.postgres.expressions import ArraySubquery
from django.db.models import QuerySet

from horizon_quota.errors import Forbidden, InvalidInput, NotFound
from quotas.models import EntityType, Quota

SCOPE_ENTITY_TYPES = (EntityType.ORGANIZATION, EntityType.TEAM, EntityType.USER)


@dataclass(frozen=True)
class Scope:
    """The entity a key is confined to."""

    entity_type: str
    entity_id: str

    def __str__(self) -> str:
        return f"{self.entity_type}:{self.entity_id}"

    def owns(self, entity_type: str, entity_id: str) -> bool:
        """Whether ``entity_type entity_id`` is the scope entity itself."""
        return entity_type == self.entity_type and entity_id == self.entity_id

    def quota_ids(self) -> ArraySubquery:
        """The ids of the scope entity's quotas (one per resource type), as an
        array expression for ``path__overlap``."""
        return ArraySubquery(
            Quota.objects.filter(
                entity_type=self.entity_type, entity_id=self.entity_id
            ).values("id")
        )

    @classmethod
    def parse(cls, text: str, *, subject: str = "a key") -> "Scope":
        """``organization:ID``, ``team:ID`` or ``user:ID``; or a quota id, meaning
        that quota's entity. The entity must hold at least one quota. ``subject``
        names what is being scoped in the messages (a key, a webhook endpoint)."""
        text = (text or "").strip()
        kind, separator, entity_id = text.partition(":")
        if separator and kind.strip().lower() in SCOPE_ENTITY_TYPES:
            scope = cls(kind.strip().lower(), entity_id)
            if (
                not entity_id
                or not Quota.objects.filter(
                    entity_type=scope.entity_type, entity_id=entity_id
                ).exists()
            ):
                raise InvalidInput(
                    f"Cannot scope {subject} to {text!r}: {scope.entity_type} "
                    f"{entity_id!r} has no quota."
                )
            return scope
        try:
            quota = Quota.objects.filter(id=UUID(text)).first()
        except ValueError:
            quota = None
        if quota is None:
            raise InvalidInput(cls.unknown_message(text, subject=subject))
        return cls(quota.entity_type, quota.entity_id)

    @staticmethod
    def unknown_message(text: str, *, subject: str = "a key") -> str:
        """What a scope that names no entity and no quota is refused with."""
        return (
            f"Cannot scope {subject} to {text!r}: give organization:ID, team:ID, "
            "user:ID or the id of a quota (meaning its entity)."
        )


def scope_of(api_key) -> Scope | None:
    """The scope of a request's key (``request.auth``), or None."""
    return getattr(api_key, "scope", None)


def quotas_in_scope(queryset: QuerySet, scope: Scope | None) -> QuerySet:
    """``queryset`` (of quotas) narrowed to the scope's subtrees."""
    if scope is None:
        return queryset
    return queryset.filter(path__overlap=scope.quota_ids())


def by_quota_in_scope(
    queryset: QuerySet, scope: Scope | None, *, field: str = "quota_id"
) -> QuerySet:
    """``queryset`` (rows naming a quota in ``field``) narrowed to rows whose quota
    exists and lies in the scope."""
    if scope is None:
        return queryset
    inside = quotas_in_scope(Quota.objects.all(), scope).values("id")
    return queryset.filter(**{f"{field}__in": inside})


def quota_in_scope(quota_id: UUID, scope: Scope | None) -> bool:
    """Whether the quota exists and lies in the scope (always True unscoped)."""
    if scope is None:
        return True
    return quotas_in_scope(Quota.objects.filter(id=quota_id), scope).exists()


def ensure_may_create_under(parent_id: UUID | None, scope: Scope | None) -> None:
    """A scoped key creates quotas only below its scope entity's quotas."""
    if scope is None:
        return
    if parent_id is None:
        raise Forbidden("A scoped API key cannot create a root quota.")
    if not quota_in_scope(parent_id, scope):
        raise NotFound(f"Parent quota {parent_id} not found.")


def ensure_may_change(quota_id: UUID, scope: Scope | None) -> None:
    """A scoped key changes or deletes quotas inside its scope, not the scope
    entity's own quotas."""
    if scope is None:
        return
    quota = (
        quotas_in_scope(Quota.objects.filter(id=quota_id), scope)
        .only("entity_type", "entity_id")
        .first()
    )
    if quota is None:
        raise NotFound(f"Quota {quota_id} not found.")
    if scope.owns(quota.entity_type, quota.entity_id):
        raise Forbidden(
            "A scoped API key cannot change or delete the quotas of the entity it "
            "is scoped to."
        )


def redact_levels(levels: list, scope: Scope | None) -> list:
    """The levels of a path (leaf first) as a key may see them: every level up to
    and including the scope entity's, then each level above it replaced by
    ``OutsideLevel`` (whether it allowed the request, nothing more).

    ``levels`` are objects with ``entity_type``, ``entity_id`` and ``allowed``; the
    path's leaf is known to lie in the scope (the engine refuses it otherwise).
    """
    if scope is None:
        return list(levels)
    for index, level in enumerate(levels):
        if scope.owns(level.entity_type, level.entity_id):
            return [
                *levels[: index + 1],
                *(
                    OutsideLevel(allowed=above.allowed, quota_id=above.quota_id)
                    for above in levels[index + 1 :]
                ),
            ]
    # Defensive: a path that does not run through the scope shows nothing.
    return [
        OutsideLevel(allowed=level.allowed, quota_id=level.quota_id) for level in levels
    ]


@dataclass(frozen=True)
class OutsideLevel:
    """A level above the key's scope: whether it allowed the request, nothing more.
    Its quota's id is kept for the service's own use (the order in which the engine
    walks levels) and never rendered."""

    allowed: bool
    quota_id: UUID | None = field(default=None, repr=False)
    outside = True

    def as_dict(self) -> dict:
        return {"scope": "outside", "allowed": self.allowed}
