"""Reading allocations and history: GET /api/v1/allocations (+ filters), GET
/api/v1/allocations/{id}, GET /api/v1/quotas/{id}/allocations and GET
/api/v1/quotas/{id}/history, their paging, history that outlives its quota, and the
number of SQL queries the hot path and the lists cost (DESIGN §3, §5, §8).
"""

from decimal import Decimal
from uuid import uuid4

import pytest
from django.db.models.functions import Now
from django.utils.dateparse import parse_datetime

from allocations import services
from allocations.models import Allocation, AllocationStatus, UsageHistory
from quotas.models import EntityType, Quota, ResourceType
from tests.factories import QuotaFactory
from tests.helpers import (
    ALLOCATIONS,
    UNKNOWN_ID,
    allocate_direct,
    allocate_ok,
    allocate_on,
    assert_error,
    expire,
    next_link,
    release_ok,
    row_ids,
    walk,
)


def _cpu_quota(entity_id="alice"):
    return QuotaFactory(
        entity_type=EntityType.USER,
        entity_id=entity_id,
        resource_type=ResourceType.objects.get(slug="cpu_hours"),
        limit_value=Decimal("1000"),
    )


@pytest.fixture
def mixed(scheduler_client, tree):
    """Allocations of every status, on two entities and two resource types."""
    _cpu_quota()
    active = allocate_ok(scheduler_client, requested_value=1)
    released = allocate_ok(scheduler_client, requested_value=1)
    release_ok(scheduler_client, released["id"])
    expired = allocate_ok(scheduler_client, ttl_seconds=60, requested_value=1)
    expire(expired["id"])
    team = allocate_ok(
        scheduler_client, entity_type="team", entity_id="research", requested_value=1
    )
    cpu = allocate_ok(scheduler_client, resource_type="cpu_hours", requested_value=1)
    return {
        "active": active["id"],
        "released": released["id"],
        "expired": expired["id"],
        "team": team["id"],
        "cpu": cpu["id"],
    }


# --- GET /allocations ----------------------------------------------------------------


def test_the_list_holds_every_status_unless_filtered(viewer_client, mixed):
    response = viewer_client.get(ALLOCATIONS)

    assert set(row_ids(response)) == set(mixed.values())
    statuses = {row["id"]: row["status"] for row in response.json()}
    assert statuses[mixed["active"]] == "active"
    assert statuses[mixed["released"]] == "released"
    assert statuses[mixed["expired"]] == "expired"


def test_the_list_renders_every_allocation_field(viewer_client, mixed):
    row = next(
        row
        for row in viewer_client.get(ALLOCATIONS).json()
        if row["id"] == mixed["released"]
    )

    stored = Allocation.objects.get(id=mixed["released"])
    assert row == {
        "id": str(stored.id),
        "quota_id": str(stored.quota_id),
        "entity_type": "user",
        "entity_id": "alice",
        "job_id": str(stored.job_id),
        "resource_type": "concurrent_gpus",
        "allocated_value": 1,
        "status": "released",
        "allocated_at": row["allocated_at"],
        "released_at": row["released_at"],
        "expires_at": None,
        "is_burst": False,
        "version": 2,
        "metadata": {},
        "consumed_value": 0,
        "rate": None,
    }
    assert parse_datetime(row["allocated_at"]) == stored.allocated_at
    assert parse_datetime(row["released_at"]) == stored.released_at


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", ["active", "team", "cpu"]),
        ("released", ["released"]),
        ("expired", ["expired"]),
        ("RELEASED", ["released"]),
        ("Active", ["active", "team", "cpu"]),
        ("all", ["active", "released", "expired", "team", "cpu"]),
        ("ALL", ["active", "released", "expired", "team", "cpu"]),
    ],
)
def test_it_filters_by_status_case_insensitively(
    viewer_client, mixed, status, expected
):
    response = viewer_client.get(ALLOCATIONS, {"status": status})

    assert set(row_ids(response)) == {mixed[name] for name in expected}


@pytest.mark.parametrize("status", ["bogus", "every", "releasedd"])
def test_it_refuses_an_unknown_status(viewer_client, mixed, status):
    body = assert_error(
        viewer_client.get(ALLOCATIONS, {"status": status}), 400, "invalid_input"
    )
    assert body["fields"]["status"]


