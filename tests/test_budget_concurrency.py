"""Budgets under concurrency, against the real server (DESIGN §3a, §4).

(a) Threads consume and settle allocations of one team while others allocate: no
    grant takes a level past its cap, and both forms of P2 are exact at the end.
(b) The budget clock moves past a period boundary while threads allocate, consume
    and settle: every level's closed period is recorded exactly once, and its
    ``consumed`` equals the history's sum for that period.
(c) Two rollers race over the same budgets: each period is recorded once, each
    budget rolled (and counted) by exactly one of them.

Each scenario also runs against a deliberately broken variant that must fail.
"""

import random
import threading
import time
import uuid

import pytest
from django.db.models import Sum

from allocations import services
from allocations.exceptions import QuotaExceeded
from allocations.models import Allocation, UsageHistory
from allocations.selectors import orphan_allocations, usage_drift
from quotas.models import ClosedPeriod, Quota
from quotas.services import quota_create
from tests import broken
from tests.budgets import D, set_clock
from tests.concurrency import run_in_threads

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]


@pytest.fixture(autouse=True)
def clock(settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    set_clock("2026-11-30T23:59:00Z")


def _team(users: int, *, user_limit="25", team_limit="300", period="month"):
    org = quota_create(
        entity_type="organization",
        entity_id="org",
        resource_type="gpu_hours",
        limit_value=D(1000),
        period=period,
        carryover_limit=D(100),
    )
    team = quota_create(
        entity_type="team",
        entity_id="team",
        resource_type="gpu_hours",
        parent_id=org.id,
        limit_value=D(team_limit),
        period=period,
    )
    for index in range(users):
        quota_create(
            entity_type="user",
            entity_id=f"user-{index}",
            resource_type="gpu_hours",
            parent_id=team.id,
            limit_value=D(user_limit),
            period="day",
        )
    return org, team


def _p1_for_grants():
    # Reports stay within their reservations here, so nothing may be above its cap.
    over = [q for q in Quota.objects.all() if q.used > q.effective_limit]
    assert over == [], f"levels above their cap: {over}"


def _p2():
    assert usage_drift() == []
    assert orphan_allocations() == []


# --- (a) consume and settle while others allocate -------------------------------


THREADS_A, ROUNDS_A = 12, 8


def _consume_settle_allocate(consume):
    _team(THREADS_A)

    def work(index):
        rng = random.Random(index)
        outcomes = {"granted": 0, "refused": 0, "settled": 0}
        for _ in range(ROUNDS_A):
            try:
                allocation = services.allocation_create(
                    entity_type="user",
                    entity_id=f"user-{index}",
                    resource_type="gpu_hours",
                    job_id=uuid.uuid4(),
                    requested_value=D(rng.choice(["4", "8", "12.5"])),
                ).allocation
            except QuotaExceeded:
                outcomes["refused"] += 1
                continue
            outcomes["granted"] += 1
            reported = D(0)
            for _ in range(3):
                reported += D(rng.choice(["0.5", "1", "2.25"]))
                reported = min(reported, allocation.allocated_value)
                consume(allocation_id=allocation.id, consumed_value=reported)
            if rng.random() < 0.7:
                services.allocation_release(
                    allocation_id=allocation.id, consumed_value=reported
                )
                outcomes["settled"] += 1
        return outcomes

    return run_in_threads(THREADS_A, work)


def _reports_race_on_one_allocation(consume):
    """Several threads report cumulative values for the same running job at once,
    the way retries and two reporters of one scheduler do."""
    parent = None
    for entity_type in ("organization", "team", "user"):
        parent = quota_create(
            entity_type=entity_type,
            entity_id="racer",
            resource_type="gpu_hours",
            parent_id=parent.id if parent else None,
            limit_value=D(300),
            period="month",
        )
    allocation = services.allocation_create(
        entity_type="user",
        entity_id="racer",
        resource_type="gpu_hours",
        job_id=uuid.uuid4(),
        requested_value=D(200),
    ).allocation
    return run_in_threads(
        16,
        lambda index: consume(
            allocation_id=allocation.id, consumed_value=D(1) + D(index)
        ),
    )


def test_a_consuming_and_settling_beside_allocations_keeps_the_books_exact():
    results = _consume_settle_allocate(services.allocation_consume)
    raced = _reports_race_on_one_allocation(services.allocation_consume)

    assert all(isinstance(result, dict) for result in results), results
    assert sum(result["granted"] for result in results) > 0
    # A report below one already charged is refused; nothing else may fail.
    assert all(
        not isinstance(result, BaseException)
        or "cumulative" in getattr(result, "message", "")
        for result in raced
    ), raced
    assert Allocation.objects.filter(consumed_value=D(16)).exists()
    _p1_for_grants()
    _p2()


def test_a_broken_consume_that_reads_then_writes_corrupts_the_books():
    _consume_settle_allocate(services.allocation_consume)
    results = _reports_race_on_one_allocation(broken.consume_check_then_write)

    assert all(not isinstance(result, BaseException) for result in results), results
    assert usage_drift() != []


# --- (b) the clock crosses a period boundary under load -------------------------


THREADS_B = 10


def _traffic_across_a_boundary(roll_boundary):
    """Threads allocate, consume and settle for ~2 s; halfway through the clock
    moves to the next month (the team's and the organization's boundary)."""
    _team(THREADS_B, user_limit="100", team_limit="1000")
    deadline = time.monotonic() + 2.0
    moved = threading.Event()

    def work(index):
        if index == 0:
            time.sleep(0.8)
            roll_boundary()
            moved.set()
            return "moved"
        rng = random.Random(index)
        done = 0
        while time.monotonic() < deadline:
            allocation = services.allocation_create(
                entity_type="user",
                entity_id=f"user-{index}",
                resource_type="gpu_hours",
                job_id=uuid.uuid4(),
                requested_value=D("2"),
            ).allocation
            services.allocation_consume(
                allocation_id=allocation.id,
                consumed_value=D(rng.choice(["0.25", "0.5"])),
            )
            services.allocation_release(
                allocation_id=allocation.id, consumed_value=D("0.75")
            )
            done += 1
        return done

    results = run_in_threads(THREADS_B, work)
    assert moved.is_set()
    return results


def _closed_periods_match_the_history():
    for quota in Quota.objects.filter(entity_type__in=["organization", "team"]):
        closed = list(ClosedPeriod.objects.filter(quota=quota))
        assert len(closed) == 1, f"{quota}: {len(closed)} records of November"
        (period,) = closed
        subtree = Quota.objects.filter(path__contains=[quota.id]).values("id")
        spent = UsageHistory.objects.filter(
            quota_id__in=subtree,
            timestamp__gte=period.period_start,
            timestamp__lt=period.period_end,
        ).aggregate(total=Sum("consumed_delta"))["total"]
        assert period.consumed == spent, f"{quota}: {period.consumed} != {spent}"


def _move_to_december():
    set_clock("2026-12-01T00:00:30Z")


def test_b_a_boundary_crossed_under_load_closes_each_period_once_and_exactly():
    results = _traffic_across_a_boundary(_move_to_december)

    assert results[0] == "moved"
    assert all(isinstance(done, int) and done > 0 for done in results[1:]), results
    # Every level has seen traffic after the move; roll any that has not.
    services.budgets_roll()
    _closed_periods_match_the_history()
    _p2()


def test_b_a_broken_rollover_outside_the_lock_loses_consumption():
    def move_and_roll_without_locks():
        _move_to_december()
        broken.roll_without_lock()

    _traffic_across_a_boundary(move_and_roll_without_locks)
    services.budgets_roll()

    with pytest.raises(AssertionError):
        _closed_periods_match_the_history()
        _p2()


# --- (c) two rollers race over the same budgets ---------------------------------


BUDGETS_C = 60


def _many_ended_budgets():
    for index in range(BUDGETS_C):
        quota_create(
            entity_type="organization",
            entity_id=f"org-{index}",
            resource_type="gpu_hours",
            limit_value=D(100),
            period="day",
            carryover_limit=D(10),
        )
    set_clock("2026-12-03T12:00:00Z")  # three days ended for every budget


def test_c_two_rollers_record_each_period_once_and_count_each_budget_once():
    _many_ended_budgets()

    counts = run_in_threads(2, lambda index: services.budgets_roll(batch_size=7))

    assert all(isinstance(count, int) for count in counts), counts
    assert sum(counts) == BUDGETS_C
    assert ClosedPeriod.objects.count() == 3 * BUDGETS_C
    assert Quota.objects.filter(period_end__lte="2026-12-03T12:00:00Z").count() == 0


def test_c_two_broken_rollers_without_claims_roll_budgets_twice():
    _many_ended_budgets()

    counts = run_in_threads(2, lambda index: broken.roll_without_lock())

    assert all(isinstance(count, int) for count in counts), counts
    assert sum(counts) > BUDGETS_C
