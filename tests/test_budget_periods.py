"""Calendar periods of budgets (DESIGN §3a): days, ISO weeks, months, quarters and
years in BUDGET_TIMEZONE, crossed by moving the budget clock, never by sleeping."""

from datetime import datetime
from zoneinfo import ZoneInfo

import pytest

from allocations import services
from quotas.budgets import period_bounds
from quotas.models import ClosedPeriod
from tests.budgets import D, allocate, assert_books_exact, set_clock
from tests.budgets import tree as budget_tree

pytestmark = pytest.mark.django_db

# period, a moment inside it (local time), its start and end (local time)
PERIODS = [
    ("day", "2026-11-30 23:59:59", "2026-11-30 00:00", "2026-12-01 00:00"),
    ("week", "2026-11-29 12:00:00", "2026-11-23 00:00", "2026-11-30 00:00"),
    ("week", "2026-11-30 00:00:00", "2026-11-30 00:00", "2026-12-07 00:00"),
    ("week", "2027-01-01 08:00:00", "2026-12-28 00:00", "2027-01-04 00:00"),
    ("month", "2026-02-28 23:00:00", "2026-02-01 00:00", "2026-03-01 00:00"),
    ("month", "2026-12-31 23:59:59", "2026-12-01 00:00", "2027-01-01 00:00"),
    ("quarter", "2026-11-15 00:00:00", "2026-10-01 00:00", "2027-01-01 00:00"),
    ("quarter", "2026-04-01 00:00:00", "2026-04-01 00:00", "2026-07-01 00:00"),
    ("year", "2026-12-31 23:59:59", "2026-01-01 00:00", "2027-01-01 00:00"),
]

ZONES = ["UTC", "America/New_York", "Asia/Kolkata"]


def _local(text: str, zone: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(zone))


@pytest.mark.parametrize("zone", ZONES)
@pytest.mark.parametrize(("period", "inside", "start", "end"), PERIODS)
def test_periods_are_calendar_periods_of_the_budget_time_zone(
    settings, zone, period, inside, start, end
):
    settings.BUDGET_TIMEZONE = zone

    bounds = period_bounds(period, at=_local(inside, zone))

    assert bounds == (_local(start, zone), _local(end, zone))


def test_a_day_across_a_daylight_saving_change_is_25_hours(settings):
    settings.BUDGET_TIMEZONE = "America/New_York"

    start, end = period_bounds("day", at=_local("2026-11-01 12:00:00", "UTC"))

    assert (end - start).total_seconds() == 25 * 3600


def test_a_lifetime_budget_has_no_bounds():
    assert period_bounds("none") == (None, None)


@pytest.mark.parametrize("zone", ["UTC", "Asia/Kolkata"])
@pytest.mark.parametrize(
    ("period", "before", "after", "closed_start"),
    [
        ("day", "2026-11-30 23:59:00", "2026-12-01 00:01:00", "2026-11-30 00:00"),
        ("week", "2026-11-29 23:59:00", "2026-11-30 00:01:00", "2026-11-23 00:00"),
        ("month", "2026-11-30 23:59:00", "2026-12-01 00:01:00", "2026-11-01 00:00"),
        ("quarter", "2026-12-31 23:59:00", "2027-01-01 00:01:00", "2026-10-01 00:00"),
        ("year", "2026-12-31 23:59:00", "2027-01-01 00:01:00", "2026-01-01 00:00"),
    ],
)
def test_crossing_a_boundary_closes_the_period_at_local_midnight(
    settings, zone, period, before, after, closed_start
):
    settings.BUDGET_TIMEZONE = zone
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    set_clock(_local(before, zone))
    user, team, org = budget_tree(periods=(period, period, period))
    finished = allocate(value="10")
    services.allocation_release(allocation_id=finished.id, consumed_value=D(3))
    set_clock(_local(after, zone))

    allocate(value="1")

    for quota in (user, team, org):
        (closed,) = ClosedPeriod.objects.filter(quota=quota)
        assert closed.period_start == _local(closed_start, zone)
        assert closed.consumed == D(3)
        quota.refresh_from_db()
        assert quota.period_start == closed.period_end
        assert quota.consumed == 0
    assert_books_exact()
