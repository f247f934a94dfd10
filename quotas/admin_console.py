"""The admin as the hierarchy console: what ``QuotaAdmin`` shows beyond a plain list.

* The changelist is the tree: ordered by resource type, then by the root-first path
  (``hq_root_first(path)``, served by ``quotas_tree_idx``; see migration 0005), so
  each quota is followed by its subtree; the entity is indented by depth and every
  row has a usage bar.
* Filters for quotas above their soft limit and at their hard limit, evaluated by
  the database.
* The change page's read-only panels: ancestors, children and recent audit changes
  here; other apps add theirs through ``PANEL_PROVIDERS`` (the allocations app adds
  active allocations and recent usage history), so this app imports none of them.
  Each panel is one bounded query (``PANEL_ROWS`` + 1 rows, to know whether there
  are more), whatever the size of the tables.

Usage states come from ``quotas.rules``: one meaning of "at hard limit" (used ≥
effective limit) in the filters, the bars and the labels.
"""

from collections.abc import Callable
from decimal import Decimal

from django.contrib import admin
from django.contrib.admin.views.main import ChangeList
from django.contrib.postgres.fields import ArrayField
from django.db import models
from django.db.models import Func
from django.urls import reverse
from django.utils.html import format_html
from django.utils.http import urlencode

from horizon_quota.amounts import amount_text
from quotas import rules
from quotas.models import ClosedPeriod, Quota, QuotaChange

# Rows per panel on the change page.
PANEL_ROWS = 10
# Indentation of one tree level in the changelist, in em.
INDENT_EM = Decimal("1.5")


class RootFirstPath(Func):
    """``quotas.path`` reversed: root first, the quota itself last. Ordering by it
    walks the tree depth first. It must stay the very expression of
    ``quotas_tree_idx`` for the index to serve the ordering."""

    function = "hq_root_first"
    output_field = ArrayField(models.UUIDField())


# resource_type_id, not resource_type: the latter orders by the related model's own
# ordering, through a join the index cannot serve. The id closes the ordering (the
# path is unique already, but the admin cannot know) and is the index's last column.
TREE_ORDERING = ("resource_type_id", RootFirstPath("path").asc(), "id")


class QuotaTreeChangeList(ChangeList):
    """The changelist's rows without joins: a deep page is an OFFSET, and every row
    it skips would go through the joins too. The page's parents are read in one
    more query, for the page's rows only; the resource type is shown by its key."""

    def get_queryset(self, request, exclude_parameters=None):
        queryset = super().get_queryset(request, exclude_parameters)
        return queryset.select_related(None).prefetch_related("parent")


def _amount(value) -> str:
    return "—" if value is None else amount_text(value)


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


# --- change page panels -------------------------------------------------------------


def changelist_url(model, **params) -> str:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{url}?{urlencode(params)}"


def bounded(queryset) -> tuple[list, bool]:
    """At most PANEL_ROWS rows, and whether there are more (one query)."""
    rows = list(queryset[: PANEL_ROWS + 1])
    return rows[:PANEL_ROWS], len(rows) > PANEL_ROWS


def _change_summary(changes: dict) -> str:
    parts = []
    for field, values in (changes or {}).items():
        if isinstance(values, list | tuple) and len(values) == 2:
            old, new = ("—" if v is None else v for v in values)
            parts.append(f"{field}: {old} → {new}")
        else:
            parts.append(f"{field}: {values}")
    return "; ".join(parts)


def _audit_panel(quota: Quota) -> dict:
    rows, more = bounded(
        QuotaChange.objects.filter(quota_id=quota.id).order_by("-created_at", "-id")
    )
    url = None
    if admin.site.is_registered(QuotaChange):
        url = changelist_url(QuotaChange, quota__id__exact=quota.id)
    return {
        "rows": [
            {
                "created_at": change.created_at,
                "action": change.action,
                "actor": change.actor_name or change.get_actor_type_display(),
                "summary": _change_summary(change.changes),
                "reason": change.reason,
            }
            for change in rows
        ],
        "more": more,
        "url": url,
    }


# Functions of a quota that add panels to its change page: each returns a dict merged
# into the page's ``hierarchy`` context (the allocations app registers one).
PANEL_PROVIDERS: list[Callable[[Quota], dict]] = []


def quota_panels(quota: Quota) -> dict:
    """The read-only panels of a quota's change page: three bounded queries here,
    plus those of the registered providers."""
    ancestors = []
    if quota.path[1:]:
        ancestors = sorted(
            Quota.objects.filter(id__in=quota.path[1:]),
            key=lambda ancestor: ancestor.depth,
        )
    children, more_children = bounded(
        Quota.objects.filter(parent_id=quota.id).order_by("entity_id", "id")
    )
    closed, more_closed = bounded(
        ClosedPeriod.objects.filter(quota_id=quota.id).order_by("-period_start")
    )
    panels = {
        "budget": _budget_panel(quota, closed, more_closed),
        "usage_bar": usage_bar(quota),
        "state": STATE_LABELS[rules.quota_usage_state(quota)],
        "ancestors": [_quota_row(ancestor) for ancestor in ancestors],
        "children": [_quota_row(child) for child in children],
        "more_children": more_children,
        "children_url": changelist_url(Quota, parent__id__exact=quota.id),
        "audit": _audit_panel(quota),
        "rows": PANEL_ROWS,
    }
    for provider in PANEL_PROVIDERS:
        panels.update(provider(quota))
    return panels


def _budget_panel(quota: Quota, closed: list, more: bool) -> dict | None:
    """A budget's period, its books and its closed periods (time-based only)."""
    if quota.period == "none" and not quota.consumed and not closed:
        return None
    return {
        "period": quota.get_period_display(),
        "period_start": quota.period_start,
        "period_end": quota.period_end,
        "reserved": _amount(quota.reserved),
        "consumed": _amount(quota.consumed),
        "carried_over": _amount(quota.carried_over),
        "carryover_limit": _amount(quota.carryover_limit),
        "closed": [
            {
                "start": period.period_start,
                "end": period.period_end,
                "limit": _amount(period.limit_value),
                "carried_over": _amount(period.carried_over),
                "consumed": _amount(period.consumed),
                "carried_forward": _amount(period.carried_forward),
            }
            for period in closed
        ],
        "more_closed": more,
    }


def _quota_row(quota: Quota) -> dict:
    return {
        "id": quota.id,
        "label": f"{quota.entity_type} {quota.entity_id}",
        "bar": usage_bar(quota),
        "limit": _amount(quota.limit_value),
    }
