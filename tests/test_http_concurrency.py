"""The concurrency guarantees over HTTP, against gunicorn (4 sync workers), once
with direct connections and once through PgBouncer in transaction pooling
(DESIGN §4, §8; issue #13).

* exact grants: many clients allocating under one team get exactly its cap;
* a single release: one allocation released by many clients at once is released
  once, the others answered 409 ``already_released``;
* a single replay: the same allocation sent by many clients at once is granted
  once and replayed to the others;
* budgets: allocate, report and settle from many clients: both forms of P2 exact;
* jobs: admissions of GPUs and memory under one team: no job ever holds one
  without the other.

The first two also run against a server with deliberately broken allocate and
release paths (tests/broken_wsgi.py), which must fail them.
"""

import threading
import uuid
from decimal import Decimal

import pytest

from allocations.models import Allocation
from allocations.selectors import orphan_allocations, usage_drift
from horizon_quota import pgbouncer
from quotas.access.keys import api_key_create
from quotas.models import EntityType, Quota, ResourceType
from quotas.services import quota_create
from tests.factories import QuotaFactory
from tests.helpers import assert_p1, assert_p2
from tests.live import gunicorn, request

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.concurrency]

D = Decimal
THREADS = 16
THROUGH = [
    "direct",
    pytest.param(
        "pgbouncer",
        marks=pytest.mark.skipif(
            pgbouncer.available() is None,
            reason="Debian's pgbouncer is not installed (bootstrap.py test installs "
            "it where apt-get can)",
        ),
    ),
]


def _in_threads(work):
    """Run ``work(i)`` in THREADS threads released together; their results."""
    barrier = threading.Barrier(THREADS)
    results = [None] * THREADS

    def run(index):
        barrier.wait()
        try:
            results[index] = work(index)
        except BaseException as exc:  # reported below, in the test's thread
            results[index] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    assert not any(thread.is_alive() for thread in threads)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise failures[0]
    return results


def _team(resource="concurrent_gpus", team_limit="20"):
    """acme → research (team_limit) → u0 … u15, each user allowed the team's limit
    (test state beyond the hierarchy rules, so the team is what binds)."""
    rtype = ResourceType.objects.get(slug=resource)
    org = QuotaFactory(entity_id="acme", resource_type=rtype, limit_value=D(100000))
    team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="research",
        parent=org,
        resource_type=rtype,
        limit_value=D(team_limit),
    )
    for index in range(THREADS):
        QuotaFactory(
            entity_type=EntityType.USER,
            entity_id=f"u{index}",
            parent=team,
            resource_type=rtype,
            limit_value=D(team_limit),
        )
    return team


def _budget_team():
    """The same tree as monthly gpu_hours budgets, through the quota service."""

    def make(entity_type, entity_id, limit, parent=None):
        return quota_create(
            entity_type=entity_type,
            entity_id=entity_id,
            resource_type="gpu_hours",
            parent_id=parent.id if parent else None,
            limit_value=D(limit),
            period="month",
        )

    team = make("team", "research", 400, make("organization", "acme", 100000))
    for index in range(THREADS):
        make("user", f"u{index}", 25, team)
    return team


def _key():
    return api_key_create(name="scheduler", role="scheduler")[1]


def _warm(port, key):
    """Every worker answers an API call once (imports, connection, key cache): a
    worker's first call is slow enough to serialize a race by itself."""
    _in_threads(lambda index: request(port, "GET", "/api/v1/quotas?limit=1", None, key))


def _allocate(port, key, user, job_id=None, amount=1, resource="concurrent_gpus"):
    return request(
        port,
        "POST",
        "/api/v1/allocations",
        {
            "entity_type": "user",
            "entity_id": user,
            "resource_type": resource,
            "requested_value": amount,
            "job_id": str(job_id or uuid.uuid4()),
        },
        key,
    )


# --- exact grants ------------------------------------------------------------------


def _grant_race(port, key):
    _warm(port, key)

    def work(index):
        return [_allocate(port, key, f"u{index}")[0] for _ in range(4)]

    return [status for statuses in _in_threads(work) for status in statuses]


@pytest.mark.parametrize("through", THROUGH)
def test_many_clients_get_exactly_the_teams_cap(through):
    team = _team()
    key = _key()
    with gunicorn(through=through) as port:
        statuses = _grant_race(port, key)

    assert statuses.count(201) == 20
    assert statuses.count(429) == THREADS * 4 - 20
    team.refresh_from_db()
    assert team.used == 20
    assert_p1()
    assert_p2()


