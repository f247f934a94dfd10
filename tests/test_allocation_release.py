"""DELETE /api/v1/allocations/{id} and POST /api/v1/allocations/{id}/renew: the
amount goes back to every level exactly once, a lease is extended only while the
allocation is active (DESIGN §3 Release, §5).
"""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db.models import F
from django.utils.dateparse import parse_datetime

from allocations.models import Allocation, AllocationStatus, UsageHistory
from quotas.models import Quota
from tests.helpers import (
    ALLOCATIONS,
    UNKNOWN_ID,
    allocate_ok,
    assert_books_unchanged,
    assert_error,
    books,
    database_now,
    exact,
    expire,
    release,
    used_of,
)


def _renew(client, allocation_id, body):
    return client.post(f"{ALLOCATIONS}/{allocation_id}/renew", body, format="json")


# --- Release -------------------------------------------------------------------------


def test_it_answers_200_with_the_released_allocation(scheduler_client, tree):
    org, team, user = tree
    granted = allocate_ok(scheduler_client, requested_value="12.5", metadata={"q": "a"})

    response = release(scheduler_client, granted["id"])

    assert response.status_code == 200
    body = exact(response)
    assert body["id"] == granted["id"]
    assert body["status"] == "released"
    assert body["released_at"] is not None
    released_at = parse_datetime(body["released_at"])
    assert released_at >= parse_datetime(granted["allocated_at"])
    assert abs(released_at - database_now()) < timedelta(seconds=5)
    assert body["version"] == granted["version"] + 1
    for field in ["quota_id", "entity_type", "entity_id", "job_id", "resource_type"]:
        assert body[field] == granted[field]
    assert body["allocated_value"] == Decimal("12.5")
    assert body["metadata"] == {"q": "a"}
    stored = Allocation.objects.get(id=granted["id"])
    assert stored.status == AllocationStatus.RELEASED
    assert stored.released_at == released_at


def test_it_returns_the_amount_to_every_level(scheduler_client, tree):
    org, team, user = tree
    allocate_ok(scheduler_client, requested_value=5)
    allocate_ok(
        scheduler_client, entity_type="team", entity_id="research", requested_value=7
    )
    before = used_of(user, team, org)
    granted = allocate_ok(scheduler_client, requested_value="8.0001")
    assert used_of(user, team, org) == [v + Decimal("8.0001") for v in before]

    release(scheduler_client, granted["id"])

    assert used_of(user, team, org) == before == [5, 12, 12]


def test_it_writes_one_release_history_row_with_the_entity_identity(
    scheduler_client, tree
):
    org, team, user = tree
    granted = allocate_ok(
        scheduler_client, requested_value=4, metadata={"queue": "a100"}
    )

    release(scheduler_client, granted["id"])

    row = UsageHistory.objects.get(operation="release")
    assert str(row.allocation_id) == granted["id"]
    assert row.quota_id == user.id
    assert row.entity_type == "user"
    assert row.entity_id == "alice"
    assert row.resource_type == "concurrent_gpus"
    assert row.allocated_value == 4
    assert str(row.job_id) == granted["job_id"]
    assert row.metadata == {"queue": "a100"}
    assert UsageHistory.objects.filter(allocation_id=granted["id"]).count() == 2


def test_a_second_release_is_already_released_and_changes_nothing(
    scheduler_client, tree
):
    org, team, user = tree
    granted = allocate_ok(scheduler_client)
    first = release(scheduler_client, granted["id"])
    before = books()

    second = release(scheduler_client, granted["id"])

    assert first.status_code == 200
    body = assert_error(second, 409, "already_released")
    assert granted["id"] in body["message"]
    assert_books_unchanged(before)
    assert used_of(user, team, org) == [0, 0, 0]


NOT_AN_OBJECT = [
    ("[1]", "application/json", 400, "invalid_input"),
    ('"5"', "application/json", 400, "invalid_input"),
    ("null", "application/json", 400, "invalid_input"),
    ("5", "application/json", 400, "invalid_input"),
    ("{bad", "application/json", 400, "invalid_input"),
    ('{"consumed_value": 1, "consumed_value": 2}', "application/json", 400, None),
    ('{"consumed_value": 2}', "text/plain", 415, "unsupported_media_type"),
]


@pytest.mark.parametrize(("payload", "content_type", "status", "kind"), NOT_AN_OBJECT)
def test_a_body_that_is_not_a_json_object_is_refused_and_changes_nothing(
    scheduler_client, tree, payload, content_type, status, kind
):
    org, team, user = tree
    granted = allocate_ok(scheduler_client)
    before = books()

    response = scheduler_client.generic(
        "DELETE", f"{ALLOCATIONS}/{granted['id']}", payload, content_type
    )

    assert_error(response, status, kind or "invalid_input")
    assert_books_unchanged(before)
    assert Allocation.objects.get(id=granted["id"]).status == AllocationStatus.ACTIVE


