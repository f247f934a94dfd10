"""The budget commands: budget_clock, roll_budgets (and expire_allocations' rolls),
and usage_report, checked against sums computed here from the history."""

import csv
import io
import json
from collections import defaultdict
from datetime import datetime

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from allocations import services
from allocations.models import UsageHistory
from quotas.budgets import budget_now, clock_offset
from quotas.models import ClosedPeriod, Quota
from quotas.services import quota_create, quota_delete
from tests.budgets import D, allocate, set_clock
from tests.budgets import tree as budget_tree

pytestmark = pytest.mark.django_db


def _run(*args) -> str:
    out = io.StringIO()
    call_command(*args, stdout=out)
    return out.getvalue()


# --- budget_clock -----------------------------------------------------------------


def test_the_clock_cannot_move_unless_the_setting_allows_it(settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = False

    for args in (["--advance", "1d"], ["--set", "2030-01-01T00:00:00Z"], ["--reset"]):
        with pytest.raises(CommandError, match="BUDGET_CLOCK_ADJUSTABLE"):
            _run("budget_clock", *args)

    assert clock_offset().total_seconds() == 0
    assert "budget clock:" in _run("budget_clock", "--show")


def test_the_clock_advances_cumulatively_sets_and_resets(settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True

    _run("budget_clock", "--advance", "32d")
    _run("budget_clock", "--advance", "1d12h")
    assert clock_offset().days == 33 and clock_offset().seconds == 12 * 3600

    _run("budget_clock", "--set", "2030-01-01T00:00:00Z")
    assert (
        abs(
            budget_now() - datetime.fromisoformat("2030-01-01T00:00:00+00:00")
        ).total_seconds()
        < 60
    )

    output = _run("budget_clock", "--reset")
    assert clock_offset().total_seconds() == 0
    assert "offset 0:00:00" in output


@pytest.mark.parametrize(
    "args", [["--advance", "soon"], ["--advance", "3w"], ["--set", "tomorrow"]]
)
def test_bad_clock_arguments_are_refused(settings, args):
    settings.BUDGET_CLOCK_ADJUSTABLE = True

    with pytest.raises(CommandError):
        _run("budget_clock", *args)

    assert clock_offset().total_seconds() == 0


# --- roll_budgets -------------------------------------------------------------------


def test_roll_budgets_closes_every_ended_period_without_traffic(settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    set_clock("2026-11-15T00:00:00Z")
    path = budget_tree(periods=("day", "month", "year"))
    set_clock("2026-12-02T00:00:00Z")

    output = _run("roll_budgets")

    assert output.strip() == "rolled over 2 budgets"  # the day and the month
    assert ClosedPeriod.objects.filter(quota=path[0]).count() == 17
    assert ClosedPeriod.objects.filter(quota=path[1]).count() == 1
    assert not ClosedPeriod.objects.filter(quota=path[2]).exists()
    assert _run("roll_budgets").strip() == "rolled over 0 budgets"


def test_each_pass_of_the_sweeper_rolls_budgets_too(settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    set_clock("2026-11-15T00:00:00Z")
    budget_tree()
    set_clock("2026-12-02T00:00:00Z")

    output = _run("expire_allocations")

    assert output.strip() == "expired 0 allocations, rolled over 3 budgets"
    assert ClosedPeriod.objects.count() == 3


# --- usage_report -------------------------------------------------------------------


@pytest.fixture
def activity(settings):
    """Two months of traffic under acme: research (alice, bob) and platform
    (carol); bob's quota is deleted in December; one job still runs."""
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    set_clock("2026-10-20T00:00:00Z")
    org = quota_create(
        entity_type="organization",
        entity_id="acme",
        resource_type="gpu_hours",
        limit_value=D(10000),
        period="month",
    )
    teams = {
        name: quota_create(
            entity_type="team",
            entity_id=name,
            resource_type="gpu_hours",
            parent_id=org.id,
            limit_value=D(4000),
            period="month",
        )
        for name in ("research", "platform")
    }
    for user, team in (
        ("alice", "research"),
        ("bob", "research"),
        ("carol", "platform"),
    ):
        quota_create(
            entity_type="user",
            entity_id=user,
            resource_type="gpu_hours",
            parent_id=teams[team].id,
            limit_value=D(1000),
        )

    def job(user, value, consumed):
        allocation = allocate(entity_id=user, value=value)
        services.allocation_release(
            allocation_id=allocation.id, consumed_value=D(consumed)
        )

    job("alice", "50", "40")  # October
    set_clock("2026-11-03T00:00:00Z")
    job("alice", "100", "75.5")
    job("bob", "20", "20")
    job("carol", "300", "310")  # an overrun
    running = allocate(entity_id="alice", value="64")
    services.allocation_consume(allocation_id=running.id, consumed_value=D(14))
    set_clock("2026-12-10T00:00:00Z")
    services.allocation_consume(allocation_id=running.id, consumed_value=D(20))
    job("bob", "5", "5")
    bob = Quota.objects.get(entity_id="bob")
    quota_delete(quota_id=bob.id)
    return running


def _expected(start: str, end: str) -> dict:
    """Consumption per entity in [start, end), summed here from the history."""
    totals = defaultdict(D)
    for row in UsageHistory.objects.filter(timestamp__gte=start, timestamp__lt=end):
        totals[row.entity_id] += row.consumed_delta
    return {entity: total for entity, total in totals.items() if total}


def test_the_report_matches_the_history_and_subtotals_per_team_and_organization(
    activity,
):
    report = json.loads(_run("usage_report", "--period", "2026-11", "--format", "json"))

    rows = {(r["row"], r["entity_id"]): r for r in report["rows"]}
    expected = _expected("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z")
    assert {
        entity: D(r["consumed"])
        for (kind, entity), r in rows.items()
        if kind == "entity"
    } == expected
    assert expected == {"alice": D("89.5"), "bob": D(20), "carol": D(310)}
    # At the end of November alice's running job still held 64 - 14 in reserve.
    assert D(rows[("entity", "alice")]["reserved"]) == D(50)
    assert D(rows[("team total", "research")]["consumed"]) == D("109.5")
    assert D(rows[("team total", "platform")]["consumed"]) == D(310)
    assert D(rows[("organization total", "acme")]["consumed"]) == D("419.5")
    assert rows[("entity", "bob")]["team"] == "research"  # deleted since
    assert report["start"] == "2026-11-01T00:00:00Z"
    assert report["end"] == "2026-12-01T00:00:00Z"


def test_the_current_period_reports_what_is_reserved_now(activity):
    report = json.loads(_run("usage_report", "--period", "2026-12", "--format", "json"))

    rows = {(r["row"], r["entity_id"]): r for r in report["rows"]}
    assert D(rows[("entity", "alice")]["consumed"]) == D(6)
    assert D(rows[("entity", "alice")]["reserved"]) == D(44)
    assert D(rows[("entity", "bob")]["consumed"]) == D(5)


def test_the_report_as_csv_and_as_a_table(activity):
    rows = list(
        csv.DictReader(
            io.StringIO(_run("usage_report", "--period", "2026-11", "--format", "csv"))
        )
    )
    table = _run("usage_report", "--period", "2026-11", "--resource", "GPU_hours")

    assert {row["entity_id"] for row in rows if row["row"] == "entity"} == {
        "alice",
        "bob",
        "carol",
    }
    assert "organization total" in table and "research" in table
    assert table.startswith("usage in 2026-11 (2026-11-01T00:00:00Z to 2026-12-01")


@pytest.mark.parametrize(
    ("period", "start"),
    [
        ("2026", "2026-01-01T00:00:00Z"),
        ("2026-Q4", "2026-10-01T00:00:00Z"),
        ("2026-W45", "2026-11-02T00:00:00Z"),
        ("2026-11-03", "2026-11-03T00:00:00Z"),
    ],
)
def test_other_calendar_periods(activity, period, start):
    report = json.loads(_run("usage_report", "--period", period, "--format", "json"))

    assert report["start"] == start


@pytest.mark.parametrize(
    "args",
    [["--period", "November"], ["--period", "2026-13-01"], ["--resource", "nope"]],
)
def test_bad_report_arguments_are_refused(db, args):
    if "--period" not in args:
        args = ["--period", "2026-11", *args]

    with pytest.raises(CommandError):
        _run("usage_report", *args)