def test_broken_check_then_write_over_http_grants_past_the_cap():
    team = _team()
    key = _key()
    with gunicorn(wsgi="tests.broken_wsgi") as port:
        statuses = _grant_race(port, key)

    team.refresh_from_db()
    assert statuses.count(201) > 20 or team.used > 20, statuses


# --- a single release ----------------------------------------------------------------


ROUNDS = 3


def _release_race(port, key):
    """Three allocations, each released by every client at once: the statuses of
    each round."""
    _warm(port, key)
    rounds = []
    for _ in range(ROUNDS):
        status, body = _allocate(port, key, "u0", amount=5)
        assert status == 201, body
        url = f"/api/v1/allocations/{body['id']}"
        rounds.append(
            sorted(
                _in_threads(
                    lambda index, url=url: request(port, "DELETE", url, None, key)[0]
                )
            )
        )
    return rounds


ONCE = [200] + [409] * (THREADS - 1)


@pytest.mark.parametrize("through", THROUGH)
def test_one_allocation_released_by_many_clients_is_released_once(through):
    team = _team()
    key = _key()
    with gunicorn(through=through) as port:
        rounds = _release_race(port, key)

    assert rounds == [ONCE] * ROUNDS
    team.refresh_from_db()
    assert team.used == 0
    assert_p2()


def test_broken_release_over_http_releases_twice():
    team = _team()
    key = _key()
    with gunicorn(wsgi="tests.broken_wsgi") as port:
        rounds = _release_race(port, key)

    # Double releases: answered 200 twice, or refused by the database's own check
    # (reserved may not go below zero) with a 500: either way not one release.
    team.refresh_from_db()
    assert rounds != [ONCE] * ROUNDS or team.used != 0


# --- a single replay -----------------------------------------------------------------


@pytest.mark.parametrize("through", THROUGH)
def test_one_allocation_sent_by_many_clients_is_granted_once(through):
    team = _team()
    key = _key()
    job_id = uuid.uuid4()
    with gunicorn(through=through) as port:
        answers = _in_threads(lambda index: _allocate(port, key, "u0", job_id, 2))

    statuses = sorted(status for status, _ in answers)
    assert statuses == [200] * (THREADS - 1) + [201]
    assert len({body["id"] for _, body in answers}) == 1
    assert Allocation.objects.filter(job_id=job_id).count() == 1
    team.refresh_from_db()
    assert team.used == 2


# --- budgets ---------------------------------------------------------------------


@pytest.mark.parametrize("through", THROUGH)
def test_budgets_stay_exact_under_reports_and_settlements(through):
    _budget_team()
    key = _key()

    def work(index):
        done = 0
        for round_ in range(3):
            status, body = _allocate(
                port, key, f"u{index}", amount=5, resource="gpu_hours"
            )
            if status != 201:
                continue
            url = f"/api/v1/allocations/{body['id']}"
            assert (
                request(port, "POST", f"{url}/consume", {"consumed_value": 2}, key)[0]
                == 200
            )
            final = 3 + round_ % 2
            assert (
                request(port, "DELETE", f"{url}?consumed_value={final}", None, key)[0]
                == 200
            )
            done += final
        return done

    with gunicorn(through=through) as port:
        consumed = _in_threads(work)

    team = Quota.objects.get(entity_id="research")
    assert team.consumed == sum(consumed) > 0
    assert team.reserved == 0
    assert usage_drift() == []
    assert orphan_allocations() == []


# --- jobs --------------------------------------------------------------------------


@pytest.mark.parametrize("through", THROUGH)
def test_jobs_hold_all_of_their_resources_or_none(through):
    _team(resource="concurrent_gpus", team_limit="24")
    _team(resource="memory_gb", team_limit="100")
    key = _key()

    def work(index):
        statuses = []
        for _ in range(3):
            statuses.append(
                request(
                    port,
                    "POST",
                    "/api/v1/jobs",
                    {
                        "entity_type": "user",
                        "entity_id": f"u{index}",
                        "job_id": str(uuid.uuid4()),
                        "resources": {"concurrent_gpus": 1, "memory_gb": 5},
                    },
                    key,
                )[0]
            )
        return statuses

    with gunicorn(through=through) as port:
        statuses = [s for batch in _in_threads(work) for s in batch]

    # Memory (100 / 5 = 20 jobs) runs out before GPUs (24).
    assert statuses.count(201) == 20
    held = {}
    for job_id, resource in Allocation.objects.values_list("job_id", "resource_type"):
        held.setdefault(job_id, set()).add(resource)
    assert all(
        resources == {"concurrent_gpus", "memory_gb"} for resources in held.values()
    )
    assert len(held) == 20
    assert_p1()
    assert_p2()
