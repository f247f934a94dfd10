"""What the allocations app adds to the quota console (``quotas.admin_console``):

* the quota page's charts (usage over time, the period's burn-up with its
  projection, closed periods as bars), its active allocations and the recent
  history of its subtree;
* the dashboard's key figures (allocations per second of the last minute, active
  allocations, the last repair run of ``reconcile_usage --fix``).

Every panel and figure is one bounded query; history is downsampled by the
database (``allocations.selectors.usage_series``).
"""

from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import Count, Sum, Value
from django.db.models.functions import Abs, Now
from django.urls import reverse
from django.utils.http import urlencode

from allocations.models import Allocation, AllocationStatus, UsageHistory, UsageRepair
from allocations.selectors import subtree_history, usage_series
from horizon_quota.amounts import amount_display
from quotas import rules
from quotas.admin_console import (
    PANEL_PROVIDERS,
    PANEL_ROWS,
    bounded,
    changelist_url,
    unit_of,
)
from quotas.admin_console.charts import Mark, Series, time_chart
from quotas.admin_console.dashboard import DASHBOARD_PROVIDERS
from quotas.budgets import budget_now
from quotas.events.models import Event, EventType
from quotas.models import Quota

# The window of the usage chart when the quota has no calendar period, and of the
# subtree's recent history.
CHART_WINDOW = timedelta(days=30)
HISTORY_WINDOW = timedelta(days=30)
# Points of the usage chart at most (time buckets, downsampled by the database).
CHART_BUCKETS = 60
# The window of the allocation rate.
RATE_WINDOW = timedelta(minutes=1)


def _chart_start(quota: Quota, now: datetime) -> datetime:
    """A budget's usage is charted over its current period (``consumed`` starts
    afresh with each); anything else over the last CHART_WINDOW, or since the
    quota was created if that is later."""
    if quota.period_start is not None and quota.period_start < now:
        return quota.period_start
    return max(now - CHART_WINDOW, min(quota.created_at, now - timedelta(hours=1)))


def usage_chart(quota: Quota, points: list, start, now) -> str:
    """Used over time, with the cap and the soft limit; a budget's consumed part
    apart from what it holds in reserve."""
    unit = unit_of(quota)
    budget = any(consumed for _, _, consumed in points)
    marks = [Mark("cap", "cap", quota.effective_limit)]
    if quota.soft_limit is not None:
        marks.append(Mark("soft", "soft", quota.soft_limit))
    series = [
        Series(
            "used",
            "used",
            [(t, reserved + consumed) for t, reserved, consumed in points],
            area=True,
            until=now,
        )
    ]
    if budget:
        # Drawn over "used": the lower band is consumed, the rest is reserved.
        series.append(
            Series(
                "consumed",
                "consumed",
                [(t, consumed) for t, _, consumed in points],
                area=True,
                until=now,
            )
        )
    return time_chart(
        chart_id="hq-chart-usage",
        title=f"Usage of {quota.entity_type} {quota.entity_id} over time",
        start=start,
        end=now,
        series=series,
        marks=marks,
        unit=unit,
    )


def burn_up_chart(quota: Quota, points: list, now: datetime) -> str | None:
    """Consumption and use (consumed + reserved) since the period's start, and
    where ``used`` goes at the period's average rate of consumption until it ends
    (the arithmetic of ``rules.projected_exhaustion``)."""
    if quota.period_start is None or quota.period_end is None:
        return None
    elapsed = Decimal((now - quota.period_start).total_seconds())
    remaining = Decimal((quota.period_end - now).total_seconds())
    rate = quota.consumed / elapsed if elapsed > 0 else Decimal(0)
    projected_end = quota.used + rate * remaining
    exhaustion = rules.projected_exhaustion(
        used=quota.used,
        cap=quota.effective_limit,
        consumed=quota.consumed,
        since=quota.period_start,
        until=quota.period_end,
        now=now,
    )
    projection = [(now, quota.used), (quota.period_end, projected_end)]
    if exhaustion is not None and exhaustion > now:
        projection.insert(1, (exhaustion, quota.effective_limit))
    return time_chart(
        chart_id="hq-chart-burnup",
        title="This period's burn-up and its projection to the period's end",
        start=quota.period_start,
        end=quota.period_end,
        series=[
            Series(
                "consumed",
                "consumed",
                [(t, c) for t, _, c in points],
                marked=False,
                until=now,
            ),
            Series(
                "used",
                "used",
                [(t, r + c) for t, r, c in points],
                marked=False,
                until=now,
            ),
            Series(
                "projected",
                "projected",
                projection,
                step=False,
                dashed=True,
                marked=False,
            ),
        ],
        marks=[Mark("cap", "cap", quota.effective_limit)],
        unit=unit_of(quota),
    )


