"""A scope is an entity across every resource type, and a scoped key learns nothing
above its scope (DESIGN §6): levels above it appear only as ``{"scope": "outside",
"allowed": …}``, and no warning, message, id or number names them. A scoped request
never touches anything outside its scope, not even a stale allocation."""

import json
import uuid
from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from allocations import services as allocation_services
from allocations.models import Allocation, UsageHistory
from quotas.access.keys import api_key_create
from quotas.models import EntityType, Quota, ResourceType
from tests.factories import QuotaFactory

QUOTAS = "/api/v1/quotas"
ALLOCATIONS = "/api/v1/allocations"


def _client(role: str, scope: str | None = None, *, bearer: bool = False):
    _, raw_key = api_key_create(name=f"{role} {scope}", role=role, scope=scope)
    client = APIClient()
    keyword = "Bearer" if bearer else "Api-Key"
    client.credentials(HTTP_AUTHORIZATION=f"{keyword} {raw_key}")
    return client


def _tree(resource: str, *, org_soft: str | None = None, org_limit: str = "1000"):
    rtype = ResourceType.objects.get(slug=resource)
    org = QuotaFactory(
        entity_id="org-a",
        resource_type=rtype,
        limit_value=Decimal(org_limit),
        soft_limit=Decimal(org_soft) if org_soft else None,
    )
    team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="team-a",
        parent=org,
        resource_type=rtype,
        limit_value=Decimal("400"),
    )
    sibling = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="team-a2",
        parent=org,
        resource_type=rtype,
        limit_value=Decimal("400"),
    )
    user = QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="user-a",
        parent=team,
        resource_type=rtype,
        limit_value=Decimal("100"),
    )
    other = QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="user-a2",
        parent=sibling,
        resource_type=rtype,
        limit_value=Decimal("100"),
    )
    return {"org": org, "team": team, "sibling": sibling, "user": user, "other": other}


def _body(entity_id="user-a", value=1, resource="gpu_hours", job_id=None):
    return {
        "entity_type": "user",
        "entity_id": entity_id,
        "job_id": str(job_id or uuid.uuid4()),
        "resource_type": resource,
        "requested_value": value,
    }


def _check_body(**kwargs):
    body = _body(**kwargs)
    body.pop("job_id")
    return body


def _names_nothing_outside(response, *outside: Quota) -> None:
    text = json.dumps(response.json())
    for quota in outside:
        assert str(quota.id) not in text
        assert quota.entity_id not in text


def _outside(levels) -> list[dict]:
    return [level for level in levels if level.get("scope") == "outside"]


# --- a scope is an entity, across every resource type ----------------------------


def test_a_team_scoped_key_reaches_the_teams_quotas_of_every_resource_type(db):
    gpus = _tree("gpu_hours")
    memory = _tree("memory_gb")
    client = _client("viewer", "team:team-a")
    # A resource type registered after the key, with the team's quota on it.
    later = ResourceType.objects.create(
        slug="tpu_hours", name="TPU hours", unit="TPU-hours", kind="time_based"
    )
    late = _tree(later.slug)

    listed = {row["id"] for row in client.get(QUOTAS, {"limit": 1000}).json()}

    mine = {
        str(tree[name].id) for tree in (gpus, memory, late) for name in ("team", "user")
    }
    assert listed == mine
    for tree in (gpus, memory, late):
        assert client.get(f"{QUOTAS}/{tree['user'].id}").status_code == 200
        for name in ("org", "sibling", "other"):
            assert client.get(f"{QUOTAS}/{tree[name].id}").status_code == 404


def test_a_scope_given_as_a_quota_id_means_that_quotas_entity(db):
    gpus = _tree("gpu_hours")
    memory = _tree("memory_gb")
    client = _client("viewer", str(gpus["team"].id))

    assert client.get(f"{QUOTAS}/{memory['user'].id}").status_code == 200
    assert client.get(f"{QUOTAS}/{memory['sibling'].id}").status_code == 404


def test_deleting_a_quota_of_the_scope_entity_keeps_the_key(db):
    gpus = _tree("gpu_hours")
    memory = _tree("memory_gb")
    client = _client("viewer", "team:team-a")
    admin = _client("admin")

    assert admin.delete(f"{QUOTAS}/{gpus['user'].id}").status_code == 204
    assert admin.delete(f"{QUOTAS}/{gpus['team'].id}").status_code == 204

    assert client.get(f"{QUOTAS}/{memory['team'].id}").status_code == 200


def test_the_bearer_form_of_the_header_is_the_same_key(db):
    gpus = _tree("gpu_hours")
    client = _client("scheduler", "team:team-a", bearer=True)

    assert client.get(f"{QUOTAS}/{gpus['team'].id}").status_code == 200
    assert client.get(f"{QUOTAS}/{gpus['org'].id}").status_code == 404
    assert client.post(ALLOCATIONS, _body(), format="json").status_code == 201


# --- nothing above the scope in check and allocate answers ------------------------


@pytest.fixture
def busy(db):
    """Organization A above its soft limit, its usage moved by a sibling team."""
    tree = _tree("gpu_hours", org_soft="1")
    allocation_services.allocation_create(
        entity_type="user",
        entity_id="user-a2",
        resource_type="gpu_hours",
        job_id=uuid.uuid4(),
        requested_value=Decimal("8"),
    )
    return tree


SCOPES = {
    "team": ("team:team-a", ["org"]),
    "organization": ("organization:org-a", []),
}