def test_it_filters_by_job_id_across_the_jobs_allocations(scheduler_client, tree):
    job_id = str(uuid4())
    first = allocate_ok(scheduler_client, job_id=job_id, requested_value=1)
    release_ok(scheduler_client, first["id"])
    second = allocate_ok(scheduler_client, job_id=job_id, requested_value=1)
    allocate_ok(scheduler_client, requested_value=1)

    response = scheduler_client.get(ALLOCATIONS, {"job_id": job_id})

    assert set(row_ids(response)) == {first["id"], second["id"]}


def test_it_refuses_a_job_id_filter_that_is_not_a_uuid(viewer_client, mixed):
    assert_error(
        viewer_client.get(ALLOCATIONS, {"job_id": "nope"}), 400, "invalid_input"
    )


def test_it_filters_by_entity_id(viewer_client, mixed):
    response = viewer_client.get(ALLOCATIONS, {"entity_id": "research"})

    assert row_ids(response) == [mixed["team"]]


def test_an_unknown_entity_id_gives_an_empty_list(viewer_client, mixed):
    assert row_ids(viewer_client.get(ALLOCATIONS, {"entity_id": "nobody"})) == []


@pytest.mark.parametrize("resource_type", ["cpu_hours", "CPU_Hours"])
def test_it_filters_by_resource_type(viewer_client, mixed, resource_type):
    response = viewer_client.get(ALLOCATIONS, {"resource_type": resource_type})

    assert row_ids(response) == [mixed["cpu"]]


def test_filters_combine(viewer_client, mixed):
    response = viewer_client.get(
        ALLOCATIONS,
        {"entity_id": "alice", "status": "active", "resource_type": "concurrent_gpus"},
    )

    assert row_ids(response) == [mixed["active"]]


@pytest.mark.django_db(transaction=True)
def test_the_list_is_newest_first(scheduler_client, tree):
    # Each allocate commits on its own here, so each has its own allocated_at.
    created = [allocate_ok(scheduler_client, requested_value=1)["id"] for _ in range(4)]
    release_ok(scheduler_client, created[1])

    response = scheduler_client.get(ALLOCATIONS)

    assert row_ids(response) == list(reversed(created))
    times = [parse_datetime(row["allocated_at"]) for row in response.json()]
    assert times == sorted(times, reverse=True)
    assert len(set(times)) == 4


def test_the_list_pages_with_a_link_header(scheduler_client, tree):
    for _ in range(7):
        allocate_ok(scheduler_client, requested_value=1)
    everything = row_ids(scheduler_client.get(ALLOCATIONS, {"limit": 1000}))

    pages = walk(scheduler_client, f"{ALLOCATIONS}?limit=3")

    assert [len(page) for page in pages] == [3, 3, 1]
    assert [row for page in pages for row in page] == everything
    assert len(set(everything)) == 7


def test_the_last_full_page_has_no_next_link(scheduler_client, tree):
    for _ in range(4):
        allocate_ok(scheduler_client, requested_value=1)

    pages = walk(scheduler_client, f"{ALLOCATIONS}?limit=2")

    assert [len(page) for page in pages] == [2, 2]


def test_paging_keeps_the_filters(scheduler_client, mixed):
    for _ in range(3):
        allocate_ok(
            scheduler_client,
            entity_type="team",
            entity_id="research",
            requested_value=1,
        )

    pages = walk(scheduler_client, f"{ALLOCATIONS}?entity_id=research&limit=2")

    assert [len(page) for page in pages] == [2, 2]
    ids = [row for page in pages for row in page]
    assert set(
        Allocation.objects.filter(id__in=ids).values_list("entity_id", flat=True)
    ) == {"research"}


def test_a_limit_above_the_maximum_is_clamped(viewer_client, mixed):
    response = viewer_client.get(ALLOCATIONS, {"limit": 1_000_000})

    assert set(row_ids(response)) == set(mixed.values())


@pytest.mark.parametrize("limit", ["0", "-1", "abc", "1.5"])
def test_it_refuses_a_bad_limit(viewer_client, mixed, limit):
    assert_error(viewer_client.get(ALLOCATIONS, {"limit": limit}), 400, "invalid_input")


