"""DELETE /api/v1/allocations/{id} and POST /api/v1/allocations/{id}/renew: the
amount goes back to every level exactly once, a lease is extended only while the
allocation is active (DESIGN §3 Release, §5).
"""

import json
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from django.db import connection
from django.db.models import F
from django.utils.dateparse import parse_datetime

from allocations import services
from allocations.models import Allocation, AllocationStatus, UsageHistory
from quotas.models import Quota

ALLOCATIONS = "/api/v1/allocations"
UNKNOWN_ID = "00000000-0000-4000-8000-000000000000"


def _allocate(client, **overrides) -> dict:
    body = {
        "entity_type": "user",
        "entity_id": "alice",
        "job_id": str(uuid4()),
        "resource_type": "gpu_hours",
        "requested_value": 10,
    }
    body.update(overrides)
    response = client.post(ALLOCATIONS, body, format="json")
    assert response.status_code == 201
    return response.json()


def _release(client, allocation_id):
    return client.delete(f"{ALLOCATIONS}/{allocation_id}")


def _renew(client, allocation_id, body):
    return client.post(f"{ALLOCATIONS}/{allocation_id}/renew", body, format="json")


def _exact(response) -> dict:
    return json.loads(response.content, parse_float=Decimal)


def _books() -> dict:
    return {
        "quotas": list(Quota.objects.order_by("id").values()),
        "allocations": list(Allocation.objects.order_by("id").values()),
        "history": list(UsageHistory.objects.order_by("id").values()),
    }


def _assert_unchanged(before: dict) -> None:
    after = _books()
    assert [(row["id"], row["used"]) for row in after["quotas"]] == [
        (row["id"], row["used"]) for row in before["quotas"]
    ]
    assert len(after["allocations"]) == len(before["allocations"])
    assert len(after["history"]) == len(before["history"])
    assert after == before


def _assert_error(response, status: int, kind: str) -> dict:
    assert response.status_code == status
    body = _exact(response)
    assert body["error"] == kind
    assert body["message"]
    return body


def _used(*quotas) -> list[Decimal]:
    return [Quota.objects.get(id=quota.id).used for quota in quotas]


def _database_now():
    with connection.cursor() as cursor:
        cursor.execute("SELECT now()")
        return cursor.fetchone()[0]


def _expire(allocation_id) -> None:
    # Test state: the lease ran out an hour ago; the sweeper's service expires it.
    Allocation.objects.filter(id=allocation_id).update(
        expires_at=F("allocated_at") - timedelta(hours=1)
    )
    services.allocation_expire(allocation_id=allocation_id)


# --- Release -------------------------------------------------------------------------


def test_it_answers_200_with_the_released_allocation(scheduler_client, tree):
    org, team, user = tree
    granted = _allocate(scheduler_client, requested_value="12.5", metadata={"q": "a"})

    response = _release(scheduler_client, granted["id"])

    assert response.status_code == 200
    body = _exact(response)
    assert body["id"] == granted["id"]
    assert body["status"] == "released"
    assert body["released_at"] is not None
    released_at = parse_datetime(body["released_at"])
    assert released_at >= parse_datetime(granted["allocated_at"])
    assert abs(released_at - _database_now()) < timedelta(seconds=5)
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
    _allocate(scheduler_client, requested_value=5)
    _allocate(
        scheduler_client, entity_type="team", entity_id="research", requested_value=7
    )
    before = _used(user, team, org)
    granted = _allocate(scheduler_client, requested_value="8.0001")
    assert _used(user, team, org) == [v + Decimal("8.0001") for v in before]

    _release(scheduler_client, granted["id"])

    assert _used(user, team, org) == before == [5, 12, 12]


def test_it_writes_one_release_history_row_with_the_entity_identity(
    scheduler_client, tree
):
    org, team, user = tree
    granted = _allocate(scheduler_client, requested_value=4, metadata={"queue": "a100"})

    _release(scheduler_client, granted["id"])

    row = UsageHistory.objects.get(operation="release")
    assert str(row.allocation_id) == granted["id"]
    assert row.quota_id == user.id
    assert row.entity_type == "user"
    assert row.entity_id == "alice"
    assert row.resource_type == "gpu_hours"
    assert row.allocated_value == 4
    assert str(row.job_id) == granted["job_id"]
    assert row.metadata == {"queue": "a100"}
    assert UsageHistory.objects.filter(allocation_id=granted["id"]).count() == 2


