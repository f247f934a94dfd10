"""Chargeback without SQL: what each entity consumed in a calendar period, and the
reservations it still held when the period ended (DESIGN §7, ``usage_report``).

Everything is computed from the usage history alone, so the report does not care
how the quotas' own budget periods are cut, and it still covers quotas deleted
since (their place in the hierarchy comes from the audit trail). Calendar periods
are those of the budgets: BUDGET_TIMEZONE, the budget clock.
"""

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from uuid import UUID

from django.conf import settings
from django.db import connection

from horizon_quota.errors import InvalidInput
from quotas.models import Quota, QuotaChange
from quotas.selectors import resource_type_get

ZERO = Decimal(0)

# The calendar periods a report takes: 2026, 2026-Q4, 2026-11, 2026-W48, 2026-11-30.
_PERIODS = [
    (re.compile(r"(\d{4})"), "year", "{0}-01-01"),
    (re.compile(r"(\d{4})-Q([1-4])", re.IGNORECASE), "quarter", None),
    (re.compile(r"(\d{4})-(\d{2})"), "month", "{0}-{1}-01"),
    (re.compile(r"(\d{4})-W(\d{2})", re.IGNORECASE), "week", None),
    (re.compile(r"(\d{4})-(\d{2})-(\d{2})"), "day", "{0}-{1}-{2}"),
]

# Each entity's consumption in [start, end), and what its allocations still held
# in reserve at the cutoff (the period's end, or now for the current period): an
# allocation granted before the cutoff and not released or expired by then holds
# what it has not consumed by then.
REPORT_SQL = """
WITH consumed AS (
    SELECT quota_id, resource_type, entity_type, entity_id,
           sum(consumed_delta) AS total
      FROM usage_history
     WHERE timestamp >= %(start)s AND timestamp < %(end)s
       AND (%(resource)s::text IS NULL OR resource_type = %(resource)s)
     GROUP BY quota_id, resource_type, entity_type, entity_id
),
held AS (
    SELECT quota_id, resource_type, entity_type, entity_id,
           greatest(0, coalesce(sum(allocated_value)
                                    FILTER (WHERE operation = 'allocate'), 0)
                       - coalesce(sum(consumed_delta)
                                  FILTER (WHERE operation = 'consume'), 0))
               AS total
      FROM usage_history
     WHERE timestamp < %(cutoff)s AND allocation_id IS NOT NULL
       AND (%(resource)s::text IS NULL OR resource_type = %(resource)s)
     GROUP BY allocation_id, quota_id, resource_type, entity_type, entity_id
    HAVING count(*) FILTER (WHERE operation IN ('release', 'expire')) = 0
       AND count(*) FILTER (WHERE operation = 'allocate') = 1
)
SELECT quota_id, resource_type, entity_type, entity_id,
       sum(consumed), sum(reserved)
  FROM (SELECT quota_id, resource_type, entity_type, entity_id,
               total AS consumed, 0 AS reserved FROM consumed
        UNION ALL
        SELECT quota_id, resource_type, entity_type, entity_id,
               0, total FROM held) rows
 GROUP BY quota_id, resource_type, entity_type, entity_id
"""

BOUNDS_SQL = """
SELECT s, hq_period_end(%(kind)s, s, %(tz)s), hq_now()
  FROM (SELECT hq_period_start(%(kind)s, (%(inside)s::timestamp AT TIME ZONE %(tz)s),
                               %(tz)s) AS s) b
"""


@dataclass
class Line:
    resource_type: str
    organization: str
    team: str
    entity_type: str
    entity_id: str
    consumed: Decimal = ZERO
    reserved: Decimal = ZERO


@dataclass
class UsageReport:
    period: str
    kind: str
    start: datetime
    end: datetime
    timezone: str
    lines: list[Line] = field(default_factory=list)

    def subtotals(self, level: str) -> list[Line]:
        """Sums per team (``level="team"``) or per organization, within each
        resource type."""
        totals: dict[tuple, Line] = {}
        for line in self.lines:
            key = (
                (line.resource_type, line.organization, line.team)
                if level == "team"
                else (line.resource_type, line.organization)
            )
            if level == "team" and not line.team:
                continue
            total = totals.setdefault(
                key,
                Line(
                    resource_type=line.resource_type,
                    organization=line.organization,
                    team=line.team if level == "team" else "",
                    entity_type=level,
                    entity_id=line.team if level == "team" else line.organization,
                ),
            )
            total.consumed += line.consumed
            total.reserved += line.reserved
        return [totals[key] for key in sorted(totals)]