def test_it_refuses_a_forged_cursor(viewer_client, mixed):
    assert_error(
        viewer_client.get(ALLOCATIONS, {"cursor": "not-a-cursor!"}),
        400,
        "invalid_input",
    )


def test_the_list_needs_an_api_key(api_client, mixed):
    assert_error(api_client.get(ALLOCATIONS), 401, "unauthorized")


# --- GET /allocations/{id} -----------------------------------------------------------


def test_it_gets_one_allocation(viewer_client, mixed):
    response = viewer_client.get(f"{ALLOCATIONS}/{mixed['released']}")

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == mixed["released"]
    assert body["status"] == "released"
    assert body == next(
        row for row in viewer_client.get(ALLOCATIONS).json() if row["id"] == body["id"]
    )


def test_an_unknown_allocation_is_404(viewer_client, mixed):
    assert_error(viewer_client.get(f"{ALLOCATIONS}/{UNKNOWN_ID}"), 404, "not_found")


def test_getting_an_allocation_needs_an_api_key(api_client, mixed):
    assert_error(
        api_client.get(f"{ALLOCATIONS}/{mixed['active']}"), 401, "unauthorized"
    )


# --- GET /quotas/{id}/allocations ----------------------------------------------------


def _quota_allocations(quota) -> str:
    return f"/api/v1/quotas/{quota.id}/allocations"


def test_a_quotas_allocations_are_the_active_ones_by_default(
    viewer_client, tree, mixed
):
    org, team, user = tree

    response = viewer_client.get(_quota_allocations(user))

    assert row_ids(response) == [mixed["active"]]


@pytest.mark.parametrize(
    ("status", "expected"),
    [
        ("active", ["active"]),
        ("released", ["released"]),
        ("expired", ["expired"]),
        ("all", ["active", "released", "expired"]),
        ("ALL", ["active", "released", "expired"]),
        ("Released", ["released"]),
    ],
)
def test_status_widens_a_quotas_allocations(
    viewer_client, tree, mixed, status, expected
):
    org, team, user = tree

    response = viewer_client.get(_quota_allocations(user), {"status": status})

    assert set(row_ids(response)) == {mixed[name] for name in expected}


@pytest.mark.parametrize("status", ["bogus", "inactive"])
def test_a_quotas_allocations_refuse_an_unknown_status(
    viewer_client, tree, mixed, status
):
    org, team, user = tree

    response = viewer_client.get(_quota_allocations(user), {"status": status})

    assert assert_error(response, 400, "invalid_input")["fields"]["status"]


def test_the_allocations_of_an_unknown_quota_are_404(viewer_client, mixed):
    response = viewer_client.get(f"/api/v1/quotas/{UNKNOWN_ID}/allocations")

    assert_error(response, 404, "not_found")


def test_a_quotas_allocations_page_with_a_link_header(scheduler_client, tree):
    org, team, user = tree
    for _ in range(5):
        allocate_ok(scheduler_client, requested_value=1)
    everything = row_ids(scheduler_client.get(_quota_allocations(user)))

    pages = walk(scheduler_client, f"{_quota_allocations(user)}?limit=2")

    assert [len(page) for page in pages] == [2, 2, 1]
    assert [row for page in pages for row in page] == everything


# --- GET /quotas/{id}/history --------------------------------------------------------


def _history(quota_id) -> str:
    return f"/api/v1/quotas/{quota_id}/history"


HISTORY_FIELDS = {
    "id",
    "quota_id",
    "allocation_id",
    "entity_type",
    "entity_id",
    "resource_type",
    "allocated_value",
    "operation",
    "consumed_delta",
    "job_id",
    "timestamp",
    "metadata",
}


def test_history_rows_have_the_wire_shape(scheduler_client, tree):
    org, team, user = tree
    granted = allocate_ok(scheduler_client, requested_value="2.5", metadata={"q": "x"})

    response = scheduler_client.get(_history(user.id))

    assert response.status_code == 200
    [row] = response.json()
    assert set(row) == HISTORY_FIELDS
    stored = UsageHistory.objects.get()
    assert row == {
        "id": str(stored.id),
        "quota_id": str(user.id),
        "allocation_id": granted["id"],
        "entity_type": "user",
        "entity_id": "alice",
        "resource_type": "concurrent_gpus",
        "allocated_value": 2.5,
        "operation": "allocate",
        "consumed_delta": 0,
        "job_id": granted["job_id"],
        "timestamp": row["timestamp"],
        "metadata": {"q": "x"},
    }
    assert parse_datetime(row["timestamp"]) == stored.timestamp
    assert row["timestamp"].endswith("Z")