def test_a_json_object_body_is_read(scheduler_client, tree):
    granted = allocate_ok(scheduler_client)

    response = scheduler_client.generic(
        "DELETE", f"{ALLOCATIONS}/{granted['id']}", "{}", "application/json"
    )

    assert response.status_code == 200, response.content
    assert response.json()["status"] == "released"


def test_releasing_an_expired_allocation_is_already_released(scheduler_client, tree):
    org, team, user = tree
    granted = allocate_ok(scheduler_client, ttl_seconds=60)
    expire(granted["id"])
    assert used_of(user, team, org) == [0, 0, 0]
    before = books()

    response = release(scheduler_client, granted["id"])

    assert_error(response, 409, "already_released")
    assert_books_unchanged(before)


def test_releasing_an_unknown_allocation_is_404(scheduler_client, tree):
    allocate_ok(scheduler_client)
    before = books()

    response = release(scheduler_client, UNKNOWN_ID)

    assert_error(response, 404, "not_found")
    assert_books_unchanged(before)


def test_a_path_that_is_not_a_uuid_is_404(scheduler_client, tree):
    assert_error(release(scheduler_client, "not-a-uuid"), 404, "not_found")


def test_releasing_one_allocation_leaves_the_others_alone(scheduler_client, tree):
    org, team, user = tree
    kept = allocate_ok(scheduler_client, requested_value=3)
    gone = allocate_ok(scheduler_client, requested_value=4)

    release(scheduler_client, gone["id"])

    assert Allocation.objects.get(id=kept["id"]).status == AllocationStatus.ACTIVE
    assert used_of(user, team, org) == [3, 3, 3]


@pytest.mark.parametrize(
    ("caller", "status", "kind"),
    [
        pytest.param("viewer_client", 403, "forbidden", id="a-viewer"),
        pytest.param("api_client", 401, "unauthorized", id="without-an-api-key"),
    ],
)
def test_a_viewer_or_a_caller_without_a_key_may_not_release(
    request, scheduler_client, tree, caller, status, kind
):
    client = request.getfixturevalue(caller)
    granted = allocate_ok(scheduler_client)
    before = books()

    response = release(client, granted["id"])

    assert_error(response, status, kind)
    assert_books_unchanged(before)


def test_an_admin_may_release(scheduler_client, admin_client_api, tree):
    granted = allocate_ok(scheduler_client)

    assert release(admin_client_api, granted["id"]).status_code == 200


# --- Renew ---------------------------------------------------------------------------


def test_renew_extends_the_lease_from_now_and_bumps_the_version(scheduler_client, tree):
    granted = allocate_ok(scheduler_client, ttl_seconds=60)

    response = _renew(scheduler_client, granted["id"], {"ttl_seconds": 7200})

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == granted["id"]
    assert body["status"] == "active"
    assert body["version"] == granted["version"] + 1
    expires_at = parse_datetime(body["expires_at"])
    assert expires_at > parse_datetime(granted["expires_at"])
    assert abs(expires_at - (database_now() + timedelta(seconds=7200))) < timedelta(
        seconds=5
    )
    stored = Allocation.objects.get(id=granted["id"])
    assert stored.expires_at == expires_at
    assert stored.version == granted["version"] + 1


def test_renew_gives_a_lease_to_an_allocation_without_one(scheduler_client, tree):
    granted = allocate_ok(scheduler_client)
    assert granted["expires_at"] is None

    body = _renew(scheduler_client, granted["id"], {"ttl_seconds": 600}).json()

    assert parse_datetime(body["expires_at"]) is not None


def test_each_renew_bumps_the_version(scheduler_client, tree):
    granted = allocate_ok(scheduler_client, ttl_seconds=60)

    _renew(scheduler_client, granted["id"], {"ttl_seconds": 600})
    body = _renew(scheduler_client, granted["id"], {"ttl_seconds": 600}).json()

    assert body["version"] == granted["version"] + 2


def test_renew_touches_no_quota_and_writes_no_history(scheduler_client, tree):
    granted = allocate_ok(scheduler_client, ttl_seconds=60)
    quotas = list(Quota.objects.order_by("id").values())
    history = list(UsageHistory.objects.order_by("id").values())

    _renew(scheduler_client, granted["id"], {"ttl_seconds": 600})

    assert list(Quota.objects.order_by("id").values()) == quotas
    assert list(UsageHistory.objects.order_by("id").values()) == history


def test_renewing_a_released_allocation_is_already_released(scheduler_client, tree):
    granted = allocate_ok(scheduler_client, ttl_seconds=60)
    release(scheduler_client, granted["id"])
    before = books()

    response = _renew(scheduler_client, granted["id"], {"ttl_seconds": 600})

    assert_error(response, 409, "already_released")
    assert_books_unchanged(before)


