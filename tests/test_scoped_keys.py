"""API key scopes (DESIGN §6, promise P3): a key scoped to a quota sees and changes
only that quota's subtree. Outside it every object answers 404 with nothing changed
and lists leave it out; inside it the key's role applies as usual. A scoped key
cannot create a root quota nor change or delete its own root (403).
"""

from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from allocations import services as allocation_services
from allocations.models import Allocation, UsageHistory
from quotas.models import EntityType, Quota, QuotaChange
from tests.factories import QuotaFactory
from tests.helpers import (
    ALLOCATIONS,
    QUOTAS,
    allocate,
    allocate_direct,
    allocation_body,
    client_for_role,
    org_body,
)


def _client(role: str, scope=None) -> APIClient:
    return client_for_role(role, name=f"{role} {scope}", scope=scope)


def _quota(entity_type, entity_id, parent=None, limit="100"):
    return QuotaFactory(
        entity_type=entity_type,
        entity_id=entity_id,
        parent=parent,
        limit_value=Decimal(limit),
    )


@pytest.fixture
def world(db):
    """Two organizations, each org → team → user; A has a second team."""
    a = _quota(EntityType.ORGANIZATION, "org-a", limit="1000")
    a_team = _quota(EntityType.TEAM, "team-a", a, "400")
    a_sibling = _quota(EntityType.TEAM, "team-a2", a, "400")
    a_user = _quota(EntityType.USER, "user-a", a_team, "100")
    b = _quota(EntityType.ORGANIZATION, "org-b", limit="1000")
    b_team = _quota(EntityType.TEAM, "team-b", b, "400")
    b_user = _quota(EntityType.USER, "user-b", b_team, "100")
    b_spare = _quota(EntityType.USER, "spare-b", b_team, "100")
    a_alloc = allocate_direct(entity_id="user-a", amount="5", ttl_seconds=3600).id
    b_alloc = allocate_direct(entity_id="user-b", amount="5", ttl_seconds=3600).id
    return {
        "a": a,
        "a_team": a_team,
        "a_sibling": a_sibling,
        "a_user": a_user,
        "b": b,
        "b_team": b_team,
        "b_user": b_user,
        "b_spare": b_spare,
        "a_alloc": a_alloc,
        "b_alloc": b_alloc,
    }


def _state() -> dict:
    """Everything a request could change."""
    return {
        "quotas": list(Quota.objects.order_by("id").values()),
        "allocations": list(Allocation.objects.order_by("id").values()),
        "history": UsageHistory.objects.count(),
        "changes": QuotaChange.objects.count(),
    }


def _calls_on_b(w) -> list[tuple[str, str, dict | None]]:
    """Every endpoint and method, aimed at organization B's objects."""
    calls = []
    for quota in ("b", "b_team", "b_user", "b_spare"):
        quota_id = w[quota].id
        calls += [
            ("get", f"{QUOTAS}/{quota_id}", None),
            ("put", f"{QUOTAS}/{quota_id}", {"limit_value": 50}),
            ("patch", f"{QUOTAS}/{quota_id}", {"soft_limit": 10}),
            ("delete", f"{QUOTAS}/{quota_id}", None),
            ("get", f"{QUOTAS}/{quota_id}/usage", None),
            ("get", f"{QUOTAS}/{quota_id}/history", None),
            ("get", f"{QUOTAS}/{quota_id}/allocations", None),
            ("get", f"{QUOTAS}/{quota_id}/allocations?status=all", None),
            ("get", f"{QUOTAS}/{quota_id}/audit", None),
        ]
    for entity_type, entity_id in (
        ("user", "user-b"),
        ("team", "team-b"),
        ("organization", "org-b"),
    ):
        body = allocation_body(
            entity_type=entity_type, entity_id=entity_id, requested_value=1
        )
        calls += [
            ("post", f"{ALLOCATIONS}/check", {**body, "job_id": None}),
            ("post", ALLOCATIONS, body),
        ]
    allocation_id = w["b_alloc"]
    calls += [
        ("get", f"{ALLOCATIONS}/{allocation_id}", None),
        ("post", f"{ALLOCATIONS}/{allocation_id}/renew", {"ttl_seconds": 60}),
        ("delete", f"{ALLOCATIONS}/{allocation_id}", None),
        (
            "post",
            QUOTAS,
            {
                "entity_type": "user",
                "entity_id": "intruder",
                "resource_type": "concurrent_gpus",
                "parent_id": str(w["b_team"].id),
                "limit_value": 1,
            },
        ),
    ]
    return calls


def _send(client, method, url, body):
    if body is None:
        return getattr(client, method)(url)
    body = {k: v for k, v in body.items() if v is not None}
    return getattr(client, method)(url, body, format="json")