def test_a_quotas_history_holds_only_its_own_rows(scheduler_client, tree):
    org, team, user = tree
    allocate_ok(scheduler_client, requested_value=1)
    allocate_ok(
        scheduler_client, entity_type="team", entity_id="research", requested_value=1
    )

    rows = scheduler_client.get(_history(user.id)).json()

    assert [row["entity_id"] for row in rows] == ["alice"]


@pytest.mark.django_db(transaction=True)
def test_history_is_newest_first_and_filters_by_time(scheduler_client, tree):
    org, team, user = tree
    # Each call commits on its own here, so each row has its own timestamp.
    first = allocate_ok(scheduler_client, requested_value=1)
    release_ok(scheduler_client, first["id"])
    allocate_ok(scheduler_client, requested_value=1)
    rows = scheduler_client.get(_history(user.id)).json()
    times = [parse_datetime(row["timestamp"]) for row in rows]

    assert [row["operation"] for row in rows] == ["allocate", "release", "allocate"]
    assert times == sorted(times, reverse=True)
    assert len(set(times)) == 3
    newest, middle, oldest = (row["id"] for row in rows)

    def ids(**query):
        return row_ids(scheduler_client.get(_history(user.id), query))

    between_old = (times[2] + (times[1] - times[2]) / 2).isoformat()
    between_new = (times[1] + (times[0] - times[1]) / 2).isoformat()
    assert ids(since=between_old) == [newest, middle]
    assert ids(since=rows[1]["timestamp"]) == [newest, middle]
    assert ids(until=between_new) == [middle, oldest]
    assert ids(since=between_old, until=between_new) == [middle]
    assert ids(since=between_new, operation="allocate") == [newest]
    # The same instant written with another offset.
    shifted = (times[1] + (times[0] - times[1]) / 2).astimezone(
        parse_datetime("2026-01-01T00:00:00+02:00").tzinfo
    )
    assert ids(until=shifted.isoformat()) == [middle, oldest]


def test_history_filters_by_operation_case_insensitively(scheduler_client, tree):
    org, team, user = tree
    granted = allocate_ok(scheduler_client, requested_value=1)
    release_ok(scheduler_client, granted["id"])
    expiring = allocate_ok(scheduler_client, ttl_seconds=60, requested_value=1)
    expire(expiring["id"])

    def operations(value):
        response = scheduler_client.get(_history(user.id), {"operation": value})
        assert response.status_code == 200
        return sorted(row["operation"] for row in response.json())

    assert operations("allocate") == ["allocate", "allocate"]
    assert operations("RELEASE") == ["release"]
    assert operations("Expire") == ["expire"]


@pytest.mark.parametrize(
    "query",
    [
        {"operation": "bogus"},
        {"since": "yesterday"},
        {"until": "2026-13-40T00:00:00Z"},
        {"limit": "0"},
        {"limit": "many"},
    ],
)
def test_history_refuses_bad_filters(scheduler_client, tree, query):
    org, team, user = tree
    allocate_ok(scheduler_client, requested_value=1)

    response = scheduler_client.get(_history(user.id), query)

    assert_error(response, 400, "invalid_input")


def test_history_honours_limit_and_pages_with_a_link_header(scheduler_client, tree):
    org, team, user = tree
    for _ in range(3):
        granted = allocate_ok(scheduler_client, requested_value=1)
        release_ok(scheduler_client, granted["id"])
    everything = row_ids(scheduler_client.get(_history(user.id)))

    first_page = scheduler_client.get(_history(user.id), {"limit": 4})
    pages = walk(scheduler_client, f"{_history(user.id)}?limit=4")

    assert len(row_ids(first_page)) == 4
    assert next_link(first_page) is not None
    assert [len(page) for page in pages] == [4, 2]
    assert [row for page in pages for row in page] == everything
    assert len(set(everything)) == 6


