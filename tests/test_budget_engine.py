"""The arithmetic of budgets (DESIGN §3a), case by case, through the services:
reserve, consume, overrun, settle, expiry, rollover with carry-over, missed and
mixed periods. After every case both forms of P2 hold (DESIGN §4)."""

from datetime import timedelta

import pytest
from django.utils import timezone

from allocations import services
from allocations.exceptions import AlreadyReleased, InvalidInput, QuotaExceeded
from allocations.models import Allocation, UsageHistory
from quotas.models import ClosedPeriod, Quota
from quotas.services import quota_create
from tests.budgets import D, advance, allocate, assert_books_exact, books, set_clock
from tests.budgets import tree as budget_tree

pytestmark = pytest.mark.django_db


@pytest.fixture(autouse=True)
def clock(settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    set_clock("2026-11-15T12:00:00Z")


def _levels(path):
    return [books(quota) for quota in path]


def test_allocate_reserves_the_estimate_at_every_level():
    path = budget_tree()

    allocation = allocate(value="32")

    assert _levels(path) == [(D(32), D(0), D(0))] * 3
    assert allocation.consumed_value == 0
    assert_books_exact()


@pytest.mark.parametrize(
    ("reports", "reserved", "consumed"),
    [
        (["10"], "22", "10"),
        (["10", "25"], "7", "25"),
        (["10", "25", "25"], "7", "25"),  # the same value again changes nothing
        (["32"], "0", "32"),
        (["40"], "0", "40"),  # an overrun is charged all the same
        (["40", "50"], "0", "50"),
    ],
)
def test_consumption_moves_from_reserved_to_consumed(reports, reserved, consumed):
    path = budget_tree()
    allocation = allocate(value="32")

    for value in reports:
        services.allocation_consume(
            allocation_id=allocation.id, consumed_value=D(value)
        )

    assert _levels(path) == [(D(reserved), D(consumed), D(0))] * 3
    assert Allocation.objects.get(id=allocation.id).consumed_value == D(reports[-1])
    deltas = UsageHistory.objects.filter(operation="consume").values_list(
        "consumed_delta", flat=True
    )
    assert sum(deltas) == D(consumed)
    assert_books_exact()


def test_a_report_below_the_last_one_is_refused_and_changes_nothing():
    path = budget_tree()
    allocation = allocate(value="32")
    services.allocation_consume(allocation_id=allocation.id, consumed_value=D(10))

    with pytest.raises(InvalidInput) as refused:
        services.allocation_consume(allocation_id=allocation.id, consumed_value=D(9))

    assert "cumulative" in refused.value.message
    assert _levels(path) == [(D(22), D(10), D(0))] * 3


def test_an_overrun_is_never_refused_but_new_allocations_are():
    path = budget_tree(limits=("100", "100", "100"))
    allocation = allocate(value="60")
    services.allocation_consume(allocation_id=allocation.id, consumed_value=D(150))

    assert _levels(path) == [(D(0), D(150), D(0))] * 3
    with pytest.raises(QuotaExceeded):
        allocate(value="1")
    assert_books_exact()


@pytest.mark.parametrize(
    ("consumed_before", "final", "rate", "hours", "charged"),
    [
        (None, "20", None, 0, "20"),  # the reported value
        ("10", "10", None, 0, "10"),
        ("10", None, None, 0, "32"),  # no value, no rate: the whole reservation
        (None, None, "8", 2, "16"),  # rate × hours held
        (None, None, "8", 0.5, "4"),
        ("20", None, "8", 1, "20"),  # never below what was reported
        (None, "50", None, 0, "50"),  # an overrun at the end
    ],
)
def test_release_settles(consumed_before, final, rate, hours, charged):
    path = budget_tree()
    allocation = allocate(value="32", rate=D(rate) if rate else None)
    if consumed_before:
        services.allocation_consume(
            allocation_id=allocation.id, consumed_value=D(consumed_before)
        )
    advance(seconds=int(hours * 3600))

    released = services.allocation_release(
        allocation_id=allocation.id, consumed_value=D(final) if final else None
    )

    assert released.status == "released"
    assert released.consumed_value == D(charged)
    assert _levels(path) == [(D(0), D(charged), D(0))] * 3
    settle = UsageHistory.objects.get(operation="release")
    assert settle.consumed_delta == D(charged) - D(consumed_before or 0)
    assert_books_exact()


def test_a_release_below_the_last_report_is_refused_and_changes_nothing():
    path = budget_tree()
    allocation = allocate(value="32")
    services.allocation_consume(allocation_id=allocation.id, consumed_value=D(10))

    with pytest.raises(InvalidInput):
        services.allocation_release(allocation_id=allocation.id, consumed_value=D(5))

    assert Allocation.objects.get(id=allocation.id).status == "active"
    assert _levels(path) == [(D(22), D(10), D(0))] * 3


def test_an_expired_lease_settles_like_a_release_without_a_value():
    path = budget_tree()
    allocation = allocate(value="32", rate=D(4), ttl_seconds=60)
    advance(hours=3)
    Allocation.objects.filter(id=allocation.id).update(
        expires_at=timezone.now() - timedelta(seconds=1)
    )

    expired = services.allocation_expire(allocation_id=allocation.id)

    assert expired.status == "expired"
    assert expired.consumed_value == D(12)
    assert _levels(path) == [(D(0), D(12), D(0))] * 3
    assert UsageHistory.objects.get(operation="expire").consumed_delta == D(12)
    assert_books_exact()


def test_consuming_a_released_allocation_is_already_released():
    budget_tree()
    allocation = allocate(value="32")
    services.allocation_release(allocation_id=allocation.id, consumed_value=D(1))

    with pytest.raises(AlreadyReleased):
        services.allocation_consume(allocation_id=allocation.id, consumed_value=D(2))


# --- rollover ----------------------------------------------------------------------


def test_a_new_period_starts_with_the_carry_over_capped_and_reservations_kept():
    path = budget_tree(limits=("100", "100", "100"), carryover=("0", "60", "30"))
    running = allocate(value="40")
    services.allocation_consume(allocation_id=running.id, consumed_value=D(25))
    finished = allocate(value="20")
    services.allocation_release(allocation_id=finished.id, consumed_value=D(20))
    # Consumed 45 in November; the running job still holds 15 in reserve.

    set_clock("2026-12-01T00:00:01Z")
    allocate(value="1")  # touches every level: each is rolled first

    user, team, org = path
    # user: nothing carries; team: min(60, 100 - 45) = 55; org: min(30, 55) = 30.
    assert [books(q) for q in path] == [
        (D(16), D(0), D(0)),
        (D(16), D(0), D(55)),
        (D(16), D(0), D(30)),
    ]
    for quota in path:
        quota.refresh_from_db()
        assert quota.period_start.isoformat() == "2026-12-01T00:00:00+00:00"
        assert quota.period_end.isoformat() == "2027-01-01T00:00:00+00:00"
        closed = ClosedPeriod.objects.get(quota=quota)
        assert closed.consumed == D(45)
        assert closed.period_start.isoformat() == "2026-11-01T00:00:00+00:00"
    assert team.effective_limit == D(155)
    assert_books_exact()


def test_the_carry_over_raises_the_cap_of_the_new_period():
    (user,) = [
        quota_create(
            entity_type="user",
            entity_id="solo",
            resource_type="gpu_hours",
            limit_value=D(100),
            period="month",
            carryover_limit=D(50),
        )
    ]
    set_clock("2026-12-02T00:00:00Z")

    granted = allocate(entity_id="solo", value="150")  # 100 + 50 carried over

    assert granted.allocated_value == D(150)
    with pytest.raises(QuotaExceeded):
        allocate(entity_id="solo", value="0.0001")
    assert books(user) == (D(150), D(0), D(50))


def test_an_idle_budget_records_every_period_it_missed():
    (user, team, org) = budget_tree(
        limits=("100", "100", "100"),
        periods=("day", "day", "day"),
        carryover=("10", "100", "100"),
    )
    finished = allocate(value="30")
    services.allocation_release(allocation_id=finished.id, consumed_value=D(30))

    set_clock("2026-11-19T08:00:00Z")  # 3 whole days later, in the 4th
    allocate(value="1")

    closed = list(
        ClosedPeriod.objects.filter(quota=user)
        .order_by("period_start")
        .values_list("period_start__day", "consumed", "carried_over", "carried_forward")
    )
    # Day 15 consumed 30 and hands on min(10, 70) = 10; the idle days 16, 17, 18
    # hand on min(10, 100 + 10) = 10 each.
    assert closed == [
        (15, D(30), D(0), D(10)),
        (16, D(0), D(10), D(10)),
        (17, D(0), D(10), D(10)),
        (18, D(0), D(10), D(10)),
    ]
    assert books(user) == (D(1), D(0), D(10))
    assert ClosedPeriod.objects.filter(quota=team).count() == 4
    assert_books_exact()


def test_levels_with_different_periods_reset_on_their_own_boundaries():
    user, team, org = budget_tree(periods=("day", "month", "quarter"))
    finished = allocate(value="10")
    services.allocation_release(allocation_id=finished.id, consumed_value=D(10))

    set_clock("2026-12-01T09:00:00Z")  # a new day and month, the same quarter
    later = allocate(value="5")
    services.allocation_release(allocation_id=later.id, consumed_value=D(5))

    assert books(user) == (D(0), D(5), D(0))
    assert books(team) == (D(0), D(5), D(0))
    assert books(org) == (D(0), D(15), D(0))
    assert ClosedPeriod.objects.filter(quota=user).count() == 16  # Nov 15 to 30
    assert ClosedPeriod.objects.filter(quota=team).count() == 1
    assert not ClosedPeriod.objects.filter(quota=org).exists()
    assert_books_exact()


def test_check_sees_a_level_as_allocate_would_find_it_after_rollover():
    budget_tree(limits=("100", "100", "100"))
    finished = allocate(value="100")
    services.allocation_release(allocation_id=finished.id, consumed_value=D(100))
    assert not services.allocation_check(
        entity_type="user",
        entity_id="user",
        resource_type="gpu_hours",
        requested_value=D(1),
    ).allowed

    set_clock("2026-12-01T00:00:00Z")
    checked = services.allocation_check(
        entity_type="user",
        entity_id="user",
        resource_type="gpu_hours",
        requested_value=D(100),
    )

    assert checked.allowed
    assert not ClosedPeriod.objects.exists()  # a check writes nothing


# --- concurrent resources are held, not consumed -----------------------------------


def _concurrent_user():
    return quota_create(
        entity_type="user",
        entity_id="u",
        resource_type="concurrent_gpus",
        limit_value=D(8),
    )


@pytest.mark.parametrize(
    ("field", "value"), [("period", "month"), ("carryover_limit", D(1))]
)
def test_a_concurrent_resource_refuses_a_budget(field, value):
    with pytest.raises(InvalidInput) as refused:
        quota_create(
            entity_type="organization",
            entity_id="o",
            resource_type="concurrent_gpus",
            limit_value=D(8),
            **{field: value},
        )

    assert field in refused.value.fields
    assert not Quota.objects.exists()


def test_a_concurrent_resource_refuses_rate_consume_and_a_final_value():
    _concurrent_user()
    with pytest.raises(InvalidInput) as rate:
        allocate(entity_id="u", value="2", resource="concurrent_gpus", rate=D(1))
    held = allocate(entity_id="u", value="2", resource="concurrent_gpus")

    with pytest.raises(InvalidInput) as consume:
        services.allocation_consume(allocation_id=held.id, consumed_value=D(1))
    with pytest.raises(InvalidInput) as final:
        services.allocation_release(allocation_id=held.id, consumed_value=D(1))

    assert "rate" in rate.value.fields
    assert "consumed_value" in consume.value.fields
    assert "consumed_value" in final.value.fields
    released = services.allocation_release(allocation_id=held.id)
    assert released.consumed_value == 0
    assert Quota.objects.get(entity_id="u").used == 0
    assert UsageHistory.objects.get(operation="release").consumed_delta == 0
    assert_books_exact()


def test_a_carry_over_above_the_limit_is_refused():
    with pytest.raises(InvalidInput) as refused:
        quota_create(
            entity_type="organization",
            entity_id="o",
            resource_type="gpu_hours",
            limit_value=D(100),
            period="month",
            carryover_limit=D("100.0001"),
        )

    assert "carryover_limit" in refused.value.fields