@pytest.mark.parametrize("role", ["admin", "scheduler", "viewer"])
def test_every_endpoint_answers_404_outside_the_scope_and_changes_nothing(world, role):
    client = _client(role, world["a"])
    before = _state()

    for method, url, body in _calls_on_b(world):
        response = _send(client, method, url, body)
        role_may_write = role == "admin" or (
            role == "scheduler" and url.startswith(ALLOCATIONS)
        )
        if method != "get" and not role_may_write:
            # Writes the role may not make at all are refused before the scope is
            # consulted, which is no less closed.
            assert response.status_code == 403, (method, url)
            continue
        assert response.status_code == 404, (method, url, response.content)
        assert response.json()["error"] == "not_found"

    assert _state() == before


def test_the_same_calls_succeed_for_an_unscoped_admin(world):
    """The 404s above come from the scope, not from the calls themselves."""
    client = _client("admin")
    w = world
    assert client.get(f"{QUOTAS}/{w['b_user'].id}").status_code == 200
    assert client.get(f"{ALLOCATIONS}/{w['b_alloc']}").status_code == 200
    check = allocation_body(entity_id="user-b", requested_value=1)
    check.pop("job_id")
    assert client.post(f"{ALLOCATIONS}/check", check, format="json").status_code == 200
    assert client.delete(f"{QUOTAS}/{w['b_spare'].id}").status_code == 204
    assert client.delete(f"{ALLOCATIONS}/{w['b_alloc']}").status_code == 200


def test_lists_leave_other_organizations_out(world):
    client = _client("viewer", world["a"])

    quotas = {row["id"] for row in client.get(QUOTAS).json()}
    allocations = {row["id"] for row in client.get(ALLOCATIONS).json()}

    expected = {str(world[k].id) for k in ("a", "a_team", "a_sibling", "a_user")}
    assert quotas == expected
    assert allocations == {str(world["a_alloc"])}
    assert client.get(QUOTAS, {"entity_id": "org-b"}).json() == []
    assert client.get(QUOTAS, {"parent_id": str(world["b"].id)}).json() == []
    assert client.get(ALLOCATIONS, {"entity_id": "user-b"}).json() == []


def test_lists_page_within_the_scope(world):
    client = _client("viewer", world["a"])

    first = client.get(QUOTAS, {"limit": 2})
    second = client.get(first["Link"].split(">")[0].lstrip("<"))

    ids = [row["id"] for row in first.json() + second.json()]
    assert len(ids) == len(set(ids)) == 4
    assert str(world["b"].id) not in ids


def test_a_scoped_viewer_reads_inside_and_writes_nothing(world):
    client = _client("viewer", world["a"])
    user_id = world["a_user"].id
    before = _state()

    for suffix in ("", "/usage", "/history", "/allocations", "/audit"):
        assert client.get(f"{QUOTAS}/{user_id}{suffix}").status_code == 200, suffix
    assert client.get(f"{ALLOCATIONS}/{world['a_alloc']}").status_code == 200
    assert client.patch(f"{QUOTAS}/{user_id}", {"limit_value": 50}).status_code == 403
    assert (
        client.post(
            ALLOCATIONS, allocation_body(entity_id="user-a", requested_value=1)
        ).status_code
        == 403
    )
    assert client.delete(f"{ALLOCATIONS}/{world['a_alloc']}").status_code == 403

    assert _state() == before


def test_a_scoped_scheduler_checks_allocates_renews_and_releases_inside(world):
    client = _client("scheduler", world["a"])
    check = allocation_body(entity_id="user-a", requested_value=1)
    check.pop("job_id")

    checked = client.post(f"{ALLOCATIONS}/check", check, format="json")
    body = allocation_body(entity_id="user-a", requested_value=1)
    created = client.post(ALLOCATIONS, body, format="json")
    replayed = client.post(ALLOCATIONS, body, format="json")
    allocation_id = created.json()["id"]
    renewed = client.post(
        f"{ALLOCATIONS}/{allocation_id}/renew", {"ttl_seconds": 60}, format="json"
    )
    released = client.delete(f"{ALLOCATIONS}/{allocation_id}")

    assert checked.status_code == 200 and checked.json()["allowed"] is True
    assert created.status_code == 201
    assert replayed.status_code == 200
    assert [level["entity_id"] for level in replayed.json()["levels"]] == [
        "user-a",
        "team-a",
        "org-a",
    ]
    assert renewed.status_code == 200
    assert released.status_code == 200
    assert client.patch(f"{QUOTAS}/{world['a_user'].id}", {}).status_code == 403


def test_a_scoped_admin_manages_its_subtree(world):
    client = _client("admin", world["a"])
    team_id = world["a_team"].id

    created = client.post(
        QUOTAS,
        {
            "entity_type": "user",
            "entity_id": "bob",
            "resource_type": "concurrent_gpus",
            "parent_id": str(team_id),
            "limit_value": 10,
        },
        format="json",
    )
    updated = client.patch(f"{QUOTAS}/{team_id}", {"soft_limit": 5}, format="json")
    deleted = client.delete(f"{QUOTAS}/{created.json()['id']}")
    # A team (the sibling) can be created directly under the scope's own root.
    sibling = client.post(
        QUOTAS,
        {
            "entity_type": "team",
            "entity_id": "team-a3",
            "resource_type": "concurrent_gpus",
            "parent_id": str(world["a"].id),
            "limit_value": 10,
        },
        format="json",
    )

    assert created.status_code == 201
    assert updated.status_code == 200
    assert deleted.status_code == 204
    assert sibling.status_code == 201
    assert Quota.objects.get(id=sibling.json()["id"]).path[-1] == world["a"].id


