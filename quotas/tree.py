"""The quota hierarchy as text trees, for ``manage.py quota_tree``.

``quota_forests`` reads what is to be drawn in at most three queries whatever the
size of the hierarchy (the resource types, the entities asked for, their subtrees);
``render_forests`` turns it into lines without touching the database.
"""

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from decimal import ROUND_FLOOR, Decimal
from uuid import UUID

from horizon_quota.amounts import amount_text
from horizon_quota.errors import NotFound
from quotas import rules
from quotas.models import EntityType, Quota, ResourceType
from quotas.selectors import resource_type_get

# Siblings are drawn organizations first, then teams, then users, each by entity_id,
# so the same hierarchy always prints the same way.
ENTITY_TYPE_ORDER = {
    EntityType.ORGANIZATION: 0,
    EntityType.TEAM: 1,
    EntityType.USER: 2,
}
BAR_WIDTH = 16
FULL, EMPTY = "█", "░"
# The fields a line shows; deferring the rest keeps the one big read small.
_TREE_FIELDS = (
    "id",
    "parent_id",
    "entity_type",
    "entity_id",
    "resource_type_id",
    "limit_value",
    "soft_limit",
    "burst_limit",
    "overcommit_ratio",
    "used",
    "reserved",
    "consumed",
    "carried_over",
)


@dataclass
class Forest:
    """The quotas of one resource type to draw: roots and each quota's children,
    already in drawing order."""

    resource_type: ResourceType
    roots: list[Quota] = field(default_factory=list)
    children: dict[UUID, list[Quota]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.roots) + sum(len(kids) for kids in self.children.values())


def sibling_order(quota: Quota) -> tuple[int, str]:
    rank = ENTITY_TYPE_ORDER.get(quota.entity_type, len(ENTITY_TYPE_ORDER))
    return rank, quota.entity_id


def quota_forests(
    *, resource_type: str | None = None, entity_id: str | None = None
) -> list[Forest]:
    """One forest per resource type (or only ``resource_type``), each holding the
    whole hierarchy or, with ``entity_id``, the subtrees of the quotas of that
    entity (of any entity type).

    Raises ``InvalidInput`` for an unknown resource type and ``NotFound`` when the
    entity has no quota (on that resource type).
    """
    if resource_type is not None:
        resource_types = [resource_type_get(slug=resource_type)]
    else:
        resource_types = list(ResourceType.objects.order_by("slug"))
    slugs = [rtype.slug for rtype in resource_types]

    quotas = Quota.objects.filter(resource_type_id__in=slugs).only(*_TREE_FIELDS)
    roots: set[UUID] | None = None
    if entity_id is not None:
        matches = dict(
            Quota.objects.filter(
                entity_id=entity_id, resource_type_id__in=slugs
            ).values_list("id", "path")
        )
        if not matches:
            where = f" on {slugs[0]}" if resource_type is not None else ""
            raise NotFound(f"No quota for entity {entity_id!r}{where}.")
        # A team and a user may share an id, one under the other: draw the
        # outer subtree once rather than the inner one twice.
        roots = {
            quota_id
            for quota_id, path in matches.items()
            if not any(ancestor in matches for ancestor in path[1:])
        }
        quotas = quotas.filter(path__overlap=list(roots))

    forests = {rtype.slug: Forest(resource_type=rtype) for rtype in resource_types}
    children: dict[UUID, list[Quota]] = defaultdict(list)
    for quota in quotas:
        is_root = quota.id in roots if roots is not None else quota.parent_id is None
        if is_root:
            forests[quota.resource_type_id].roots.append(quota)
        else:
            children[quota.parent_id].append(quota)
    for forest in forests.values():
        forest.roots.sort(key=sibling_order)
    for kids in children.values():
        kids.sort(key=sibling_order)
    for quota_id, kids in children.items():
        forests[kids[0].resource_type_id].children[quota_id] = kids
    return list(forests.values())


def _amount(value: Decimal) -> str:
    return amount_text(value)


