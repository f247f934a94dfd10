"""The console's front page: what needs a person's eyes now.

Quotas at or near their hard limit, budgets projected to run out before their period
ends, the top consumers of each resource, the events of the last day, and key
figures. Each section is one bounded query (``DASHBOARD_ROWS`` rows at most),
whatever the number of quotas; other apps add their figures through
``DASHBOARD_PROVIDERS`` (the allocations app adds the allocation rate, the active
allocations and the last repair run), so this app imports none of them.

Which quotas are listed is decided by ``quotas.rules`` (``near_hard_limit_q``,
``projected_to_run_out_q`` and ``projected_exhaustion``), never here.
"""

from collections.abc import Callable
from datetime import datetime, timedelta
from decimal import Decimal

from django.db.models import F, Subquery, Value, Window
from django.db.models.functions import Coalesce, NullIf, RowNumber

from horizon_quota.amounts import amount_display
from quotas import rules
from quotas.admin_console.tree import STATE_LABELS, usage_bar
from quotas.budgets import budget_now
from quotas.events.models import Event
from quotas.models import Quota

# "Near" the hard limit: this share of the effective limit, in percent.
NEAR_PERCENT = Decimal(90)
DASHBOARD_ROWS = 20
TOP_CONSUMERS = 5
# The events feed is read newest first by id (its unique index) and cut at a day;
# ids follow commit order, so the newest ids are the newest events.
EVENT_ROWS = 25
EVENT_WINDOW = timedelta(days=1)

# Functions of the budget clock's "now" that add to the dashboard: each returns a
# dict whose lists ("figures") are appended to the dashboard's.
DASHBOARD_PROVIDERS: list[Callable[[datetime], dict]] = []


def _row(quota: Quota, **extra) -> dict:
    return {
        "id": quota.id,
        "entity": f"{quota.entity_type} {quota.entity_id}",
        "resource_type": quota.resource_type_id,
        "bar": usage_bar(quota),
        "state": STATE_LABELS[rules.quota_usage_state(quota)],
        "percent": f"{quota.utilization_percent.normalize():f}%",
        **extra,
    }


def near_hard_limit(limit: int = DASHBOARD_ROWS) -> list[dict]:
    """Quotas using at least NEAR_PERCENT of their effective limit, fullest first."""
    # A zero limit that is used at all comes first (NULLIF: no division by zero).
    utilization = F("used") / NullIf(rules.effective_limit_expression(), Value(0))
    quotas = (
        Quota.objects.filter(rules.near_hard_limit_q(NEAR_PERCENT))
        .select_related("resource_type")
        .order_by(utilization.desc(nulls_first=True), "resource_type_id", "tree_key")
    )
    return [_row(quota) for quota in quotas[:limit]]


def running_out(now: datetime, limit: int = DASHBOARD_ROWS) -> list[dict]:
    """Budgets whose projected exhaustion falls before their period's end, the
    soonest period end first."""
    quotas = (
        Quota.objects.filter(rules.projected_to_run_out_q(now))
        .select_related("resource_type")
        .order_by("period_end", "resource_type_id", "tree_key")
    )
    rows = []
    for quota in quotas[:limit]:
        moment = rules.projected_exhaustion(
            used=quota.used,
            cap=quota.effective_limit,
            consumed=quota.consumed,
            since=quota.period_start,
            until=quota.period_end,
            now=now,
        )
        rows.append(
            _row(
                quota,
                runs_out=moment,
                period_end=quota.period_end,
                consumed=amount_display(quota.consumed, quota.resource_type.unit),
            )
        )
    return rows


def top_consumers(per_resource: int = TOP_CONSUMERS) -> list[dict]:
    """Per resource type, the users that use the most now: a budget's use is what
    it consumed this period and what it holds in reserve."""
    ranked = (
        Quota.objects.filter(entity_type="user", used__gt=0)
        .annotate(
            rank=Window(
                RowNumber(),
                partition_by=[F("resource_type_id")],
                order_by=[F("used").desc(), F("entity_id").asc()],
            )
        )
        .filter(rank__lte=per_resource)
        .select_related("resource_type")
        .order_by("resource_type_id", "rank")
    )
    groups: dict[str, list] = {}
    for quota in ranked:
        groups.setdefault(quota.resource_type_id, []).append(
            _row(
                quota,
                rank=quota.rank,
                used=amount_display(quota.used, quota.resource_type.unit),
            )
        )
    return [{"resource_type": slug, "rows": rows} for slug, rows in groups.items()]


def recent_events(now: datetime, limit: int = EVENT_ROWS) -> tuple[list[dict], bool]:
    """The newest events of the last day by the budget clock, as the engine dates
    them (at most
    ``limit``), and whether there are more of that day than shown. Only the newest
    ``limit`` + 1 ids are looked at (the unique index on id), so a quiet day never
    walks back through the whole feed."""
    boundary = Coalesce(
        Subquery(
            Event.objects.filter(id__isnull=False)
            .order_by("-id")
            .values("id")[limit : limit + 1]
        ),
        Value(0),
    )
    recent = list(
        Event.objects.filter(
            id__isnull=False,
            id__gte=boundary,
            occurred_at__gte=now - EVENT_WINDOW,
        ).order_by("-id")
    )
    return [
        {
            "id": event.id,
            "type": event.type,
            "occurred_at": event.occurred_at,
            "quota_id": event.quota_id,
            "entity": f"{event.entity_type} {event.entity_id}".strip(),
            "resource_type": event.resource_type,
            "summary": _event_summary(event.data),
        }
        for event in recent[:limit]
    ], len(recent) > limit


def _event_summary(data: dict) -> str:
    parts = []
    for key in ("threshold", "used", "cap", "consumed", "stored", "actual"):
        if key in data:
            value = data[key]
            shown = amount_display(Decimal(str(value))) if value is not None else value
            parts.append(f"{key} {shown}{'%' if key == 'threshold' else ''}")
    return ", ".join(parts)


def dashboard() -> dict:
    """Everything the dashboard shows."""
    now = budget_now()
    events, more_events = recent_events(now)
    context = {
        "now": now,
        "near_percent": f"{NEAR_PERCENT.normalize():f}",
        "near_limit": near_hard_limit(),
        "running_out": running_out(now),
        "top_consumers": top_consumers(),
        "events": events,
        "more_events": more_events,
        "figures": [],
        "rows": DASHBOARD_ROWS,
    }
    for provider in DASHBOARD_PROVIDERS:
        for key, value in provider(now).items():
            context[key] = context.get(key, []) + value
    return context
