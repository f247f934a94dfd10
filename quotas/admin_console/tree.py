"""The quota changelist as the tree: order, usage bars, indentation and filters.

* Ordered by resource type, then by ``tree_key`` (root first, each level's entity;
  see ``quotas/sql/hq_tree_key.sql``), served by ``quotas_tree_idx``: each quota is
  followed by its subtree, and siblings stand by entity id under every resource
  type.
* Usage states come from ``quotas.rules``: one meaning of "at hard limit" (used ≥
  effective limit) in the filters, the bars and the labels.
"""

from decimal import Decimal

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.utils.html import format_html

from horizon_quota.amounts import amount_display
from quotas import rules
from quotas.models import Quota

# Indentation of one tree level in the changelist, in em.
INDENT_EM = Decimal("1.5")


# resource_type_id, not resource_type: the latter orders by the related model's own
# ordering, through a join the index cannot serve. The id closes the ordering (the
# key is unique already, but the admin cannot know) and is the index's last column.
TREE_ORDERING = ("resource_type_id", "tree_key", "id")


class QuotaTreeChangeList(ChangeList):
    """The changelist's rows without joins: a deep page is an OFFSET, and every row
    it skips would go through the joins too. The page's resource types (for their
    units) are read in one more query, for the page's rows only."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.select_related(None).prefetch_related("resource_type")


def _amount(value) -> str:
    return amount_display(value)


# --- usage state and bar ----------------------------------------------------------


STATE_LABELS = {
    rules.UsageState.OK: "within limits",
    rules.UsageState.SOFT: "above soft limit",
    rules.UsageState.OVERCOMMITTED: "above hard limit (overcommitted)",
    rules.UsageState.FULL: "at hard limit",
    rules.UsageState.OVER: "over hard limit",
}


def _percent(value: Decimal, scale: Decimal) -> str:
    """``value`` as a CSS percentage of ``scale``, clamped to the bar."""
    share = min(max(value / scale * 100, Decimal(0)), Decimal(100))
    return f"{share.quantize(Decimal('0.01'))}%"


def usage_bar(quota: Quota):
    """Used against the effective limit, with the soft and hard (limit_value) marks.

    The bar spans the effective limit, or the usage when that is larger (a limit
    lowered with force, or burst), so the marks stay where they belong. A budget's
    bar shows what it consumed this period (dark) apart from what it holds in
    reserve (the rest of the fill).
    """
    effective = quota.effective_limit
    scale = max(effective, quota.used, quota.limit_value)
    if scale <= 0:
        scale = Decimal(1)  # an empty zero-limit quota: an empty bar
    state = rules.quota_usage_state(quota)
    soft_mark = (
        format_html(
            '<span class="hq-usage__mark hq-usage__mark--soft" style="left: {}" '
            'title="soft limit {}"></span>',
            _percent(quota.soft_limit, scale),
            _amount(quota.soft_limit),
        )
        if quota.soft_limit is not None
        else ""
    )
    percent = f"{quota.utilization_percent.normalize():f}"
    title = f"{STATE_LABELS[state]}: {percent}% of the effective limit"
    consumed_fill = ""
    if quota.consumed:
        consumed_fill = format_html(
            '<span class="hq-usage__fill hq-usage__fill--consumed" '
            'style="width: {}"></span>',
            _percent(quota.consumed, scale),
        )
        title += (
            f"; consumed {_amount(quota.consumed)}, reserved {_amount(quota.reserved)}"
        )
    return format_html(
        '<div class="hq-usage hq-usage--{state}" title="{title}">'
        '<div class="hq-usage__track">'
        '<span class="hq-usage__fill" style="width: {fill}"></span>'
        "{consumed_fill}"
        "{soft_mark}"
        '<span class="hq-usage__mark hq-usage__mark--hard" style="left: {hard}" '
        'title="hard limit {limit}"></span>'
        "</div>"
        '<span class="hq-usage__label">{used} / {effective} ({percent}%)</span>'
        "</div>",
        state=state,
        title=title,
        fill=_percent(quota.used, scale),
        consumed_fill=consumed_fill,
        soft_mark=soft_mark,
        hard=_percent(quota.limit_value, scale),
        limit=_amount(quota.limit_value),
        used=_amount(quota.used),
        effective=_amount(effective),
        percent=percent,
    )


def tree_entity(quota: Quota):
    """The entity, indented by its depth in the tree."""
    return format_html(
        '<span class="hq-tree" data-depth="{depth}" style="padding-left: {indent}em">'
        '{branch}<span class="hq-tree__id">{entity_id}</span> '
        '<span class="hq-tree__type hq-tree__type--{type}">{type}</span></span>',
        depth=quota.depth,
        indent=quota.depth * INDENT_EM,
        branch=format_html(
            '<span class="hq-tree__branch" aria-hidden="true">{}</span>', "└ "
        )
        if quota.depth
        else "",
        type=quota.entity_type,
        entity_id=quota.entity_id,
    )


# --- filters ------------------------------------------------------------------------


class SoftLimitFilter(admin.SimpleListFilter):
    title = "soft limit"
    parameter_name = "soft_limit"

    def lookups(self, request, model_admin):
        return [("above", "above soft limit"), ("within", "within soft limit")]

    def queryset(self, request, queryset):
        if self.value() == "above":
            return queryset.filter(rules.above_soft_limit_q())
        if self.value() == "within":
            return queryset.exclude(rules.above_soft_limit_q())
        return queryset


class HardLimitFilter(admin.SimpleListFilter):
    title = "hard limit"
    parameter_name = "hard_limit"

    def lookups(self, request, model_admin):
        return [("at", "at hard limit (used ≥ effective)"), ("below", "room left")]

    def queryset(self, request, queryset):
        if self.value() == "at":
            return queryset.filter(rules.at_hard_limit_q())
        if self.value() == "below":
            return queryset.exclude(rules.at_hard_limit_q())
        return queryset
