"""Mass assignment (issue "Security", item 8): server-owned fields sent in request
bodies never take effect. The stored rows keep the server's values."""

from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from django.utils import timezone

from allocations.models import Allocation, AllocationStatus
from quotas.models import EntityType, Quota
from tests.factories import QuotaFactory
from tests.helpers import ALLOCATIONS, QUOTAS, allocate

FORGED_ID = "00000000-0000-4000-8000-000000000001"
FORGED_QUOTA_ID = "00000000-0000-4000-8000-000000000002"
LONG_AGO = "2001-01-01T00:00:00Z"

# Every server-owned field, with a forged value.
FORGED = {
    "id": FORGED_ID,
    "used": 99999,
    "version": 77,
    "created_at": LONG_AGO,
    "updated_at": LONG_AGO,
    "status": "released",
    "is_burst": True,
    "effective_limit": 123456,
    "available": 123456,
    "depth": 9,
    "path": "forged.path",
    "released_at": LONG_AGO,
    "allocated_at": LONG_AGO,
    "quota_id": FORGED_QUOTA_ID,
}
FORGED_NO_VERSION = {k: v for k, v in FORGED.items() if k != "version"}


def _long_ago():
    return timezone.now() - timedelta(days=365)


# --- Quotas ----------------------------------------------------------------------


def test_create_quota_ignores_server_owned_fields(admin_client_api, db):
    response = admin_client_api.post(
        QUOTAS,
        {
            "entity_type": "organization",
            "entity_id": "forgery-inc",
            "resource_type": "concurrent_gpus",
            "limit_value": 100,
            **FORGED,
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] != FORGED_ID
    assert not Quota.objects.filter(id=FORGED_ID).exists()
    quota = Quota.objects.get(id=body["id"])
    assert quota.used == Decimal("0")
    assert quota.version == 1
    assert quota.depth == 0
    assert quota.path == [quota.id]
    assert quota.created_at > _long_ago()
    assert quota.updated_at > _long_ago()
    assert body["used"] == 0
    assert body["available"] == 100
    assert body["effective_limit"] == 100
    assert body["version"] == 1


@pytest.mark.parametrize("method", ["put", "patch"])
def test_update_quota_ignores_server_owned_fields(admin_client_api, tree, method):
    org, team, user = tree
    assert allocate(admin_client_api, requested_value="7").status_code == 201
    before = Quota.objects.get(id=user.id)

    response = getattr(admin_client_api, method)(
        f"{QUOTAS}/{user.id}",
        {"limit_value": 25, **FORGED_NO_VERSION},
        format="json",
    )

    assert response.status_code == 200, response.content
    after = Quota.objects.get(id=user.id)
    assert after.limit_value == Decimal("25")
    assert after.used == Decimal("7")
    assert after.version == before.version + 1
    assert after.depth == before.depth
    assert after.path == before.path == [user.id, team.id, org.id]
    assert after.parent_id == team.id
    assert after.created_at == before.created_at
    assert after.updated_at >= before.updated_at > _long_ago()
    assert not Quota.objects.filter(id=FORGED_ID).exists()
    body = response.json()
    assert body["id"] == str(user.id)
    assert body["used"] == 7
    assert body["available"] == 18
    assert body["effective_limit"] == 25
    # The ancestors' books are untouched too.
    assert Quota.objects.get(id=team.id).used == Decimal("7")
    assert Quota.objects.get(id=org.id).used == Decimal("7")


@pytest.mark.parametrize("method", ["put", "patch"])
def test_a_forged_version_on_update_is_a_conflict_not_an_assignment(
    admin_client_api, tree, method
):
    _, _, user = tree
    before = Quota.objects.get(id=user.id)

    response = getattr(admin_client_api, method)(
        f"{QUOTAS}/{user.id}", {"limit_value": 25, **FORGED}, format="json"
    )

    assert response.status_code == 409, response.content
    after = Quota.objects.get(id=user.id)
    assert after.version == before.version
    assert after.limit_value == before.limit_value
    assert after.used == before.used
    assert after.updated_at == before.updated_at


# --- Allocations -----------------------------------------------------------------


def test_allocate_ignores_server_owned_fields(admin_client_api, tree):
    org, team, user = tree

    response = allocate(admin_client_api, requested_value="5", **FORGED)

    assert response.status_code == 201, response.content
    body = response.json()
    assert body["id"] != FORGED_ID
    assert not Allocation.objects.filter(id=FORGED_ID).exists()
    allocation = Allocation.objects.get(id=body["id"])
    assert allocation.status == AllocationStatus.ACTIVE
    assert allocation.is_burst is False
    assert allocation.quota_id == user.id
    assert allocation.version == 1
    assert allocation.released_at is None
    assert allocation.allocated_at > _long_ago()
    assert allocation.allocated_value == Decimal("5")
    assert body["status"] == "active"
    assert body["is_burst"] is False
    assert body["quota_id"] == str(user.id)
    for quota in (user, team, org):
        assert Quota.objects.get(id=quota.id).used == Decimal("5")


def test_allocate_computes_is_burst_even_when_the_body_says_false(admin_client_api, db):
    org = QuotaFactory(
        entity_type=EntityType.ORGANIZATION,
        entity_id="bursty",
        limit_value=Decimal("10"),
        burst_limit=Decimal("20"),
    )

    response = admin_client_api.post(
        ALLOCATIONS,
        {
            "entity_type": "organization",
            "entity_id": "bursty",
            "job_id": str(uuid4()),
            "resource_type": "concurrent_gpus",
            "requested_value": 15,
            "allow_burst": True,
            **{**FORGED, "is_burst": False},
        },
        format="json",
    )

    assert response.status_code == 201, response.content
    allocation = Allocation.objects.get(id=response.json()["id"])
    assert allocation.is_burst is True
    assert allocation.status == AllocationStatus.ACTIVE
    assert allocation.quota_id == org.id
    assert Quota.objects.get(id=org.id).used == Decimal("15")


def test_renew_ignores_server_owned_fields(admin_client_api, tree):
    _, _, user = tree
    created = allocate(admin_client_api, requested_value="5", ttl_seconds=60)
    assert created.status_code == 201, created.content
    before = Allocation.objects.get(id=created.json()["id"])

    response = admin_client_api.post(
        f"{ALLOCATIONS}/{before.id}/renew",
        {"ttl_seconds": 3600, **FORGED, "allocated_value": 1, "metadata": {"x": 1}},
        format="json",
    )

    assert response.status_code == 200, response.content
    after = Allocation.objects.get(id=before.id)
    assert response.json()["id"] == str(before.id)
    assert after.status == AllocationStatus.ACTIVE
    assert after.is_burst is before.is_burst
    assert after.quota_id == user.id
    assert after.allocated_at == before.allocated_at
    assert after.released_at is None
    assert after.allocated_value == Decimal("5")
    assert after.metadata == before.metadata
    assert after.expires_at > before.expires_at
    assert not Allocation.objects.filter(id=FORGED_ID).exists()
    assert Quota.objects.get(id=user.id).used == Decimal("5")