def test_paging_history_keeps_the_operation_filter(scheduler_client, tree):
    org, team, user = tree
    for _ in range(3):
        granted = allocate_ok(scheduler_client, requested_value=1)
        release_ok(scheduler_client, granted["id"])

    pages = walk(scheduler_client, f"{_history(user.id)}?operation=release&limit=2")

    assert [len(page) for page in pages] == [2, 1]
    ids = [row for page in pages for row in page]
    assert set(
        UsageHistory.objects.filter(id__in=ids).values_list("operation", flat=True)
    ) == {"release"}


def test_the_history_of_an_unknown_quota_is_404(viewer_client, mixed):
    assert_error(viewer_client.get(_history(UNKNOWN_ID)), 404, "not_found")


def test_a_quota_without_history_answers_an_empty_list(viewer_client, tree):
    org, team, user = tree

    response = viewer_client.get(_history(user.id))

    assert response.status_code == 200
    assert response.json() == []


def test_history_needs_an_api_key(api_client, tree):
    org, team, user = tree

    assert_error(api_client.get(_history(user.id)), 401, "unauthorized")


# --- Deleting a quota keeps its history ----------------------------------------------


def test_a_deleted_quota_keeps_its_history_and_released_allocations(
    scheduler_client, admin_client_api, tree
):
    org, team, user = tree
    granted = [allocate_ok(scheduler_client, requested_value=n) for n in (1, 2)]
    for allocation in granted:
        release_ok(scheduler_client, allocation["id"])
    history_before = scheduler_client.get(_history(user.id)).json()

    deleted = admin_client_api.delete(f"/api/v1/quotas/{user.id}")

    assert deleted.status_code == 204
    assert not Quota.objects.filter(id=user.id).exists()
    history = scheduler_client.get(_history(user.id))
    assert history.status_code == 200
    assert history.json() == history_before
    assert len(history.json()) == 4
    assert {row["entity_id"] for row in history.json()} == {"alice"}
    listed = scheduler_client.get(ALLOCATIONS, {"entity_id": "alice"})
    assert set(row_ids(listed)) == {allocation["id"] for allocation in granted}
    assert {row["status"] for row in listed.json()} == {"released"}
    assert {row["quota_id"] for row in listed.json()} == {str(user.id)}
    for allocation in granted:
        one = scheduler_client.get(f"{ALLOCATIONS}/{allocation['id']}")
        assert one.status_code == 200
        assert one.json()["quota_id"] == str(user.id)
    # Everywhere else the deleted quota is gone.
    assert_error(scheduler_client.get(f"/api/v1/quotas/{user.id}"), 404, "not_found")
    assert_error(scheduler_client.get(_quota_allocations(user)), 404, "not_found")


def test_a_quota_holding_an_active_allocation_cannot_be_deleted(
    scheduler_client, admin_client_api, tree
):
    org, team, user = tree
    granted = allocate_ok(scheduler_client, requested_value=1)

    response = admin_client_api.delete(f"/api/v1/quotas/{user.id}")

    assert_error(response, 409, "conflict")
    assert Quota.objects.filter(id=user.id).exists()
    assert row_ids(scheduler_client.get(_quota_allocations(user))) == [granted["id"]]


# --- Query counts --------------------------------------------------------------------


