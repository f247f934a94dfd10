"""A parsed document walked into the target state, with every problem and its line.

The rules of DESIGN §3 are asked of ``quotas.rules``, as the services ask them, so
a file and an API call are refused for the same reasons in the same words; this
module only says where in the file each broken rule is. What belongs to the
document alone (unknown or repeated keys, a group under the wrong entity type,
unreadable amounts) is checked here.
"""

from collections import defaultdict
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from horizon_quota.amounts import AmountError, parse_amount
from quotas import rules
from quotas.importing.document import (
    CHILD_GROUP,
    ENTITY_ID_MAX_LENGTH,
    FORMAT_VERSION,
    GROUP_OF,
    GROUPS,
    LIMIT_FIELDS,
    QUOTA_FIELDS,
    Problem,
    QuotaKey,
    TargetQuota,
)
from quotas.importing.text import _Mapping
from quotas.models import BudgetPeriod

PERIODS = tuple(BudgetPeriod.values)

# As the API takes it: 1.00–999.99, two decimal places (DESIGN §5).
_RATIO_AMOUNT = {
    "integer_digits": 3,
    "places": 2,
    "minimum": Decimal("1"),
    "maximum": Decimal("999.99"),
}


class _Reader:
    """Walks a parsed document into TargetQuotas, collecting every problem."""

    def __init__(self, *, resource_types: dict[str, str]):
        # slug → kind (concurrent or time_based)
        self.kinds = dict(resource_types)
        self.resource_types = sorted(self.kinds)
        self.targets: dict[QuotaKey, TargetQuota] = {}
        self.problems: list[Problem] = []

    def problem(self, message: str, path: tuple[str, ...], line: int | None) -> None:
        self.problems.append(Problem(message, path, line))

    def mapping(
        self, value: Any, *, path: tuple[str, ...], line: int | None, what: str
    ) -> _Mapping | None:
        """``value`` as a mapping (``None`` as an empty one), or a problem."""
        if value is None:
            return _Mapping()
        if not isinstance(value, dict):
            self.problem(f"{what} must be a mapping, not {_kind(value)}.", path, line)
            return None
        if isinstance(value, _Mapping):
            for key, first, again in value.repeated:
                self.problem(
                    f"{key!r} appears more than once here"
                    + (f" (first at line {first})." if first else "."),
                    (*path, key),
                    again,
                )
        return value

    def document(self, document: Any) -> None:
        if document is None:
            self.problem("The file is empty.", (), None)
            return
        root = self.mapping(document, path=(), line=None, what="The file's top level")
        if root is None:
            return
        for key in root:
            if key not in ("version", "quotas"):
                self.problem(
                    f"unknown key {key!r}; expected version and quotas.",
                    (key,),
                    root.key_lines.get(key),
                )
        version = root.get("version")
        if "version" not in root:
            self.problem(
                f"version is missing (this format is {FORMAT_VERSION}).", (), None
            )
        elif version != FORMAT_VERSION or isinstance(version, bool):
            self.problem(
                f"unsupported version {version!r}; this format is {FORMAT_VERSION}.",
                ("version",),
                root.key_lines.get("version"),
            )
        if "quotas" not in root:
            self.problem("quotas is missing.", (), None)
            return
        line = root.key_lines.get("quotas")
        by_resource = self.mapping(
            root["quotas"], path=("quotas",), line=line, what="quotas"
        )
        if by_resource is None:
            return
        seen: dict[str, str] = {}
        for written, tree in by_resource.items():
            path = ("quotas", written)
            line = by_resource.key_lines.get(written)
            slug = written.strip().lower()
            if slug not in self.resource_types:
                self.problem(
                    f"unknown resource type {written!r}; valid: "
                    f"{', '.join(self.resource_types)}.",
                    path,
                    line,
                )
            elif slug in seen:
                self.problem(
                    f"resource type {slug} appears twice (also as {seen[slug]!r}).",
                    path,
                    line,
                )
            seen.setdefault(slug, written)
            groups = self.mapping(tree, path=path, line=line, what="A resource type")
            if groups is not None:
                self.groups(groups, slug=slug, parent=None, path=path)

    def groups(
        self,
        holder: _Mapping,
        *,
        slug: str,
        parent: TargetQuota | None,
        path: tuple[str, ...],
        skip: Iterable[str] = (),
    ) -> None:
        """The entity groups in ``holder`` (a resource type, or a quota's children;
        ``skip`` are the quota's own fields)."""
        parent_type = parent.key.entity_type if parent else None
        for group, entities in holder.items():
            if group in skip:
                continue
            line = holder.key_lines.get(group)
            if group not in GROUPS:
                allowed = list(GROUPS) if parent is None else [CHILD_GROUP[parent_type]]
                expected = [*skip, *(name for name in allowed if name)]
                self.problem(
                    f"unknown key {group!r}; expected {_one_of(expected)}.",
                    (*path, group),
                    line,
                )
                continue
            if rules.parent_type_breach(
                entity_type=GROUPS[group], parent_type=parent_type
            ):
                # Said in the document's terms (groups), not the API's (parent_id).
                self.problem(
                    _misplaced(GROUPS[group], under=parent_type), (*path, group), line
                )
                continue
            members = self.mapping(entities, path=(*path, group), line=line, what=group)
            if members is None:
                continue
            for entity_id, spec in members.items():
                self.quota(
                    spec,
                    key=QuotaKey(slug, GROUPS[group], entity_id),
                    parent=parent,
                    path=(*path, group, entity_id),
                    line=members.key_lines.get(entity_id),
                )

    def quota(
        self,
        spec: Any,
        *,
        key: QuotaKey,
        parent: TargetQuota | None,
        path: tuple[str, ...],
        line: int | None,
    ) -> None:
        entity_id = key.entity_id
        if not entity_id.strip():
            self.problem("an entity id must not be blank.", path, line)
        elif len(entity_id) > ENTITY_ID_MAX_LENGTH:
            self.problem(
                f"an entity id has at most {ENTITY_ID_MAX_LENGTH} characters "
                f"(this one has {len(entity_id)}).",
                path,
                line,
            )
        elif "\x00" in entity_id:
            self.problem("an entity id must not contain NUL characters.", path, line)
        if not isinstance(spec, dict):
            self.problem(
                f"a quota must be a mapping with at least limit_value, not "
                f"{_kind(spec)}.",
                path,
                line,
            )
            return
        spec = self.mapping(spec, path=path, line=line, what="A quota")
        lines = spec.key_lines
        values: dict[str, Any] = {}
        readable = True
        for name in LIMIT_FIELDS:
            raw = spec.get(name)
            if raw is None:
                if name == "limit_value":
                    self.problem("limit_value is missing.", path, line)
                    readable = False
                values[name] = Decimal("1") if name == "overcommit_ratio" else None
                continue
            bounds = _RATIO_AMOUNT if name == "overcommit_ratio" else {}
            try:
                values[name] = parse_amount(raw, **bounds)
            except AmountError as exc:
                self.problem(
                    f"{name} {_shown(raw)} is not valid: {exc}",
                    (*path, name),
                    lines.get(name, line),
                )
                values[name] = None
                readable = readable and name in ("soft_limit", "burst_limit")
        readable = self._budget(spec, values, path=path, line=line) and readable
        readable = self._alerts(spec, values, path=path, line=line) and readable
        target = TargetQuota(
            key=key,
            parent=parent.key if parent else None,
            depth=parent.depth + 1 if parent else 0,
            values=values,
            path=path,
            line=line,
            key_lines=lines,
            readable=readable,
        )
        if values["limit_value"] is not None:
            breaches = rules.own_limit_breaches(
                limit_value=values["limit_value"],
                soft_limit=values["soft_limit"],
                burst_limit=values["burst_limit"],
            )
            if values["carryover_limit"] is not None:
                breaches += rules.budget_breaches(
                    time_based=self.kinds.get(key.resource_type) == "time_based",
                    period=values["period"],
                    carryover_limit=values["carryover_limit"],
                    limit_value=values["limit_value"],
                )
            for breach in breaches:
                self.problems.append(target.problem(breach.message, name=breach.field))
        first = self.targets.get(key)
        if first is not None:
            self.problems.append(
                target.problem(
                    f"{key.entity_type} {key.entity_id} already has a {key[0]} quota "
                    f"at {first.where()}; an entity has one quota per resource type."
                )
            )
        else:
            self.targets[key] = target
        self.groups(
            spec, slug=key.resource_type, parent=target, path=path, skip=QUOTA_FIELDS
        )

    def _budget(self, spec, values: dict, *, path, line) -> bool:
        """Read a quota's budget settings into ``values``; False when one is not
        readable (the problem is recorded)."""
        lines = spec.key_lines
        period = spec.get("period")
        values["period"] = "none"
        readable = True
        if period is not None:
            text = period.strip().lower() if isinstance(period, str) else None
            if text not in PERIODS:
                self.problem(
                    f"period {_shown(period)} is not valid: one of "
                    f"{', '.join(PERIODS)}.",
                    (*path, "period"),
                    lines.get("period", line),
                )
                readable = False
            else:
                values["period"] = text
        carryover = spec.get("carryover_limit")
        values["carryover_limit"] = Decimal(0)
        if carryover is not None:
            try:
                values["carryover_limit"] = parse_amount(carryover)
            except AmountError as exc:
                self.problem(
                    f"carryover_limit {_shown(carryover)} is not valid: {exc}",
                    (*path, "carryover_limit"),
                    lines.get("carryover_limit", line),
                )
                values["carryover_limit"] = None
                readable = False
        return readable

    def _alerts(self, spec, values: dict, *, path, line) -> bool:
        """Read a quota's own alert thresholds into ``values`` (None: the default);
        False when they are not readable (the problem is recorded)."""
        raw = spec.get("alert_thresholds")
        where = (
            (*path, "alert_thresholds"),
            spec.key_lines.get("alert_thresholds", line),
        )
        values["alert_thresholds"] = None
        if raw is None:
            return True
        if not isinstance(raw, list):
            self.problem(
                f"alert_thresholds {_shown(raw)} is not valid: a list of percents "
                "of the cap, e.g. [80, 100].",
                *where,
            )
            return False
        thresholds = []
        for item in raw:
            try:
                thresholds.append(parse_amount(item, integer_digits=4, places=2))
            except AmountError as exc:
                self.problem(
                    f"alert_thresholds {_shown(item)} is not valid: {exc}", *where
                )
                return False
        breaches = rules.alert_threshold_breaches(thresholds)
        for breach in breaches:
            self.problem(breach.message, *where)
        values["alert_thresholds"] = sorted(thresholds)
        return not breaches

    def family_rules(self) -> None:
        """A child's limit_value ≤ its parent's; the children's limits sum to ≤ the
        parent's effective limit (DESIGN §3)."""
        children: dict[QuotaKey, list[TargetQuota]] = defaultdict(list)
        for target in self.targets.values():
            if target.parent is not None:
                children[target.parent].append(target)
        for parent_key, kids in children.items():
            parent = self.targets[parent_key]
            if not parent.readable:
                continue
            readable = [kid for kid in kids if kid.readable]
            for kid in readable:
                breach = rules.child_limit_breach(
                    limit_value=kid.values["limit_value"],
                    parent_limit_value=parent.values["limit_value"],
                )
                if breach is not None:
                    # The parent may be far up the file: say where.
                    self.problems.append(
                        kid.problem(
                            f"{breach.message} The parent is at {parent.where()}.",
                            name=breach.field,
                        )
                    )
            breach = rules.children_sum_breach(
                children_total=sum(
                    (kid.values["limit_value"] for kid in readable), Decimal(0)
                ),
                parent_effective=parent.effective_limit,
            )
            if breach is not None:
                # At the parent: its children are spread over the file.
                self.problems.append(parent.problem(breach.message))


def _misplaced(entity_type: str, *, under: str) -> str:
    """Why quotas of ``entity_type`` cannot stand under a quota of type ``under``."""
    parent_type = rules.PARENT_ENTITY_TYPE.get(entity_type)
    where = (
        f"{GROUP_OF[entity_type]} go under {rules.with_article(parent_type)}'s "
        f"{GROUP_OF[entity_type]}"
        if parent_type
        else f"{GROUP_OF[entity_type]} have no parent (put them directly under the "
        "resource type)"
    )
    holds = (
        f"{rules.with_article(under)} holds {CHILD_GROUP[under]}"
        if CHILD_GROUP[under]
        else f"{rules.with_article(under)} has no children"
    )
    return (
        f"{rules.with_article(entity_type)} cannot have {rules.with_article(under)} "
        f"parent: {where}; {holds}."
    )


def _kind(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    return f"{_shown(value)}"


def _shown(value: Any) -> str:
    if isinstance(value, Decimal):
        return f"{value}"
    return repr(value)


def _one_of(names: list[str]) -> str:
    if len(names) == 1:
        return names[0]
    return f"{', '.join(names[:-1])} or {names[-1]}"