def test_renewing_an_expired_allocation_is_already_released(scheduler_client, tree):
    granted = allocate_ok(scheduler_client, ttl_seconds=60)
    expire(granted["id"])
    before = books()

    response = _renew(scheduler_client, granted["id"], {"ttl_seconds": 600})

    assert_error(response, 409, "already_released")
    assert_books_unchanged(before)


@pytest.mark.parametrize(
    "body",
    [
        {"ttl_seconds": 0},
        {"ttl_seconds": -1},
        {"ttl_seconds": "abc"},
        {"ttl_seconds": 1.5},
        {"ttl_seconds": None},
        {"ttl_seconds": 366 * 24 * 3600 + 1},
        {},
    ],
)
def test_renew_refuses_a_bad_ttl(scheduler_client, tree, body):
    granted = allocate_ok(scheduler_client, ttl_seconds=60)
    before = books()

    response = _renew(scheduler_client, granted["id"], body)

    error = assert_error(response, 400, "invalid_input")
    assert error["fields"]["ttl_seconds"]
    assert_books_unchanged(before)


def test_renewing_an_unknown_allocation_is_404(scheduler_client, tree):
    before = books()

    response = _renew(scheduler_client, UNKNOWN_ID, {"ttl_seconds": 600})

    assert_error(response, 404, "not_found")
    assert_books_unchanged(before)


@pytest.mark.parametrize(
    ("caller", "status", "kind"),
    [
        pytest.param("viewer_client", 403, "forbidden", id="a-viewer"),
        pytest.param("api_client", 401, "unauthorized", id="without-an-api-key"),
    ],
)
def test_a_viewer_or_a_caller_without_a_key_may_not_renew(
    request, scheduler_client, tree, caller, status, kind
):
    client = request.getfixturevalue(caller)
    granted = allocate_ok(scheduler_client, ttl_seconds=60)
    before = books()

    response = _renew(client, granted["id"], {"ttl_seconds": 600})

    assert_error(response, status, kind)
    assert_books_unchanged(before)


# --- History keeps the entity's identity ---------------------------------------------


def test_history_rows_keep_the_entity_identity_of_every_operation(
    scheduler_client, tree
):
    org, team, user = tree
    released = allocate_ok(scheduler_client, requested_value=2)
    expired = allocate_ok(
        scheduler_client,
        entity_type="team",
        entity_id="research",
        requested_value=3,
        ttl_seconds=60,
    )
    release(scheduler_client, released["id"])
    expire(expired["id"])

    rows = {
        (row.operation, str(row.allocation_id)): row
        for row in UsageHistory.objects.all()
    }

    assert set(rows) == {
        ("allocate", released["id"]),
        ("release", released["id"]),
        ("allocate", expired["id"]),
        ("expire", expired["id"]),
    }
    for operation in ["allocate", "release"]:
        row = rows[(operation, released["id"])]
        assert (row.quota_id, row.entity_type, row.entity_id) == (
            user.id,
            "user",
            "alice",
        )
        assert (row.resource_type, row.allocated_value) == ("concurrent_gpus", 2)
        assert str(row.job_id) == released["job_id"]
    for operation in ["allocate", "expire"]:
        row = rows[(operation, expired["id"])]
        assert (row.quota_id, row.entity_type, row.entity_id) == (
            team.id,
            "team",
            "research",
        )
        assert (row.resource_type, row.allocated_value) == ("concurrent_gpus", 3)
        assert str(row.job_id) == expired["job_id"]
    assert used_of(user, team, org) == [0, 0, 0]


def test_a_lease_that_has_run_out_cannot_be_renewed(scheduler_client, tree):
    created = allocate_ok(scheduler_client, ttl_seconds=60)
    Allocation.objects.filter(id=created["id"]).update(
        expires_at=F("allocated_at") - timedelta(seconds=1)
    )
    before = books()

    response = _renew(scheduler_client, created["id"], {"ttl_seconds": 600})

    assert_error(response, 409, "conflict")
    assert "run out" in response.json()["message"]
    assert_books_unchanged(before)


def test_a_retry_after_the_lease_ran_out_expires_the_old_one_and_allocates_anew(
    scheduler_client, tree
):
    org, team, user = tree
    first = allocate_ok(scheduler_client, ttl_seconds=60)
    Allocation.objects.filter(id=first["id"]).update(
        expires_at=F("allocated_at") - timedelta(seconds=1)
    )

    again = scheduler_client.post(
        ALLOCATIONS,
        {
            "entity_type": "user",
            "entity_id": "alice",
            "job_id": first["job_id"],
            "resource_type": "concurrent_gpus",
            "requested_value": 10,
        },
        format="json",
    )

    assert again.status_code == 201
    assert again.json()["id"] != first["id"]
    assert Allocation.objects.get(id=first["id"]).status == AllocationStatus.EXPIRED
    assert UsageHistory.objects.filter(
        allocation_id=first["id"], operation="expire"
    ).exists()
    assert used_of(org, team, user) == [Decimal("10")] * 3
