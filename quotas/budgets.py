"""Budget time and periods (DESIGN §3a), as the database computes them.

The budget clock and the calendar arithmetic of periods live in SQL, in one place
(``quotas/sql/``), because the allocation engine needs them inside its statements;
Python asks the database rather than computing them a second time. This module
also installs those functions (``InstallQuotaFunctions``, see
``horizon_quota/sqlfunctions.py``).
"""

from datetime import datetime, timedelta
from pathlib import Path

from django.conf import settings
from django.db import connection, transaction

from horizon_quota.errors import ServiceError
from horizon_quota.sqlfunctions import InstallSqlFunctions, SqlFunctions
from quotas import rules
from quotas.models import BudgetClock, BudgetPeriod

QUOTA_FUNCTIONS = SqlFunctions(
    directory=Path(__file__).resolve().parent / "sql",
    names=("hq_now", "hq_period_start", "hq_period_end", "hq_tree_key"),
)


class InstallQuotaFunctions(InstallSqlFunctions):
    """Migration operation: (re)install the budget clock and period functions."""

    functions = QUOTA_FUNCTIONS


def budget_now() -> datetime:
    """The budget clock: the database's clock plus the test offset."""
    with connection.cursor() as cursor:
        cursor.execute("SELECT hq_now()")
        return cursor.fetchone()[0]


def period_bounds(
    period: str, at: datetime | None = None
) -> tuple[datetime | None, datetime | None]:
    """(start, end) of the ``period`` holding ``at`` (default: budget now) in
    BUDGET_TIMEZONE; (None, None) for a lifetime budget."""
    if period == BudgetPeriod.NONE:
        return None, None
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT s, hq_period_end(%s, s, %s) FROM "
            "(SELECT hq_period_start(%s, coalesce(%s, hq_now()), %s) AS s) b",
            [period, settings.BUDGET_TIMEZONE, period, at, settings.BUDGET_TIMEZONE],
        )
        return cursor.fetchone()


def clock_offset() -> timedelta:
    clock = BudgetClock.objects.filter(id=1).first()
    return clock.offset_by if clock else timedelta(0)


def usage_stats(quota) -> dict:
    """The usage statistics of a quota (GET /quotas/{id}/usage), with a budget's
    period and when it is projected to run out (DESIGN §5)."""
    now = budget_now()
    return {
        "id": quota.id,
        "entity_type": quota.entity_type,
        "entity_id": quota.entity_id,
        "resource_type_id": quota.resource_type_id,
        "limit_value": quota.limit_value,
        "effective_limit": quota.effective_limit,
        "used": quota.used,
        "available": quota.available,
        "utilization_percent": quota.utilization_percent,
        "reserved": quota.reserved,
        "consumed": quota.consumed,
        "carried_over": quota.carried_over,
        "period": quota.period,
        "period_start": quota.period_start,
        "period_end": quota.period_end,
        "projected_exhaustion": rules.projected_exhaustion(
            used=quota.used,
            cap=quota.effective_limit,
            consumed=quota.consumed,
            since=quota.period_start or quota.created_at,
            until=quota.period_end,
            now=now,
        ),
    }


class ClockNotAdjustable(ServiceError):
    kind = "forbidden"
    status = 403


def budget_clock_move(
    *, advance: timedelta | None = None, to: datetime | None = None, reset: bool = False
) -> timedelta:
    """Move the budget clock for every process at once: ``advance`` it (cumulative),
    set it ``to`` a moment, or ``reset`` it to the database's clock. Refused unless
    BUDGET_CLOCK_ADJUSTABLE (tests and rehearsals only). Returns the new offset."""
    if not settings.BUDGET_CLOCK_ADJUSTABLE:
        raise ClockNotAdjustable(
            "The budget clock is fixed: set BUDGET_CLOCK_ADJUSTABLE=true to move it "
            "(tests and rehearsals only, never production)."
        )
    with transaction.atomic():
        clock, _ = BudgetClock.objects.select_for_update().get_or_create(id=1)
        if reset:
            clock.offset_by = timedelta(0)
        elif to is not None:
            with connection.cursor() as cursor:
                cursor.execute("SELECT %s::timestamptz - now()", [to])
                clock.offset_by = cursor.fetchone()[0]
        elif advance is not None:
            clock.offset_by += advance
        clock.save()
    return clock.offset_by
