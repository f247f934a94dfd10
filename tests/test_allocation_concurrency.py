"""The allocation engine under concurrency, against the real server (DESIGN §4).

Every scenario runs twice: against the engine (``allocations.services``), where the
invariants must hold, and against a deliberately broken variant (``tests/broken.py``),
where the same checks must catch the damage. P1: no level ever above its cap. P2:
every level's ``used`` equals the active allocations in its subtree.
"""

import random
import threading
import time
import uuid
from decimal import Decimal

import pytest
from django.db import OperationalError, connection

from allocations import services
from allocations.exceptions import AlreadyReleased, QuotaExceeded
from allocations.models import Allocation, AllocationStatus
from allocations.selectors import orphan_allocations, usage_drift
from quotas.models import EntityType, Quota
from tests import broken
from tests.concurrency import run_in_threads
from tests.factories import QuotaFactory

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]


def assert_p1():
    over = [q for q in Quota.objects.all() if q.used > q.effective_limit]
    assert over == [], f"levels above their cap: {over}"


def assert_p2():
    assert usage_drift() == []
    assert orphan_allocations() == []


def _user(team, name, limit="3", ratio="10"):
    return QuotaFactory(
        entity_type=EntityType.USER,
        entity_id=name,
        parent=team,
        limit_value=Decimal(limit),
        overcommit_ratio=Decimal(ratio),
    )


# --- (a) 32 threads x 20 allocations of 1 under a team whose limit is 100 -----------

THREADS_A, PER_THREAD_A = 32, 20


def _fill_the_team(allocate):
    org = QuotaFactory(entity_id="org", limit_value=Decimal("1000"))
    team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="team",
        parent=org,
        limit_value=Decimal("100"),
    )
    # Users' caps add up to 960, so the team is the level that binds.
    users = [_user(team, f"user-{i}") for i in range(THREADS_A)]

    def work(index):
        granted = 0
        for _ in range(PER_THREAD_A):
            try:
                allocate(
                    entity_type="user",
                    entity_id=users[index].entity_id,
                    resource_type="gpu_hours",
                    job_id=uuid.uuid4(),
                    requested_value=Decimal("1"),
                )
                granted += 1
            except QuotaExceeded:
                pass
        return granted

    results = run_in_threads(THREADS_A, work)
    assert all(isinstance(r, int) for r in results), results
    team.refresh_from_db()
    return sum(results), team


def test_a_exactly_the_teams_limit_is_granted():
    granted, team = _fill_the_team(services.allocation_create)

    assert granted == 100
    assert team.used == Decimal("100")
    assert Allocation.objects.filter(status=AllocationStatus.ACTIVE).count() == 100
    assert_p1()
    assert_p2()


def test_a_broken_check_then_write_overfills_the_team():
    granted, team = _fill_the_team(broken.allocate_check_then_write)

    assert granted > 100
    assert team.used > team.effective_limit


# --- (b) many threads release the same allocation -----------------------------------


def _release_many_times(release):
    org = QuotaFactory(limit_value=Decimal("100"))
    team = QuotaFactory(
        entity_type=EntityType.TEAM, parent=org, limit_value=Decimal("50")
    )
    user = _user(team, "u", limit="10", ratio="1")
    allocation = services.allocation_create(
        entity_type="user",
        entity_id=user.entity_id,
        resource_type="gpu_hours",
        job_id=uuid.uuid4(),
        requested_value=Decimal("7"),
    ).allocation

    results = run_in_threads(24, lambda i: release(allocation_id=allocation.id))
    successes = [r for r in results if not isinstance(r, BaseException)]
    refusals = [r for r in results if isinstance(r, AlreadyReleased)]
    return successes, refusals, results


def test_b_exactly_one_release_succeeds():
    successes, refusals, _ = _release_many_times(services.allocation_release)

    assert len(successes) == 1
    assert len(refusals) == 23
    assert set(Quota.objects.values_list("used", flat=True)) == {Decimal("0")}
    assert_p2()


def test_b_broken_release_succeeds_more_than_once():
    successes, _, results = _release_many_times(broken.release_check_then_write)

    # Several callers were told "released", and the books were debited more than
    # once (or the database's used >= 0 constraint stopped a debit mid-way).
    assert len(successes) > 1 or any(
        isinstance(r, Exception) and not isinstance(r, AlreadyReleased) for r in results
    )


# --- (c) one identical allocate sent by many threads at once ------------------------


def _same_allocate_many_times(allocate):
    org = QuotaFactory(limit_value=Decimal("100"))
    team = QuotaFactory(
        entity_type=EntityType.TEAM, parent=org, limit_value=Decimal("50")
    )
    _user(team, "u", limit="10", ratio="1")
    job_id = uuid.uuid4()

    def work(index):
        result = allocate(
            entity_type="user",
            entity_id="u",
            resource_type="gpu_hours",
            job_id=job_id,
            requested_value=Decimal("2.5"),
        )
        return result.allocation.id if hasattr(result, "allocation") else result.id

    return run_in_threads(24, work)


