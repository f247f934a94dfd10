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
from django.db import IntegrityError, OperationalError, connection

from allocations import services
from allocations.exceptions import AlreadyReleased, QuotaExceeded
from allocations.models import Allocation, AllocationStatus
from quotas.models import Quota
from tests import broken
from tests.concurrency import outcomes, run_in_threads
from tests.factories import QuotaFactory, TeamQuotaFactory, UserQuotaFactory
from tests.helpers import allocate_direct, allocate_on, assert_p1, assert_p2, mixed_tree

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]


# --- (a) 32 threads x 20 allocations of 1 under a team whose limit is 100 -----------

THREADS_A, PER_THREAD_A = 32, 20


def _fill_the_team(allocate):
    """Each thread's counts of granted and refused allocations, and the team."""
    org = QuotaFactory(entity_id="org", limit_value=Decimal("1000"))
    team = TeamQuotaFactory(entity_id="team", parent=org, limit_value=Decimal("100"))
    # Users' caps add up to 960, so the team is the level that binds.
    users = [
        UserQuotaFactory(
            entity_id=f"user-{i}",
            parent=team,
            limit_value=Decimal("3"),
            overcommit_ratio=Decimal("10"),
        )
        for i in range(THREADS_A)
    ]

    def work(index):
        counts = {"granted": 0, "refused": 0}
        for _ in range(PER_THREAD_A):
            try:
                allocate(
                    entity_type="user",
                    entity_id=users[index].entity_id,
                    resource_type="concurrent_gpus",
                    job_id=uuid.uuid4(),
                    requested_value=Decimal("1"),
                )
                counts["granted"] += 1
            except QuotaExceeded:
                counts["refused"] += 1
        return counts

    # A refusal is counted in its thread; any other exception ends the thread.
    counts, _ = outcomes(run_in_threads(THREADS_A, work))
    assert len(counts) == THREADS_A
    assert all(c["granted"] + c["refused"] == PER_THREAD_A for c in counts), counts
    team.refresh_from_db()
    return counts, team


def test_a_exactly_the_teams_limit_is_granted():
    counts, team = _fill_the_team(services.allocation_create)

    assert sum(c["granted"] for c in counts) == 100
    assert sum(c["refused"] for c in counts) == THREADS_A * PER_THREAD_A - 100
    assert team.used == Decimal("100")
    assert Allocation.objects.filter(status=AllocationStatus.ACTIVE).count() == 100
    assert_p1()
    assert_p2()


def test_a_broken_check_then_write_overfills_the_team():
    counts, team = _fill_the_team(broken.allocate_check_then_write)

    assert sum(c["granted"] for c in counts) > 100
    assert team.used > team.effective_limit


# --- (b) many threads release the same allocation -----------------------------------


def _release_many_times(release):
    """24 threads release one allocation of 7 at once: what each returned or
    raised, and the allocation's id."""
    org = QuotaFactory(limit_value=Decimal("100"))
    team = TeamQuotaFactory(parent=org, limit_value=Decimal("50"))
    user = UserQuotaFactory(
        entity_id="u",
        parent=team,
        limit_value=Decimal("10"),
        overcommit_ratio=Decimal("1"),
    )
    allocation = allocate_on(user, "7")

    results = run_in_threads(24, lambda i: release(allocation_id=allocation.id))
    return results, allocation.id


def test_b_exactly_one_release_succeeds():
    results, allocation_id = _release_many_times(services.allocation_release)

    released, refused = outcomes(results, AlreadyReleased)
    assert len(released) == 1
    assert released[0].id == allocation_id
    assert len(refused) == 23
    assert set(Quota.objects.values_list("used", flat=True)) == {Decimal("0")}
    assert_p2()


def test_b_broken_release_succeeds_more_than_once():
    results, _ = _release_many_times(broken.release_check_then_write)

    # Late callers are told "already released"; the rest got past the status check.
    # Several of those were told "released", and the books were debited more than
    # once, or the database's used >= 0 constraint stopped a second debit mid-way.
    released, refused = outcomes(results, AlreadyReleased, IntegrityError)
    debits_refused = [r for r in refused if isinstance(r, IntegrityError)]
    assert len(released) > 1 or debits_refused, results


# --- (c) one identical allocate sent by many threads at once ------------------------


def _same_allocate_many_times(allocate):
    """24 threads send one identical allocate at once: what each returned (the
    allocation's id) or raised."""
    org = QuotaFactory(limit_value=Decimal("100"))
    team = TeamQuotaFactory(parent=org, limit_value=Decimal("50"))
    UserQuotaFactory(
        entity_id="u",
        parent=team,
        limit_value=Decimal("10"),
        overcommit_ratio=Decimal("1"),
    )
    job_id = uuid.uuid4()

    def work(index):
        result = allocate(
            entity_type="user",
            entity_id="u",
            resource_type="concurrent_gpus",
            job_id=job_id,
            requested_value=Decimal("2.5"),
        )
        return result.allocation.id if hasattr(result, "allocation") else result.id

    return run_in_threads(24, work)