def test_a_second_release_is_already_released_and_changes_nothing(
    scheduler_client, tree
):
    org, team, user = tree
    granted = _allocate(scheduler_client)
    first = _release(scheduler_client, granted["id"])
    before = _books()

    second = _release(scheduler_client, granted["id"])

    assert first.status_code == 200
    body = _assert_error(second, 409, "already_released")
    assert granted["id"] in body["message"]
    _assert_unchanged(before)
    assert _used(user, team, org) == [0, 0, 0]


def test_releasing_an_expired_allocation_is_already_released(scheduler_client, tree):
    org, team, user = tree
    granted = _allocate(scheduler_client, ttl_seconds=60)
    _expire(granted["id"])
    assert _used(user, team, org) == [0, 0, 0]
    before = _books()

    response = _release(scheduler_client, granted["id"])

    _assert_error(response, 409, "already_released")
    _assert_unchanged(before)


def test_releasing_an_unknown_allocation_is_404(scheduler_client, tree):
    _allocate(scheduler_client)
    before = _books()

    response = _release(scheduler_client, UNKNOWN_ID)

    _assert_error(response, 404, "not_found")
    _assert_unchanged(before)


def test_a_path_that_is_not_a_uuid_is_404(scheduler_client, tree):
    _assert_error(_release(scheduler_client, "not-a-uuid"), 404, "not_found")


def test_releasing_one_allocation_leaves_the_others_alone(scheduler_client, tree):
    org, team, user = tree
    kept = _allocate(scheduler_client, requested_value=3)
    gone = _allocate(scheduler_client, requested_value=4)

    _release(scheduler_client, gone["id"])

    assert Allocation.objects.get(id=kept["id"]).status == AllocationStatus.ACTIVE
    assert _used(user, team, org) == [3, 3, 3]


def test_a_viewer_may_not_release(scheduler_client, viewer_client, tree):
    granted = _allocate(scheduler_client)
    before = _books()

    response = _release(viewer_client, granted["id"])

    _assert_error(response, 403, "forbidden")
    _assert_unchanged(before)


def test_releasing_needs_an_api_key(scheduler_client, api_client, tree):
    granted = _allocate(scheduler_client)
    before = _books()

    response = _release(api_client, granted["id"])

    _assert_error(response, 401, "unauthorized")
    _assert_unchanged(before)


def test_an_admin_may_release(scheduler_client, admin_client_api, tree):
    granted = _allocate(scheduler_client)

    assert _release(admin_client_api, granted["id"]).status_code == 200


# --- Renew ---------------------------------------------------------------------------


def test_renew_extends_the_lease_from_now_and_bumps_the_version(scheduler_client, tree):
    granted = _allocate(scheduler_client, ttl_seconds=60)

    response = _renew(scheduler_client, granted["id"], {"ttl_seconds": 7200})

    assert response.status_code == 200
    body = response.json()
    assert body["id"] == granted["id"]
    assert body["status"] == "active"
    assert body["version"] == granted["version"] + 1
    expires_at = parse_datetime(body["expires_at"])
    assert expires_at > parse_datetime(granted["expires_at"])
    assert abs(expires_at - (_database_now() + timedelta(seconds=7200))) < timedelta(
        seconds=5
    )
    stored = Allocation.objects.get(id=granted["id"])
    assert stored.expires_at == expires_at
    assert stored.version == granted["version"] + 1


def test_renew_gives_a_lease_to_an_allocation_without_one(scheduler_client, tree):
    granted = _allocate(scheduler_client)
    assert granted["expires_at"] is None

    body = _renew(scheduler_client, granted["id"], {"ttl_seconds": 600}).json()

    assert parse_datetime(body["expires_at"]) is not None


def test_each_renew_bumps_the_version(scheduler_client, tree):
    granted = _allocate(scheduler_client, ttl_seconds=60)

    _renew(scheduler_client, granted["id"], {"ttl_seconds": 600})
    body = _renew(scheduler_client, granted["id"], {"ttl_seconds": 600}).json()

    assert body["version"] == granted["version"] + 2