def test_c_an_identical_allocate_from_many_threads_makes_one_allocation():
    results = _same_allocate_many_times(services.allocation_create)

    assert all(isinstance(r, uuid.UUID) for r in results), results
    assert len(set(results)) == 1
    assert Allocation.objects.count() == 1
    assert set(Quota.objects.values_list("used", flat=True)) == {Decimal("2.5")}
    assert_p2()


def test_c_broken_check_then_insert_fails_some_retries():
    results = _same_allocate_many_times(broken.allocate_check_then_write)

    # The unique index stops duplicates, but callers get errors instead of the
    # allocation: the idempotency promise is broken.
    assert any(isinstance(r, Exception) for r in results)


# --- (d) >= 10 s of mixed allocate/release, random decimal amounts ------------------


def _mixed_tree():
    org = QuotaFactory(
        entity_id="org", limit_value=Decimal("100"), overcommit_ratio=Decimal("1.5")
    )
    users = []
    for t in range(2):
        team = QuotaFactory(
            entity_type=EntityType.TEAM,
            entity_id=f"team-{t}",
            parent=org,
            limit_value=Decimal("60"),
            overcommit_ratio=Decimal("2"),
        )
        users += [_user(team, f"user-{t}-{u}", limit="30", ratio="3") for u in range(2)]
    return users


def _mixed_traffic(allocate, release, seconds, threads=8):
    users = _mixed_tree()
    deadline = time.monotonic() + seconds
    stop = threading.Event()
    violations = []

    def sample_p1():
        # Watch P1 while traffic runs: no committed state may show a level over cap.
        try:
            while not stop.is_set():
                for quota in Quota.objects.all():
                    if quota.used > quota.effective_limit:
                        violations.append((quota.entity_id, quota.used))
                time.sleep(0.01)
        finally:
            connection.close()

    sampler = threading.Thread(target=sample_p1)
    sampler.start()

    def work(index):
        rng = random.Random(index)
        held, counts = [], {"granted": 0, "denied": 0, "released": 0}
        while time.monotonic() < deadline:
            if held and rng.random() < 0.45:
                release(allocation_id=held.pop(rng.randrange(len(held))))
                counts["released"] += 1
                continue
            amount = Decimal(rng.randint(1, 150_000)) / Decimal(10_000)
            try:
                result = allocate(
                    entity_type="user",
                    entity_id=rng.choice(users).entity_id,
                    resource_type="gpu_hours",
                    job_id=uuid.uuid4(),
                    requested_value=amount,
                )
            except QuotaExceeded:
                counts["denied"] += 1
                continue
            allocation = getattr(result, "allocation", result)
            held.append(allocation.id)
            counts["granted"] += 1
        return counts

    try:
        results = run_in_threads(threads, work)
    finally:
        stop.set()
        sampler.join()
    return results, violations


def test_d_ten_seconds_of_mixed_traffic_keep_p1_and_p2():
    results, violations = _mixed_traffic(
        services.allocation_create, services.allocation_release, seconds=10
    )

    assert all(isinstance(r, dict) for r in results), results
    assert sum(r["granted"] for r in results) > 100
    assert sum(r["denied"] for r in results) > 0  # the caps were reached
    assert violations == []
    assert_p1()
    assert_p2()


def test_d_broken_variant_breaks_p1_under_mixed_traffic():
    _, violations = _mixed_traffic(
        broken.allocate_check_then_write, services.allocation_release, seconds=3
    )

    assert violations != []


# --- (e) deadlock probe ---------------------------------------------------------------


def _is_deadlock(exc):
    return isinstance(exc, OperationalError) and "deadlock" in str(exc).lower()


def _deadlock_probe(release, seconds, threads=16):
    org = QuotaFactory(entity_id="org", limit_value=Decimal("10000"))
    users = []
    for t in range(4):
        team = QuotaFactory(
            entity_type=EntityType.TEAM,
            entity_id=f"team-{t}",
            parent=org,
            limit_value=Decimal("2500"),
        )
        users += [_user(team, f"u-{t}-{u}", limit="600", ratio="1") for u in range(4)]
    deadline = time.monotonic() + seconds
    deadlocks = []
    found = threading.Event()

    def work(index):
        rng = random.Random(index)
        held = []
        while time.monotonic() < deadline and not found.is_set():
            try:
                if held and rng.random() < 0.5:
                    release(allocation_id=held.pop(0))
                else:
                    result = services.allocation_create(
                        entity_type="user",
                        entity_id=rng.choice(users).entity_id,
                        resource_type="gpu_hours",
                        job_id=uuid.uuid4(),
                        requested_value=Decimal("1.5"),
                    )
                    held.append(result.allocation.id)
            except OperationalError as exc:
                if not _is_deadlock(exc):
                    raise
                deadlocks.append(exc)
                found.set()
        return len(held)

    results = run_in_threads(threads, work)
    return results, deadlocks


def test_e_interleaved_allocations_and_releases_never_deadlock():
    results, deadlocks = _deadlock_probe(services.allocation_release, seconds=4)

    assert all(isinstance(r, int) for r in results), results
    assert deadlocks == []
    assert_p1()
    assert_p2()


def test_e_broken_lock_order_deadlocks():
    _, deadlocks = _deadlock_probe(broken.release_root_first, seconds=8)

    assert deadlocks != []
