"""Jobs under concurrency, against the real server (DESIGN §3b, §4).

(a) Threads admit jobs needing GPUs and memory under one team where GPUs run out
    first and memory second: no job ever holds one resource without the other, P1
    and P2 hold, and a refused job wrote nothing.
(b) Jobs whose resource sets overlap in opposite orders under one organization, for
    ten seconds: no deadlock.
(c) The same admission from many threads: one set of allocations.
(d) One job released from many threads: each allocation settled once.

Each scenario also runs against a deliberately broken variant that must fail.
"""

import time
import uuid
from collections import defaultdict
from decimal import Decimal

import pytest
from django.db import OperationalError

from allocations.exceptions import AlreadyReleased, QuotaExceeded
from allocations.models import Allocation, UsageHistory
from allocations.services import jobs
from quotas.models import EntityType, ResourceType
from tests import broken
from tests.concurrency import outcomes, run_in_threads
from tests.factories import QuotaFactory
from tests.helpers import assert_p1, assert_p2

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]

D = Decimal
GPUS, MEMORY = "concurrent_gpus", "memory_gb"


def _tree(*, team_gpus="40", team_memory="300", users=8, org="org", teams=("team",)):
    """org → teams → users on GPUs and memory; the team binds."""
    users_of = {}
    for slug, team_limit in ((GPUS, team_gpus), (MEMORY, team_memory)):
        rtype = ResourceType.objects.get(slug=slug)
        root = QuotaFactory(entity_id=org, resource_type=rtype, limit_value=D(10000))
        for team_name in teams:
            team = QuotaFactory(
                entity_type=EntityType.TEAM,
                entity_id=team_name,
                parent=root,
                resource_type=rtype,
                limit_value=D(team_limit),
            )
            for index in range(users):
                QuotaFactory(
                    entity_type=EntityType.USER,
                    entity_id=f"{team_name}-u{index}",
                    parent=team,
                    resource_type=rtype,
                    limit_value=D(team_limit),
                    overcommit_ratio=D(1),
                )
        users_of = {team: [f"{team}-u{i}" for i in range(users)] for team in teams}
    return users_of


def _admit(admit, user, job_id=None, gpus="4", memory="20"):
    return admit(
        entity_type="user",
        entity_id=user,
        job_id=job_id or uuid.uuid4(),
        resources={GPUS: D(gpus), MEMORY: D(memory)},
    )


def _jobs_holding_one_resource_only() -> list:
    held = defaultdict(set)
    for job_id, resource in Allocation.objects.filter(status="active").values_list(
        "job_id", "resource_type"
    ):
        held[job_id].add(resource)
    return [job for job, resources in held.items() if resources != {GPUS, MEMORY}]


# --- (a) all or nothing while one resource runs out before the other -------------


def _fill(admit):
    users = _tree()["team"]
    # 8 threads × 4 jobs of 4 GPUs and 20 GiB: the team's 40 GPUs admit 10 jobs;
    # with 300 GiB memory would allow 15.
    return run_in_threads(
        8,
        lambda index: [_safe(lambda: _admit(admit, users[index])) for _ in range(4)],
    )


def _safe(call):
    try:
        return call()
    except QuotaExceeded as exc:
        return exc


def test_a_every_admitted_job_holds_all_its_resources_and_refusals_write_nothing():
    results = _fill(jobs.job_admit)

    flat = [result for thread in results for result in thread]
    granted = [r for r in flat if isinstance(r, jobs.JobResult)]
    refused = [r for r in flat if isinstance(r, QuotaExceeded)]
    assert len(granted) == 10 and len(refused) == 22
    assert all(r.extra["resource_type"] == GPUS for r in refused)
    assert _jobs_holding_one_resource_only() == []
    # Two history rows per admitted job, none for a refused one.
    assert UsageHistory.objects.count() == 2 * len(granted)
    assert Allocation.objects.count() == 2 * len(granted)
    assert_p1()
    assert_p2()


def test_a_broken_admission_one_resource_at_a_time_leaves_traces_of_refusals():
    results = _fill(broken.admit_one_by_one)

    flat = [result for thread in results for result in thread]
    assert all(
        not isinstance(r, BaseException) or isinstance(r, QuotaExceeded) for r in flat
    ), flat
    granted = [r for r in flat if not isinstance(r, BaseException)]
    # Refused jobs allocated memory, or GPUs, before being undone: history rows and
    # released allocations of jobs that never ran.
    assert UsageHistory.objects.count() > 2 * len(granted)


# --- (b) opposite orders, no deadlock ----------------------------------------------


def _opposite_orders(admit, seconds: float, release=jobs.job_release):
    teams = _tree(team_gpus="1000", team_memory="1000", users=2, teams=("t1", "t2"))
    users = teams["t1"] + teams["t2"]
    deadline = time.monotonic() + seconds

    def work(index):
        done = 0
        order = [GPUS, MEMORY] if index % 2 else [MEMORY, GPUS]
        while time.monotonic() < deadline:
            result = admit(
                entity_type="user",
                entity_id=users[index % len(users)],
                job_id=uuid.uuid4(),
                resources={resource: D(1) for resource in order},
            )
            release(job_id=result.job_id)
            done += 1
        return done

    return run_in_threads(8, work)


def test_b_opposite_orders_never_deadlock():
    results = _opposite_orders(jobs.job_admit, seconds=10)

    counts, _ = outcomes(results)
    assert len(counts) == 8 and all(count > 0 for count in counts)
    assert_p2()


def test_b_broken_admission_in_request_order_deadlocks():
    results = _opposite_orders(
        broken.admit_in_request_order, seconds=5, release=lambda job_id: None
    )

    deadlocks = [
        r for r in results if isinstance(r, OperationalError) and "deadlock" in str(r)
    ]
    assert deadlocks, results


# --- (c) one admission from many threads ---------------------------------------------


def _same_admission(admit):
    users = _tree()["team"]
    job_id = uuid.uuid4()
    return run_in_threads(
        16, lambda index: _safe(lambda: _admit(admit, users[0], job_id=job_id))
    )


def test_c_the_same_admission_from_many_threads_gives_one_set_of_allocations():
    results = _same_admission(jobs.job_admit)

    assert all(isinstance(r, jobs.JobResult) for r in results), results
    ids = {frozenset(a.id for a in r.allocations) for r in results}
    assert len(ids) == 1
    assert sum(not r.replayed for r in results) == 1
    assert Allocation.objects.count() == 2
    assert_p2()


def test_c_a_broken_check_then_insert_admission_makes_two_sets():
    results = _same_admission(broken.admit_check_then_insert)

    assert Allocation.objects.count() > 2 or any(
        isinstance(r, BaseException) for r in results
    )


# --- (d) one release from many threads ---------------------------------------------


def _release_many_times(release):
    users = _tree()["team"]
    admitted = _admit(jobs.job_admit, users[0], gpus="4", memory="20")
    return run_in_threads(16, lambda index: release(job_id=admitted.job_id))


def test_d_a_job_released_by_many_threads_is_settled_once():
    results = _release_many_times(jobs.job_release)

    released = [r for r in results if isinstance(r, jobs.JobResult)]
    refused = [r for r in results if isinstance(r, AlreadyReleased)]
    assert len(released) == 1 and len(refused) == 15
    assert UsageHistory.objects.filter(operation="release").count() == 2
    assert_p2()


def test_d_a_broken_release_that_reads_then_writes_settles_twice():
    _release_many_times(broken.release_job_check_then_write)

    assert UsageHistory.objects.filter(operation="release").count() > 2