@pytest.mark.parametrize("scope", SCOPES)
def test_a_check_names_no_quota_above_the_scope(busy, scope):
    scope_text, hidden = SCOPES[scope]
    client = _client("scheduler", scope_text)

    response = client.post(f"{ALLOCATIONS}/check", _check_body(), format="json")

    assert response.status_code == 200
    body = response.json()
    levels = body["levels"]
    assert len(levels) == 3
    assert len(_outside(levels)) == len(hidden)
    for level in _outside(levels):
        assert level == {"scope": "outside", "allowed": True}
    _names_nothing_outside(response, *(busy[name] for name in hidden))
    # The organization is above its soft limit: only a key that sees it is told.
    assert any("org-a" in warning for warning in body["warnings"]) is (not hidden)


def test_an_unscoped_key_still_sees_every_level(busy):
    client = _client("scheduler")

    check = client.post(f"{ALLOCATIONS}/check", _check_body(), format="json").json()
    grant = client.post(ALLOCATIONS, _body(), format="json").json()

    for body in (check, grant):
        assert [level["entity_id"] for level in body["levels"]] == [
            "user-a",
            "team-a",
            "org-a",
        ]
        assert not _outside(body["levels"])
        assert any("org-a" in warning for warning in body["warnings"])


@pytest.mark.parametrize("scope", SCOPES)
def test_a_grant_and_its_replay_name_no_quota_above_the_scope(busy, scope):
    scope_text, hidden = SCOPES[scope]
    client = _client("scheduler", scope_text)
    body = _body(value=2)

    grant = client.post(ALLOCATIONS, body, format="json")
    replay = client.post(ALLOCATIONS, body, format="json")

    assert (grant.status_code, replay.status_code) == (201, 200)
    for response in (grant, replay):
        levels = response.json()["levels"]
        assert len(_outside(levels)) == len(hidden)
        _names_nothing_outside(response, *(busy[name] for name in hidden))
        assert any("org-a" in w for w in response.json()["warnings"]) is (not hidden)


@pytest.mark.parametrize("scope", SCOPES)
def test_a_refusal_above_the_scope_names_nothing_of_it(db, scope):
    scope_text, hidden = SCOPES[scope]
    tree = _tree("gpu_hours", org_limit="500")
    # The sibling team fills the organization.
    Quota.objects.filter(id__in=[tree["org"].id]).update(reserved=Decimal("500"))
    client = _client("scheduler", scope_text)
    check = client.post(f"{ALLOCATIONS}/check", _check_body(), format="json")

    refused = client.post(ALLOCATIONS, _body(), format="json")

    assert refused.status_code == 429
    body = refused.json()
    assert body["error"] == "resource_exhausted"
    assert check.json()["allowed"] is False
    if hidden:
        assert body["blocking_quota_id"] is None
        assert body["available"] is None
        assert "above your scope" in body["message"]
        assert _outside(body["levels"]) == [{"scope": "outside", "allowed": False}]
        assert check.json()["blocking_quota_id"] is None
        assert check.json()["available"] is None
        assert "above your scope" in check.json()["reason"]
        for response in (refused, check):
            _names_nothing_outside(response, tree["org"])
            assert "500" not in json.dumps(response.json())
    else:
        assert body["blocking_quota_id"] == str(tree["org"].id)
        assert "org-a" in body["message"]


# --- a scoped request touches nothing outside its scope ---------------------------


def test_a_stale_allocation_outside_the_scope_is_left_alone(db):
    a = _tree("concurrent_gpus")
    b_org = QuotaFactory(entity_id="org-b", limit_value=Decimal("100"))
    b_team = QuotaFactory(entity_type=EntityType.TEAM, entity_id="team-b", parent=b_org)
    QuotaFactory(entity_type=EntityType.USER, entity_id="user-b", parent=b_team)
    job_id = uuid.uuid4()
    held = allocation_services.allocation_create(
        entity_type="user",
        entity_id="user-b",
        resource_type="concurrent_gpus",
        job_id=job_id,
        requested_value=Decimal("3"),
        ttl_seconds=1,
    ).allocation
    # Its lease lapses (set back rather than slept through).
    Allocation.objects.filter(id=held.id).update(
        expires_at=timezone.now() - timedelta(seconds=5)
    )
    before = {
        "allocation": Allocation.objects.filter(id=held.id).values().get(),
        "history": UsageHistory.objects.count(),
        "used": dict(Quota.objects.values_list("id", "used")),
    }
    client = _client("scheduler", "organization:org-a")

    response = client.post(
        ALLOCATIONS, _body(job_id=job_id, resource="concurrent_gpus"), format="json"
    )

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "conflict"
    assert "allocation_id" not in body
    assert str(held.id) not in json.dumps(body) and "user-b" not in json.dumps(body)
    assert Allocation.objects.filter(id=held.id).values().get() == before["allocation"]
    assert UsageHistory.objects.count() == before["history"]
    assert dict(Quota.objects.values_list("id", "used")) == before["used"]
    assert not Allocation.objects.filter(quota_id=a["user"].id).exists()


def test_a_stale_allocation_inside_the_scope_is_expired_and_replaced(db):
    tree = _tree("concurrent_gpus")
    job_id = uuid.uuid4()
    held = allocation_services.allocation_create(
        entity_type="user",
        entity_id="user-a",
        resource_type="concurrent_gpus",
        job_id=job_id,
        requested_value=Decimal("3"),
        ttl_seconds=1,
    ).allocation
    Allocation.objects.filter(id=held.id).update(
        expires_at=timezone.now() - timedelta(seconds=5)
    )
    client = _client("scheduler", "team:team-a")

    response = client.post(
        ALLOCATIONS,
        _body(job_id=job_id, value=3, resource="concurrent_gpus"),
        format="json",
    )

    assert response.status_code == 201
    assert Allocation.objects.get(id=held.id).status == "expired"
    tree["user"].refresh_from_db()
    assert tree["user"].used == Decimal("3")