def _pad_history(quota, rows: int) -> None:
    """Released allocations and their history on the quota: none of it may slow an
    allocate down."""
    allocations = [
        Allocation(
            quota_id=quota.id,
            entity_type=quota.entity_type,
            entity_id=quota.entity_id,
            job_id=uuid4(),
            resource_type=quota.resource_type_id,
            allocated_value=Decimal("1"),
            status=AllocationStatus.RELEASED,
            released_at=Now(),
        )
        for _ in range(rows // 2)
    ]
    Allocation.objects.bulk_create(allocations)
    UsageHistory.objects.bulk_create(
        UsageHistory(
            quota_id=quota.id,
            allocation_id=allocation.id,
            entity_type=quota.entity_type,
            entity_id=quota.entity_id,
            resource_type=quota.resource_type_id,
            allocated_value=Decimal("1"),
            operation=operation,
            job_id=allocation.job_id,
        )
        for allocation in allocations
        for operation in ("allocate", "release")
    )
    assert UsageHistory.objects.filter(quota_id=quota.id).count() == rows


@pytest.mark.parametrize("history_rows", [0, 500])
@pytest.mark.parametrize("depth", [1, 3])
def test_an_allocate_is_one_query_whatever_the_history_or_depth(
    tree, django_assert_num_queries, history_rows, depth
):
    org, team, user = tree
    leaf = user if depth == 3 else QuotaFactory(entity_id="solo")
    _pad_history(leaf, history_rows)
    assert Quota.objects.get(id=leaf.id).depth == depth - 1

    with django_assert_num_queries(1):
        result = services.allocation_create(
            entity_type=leaf.entity_type,
            entity_id=leaf.entity_id,
            resource_type="concurrent_gpus",
            job_id=uuid4(),
            requested_value=Decimal("1"),
        )

    assert result.replayed is False
    assert len(result.levels) == depth
    assert Quota.objects.get(id=leaf.id).used == 1


@pytest.mark.parametrize("history_rows", [0, 500])
@pytest.mark.parametrize("depth", [1, 3])
def test_a_check_and_a_release_are_one_query_each(
    tree, django_assert_num_queries, history_rows, depth
):
    org, team, user = tree
    leaf = user if depth == 3 else QuotaFactory(entity_id="solo")
    _pad_history(leaf, history_rows)
    granted = allocate_on(leaf, "1")

    with django_assert_num_queries(1):
        check = services.allocation_check(
            entity_type=leaf.entity_type,
            entity_id=leaf.entity_id,
            resource_type="concurrent_gpus",
            requested_value=Decimal("1"),
        )
    with django_assert_num_queries(1):
        services.allocation_release(allocation_id=granted.id)

    assert len(check.levels) == depth
    assert Quota.objects.get(id=leaf.id).used == 0


def _grant_many(count: int) -> None:
    for _ in range(count):
        allocation = allocate_direct(amount="0.01")
        services.allocation_release(allocation_id=allocation.id)


def _list_urls(user) -> list[str]:
    return [
        ALLOCATIONS,
        f"{ALLOCATIONS}?status=released&entity_id=alice",
        f"{_quota_allocations(user)}?status=all",
        _history(user.id),
        f"{_history(user.id)}?operation=release",
    ]


def test_list_endpoints_cost_a_bounded_number_of_queries(
    viewer_client, tree, django_assert_max_num_queries
):
    org, team, user = tree

    def counts() -> list[int]:
        found = []
        for url in _list_urls(user):
            with django_assert_max_num_queries(6) as captured:
                response = viewer_client.get(url)
            assert response.status_code == 200
            found.append(len(captured.captured_queries))
        return found

    # The key's first use records last_used_at (one UPDATE, once a minute): make
    # it before counting, so every count is of the list alone.
    assert viewer_client.get(ALLOCATIONS).status_code == 200
    _grant_many(2)
    few = counts()
    _grant_many(60)
    many = counts()

    assert few == many
    assert len(viewer_client.get(ALLOCATIONS).json()) == 62
    assert len(viewer_client.get(_history(user.id)).json()) == 100


def test_following_a_page_link_costs_no_more_queries(
    viewer_client, tree, django_assert_max_num_queries
):
    org, team, user = tree
    _grant_many(30)
    for url in _list_urls(user):
        with django_assert_max_num_queries(6) as captured:
            first = viewer_client.get(f"{url}{'&' if '?' in url else '?'}limit=5")
        first_count = len(captured.captured_queries)
        link = next_link(first)
        assert link is not None

        with django_assert_max_num_queries(first_count):
            assert viewer_client.get(link).status_code == 200


def test_getting_one_allocation_costs_a_bounded_number_of_queries(
    viewer_client, tree, django_assert_max_num_queries
):
    _grant_many(20)
    allocation = Allocation.objects.first()

    with django_assert_max_num_queries(4):
        assert viewer_client.get(f"{ALLOCATIONS}/{allocation.id}").status_code == 200


def test_history_accepts_any_iso_offset_and_compares_in_utc(viewer_client, tree):
    org, _, _ = tree

    # +21:18 is valid ISO 8601 but beyond PostgreSQL's ±15:59: converted, not a 500.
    response = viewer_client.get(
        f"/api/v1/quotas/{org.id}/history", {"since": "1402-03-17T17:46:23+21:18"}
    )

    assert response.status_code == 200
