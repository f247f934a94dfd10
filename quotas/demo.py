"""The small demo hierarchy loaded by ``manage.py seed_demo`` and the run command."""

from decimal import ROUND_DOWN, Decimal

from quotas.models import EntityType, Quota
from quotas.services import quota_create

ORGANIZATION = "acme"
TEAMS = {
    "acme-research": (Decimal("0.6"), ["alice", "bob"]),
    "acme-platform": (Decimal("0.4"), ["carol", "dave"]),
}
ORGANIZATION_LIMITS = {
    "gpu_hours": Decimal("10000"),
    "concurrent_gpus": Decimal("64"),
    "storage_gb": Decimal("100000"),
    "cpu_hours": Decimal("200000"),
    "memory_gb": Decimal("8192"),
}


def _ensure(entity_type, entity_id, resource_type, limit_value, parent=None):
    existing = Quota.objects.filter(
        entity_type=entity_type, entity_id=entity_id, resource_type_id=resource_type
    ).first()
    if existing:
        return existing, False
    quota = quota_create(
        entity_type=entity_type,
        entity_id=entity_id,
        resource_type=resource_type,
        parent_id=parent.id if parent else None,
        limit_value=limit_value,
        soft_limit=(limit_value * Decimal("0.8")).quantize(
            Decimal("1"), rounding=ROUND_DOWN
        ),
        burst_limit=(limit_value * Decimal("1.2")).quantize(
            Decimal("1"), rounding=ROUND_DOWN
        ),
    )
    return quota, True


def seed_demo() -> tuple[int, int]:
    """Create what is missing of the demo tree; return (created, already present)."""
    created = existing = 0
    for resource_type, org_limit in ORGANIZATION_LIMITS.items():
        org, new = _ensure(
            EntityType.ORGANIZATION, ORGANIZATION, resource_type, org_limit
        )
        created, existing = created + new, existing + (not new)
        for team_id, (share, users) in TEAMS.items():
            team_limit = (org_limit * share).quantize(Decimal("1"), rounding=ROUND_DOWN)
            team, new = _ensure(
                EntityType.TEAM, team_id, resource_type, team_limit, org
            )
            created, existing = created + new, existing + (not new)
            for user in users:
                user_limit = (team_limit / len(users)).quantize(
                    Decimal("1"), rounding=ROUND_DOWN
                )
                _, new = _ensure(EntityType.USER, user, resource_type, user_limit, team)
                created, existing = created + new, existing + (not new)
    return created, existing
