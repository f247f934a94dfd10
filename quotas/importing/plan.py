"""The first step of an import: read the file, check the whole target state, and
plan the operations that make the database match it.

``hierarchy_import_plan`` parses the text, builds the whole target state and checks
every rule of DESIGN §3 on it in memory (plus what depends on current usage),
collecting *every* problem with where it is in the file; when there are none it
computes the operations that turn the database into the target, in an order that
keeps every intermediate state valid (``_order_operations``).
"""

from collections import defaultdict
from dataclasses import dataclass, field
from decimal import Decimal
from uuid import UUID

from horizon_quota.amounts import amount_text
from quotas import rules
from quotas.importing.document import (
    GROUPS,
    QUOTA_FIELDS,
    Problem,
    QuotaKey,
    TargetQuota,
    key_of,
)
from quotas.importing.reader import _Reader
from quotas.importing.text import hierarchy_parse
from quotas.models import ApiKey, Quota, ResourceType

# Budget settings at their defaults say nothing in a plan.
_DEFAULTS = ("none", Decimal(0))


def _value_text(value) -> str:
    """A field's value as the plan shows it: an amount, or a list of them."""
    if isinstance(value, list | tuple):
        return "[" + ", ".join(amount_text(item) for item in value) + "]"
    return amount_text(value)


@dataclass(frozen=True)
class Operation:
    """One service call of an import."""

    action: str  # "create", "update" or "delete"
    key: QuotaKey
    depth: int
    quota_id: UUID | None = None  # the quota to update or delete
    parent: QuotaKey | None = None  # the parent to create under
    old: dict[str, Decimal | None] = field(default_factory=dict)
    new: dict[str, Decimal | None] = field(default_factory=dict)
    note: str = ""

    def describe(self) -> str:
        if self.action == "create":
            under = f" under {_place(self.parent)}" if self.parent else ""
            values = ", ".join(
                f"{name} {_value_text(self.new[name])}"
                for name in QUOTA_FIELDS
                if self.new[name] is not None and self.new[name] not in _DEFAULTS
            )
            text = f"create {self.key}{under}: {values}"
        elif self.action == "update":
            changes = ", ".join(
                f"{name} {_value_text(self.old[name])} → {_value_text(self.new[name])}"
                for name in QUOTA_FIELDS
                if name in self.new
            )
            text = f"update {self.key}: {changes}"
        else:
            old_limit = amount_text(self.old["limit_value"])
            text = f"delete {self.key} (limit_value {old_limit})"
        return f"{text} {self.note}" if self.note else text


