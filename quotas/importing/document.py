"""The document model: what a quota file holds, and how its problems are named.

Nesting carries the hierarchy: under each resource type, the quotas of each entity
type stand in a group (``organizations``, ``teams``, ``users``), keyed by entity id,
and a quota's children stand in the one group its entity type may hold.
"""

from dataclasses import dataclass, field
from decimal import Decimal
from typing import NamedTuple

from quotas.models import EntityType, Quota
from quotas.rules import PARENT_ENTITY_TYPE, effective_limit

FORMAT_VERSION = 1
FORMATS = ("yaml", "json")
LIMIT_FIELDS = ("limit_value", "soft_limit", "burst_limit", "overcommit_ratio")
# A budget's settings (time-based resources, DESIGN §3a), left out of a document
# when they are the defaults: no period, nothing carried over.
BUDGET_FIELDS = ("period", "carryover_limit")
# A quota's own alert thresholds (DESIGN §7a), left out when it has none of its own
# (it then alerts at ALERT_THRESHOLDS).
ALERT_FIELDS = ("alert_thresholds",)
QUOTA_FIELDS = (*LIMIT_FIELDS, *BUDGET_FIELDS, *ALERT_FIELDS)
# The key that holds the quotas of each entity type, in document order.
GROUPS = {
    "organizations": EntityType.ORGANIZATION,
    "teams": EntityType.TEAM,
    "users": EntityType.USER,
}
GROUP_OF = {entity_type: group for group, entity_type in GROUPS.items()}
# The one group a quota of each entity type may hold: the group of the entity type
# whose parent it must be (DESIGN §3, rules.PARENT_ENTITY_TYPE: a team's parent is
# an organization, a user's parent is a team). Derived, so the rule is written once.
CHILD_GROUP = {
    entity_type: next(
        (
            GROUP_OF[child]
            for child, parent in PARENT_ENTITY_TYPE.items()
            if parent == entity_type
        ),
        None,
    )
    for entity_type in GROUPS.values()
}
ENTITY_ID_MAX_LENGTH = 255


class QuotaKey(NamedTuple):
    """What identifies a quota in a document: one per entity and resource type."""

    resource_type: str
    entity_type: str
    entity_id: str

    def __str__(self) -> str:
        return f"{self.resource_type} {self.entity_type} {self.entity_id}"


def key_of(quota: Quota) -> QuotaKey:
    return QuotaKey(quota.resource_type_id, quota.entity_type, quota.entity_id)


@dataclass(frozen=True)
class Problem:
    """Something wrong with the file, and where: the keys leading to it and, for
    YAML, the line."""

    message: str
    path: tuple[str, ...] = ()
    line: int | None = None

    def __str__(self) -> str:
        where = [f"line {self.line}"] if self.line is not None else []
        if self.path:
            where.append(" › ".join(self.path))
        return f"{', '.join(where)}: {self.message}" if where else self.message


@dataclass
class TargetQuota:
    """One quota as the document wants it."""

    key: QuotaKey
    parent: QuotaKey | None
    depth: int
    values: dict[str, Decimal | None]
    path: tuple[str, ...]
    line: int | None
    # The lines of its own keys (YAML), to point at the value at fault.
    key_lines: dict[str, int] = field(default_factory=dict)
    # False when a value could not be read; rules between quotas then skip it.
    readable: bool = True

    def problem(self, message: str, *, name: str | None = None) -> Problem:
        """A problem at this quota, or at one of its keys."""
        if name is None:
            return Problem(message, self.path, self.line)
        return Problem(message, (*self.path, name), self.key_lines.get(name, self.line))

    @property
    def effective_limit(self) -> Decimal:
        return effective_limit(
            self.values["limit_value"], self.values["overcommit_ratio"]
        )

    def where(self) -> str:
        """Where it stands in the file: its line, or (JSON) its path."""
        if self.line is not None:
            return f"line {self.line}"
        return " › ".join(self.path)