def test_renew_touches_no_quota_and_writes_no_history(scheduler_client, tree):
    granted = _allocate(scheduler_client, ttl_seconds=60)
    quotas = list(Quota.objects.order_by("id").values())
    history = list(UsageHistory.objects.order_by("id").values())

    _renew(scheduler_client, granted["id"], {"ttl_seconds": 600})

    assert list(Quota.objects.order_by("id").values()) == quotas
    assert list(UsageHistory.objects.order_by("id").values()) == history


def test_renewing_a_released_allocation_is_already_released(scheduler_client, tree):
    granted = _allocate(scheduler_client, ttl_seconds=60)
    _release(scheduler_client, granted["id"])
    before = _books()

    response = _renew(scheduler_client, granted["id"], {"ttl_seconds": 600})

    _assert_error(response, 409, "already_released")
    _assert_unchanged(before)


def test_renewing_an_expired_allocation_is_already_released(scheduler_client, tree):
    granted = _allocate(scheduler_client, ttl_seconds=60)
    _expire(granted["id"])
    before = _books()

    response = _renew(scheduler_client, granted["id"], {"ttl_seconds": 600})

    _assert_error(response, 409, "already_released")
    _assert_unchanged(before)


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
    granted = _allocate(scheduler_client, ttl_seconds=60)
    before = _books()

    response = _renew(scheduler_client, granted["id"], body)

    error = _assert_error(response, 400, "invalid_input")
    assert error["fields"]["ttl_seconds"]
    _assert_unchanged(before)


def test_renewing_an_unknown_allocation_is_404(scheduler_client, tree):
    before = _books()

    response = _renew(scheduler_client, UNKNOWN_ID, {"ttl_seconds": 600})

    _assert_error(response, 404, "not_found")
    _assert_unchanged(before)


def test_a_viewer_may_not_renew(scheduler_client, viewer_client, tree):
    granted = _allocate(scheduler_client, ttl_seconds=60)
    before = _books()

    response = _renew(viewer_client, granted["id"], {"ttl_seconds": 600})

    _assert_error(response, 403, "forbidden")
    _assert_unchanged(before)


def test_renewing_needs_an_api_key(scheduler_client, api_client, tree):
    granted = _allocate(scheduler_client, ttl_seconds=60)
    before = _books()

    response = _renew(api_client, granted["id"], {"ttl_seconds": 600})

    _assert_error(response, 401, "unauthorized")
    _assert_unchanged(before)


# --- History keeps the entity's identity ---------------------------------------------


def test_history_rows_keep_the_entity_identity_of_every_operation(
    scheduler_client, tree
):
    org, team, user = tree
    released = _allocate(scheduler_client, requested_value=2)
    expired = _allocate(
        scheduler_client,
        entity_type="team",
        entity_id="research",
        requested_value=3,
        ttl_seconds=60,
    )
    _release(scheduler_client, released["id"])
    _expire(expired["id"])

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
        assert (row.resource_type, row.allocated_value) == ("gpu_hours", 2)
        assert str(row.job_id) == released["job_id"]
    for operation in ["allocate", "expire"]:
        row = rows[(operation, expired["id"])]
        assert (row.quota_id, row.entity_type, row.entity_id) == (
            team.id,
            "team",
            "research",
        )
        assert (row.resource_type, row.allocated_value) == ("gpu_hours", 3)
        assert str(row.job_id) == expired["job_id"]
    assert _used(user, team, org) == [0, 0, 0]


def test_a_lease_that_has_run_out_cannot_be_renewed(scheduler_client, tree):
    created = _allocate(scheduler_client, ttl_seconds=60)
    Allocation.objects.filter(id=created["id"]).update(
        expires_at=F("allocated_at") - timedelta(seconds=1)
    )
    before = _books()

    response = _renew(scheduler_client, created["id"], {"ttl_seconds": 600})

    _assert_error(response, 409, "conflict")
    assert "run out" in response.json()["message"]
    _assert_unchanged(before)


def test_a_retry_after_the_lease_ran_out_expires_the_old_one_and_allocates_anew(
    scheduler_client, tree
):
    org, team, user = tree
    first = _allocate(scheduler_client, ttl_seconds=60)
    Allocation.objects.filter(id=first["id"]).update(
        expires_at=F("allocated_at") - timedelta(seconds=1)
    )

    again = scheduler_client.post(
        ALLOCATIONS,
        {
            "entity_type": "user",
            "entity_id": "alice",
            "job_id": first["job_id"],
            "resource_type": "gpu_hours",
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
    assert _used(org, team, user) == [Decimal("10")] * 3