def test_c_an_identical_allocate_from_many_threads_makes_one_allocation():
    results = _same_allocate_many_times(services.allocation_create)

    ids, _ = outcomes(results)  # every caller got the allocation
    assert len(ids) == 24
    assert all(isinstance(r, uuid.UUID) for r in ids), ids
    assert len(set(ids)) == 1
    assert Allocation.objects.count() == 1
    assert set(Quota.objects.values_list("used", flat=True)) == {Decimal("2.5")}
    assert_p2()


def test_c_broken_check_then_insert_fails_some_retries():
    results = _same_allocate_many_times(broken.allocate_check_then_write)

    # The unique index stops duplicates, but callers get errors instead of the
    # allocation: the idempotency promise is broken.
    ids, failures = outcomes(results, IntegrityError)
    assert len(failures) > 0
    assert len(set(ids)) == 1
    assert Allocation.objects.count() == 1


# --- (d) >= 10 s of mixed allocate/release, random decimal amounts ------------------


def _mixed_traffic(allocate, release, seconds, threads=8):
    _, _, users = mixed_tree()
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
                    resource_type="concurrent_gpus",
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
    # Refusals are counted in the threads: none may raise anything.
    counts, _ = outcomes(results)
    assert len(counts) == threads
    return counts, violations


def test_d_ten_seconds_of_mixed_traffic_keep_p1_and_p2():
    counts, violations = _mixed_traffic(
        services.allocation_create, services.allocation_release, seconds=10
    )

    assert all(isinstance(c, dict) for c in counts), counts
    assert sum(c["granted"] for c in counts) > 100
    assert sum(c["denied"] for c in counts) > 0  # the caps were reached
    assert violations == []
    assert_p1()
    assert_p2()


def test_d_broken_variant_breaks_p1_under_mixed_traffic():
    counts, violations = _mixed_traffic(
        broken.allocate_check_then_write, services.allocation_release, seconds=3
    )

    assert all(isinstance(c, dict) for c in counts), counts
    assert sum(c["granted"] for c in counts) > 0
    assert violations != []


# --- (e) deadlock probe ---------------------------------------------------------------


def _is_deadlock(exc):
    return isinstance(exc, OperationalError) and "deadlock" in str(exc).lower()


def _is_lock_timeout(exc):
    return isinstance(exc, OperationalError) and "lock timeout" in str(exc).lower()


def _deadlock_probe(release, seconds, threads=16):
    org = QuotaFactory(entity_id="org", limit_value=Decimal("10000"))
    users = []
    for t in range(4):
        team = TeamQuotaFactory(
            entity_id=f"team-{t}", parent=org, limit_value=Decimal("2500")
        )
        users += [
            UserQuotaFactory(
                entity_id=f"u-{t}-{u}",
                parent=team,
                limit_value=Decimal("600"),
                overcommit_ratio=Decimal("1"),
            )
            for u in range(4)
        ]
    deadline = time.monotonic() + seconds
    deadlocks = []
    # Requests that gave up waiting (the lock budget): behind a deadlock, until
    # PostgreSQL breaks it, the queue at the organization's row can wait that long.
    stalls = []
    found = threading.Event()

    def work(index):
        rng = random.Random(index)
        held = []
        while time.monotonic() < deadline and not found.is_set():
            try:
                if held and rng.random() < 0.5:
                    release(allocation_id=held.pop(0))
                else:
                    allocation = allocate_direct(
                        entity_id=rng.choice(users).entity_id, amount="1.5"
                    )
                    held.append(allocation.id)
            except OperationalError as exc:
                if _is_lock_timeout(exc):
                    stalls.append(exc)
                    continue
                if not _is_deadlock(exc):
                    raise
                deadlocks.append(exc)
                found.set()
        return len(held)

    # A deadlock is recorded in its thread; any other exception ends the thread.
    held, _ = outcomes(run_in_threads(threads, work))
    assert len(held) == threads
    assert all(isinstance(h, int) for h in held), held
    return held, deadlocks, stalls


def test_e_interleaved_allocations_and_releases_never_deadlock():
    _, deadlocks, stalls = _deadlock_probe(services.allocation_release, seconds=4)

    assert deadlocks == []
    assert stalls == []
    assert_p1()
    assert_p2()


def test_e_broken_lock_order_deadlocks():
    _, deadlocks, _ = _deadlock_probe(broken.release_root_first, seconds=8)

    assert deadlocks != []
