"""The whole hierarchy as a document, as ``manage.py export_quotas`` writes it.

Exporting is canonical (resource types, entity types and ids sorted), so export →
import → export gives back the same text.
"""

from collections import defaultdict
from typing import Any
from uuid import UUID

from horizon_quota.amounts import amount_text
from quotas.importing.document import FORMAT_VERSION, GROUPS
from quotas.models import Quota


def hierarchy_export() -> dict[str, Any]:
    """The whole hierarchy as a document (plain dicts, amounts as strings), read in
    one query."""
    # Sorted here rather than by the database, whose collation may order ids
    # differently on another server: the text must not depend on it.
    quotas = sorted(
        Quota.objects.all(), key=lambda q: (q.resource_type_id, q.entity_id)
    )
    children: dict[UUID | None, list[Quota]] = defaultdict(list)
    for quota in quotas:
        children[quota.parent_id].append(quota)

    def entry(quota: Quota) -> dict[str, Any]:
        values: dict[str, Any] = {"limit_value": amount_text(quota.limit_value)}
        for name in ("soft_limit", "burst_limit"):
            if getattr(quota, name) is not None:
                values[name] = amount_text(getattr(quota, name))
        values["overcommit_ratio"] = amount_text(quota.overcommit_ratio)
        if quota.period != "none":
            values["period"] = quota.period
        if quota.carryover_limit:
            values["carryover_limit"] = amount_text(quota.carryover_limit)
        if quota.alert_thresholds is not None:
            values["alert_thresholds"] = [
                amount_text(threshold) for threshold in quota.alert_thresholds
            ]
        values.update(groups(children.get(quota.id, [])))
        return values

    def groups(members: list[Quota]) -> dict[str, Any]:
        grouped: dict[str, Any] = {}
        for group, entity_type in GROUPS.items():
            of_type = [quota for quota in members if quota.entity_type == entity_type]
            if of_type:
                grouped[group] = {quota.entity_id: entry(quota) for quota in of_type}
        return grouped

    by_resource: dict[str, list[Quota]] = defaultdict(list)
    for root in children.get(None, []):
        by_resource[root.resource_type_id].append(root)
    return {
        "version": FORMAT_VERSION,
        "quotas": {slug: groups(roots) for slug, roots in sorted(by_resource.items())},
    }


def hierarchy_size(*, document: dict[str, Any]) -> int:
    """How many quotas an exported document holds."""

    def count(holder: dict[str, Any]) -> int:
        return sum(
            1 + count(spec)
            for group in GROUPS
            for spec in (holder.get(group) or {}).values()
        )

    return sum(count(groups) for groups in document["quotas"].values())