def quota_page_panels(quota: Quota) -> dict:
    """The allocation panels of a quota's change page: its charts, its latest
    active allocations and the recent usage history of its subtree."""
    now = budget_now()
    start = _chart_start(quota, now)
    points = usage_series(quota=quota, start=start, end=now, buckets=CHART_BUCKETS)
    # alloc_quota_active_idx serves this one: active rows of one quota, newest first.
    allocations, more_allocations = bounded(
        Allocation.objects.filter(
            quota_id=quota.id, status=AllocationStatus.ACTIVE
        ).order_by("-allocated_at", "-id")
    )
    history = subtree_history(
        quota=quota, since=now - HISTORY_WINDOW, limit=PANEL_ROWS + 1
    )
    unit = unit_of(quota)
    return {
        "charts": {
            "usage": usage_chart(quota, points, start, now),
            "burn_up": burn_up_chart(quota, points, now),
            "start": start,
        },
        "allocations": [
            {
                "id": allocation.id,
                "job_id": allocation.job_id,
                "value": amount_display(allocation.allocated_value, unit),
                "allocated_at": allocation.allocated_at,
                "expires_at": allocation.expires_at,
                "is_burst": allocation.is_burst,
            }
            for allocation in allocations
        ],
        "more_allocations": more_allocations,
        "allocations_url": changelist_url(
            Allocation, quota__id__exact=quota.id, status__exact="active"
        ),
        "history": [
            {
                "timestamp": row.timestamp,
                "entity": f"{row.entity_type} {row.entity_id}",
                "quota_id": row.quota_id,
                "own": row.quota_id == quota.id,
                "operation": row.operation,
                "value": amount_display(row.allocated_value, unit),
                "charged": amount_display(row.consumed_delta, unit)
                if row.consumed_delta
                else None,
                "job_id": row.job_id,
            }
            for row in history[:PANEL_ROWS]
        ],
        "more_history": len(history) > PANEL_ROWS,
        "history_subtree": quota.entity_type != "user",
        "history_charged": any(row.consumed_delta for row in history),
        "history_url": changelist_url(UsageHistory, **_history_filter(quota)),
        "history_csv_url": (
            reverse("admin:allocations_usagehistory_export")
            + "?"
            + urlencode(_history_filter(quota))
        ),
    }


def _history_filter(quota: Quota) -> dict:
    """The history changelist's filter for a quota: a user's own rows; a team's or
    an organization's subtree (history lives on the users' quotas)."""
    if quota.entity_type == "user":
        return {"quota__id__exact": quota.id}
    return {"subtree": quota.id}


def dashboard_figures(now: datetime) -> dict:
    """Key figures: the allocation rate of the last minute (alloc_allocated_idx),
    the active allocations (alloc_quota_active_idx) and the last repair run
    (events_type_idx, then repair_run_idx)."""
    # Allocation times keep the database's real clock (as leases do), not the
    # budget clock.
    recent = Allocation.objects.filter(
        allocated_at__gte=Now() - Value(RATE_WINDOW)
    ).count()
    active = Allocation.objects.filter(status=AllocationStatus.ACTIVE).count()
    last_repair = (
        Event.objects.filter(type=EventType.USAGE_REPAIRED, id__isnull=False)
        .order_by("-id")
        .values("occurred_at", "data")
        .first()
    )
    figures = [
        {
            "label": "allocations / s (last minute)",
            "value": amount_display(
                (Decimal(recent) / Decimal(RATE_WINDOW.total_seconds())).quantize(
                    Decimal("0.01")
                )
            ),
            "hint": f"{recent} allocations in the last minute",
        },
        {
            "label": "active allocations",
            "value": amount_display(active),
            "hint": "Allocations held now, every resource type",
        },
    ]
    if last_repair is None:
        figures.append(
            {
                "label": "drift repaired by the last reconcile",
                "value": "none",
                "hint": "reconcile_usage --fix records each repair; none so far",
            }
        )
    else:
        run = UsageRepair.objects.filter(
            run_id=last_repair["data"].get("run_id")
        ).aggregate(quotas=Count("id"), drift=Sum(Abs("delta")))
        figures.append(
            {
                "label": "drift repaired by the last reconcile",
                "value": f"{run['quotas']} quota(s)",
                "detail": f"total |drift| {amount_display(run['drift'] or 0)}, "
                f"{last_repair['occurred_at']:%Y-%m-%d %H:%M}",
                "hint": "The last run of reconcile_usage --fix that repaired anything",
            }
        )
    return {"figures": figures}


PANEL_PROVIDERS.append(quota_page_panels)
DASHBOARD_PROVIDERS.append(dashboard_figures)