def _bounds(text: str) -> tuple[str, str]:
    """(kind, a local time inside the period) for a period as written."""
    text = (text or "").strip()
    try:
        return _read_period(text)
    except ValueError:  # a month 13, a week 54, a 30 February
        pass
    raise InvalidInput(
        f"Unknown period {text!r}: give 2026 (a year), 2026-Q4, 2026-11, 2026-W48 "
        "or 2026-11-30."
    )


def _read_period(text: str) -> tuple[str, str]:
    for pattern, kind, inside in _PERIODS:
        match = pattern.fullmatch(text)
        if not match:
            continue
        parts = match.groups()
        if kind == "quarter":
            return kind, f"{parts[0]}-{3 * int(parts[1]) - 2:02d}-01"
        if kind == "week":
            week = datetime.strptime(f"{parts[0]}-W{parts[1]}-1", "%G-W%V-%u")
            return kind, week.strftime("%Y-%m-%d")
        inside = inside.format(*parts)
        datetime.strptime(inside, "%Y-%m-%d")  # a real date, or ValueError
        return kind, inside
    raise ValueError(text)


def _hierarchy() -> dict[UUID, tuple[str, str, UUID | None]]:
    """Every quota ever: (entity_type, entity_id, parent_id), live ones from the
    quotas table, deleted ones from their delete entry in the audit trail."""
    known = {
        quota_id: (entity_type, entity_id, parent_id)
        for quota_id, entity_type, entity_id, parent_id in Quota.objects.values_list(
            "id", "entity_type", "entity_id", "parent_id"
        )
    }
    for quota_id, entity_type, entity_id, changes in QuotaChange.objects.filter(
        action="delete"
    ).values_list("quota_id", "entity_type", "entity_id", "changes"):
        if quota_id not in known:
            parent = (changes or {}).get("parent_id", [None])[0]
            known[quota_id] = (entity_type, entity_id, UUID(parent) if parent else None)
    return known


def _place(quota_id, known) -> tuple[str, str]:
    """(organization, team) above or at a quota, as far as they are known."""
    organization = team = ""
    seen = 0
    while quota_id is not None and quota_id in known and seen < 64:
        entity_type, entity_id, parent = known[quota_id]
        if entity_type == "team":
            team = entity_id
        elif entity_type == "organization":
            organization = entity_id
        quota_id, seen = parent, seen + 1
    return organization, team


def usage_report(*, period: str, resource_type: str | None = None) -> UsageReport:
    """Each entity's consumption in the calendar ``period`` and its open
    reservations at the period's end (or now, for the current period)."""
    kind, inside = _bounds(period)
    slug = resource_type_get(slug=resource_type).slug if resource_type else None
    timezone = settings.BUDGET_TIMEZONE
    with connection.cursor() as cursor:
        cursor.execute(BOUNDS_SQL, {"kind": kind, "inside": inside, "tz": timezone})
        start, end, now = cursor.fetchone()
        cursor.execute(
            REPORT_SQL,
            {"start": start, "end": end, "cutoff": min(end, now), "resource": slug},
        )
        rows = cursor.fetchall()
    known = _hierarchy()
    merged: dict[tuple, Line] = defaultdict(lambda: None)
    for quota_id, rtype, entity_type, entity_id, consumed, reserved in rows:
        organization, team = _place(quota_id, known)
        key = (rtype, organization, team, entity_type, entity_id)
        line = merged[key] or Line(rtype, organization, team, entity_type, entity_id)
        line.consumed += consumed or ZERO
        line.reserved += reserved or ZERO
        merged[key] = line
    lines = [
        line for key, line in sorted(merged.items()) if line.consumed or line.reserved
    ]
    return UsageReport(
        period=period.strip(),
        kind=kind,
        start=start,
        end=end,
        timezone=timezone,
        lines=lines,
    )