@dataclass
class ImportPlan:
    """The target state read from a file, what is wrong with it, and the
    operations that make the database match it, in the order to run them."""

    targets: dict[QuotaKey, TargetQuota] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    operations: list[Operation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        counts = {"create": 0, "update": 0, "delete": 0}
        for operation in self.operations:
            counts[operation.action] += 1
        return counts


def hierarchy_import_plan(*, text: str, fmt: str) -> ImportPlan:
    """Read ``text`` (``fmt`` is ``yaml`` or ``json``), check the whole target state
    and plan the operations. Writes nothing; reads the database in three queries.
    The plan's ``problems`` list everything wrong; operations are planned only
    when there is none."""
    document, problems = hierarchy_parse(text=text, fmt=fmt)
    if problems:
        return ImportPlan(problems=problems)
    reader = _Reader(
        resource_types=dict(ResourceType.objects.values_list("slug", "kind"))
    )
    reader.document(document)
    reader.family_rules()
    plan = ImportPlan(targets=reader.targets, problems=reader.problems)
    if all(target.readable for target in plan.targets.values()):
        # Even when the file breaks a rule, say what the database refuses too
        # (quotas in use), so that one run reports everything.
        _plan_operations(plan)
    if plan.problems:
        plan.operations, plan.warnings = [], []
    # File order, where the file has lines (YAML); stable otherwise.
    plan.problems.sort(key=lambda problem: (problem.line is None, problem.line or 0))
    return plan


def _plan_operations(plan: ImportPlan) -> None:
    quotas = list(Quota.objects.all())
    by_id = {quota.id: quota for quota in quotas}
    current = {key_of(quota): quota for quota in quotas}

    def parent_key(quota: Quota) -> QuotaKey | None:
        return key_of(by_id[quota.parent_id]) if quota.parent_id else None

    deletes: list[Operation] = []
    creates: list[Operation] = []
    updates: list[Operation] = []
    # Quotas the file moves to another parent (or whose parent moves) are deleted
    # and created again: parent_id never changes (DESIGN §3).
    recreated: set[QuotaKey] = set()
    for target in sorted(plan.targets.values(), key=lambda t: t.depth):
        new = {name: target.values[name] for name in QUOTA_FIELDS}
        existing = current.get(target.key)
        note = ""
        if existing is not None:
            moved_from = parent_key(existing)
            if moved_from == target.parent and target.parent not in recreated:
                old = {name: getattr(existing, name) for name in QUOTA_FIELDS}
                changed = {n: new[n] for n in QUOTA_FIELDS if new[n] != old[n]}
                if changed:
                    updates.append(
                        Operation(
                            action="update",
                            key=target.key,
                            depth=existing.depth,
                            quota_id=existing.id,
                            old=old,
                            new=changed,
                        )
                    )
                    _check_usage(plan, target=target, existing=existing, new=new)
                continue
            recreated.add(target.key)
            if moved_from != target.parent:
                note = f"(moving from {_place(moved_from)} to {_place(target.parent)})"
            else:
                note = "(re-created: its parent moves)"
        creates.append(
            Operation(
                action="create",
                key=target.key,
                depth=target.depth,
                parent=target.parent,
                new=new,
                note=note,
            )
        )
    for key, quota in current.items():
        if key in plan.targets and key not in recreated:
            continue
        old = {name: getattr(quota, name) for name in QUOTA_FIELDS}
        deletes.append(
            Operation(
                action="delete",
                key=key,
                depth=quota.depth,
                quota_id=quota.id,
                old=old,
                note="(to re-create it)" if key in recreated else "",
            )
        )
        # Held by active allocations (a budget's past consumption is history).
        if quota.reserved > 0:
            target = plan.targets.get(key)
            message = (
                f"{key} has {amount_text(quota.reserved)} in use in its subtree, so it "
                + ("cannot move" if target else "cannot be deleted")
                + ": release its allocations first."
            )
            plan.problems.append(
                target.problem(message) if target else Problem(message)
            )
    if plan.problems:
        return
    plan.operations = _order_operations(
        deletes=deletes, updates=updates, creates=creates
    )
    _warn_about_scoped_keys(plan, deletes)


def _warn_about_scoped_keys(plan: ImportPlan, deletes: list[Operation]) -> None:
    """API keys are scoped to entities, not quotas: deleting quotas never deletes a
    key, but a key whose entity is left without any quota reaches nothing."""
    kept = {(key.entity_type, key.entity_id) for key in plan.targets}
    emptied = {(op.key.entity_type, op.key.entity_id) for op in deletes} - kept
    if not emptied:
        return
    keys_by_entity: dict[tuple[str, str], int] = defaultdict(int)
    for scope in ApiKey.objects.filter(
        scope_entity_type__in={entity_type for entity_type, _ in emptied},
        scope_entity_id__in={entity_id for _, entity_id in emptied},
        revoked_at__isnull=True,
    ).values_list("scope_entity_type", "scope_entity_id"):
        if scope in emptied:
            keys_by_entity[scope] += 1
    for (entity_type, entity_id), count in sorted(keys_by_entity.items()):
        plan.warnings.append(
            f"{entity_type} {entity_id} is left without quotas: the {count} API "
            f"key{'s' * (count != 1)} scoped to it will reach nothing."
        )


def _place(parent: QuotaKey | None) -> str:
    return f"{parent.entity_type} {parent.entity_id}" if parent else "the top"


def _check_usage(
    plan: ImportPlan,
    *,
    target: TargetQuota,
    existing: Quota,
    new: dict[str, Decimal | None],
) -> None:
    # The service refuses to lower an effective limit below current usage without
    # force; say so now, with the others, rather than fail halfway.
    effective = rules.effective_limit(
        new["limit_value"], new["overcommit_ratio"], existing.carried_over
    )
    if rules.lowering_needs_force(
        old_effective=existing.effective_limit,
        new_effective=effective,
        used=existing.used,
    ):
        plan.problems.append(
            target.problem(
                rules.below_usage_message(new_effective=effective, used=existing.used)
                + "; release allocations first or lower it through the API with "
                "force.",
                name="limit_value",
            )
        )


def _order_operations(
    *,
    deletes: list[Operation],
    updates: list[Operation],
    creates: list[Operation],
) -> list[Operation]:
    """Order the operations so that every intermediate state keeps every rule, as
    the services check them one call at a time:

    1. Deletes, deepest first: a quota's children go before it, and removing a
       quota only loosens its parent's rules.
    2. Updates that lower a quota (a smaller limit_value, or the same limit_value
       and a smaller effective limit), deepest first: its children are already
       lowered, or are still at their old value, which was below its new one (the
       target says the new child ≤ the new parent), and its parent is still at its
       old, higher value.
    3. The other updates, shallowest first: the parent is already at its new
       value, the children are still at min(old, new), which fits both.
    4. Creates, shallowest first: every existing quota already has its final
       values, so a new quota is checked against the target state itself.

    Within a step, by resource type, entity type and entity id, so the same file
    always gives the same plan.
    """

    def stable(operation: Operation) -> tuple[str, int, str]:
        return (
            operation.key.resource_type,
            list(GROUPS.values()).index(operation.key.entity_type),
            operation.key.entity_id,
        )

    def lowers(operation: Operation) -> bool:
        old, new = operation.old, {**operation.old, **operation.new}
        if new["limit_value"] != old["limit_value"]:
            return new["limit_value"] < old["limit_value"]
        return new["overcommit_ratio"] < old["overcommit_ratio"]

    def deepest_first(operation: Operation) -> tuple:
        return (-operation.depth, *stable(operation))

    def shallowest_first(operation: Operation) -> tuple:
        return (operation.depth, *stable(operation))

    return [
        *sorted(deletes, key=deepest_first),
        *sorted(filter(lowers, updates), key=deepest_first),
        *sorted((u for u in updates if not lowers(u)), key=shallowest_first),
        *sorted(creates, key=shallowest_first),
    ]