def test_a_scoped_admin_cannot_create_a_root_quota(world):
    client = _client("admin", world["a"])
    before = _state()

    response = client.post(QUOTAS, org_body("org-c", 10), format="json")

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert _state() == before


@pytest.mark.parametrize("method", ["put", "patch", "delete"])
def test_a_scoped_admin_cannot_change_or_delete_its_own_root(world, method):
    root = world["a_team"]
    client = _client("admin", root)
    world["a_user"].delete()  # so that the delete would otherwise succeed
    Allocation.objects.all().delete()
    Quota.objects.update(reserved=0, consumed=0)
    before = _state()

    url = f"{QUOTAS}/{root.id}"
    if method == "delete":
        response = client.delete(url)
    else:
        response = getattr(client, method)(url, {"soft_limit": 1}, format="json")

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert _state() == before
    assert client.get(url).status_code == 200  # it still reads it


def test_a_team_scoped_key_sees_neither_its_organization_nor_sibling_teams(world):
    client = _client("admin", world["a_team"])
    before = _state()

    listed = {row["id"] for row in client.get(QUOTAS).json()}
    org = client.get(f"{QUOTAS}/{world['a'].id}")
    sibling = client.get(f"{QUOTAS}/{world['a_sibling'].id}")
    sibling_update = client.patch(
        f"{QUOTAS}/{world['a_sibling'].id}", {"soft_limit": 1}, format="json"
    )
    org_check = allocation_body(
        entity_type="organization", entity_id="org-a", requested_value=1
    )
    org_check.pop("job_id")
    check = client.post(f"{ALLOCATIONS}/check", org_check, format="json")
    sibling_allocate = allocate(
        client, entity_type="team", entity_id="team-a2", requested_value=1
    )
    org_history = client.get(f"{QUOTAS}/{world['a'].id}/history")

    assert listed == {str(world["a_team"].id), str(world["a_user"].id)}
    for response in (org, sibling, sibling_update, check, sibling_allocate):
        assert response.status_code == 404
    assert org_history.status_code == 404
    assert _state() == before
    # Its own subtree still works, allocation levels up to the root included.
    assert client.get(f"{QUOTAS}/{world['a_user'].id}/usage").status_code == 200
    assert allocate(client, entity_id="user-a", requested_value=1).status_code == (201)


def test_a_deleted_quotas_history_is_for_unscoped_keys_only(world):
    leaf = _quota(EntityType.USER, "gone", world["a_team"], "10")
    allocation_id = allocate_direct(entity_id="gone", amount="1", ttl_seconds=3600).id
    allocation_services.allocation_release(allocation_id=allocation_id)
    admin = _client("admin")
    assert admin.delete(f"{QUOTAS}/{leaf.id}").status_code == 204
    scoped = _client("admin", world["a"])

    unscoped_history = admin.get(f"{QUOTAS}/{leaf.id}/history")
    unscoped_audit = admin.get(f"{QUOTAS}/{leaf.id}/audit")

    assert unscoped_history.status_code == 200 and len(unscoped_history.json()) == 2
    assert unscoped_audit.status_code == 200
    assert scoped.get(f"{QUOTAS}/{leaf.id}/history").status_code == 404
    assert scoped.get(f"{QUOTAS}/{leaf.id}/audit").status_code == 404
    assert scoped.get(f"{ALLOCATIONS}/{allocation_id}").status_code == 404
    assert allocation_id not in {r["id"] for r in scoped.get(ALLOCATIONS).json()}


def test_a_scope_uses_the_path_index(world):
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SET LOCAL enable_seqscan = off")
        cursor.execute(
            "EXPLAIN SELECT id FROM quotas WHERE path @> ARRAY[%s]::uuid[]",
            [world["a"].id],
        )
        plan = "\n".join(row[0] for row in cursor.fetchall())

    assert "quotas_path_gin" in plan


def test_a_job_held_outside_the_scope_is_a_conflict_that_names_nothing_of_it(world):
    held = Allocation.objects.get(id=world["b_alloc"])
    client = _client("scheduler", world["a"])
    before = _state()

    body = {
        **allocation_body(entity_id="user-a", requested_value=1),
        "job_id": str(held.job_id),
    }
    response = client.post(ALLOCATIONS, body, format="json")

    assert response.status_code == 409
    text = response.content.decode()
    assert str(held.id) not in text and "user-b" not in text
    assert _state() == before