def utilization(quota: Quota) -> tuple[str, str]:
    """The bar and the percentage for a quota, e.g. ``[████████░░░░░░░░]``, ``52%``.

    The percentage is rounded down (99.9 % is not shown as full) and uncapped (a
    quota lowered with force or in burst can be above 100 %); any usage at all fills
    at least one cell and shows at least ``<1%``.
    """
    effective, used = quota.effective_limit, quota.used
    if effective > 0:
        fraction = used / effective
        percent = int((fraction * 100).to_integral_value(rounding=ROUND_FLOOR))
        label = "<1%" if used > 0 and percent == 0 else f"{percent}%"
    else:
        # Nothing can be promised against a zero limit; usage there (by burst) is
        # all overflow.
        fraction = Decimal(1) if used > 0 else Decimal(0)
        label = "—" if used > 0 else "0%"
    cells = int(
        (min(fraction, Decimal(1)) * BAR_WIDTH).to_integral_value(rounding=ROUND_FLOOR)
    )
    if used > 0:
        cells = max(cells, 1)
    return f"[{FULL * cells}{EMPTY * (BAR_WIDTH - cells)}]", label


def status_marks(quota: Quota) -> str:
    """What an operator should notice: usage above the soft limit, none left, or
    more in use than the hard limit (burst, or a limit lowered with force)."""
    marks = []
    if rules.above_soft_limit(used=quota.used, soft_limit=quota.soft_limit):
        marks.append(f"above soft limit {_amount(quota.soft_limit)}")
    state = rules.quota_usage_state(quota)
    if state == rules.UsageState.OVER:
        marks.append("OVER HARD LIMIT")
    elif state == rules.UsageState.FULL:
        marks.append("AT HARD LIMIT")
    return "; ".join(marks)


def _cells(quota: Quota) -> list[str]:
    limit = f"limit {_amount(quota.limit_value)}"
    if quota.overcommit_ratio != 1:
        limit += (
            f" ×{_amount(quota.overcommit_ratio)}"
            f" = {_amount(quota.effective_limit)} effective"
        )
    bar, percent = utilization(quota)
    return [
        limit,
        f"used {_amount(quota.used)}",
        f"available {_amount(quota.available)}",
        f"{bar} {percent:>4}",
    ]


def _walk(forest: Forest) -> Iterator[tuple[str, Quota]]:
    """(tree prefix + label, quota) in drawing order, depth first."""

    def visit(quota: Quota, lead: str, branch: str) -> Iterator[tuple[str, Quota]]:
        yield f"{lead}{branch}{quota.entity_type} {quota.entity_id}", quota
        # Under a root the lead stays empty; under a child it continues the
        # child's own vertical line while it has later siblings.
        below = lead + {"": "", "├── ": "│   ", "└── ": "    "}[branch]
        kids = forest.children.get(quota.id, [])
        for index, kid in enumerate(kids):
            last = index == len(kids) - 1
            yield from visit(kid, below, "└── " if last else "├── ")

    for root in forest.roots:
        yield from visit(root, "", "")


def render_forest(forest: Forest) -> list[str]:
    rtype = forest.resource_type
    lines = [f"{rtype.slug} ({rtype.unit}, {rtype.kind.replace('_', ' ')})"]
    rows = [
        (label, _cells(quota), status_marks(quota)) for label, quota in _walk(forest)
    ]
    if not rows:
        return [*lines, "  (no quotas)"]
    widths = [max(len(label) for label, _, _ in rows)] + [
        max(len(cells[column]) for _, cells, _ in rows)
        for column in range(len(rows[0][1]))
    ]
    for label, cells, marks in rows:
        columns = [label, *cells]
        text = "  ".join(
            column.ljust(width) for column, width in zip(columns, widths, strict=True)
        )
        lines.append(f"{text}  {marks}".rstrip())
    return lines


def render_forests(forests: list[Forest], *, keep_empty: bool = False) -> list[str]:
    """The trees, separated by a blank line; forests without quotas are left out
    unless ``keep_empty`` (when one resource type was asked for by name)."""
    lines: list[str] = []
    for forest in forests:
        if not len(forest) and not keep_empty:
            continue
        if lines:
            lines.append("")
        lines.extend(render_forest(forest))
    return lines
