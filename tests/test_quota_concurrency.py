"""Concurrent edits of one family's limits never overfill the parent (DESIGN §3).

Each scenario also runs against a deliberately broken variant of the service, in
which the parent is read without its row lock and the check is widened by a short
pause, and shows that variant does overfill: the tests can fail.
"""

import time
from decimal import Decimal

import pytest

from horizon_quota.errors import InvalidInput
from quotas import services
from quotas.models import EntityType, Quota
from tests.concurrency import outcomes, run_in_threads
from tests.factories import QuotaFactory, TeamQuotaFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]

THREADS = 16


@pytest.fixture
def unlocked(monkeypatch):
    """Replace the lock with a plain read, and pause between the family check and
    the write: check-then-write, with the window wide enough to be hit every time."""

    def read_without_lock(quota_ids):
        return {
            q.id: q for q in Quota.objects.filter(id__in=[i for i in quota_ids if i])
        }

    parent_breaches = services._parent_breaches

    def check_then_pause(**kwargs):
        breaches = parent_breaches(**kwargs)
        time.sleep(0.3)
        return breaches

    monkeypatch.setattr(services, "lock_quotas", read_without_lock)
    monkeypatch.setattr(services, "_parent_breaches", check_then_pause)


def _create_teams_concurrently(org):
    def create(index):
        return services.quota_create(
            entity_type=EntityType.TEAM,
            entity_id=f"team-{index}",
            resource_type="concurrent_gpus",
            parent_id=org.id,
            limit_value=Decimal("10"),
        )

    return run_in_threads(THREADS, create)


def _raise_teams_concurrently(teams):
    def raise_limit(index):
        return services.quota_update(
            quota_id=teams[index].id, changes={"limit_value": Decimal("15")}
        )

    return run_in_threads(THREADS, raise_limit)


def _teams(org, count):
    """``count`` teams of 5 under ``org``."""
    return [
        TeamQuotaFactory(parent=org, limit_value=Decimal("5")) for _ in range(count)
    ]


def _children_sum(org):
    return sum(Quota.objects.filter(parent=org).values_list("limit_value", flat=True))


def test_concurrent_creates_never_overfill_the_parent():
    org = QuotaFactory(limit_value=Decimal("100"))

    results = _create_teams_concurrently(org)

    created, refused = outcomes(results, InvalidInput)
    assert all(isinstance(r, Quota) for r in created), created
    assert len(created) == 10
    assert len(refused) == THREADS - 10
    assert _children_sum(org) == Decimal("100")


def test_concurrent_raises_never_overfill_the_parent():
    org = QuotaFactory(limit_value=Decimal("100"))
    teams = _teams(org, THREADS)  # 80 of 100 promised; each raise adds 10.

    results = _raise_teams_concurrently(teams)

    raised, refused = outcomes(results, InvalidInput)
    assert all(isinstance(r, Quota) for r in raised), raised
    assert len(raised) == 2  # exactly two fit
    assert len(refused) == THREADS - 2
    assert _children_sum(org) == Decimal("100")


def test_lowering_a_parent_while_children_rise_keeps_the_family_consistent():
    org = QuotaFactory(limit_value=Decimal("100"))
    teams = _teams(org, THREADS - 1)  # 75 of 100 promised

    def work(index):
        if index == THREADS - 1:
            return services.quota_update(
                quota_id=org.id, changes={"limit_value": Decimal("80")}
            )
        return services.quota_update(
            quota_id=teams[index].id, changes={"limit_value": Decimal("15")}
        )

    results = run_in_threads(THREADS, work)

    # The changes are taken in turn under the locks. Either the parent went first
    # (75 <= 80): it is lowered, and no raise fits under 80 any more; or a raise
    # went first: the parent's 80 no longer holds its children and is refused,
    # and exactly two raises fit under 100.
    succeeded, _ = outcomes(results, InvalidInput)
    assert all(isinstance(r, Quota) for r in succeeded), succeeded
    *raises, lowered = results
    raised = [r for r in raises if isinstance(r, Quota)]
    org.refresh_from_db()
    if isinstance(lowered, Quota):  # the parent went first
        assert raised == []
        assert org.limit_value == Decimal("80")
    else:  # a raise went first
        assert len(raised) == 2
        assert org.limit_value == Decimal("100")
    assert _children_sum(org) <= org.effective_limit
    assert all(
        t.limit_value <= org.limit_value for t in Quota.objects.filter(parent=org)
    )


def test_broken_variant_without_the_lock_overfills_on_create(unlocked):
    org = QuotaFactory(limit_value=Decimal("100"))

    results = _create_teams_concurrently(org)

    # More creates than the parent has room for were let through.
    created, _ = outcomes(results, InvalidInput)
    assert len(created) > 10
    assert _children_sum(org) > Decimal("100")


def test_broken_variant_without_the_lock_overfills_on_raise(unlocked):
    org = QuotaFactory(limit_value=Decimal("100"))
    teams = _teams(org, THREADS)

    results = _raise_teams_concurrently(teams)

    # More raises than the two that fit were let through.
    raised, _ = outcomes(results, InvalidInput)
    assert len(raised) > 2
    assert _children_sum(org) > Decimal("100")
