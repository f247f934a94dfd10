"""The read-only panels of a quota's change page: usage, budget, ancestors,
children and recent audit changes here; other apps add theirs through
``PANEL_PROVIDERS`` (the allocations app adds charts, active allocations and recent
usage history), so this app imports none of them. Each panel is one bounded query
(``PANEL_ROWS`` + 1 rows, to know whether there are more), whatever the size of the
tables.
"""

from collections.abc import Callable
from datetime import datetime
from decimal import Decimal, InvalidOperation

from django.contrib import admin
from django.urls import reverse
from django.utils.http import urlencode

from horizon_quota.amounts import EMPTY, amount_display
from quotas import rules
from quotas.admin_console.charts import Bar, bar_chart
from quotas.admin_console.tree import STATE_LABELS, usage_bar
from quotas.models import ClosedPeriod, Quota, QuotaChange

# Rows per panel on the change page.
PANEL_ROWS = 10


def unit_of(quota: Quota) -> str:
    """The unit of the quota's resource type (fetched with the quota)."""
    return quota.resource_type.unit


def moment(value) -> str:
    """A moment, compact and sortable as text (UTC), as every list and panel of
    the console writes it."""
    # Not a moment yet (None, or a database default on an unsaved quota): empty.
    if not isinstance(value, datetime):
        return EMPTY
    return f"{value:%Y-%m-%d %H:%M:%S}"


def changelist_url(model, **params) -> str:
    opts = model._meta
    url = reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")
    return f"{url}?{urlencode(params)}"


def bounded(queryset) -> tuple[list, bool]:
    """At most PANEL_ROWS rows, and whether there are more (one query)."""
    rows = list(queryset[: PANEL_ROWS + 1])
    return rows[:PANEL_ROWS], len(rows) > PANEL_ROWS


# Fields of an audit entry that hold amounts of the quota's unit.
AMOUNT_FIELDS = {"limit_value", "soft_limit", "burst_limit", "carryover_limit"}


def _audit_value(field: str, value, unit: str):
    """One side of a change, as the rest of the admin writes it."""
    if value in (None, ""):
        return EMPTY
    if field in AMOUNT_FIELDS | {"overcommit_ratio"}:
        try:
            amount = Decimal(str(value))
        except InvalidOperation:
            return value
        return amount_display(amount, unit if field in AMOUNT_FIELDS else "")
    return value


def _change_summary(changes: dict, unit: str = "") -> str:
    parts = []
    for field, values in (changes or {}).items():
        if isinstance(values, list | tuple) and len(values) == 2:
            old, new = (_audit_value(field, v, unit) for v in values)
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
                "summary": _change_summary(change.changes, unit_of(quota)),
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
            Quota.objects.filter(id__in=quota.path[1:]).select_related("resource_type"),
            key=lambda ancestor: ancestor.depth,
        )
    children, more_children = bounded(
        Quota.objects.filter(parent_id=quota.id)
        .select_related("resource_type")
        .order_by("entity_id", "id")
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
    unit = unit_of(quota)

    def _amount(value):
        return amount_display(value, unit)

    return {
        "chart": periods_chart(quota, closed),
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


def periods_chart(quota: Quota, closed: list[ClosedPeriod]):
    """The closed periods (newest first, as read for the panel) as bars, oldest
    left: what each consumed against its own limit (its limit_value and what it
    began with)."""
    if not closed:
        return None
    unit = unit_of(quota)
    bars = [
        Bar(
            label=period.period_start.strftime("%d %b"),
            value=period.consumed,
            limit=period.limit_value + period.carried_over,
            title=(
                f"{period.period_start:%Y-%m-%d} → {period.period_end:%Y-%m-%d}: "
                f"consumed {amount_display(period.consumed, unit)} of "
                f"{amount_display(period.limit_value + period.carried_over, unit)}"
            ),
        )
        for period in reversed(closed)
    ]
    return bar_chart(
        chart_id="hq-chart-periods",
        title="Closed periods: consumed against the limit",
        bars=bars,
        unit=unit,
    )


def _quota_row(quota: Quota) -> dict:
    return {
        "id": quota.id,
        "label": f"{quota.entity_type} {quota.entity_id}",
        "bar": usage_bar(quota),
        "limit": amount_display(quota.limit_value, unit_of(quota)),
    }
