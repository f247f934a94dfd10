"""DELETE /api/v1/quotas/{id}: only a quota without children or usage goes
(DESIGN §3, §5)."""

from decimal import Decimal

import pytest

from horizon_quota.errors import Conflict, NotFound
from quotas import services
from quotas.models import EntityType, Quota
from tests.factories import QuotaFactory
from tests.helpers import UNKNOWN_ID, quota_row, quota_url, set_used


def test_it_deletes_a_quota_without_children_or_usage(admin_client_api, db):
    quota = QuotaFactory()

    response = admin_client_api.delete(quota_url(quota.id))

    assert response.status_code == 204
    assert response.content == b""
    assert not Quota.objects.filter(id=quota.id).exists()


def test_a_deleted_quota_answers_404(admin_client_api, db):
    quota = QuotaFactory()
    admin_client_api.delete(quota_url(quota.id))

    detail = admin_client_api.get(quota_url(quota.id))
    usage = admin_client_api.get(f"{quota_url(quota.id)}/usage")
    update = admin_client_api.patch(
        quota_url(quota.id), {"limit_value": 1}, format="json"
    )
    again = admin_client_api.delete(quota_url(quota.id))

    for response in (detail, usage, update, again):
        assert response.status_code == 404
        assert response.json()["error"] == "not_found"


def test_it_deletes_a_leaf_and_leaves_its_ancestors(admin_client_api, tree):
    org, team, user = tree

    response = admin_client_api.delete(quota_url(user.id))

    assert response.status_code == 204
    assert not Quota.objects.filter(id=user.id).exists()
    assert set(Quota.objects.values_list("id", flat=True)) == {org.id, team.id}


def test_it_deletes_a_tree_from_the_leaves_up(admin_client_api, tree):
    org, team, user = tree

    statuses = [
        admin_client_api.delete(quota_url(q.id)).status_code for q in (user, team, org)
    ]

    assert statuses == [204, 204, 204]
    assert Quota.objects.count() == 0


@pytest.mark.parametrize("level", [0, 1])
def test_it_refuses_to_delete_a_quota_with_children(admin_client_api, tree, level):
    quota = tree[level]
    before = Quota.objects.count()

    response = admin_client_api.delete(quota_url(quota.id))

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "conflict"
    assert "child" in body["message"]
    assert Quota.objects.count() == before
    assert Quota.objects.filter(id=quota.id).exists()


def test_it_refuses_to_delete_a_quota_in_use(admin_client_api, db):
    quota = QuotaFactory()
    set_used(quota, "0.0001")
    before = quota_row(quota)

    response = admin_client_api.delete(quota_url(quota.id))

    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "conflict"
    assert "allocation" in body["message"]
    assert quota_row(quota) == before


def test_it_refuses_to_delete_a_leaf_in_use_under_a_tree(admin_client_api, tree):
    _, _, user = tree
    set_used(user, 5)
    before = Quota.objects.count()

    response = admin_client_api.delete(quota_url(user.id))

    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert Quota.objects.count() == before


def test_it_refuses_to_delete_a_quota_whose_usage_exceeds_a_forced_lower_limit(
    admin_client_api, db
):
    quota = QuotaFactory(limit_value=Decimal("10"))
    set_used(quota, 25)

    response = admin_client_api.delete(quota_url(quota.id))

    assert response.status_code == 409
    assert Quota.objects.filter(id=quota.id).exists()


def test_a_deleted_child_returns_its_limit_to_the_parents_headroom(
    admin_client_api, tree
):
    org, team, user = tree
    admin_client_api.delete(quota_url(user.id))
    admin_client_api.delete(quota_url(team.id))

    response = admin_client_api.post(
        "/api/v1/quotas",
        {
            "entity_type": "team",
            "entity_id": "platform",
            "resource_type": "concurrent_gpus",
            "parent_id": str(org.id),
            "limit_value": 100,
        },
        format="json",
    )

    assert response.status_code == 201


def test_a_deleted_quota_may_be_created_again(admin_client_api, tree):
    org, team, user = tree
    admin_client_api.delete(quota_url(user.id))

    response = admin_client_api.post(
        "/api/v1/quotas",
        {
            "entity_type": "user",
            "entity_id": "alice",
            "resource_type": "concurrent_gpus",
            "parent_id": str(team.id),
            "limit_value": 30,
        },
        format="json",
    )

    assert response.status_code == 201
    assert response.json()["id"] != str(user.id)


def test_it_answers_404_for_an_unknown_quota(admin_client_api, tree):
    before = Quota.objects.count()

    response = admin_client_api.delete(quota_url(UNKNOWN_ID))

    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found"
    assert body["message"]
    assert Quota.objects.count() == before


@pytest.mark.parametrize("path", ["not-a-uuid", "123", "00000000-0000-4000-8000"])
def test_it_answers_404_json_for_a_path_that_is_not_a_uuid(
    admin_client_api, tree, path
):
    before = Quota.objects.count()

    response = admin_client_api.delete(quota_url(path))

    assert response.status_code == 404
    assert response["Content-Type"].startswith("application/json")
    assert response.json()["error"] == "not_found"
    assert Quota.objects.count() == before


def test_it_refuses_a_delete_without_credentials(api_client, db):
    quota = QuotaFactory()

    response = api_client.delete(quota_url(quota.id))

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"
    assert Quota.objects.filter(id=quota.id).exists()


@pytest.mark.parametrize("client_fixture", ["viewer_client", "scheduler_client"])
def test_it_refuses_a_delete_from_a_key_without_the_admin_role(
    request, db, client_fixture
):
    client = request.getfixturevalue(client_fixture)
    quota = QuotaFactory()

    response = client.delete(quota_url(quota.id))

    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert Quota.objects.filter(id=quota.id).exists()


# --- The service, called directly ---------------------------------------------------


def test_the_service_refuses_a_quota_with_children(tree):
    _, team, _ = tree

    with pytest.raises(Conflict):
        services.quota_delete(quota_id=team.id)

    assert Quota.objects.count() == 3


def test_the_service_refuses_a_quota_in_use(db):
    quota = QuotaFactory(entity_type=EntityType.USER)
    set_used(quota, 1)

    with pytest.raises(Conflict):
        services.quota_delete(quota_id=quota.id)

    assert Quota.objects.filter(id=quota.id).exists()


def test_the_service_answers_not_found_for_an_unknown_quota(db):
    with pytest.raises(NotFound):
        services.quota_delete(quota_id=UNKNOWN_ID)
