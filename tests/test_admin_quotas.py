"""The Django admin saves quotas through the services: rules show as form errors."""

from decimal import Decimal

import pytest

from quotas.models import EntityType, Quota
from tests.factories import QuotaFactory
from tests.helpers import admin_limits_form

pytestmark = pytest.mark.django_db


def _form(**overrides):
    """The add form for team research, limit 10, without a parent unless told."""
    form = admin_limits_form(
        "10",
        entity_type="team",
        entity_id="research",
        resource_type="concurrent_gpus",
        parent="",
    )
    form.update(overrides)
    return form


def test_it_creates_a_child_through_the_service(staff_client):
    org = QuotaFactory(limit_value=Decimal("100"))

    response = staff_client.post(
        "/admin/quotas/quota/add/", _form(parent=str(org.id), limit_value="40")
    )

    assert response.status_code == 302
    child = Quota.objects.get(entity_id="research")
    assert child.parent_id == org.id
    assert child.depth == 1
    assert child.limit_value == Decimal("40")


def test_a_child_above_its_parent_is_a_form_error_not_a_500(staff_client):
    org = QuotaFactory(limit_value=Decimal("100"))

    response = staff_client.post(
        "/admin/quotas/quota/add/", _form(parent=str(org.id), limit_value="150")
    )

    assert response.status_code == 200
    errors = response.context["adminform"].form.errors
    assert "limit_value" in errors
    assert "exceeds the parent" in " ".join(errors["limit_value"])
    assert not Quota.objects.filter(entity_id="research").exists()


def test_a_wrong_parent_type_is_a_form_error(staff_client):
    org = QuotaFactory(limit_value=Decimal("100"))

    response = staff_client.post(
        "/admin/quotas/quota/add/",
        _form(entity_type="user", parent=str(org.id), limit_value="5"),
    )

    assert response.status_code == 200
    assert "parent" in response.context["adminform"].form.errors
    assert Quota.objects.count() == 1


def test_changing_a_limit_goes_through_the_service(staff_client, tree):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{team.id}/change/",
        admin_limits_form("70"),
    )

    assert response.status_code == 302
    team.refresh_from_db()
    assert team.limit_value == Decimal("70")
    assert team.version == 2


def test_lowering_a_parent_below_its_child_is_a_form_error(staff_client, tree):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{team.id}/change/",
        admin_limits_form("20"),
    )

    assert response.status_code == 200
    assert "limit_value" in response.context["adminform"].form.errors
    team.refresh_from_db()
    assert team.limit_value == Decimal("60")


def test_lowering_below_usage_needs_force(staff_client, tree):
    org, team, user = tree
    Quota.objects.filter(id=user.id).update(reserved=Decimal("25"))
    form = admin_limits_form("20")

    refused = staff_client.post(f"/admin/quotas/quota/{user.id}/change/", form)
    forced = staff_client.post(
        f"/admin/quotas/quota/{user.id}/change/", {**form, "force": "on"}
    )

    assert refused.status_code == 200
    assert "force" in str(refused.context["adminform"].form.errors)
    assert forced.status_code == 302
    user.refresh_from_db()
    assert user.limit_value == Decimal("20")


def test_deleting_a_quota_with_children_is_refused_not_a_500(staff_client, tree):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{team.id}/delete/", {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert "Cannot delete quota" in response.content.decode()
    assert Quota.objects.filter(id=team.id).exists()


def test_deleting_a_quota_with_active_usage_shows_the_service_error(staff_client, tree):
    org, team, user = tree
    Quota.objects.filter(id=user.id).update(reserved=Decimal("5"))

    response = staff_client.post(
        f"/admin/quotas/quota/{user.id}/delete/", {"post": "yes"}, follow=True
    )

    assert response.status_code == 200
    assert "active allocations" in response.content.decode()
    assert Quota.objects.filter(id=user.id).exists()


def test_deleting_a_leaf_works(staff_client, tree):
    org, team, user = tree

    response = staff_client.post(
        f"/admin/quotas/quota/{user.id}/delete/", {"post": "yes"}
    )

    assert response.status_code == 302
    assert not Quota.objects.filter(id=user.id).exists()


def test_the_changelist_searches_and_stays_within_a_query_budget(
    staff_client, django_assert_max_num_queries
):
    org = QuotaFactory(limit_value=Decimal("1000"))
    for index in range(40):
        QuotaFactory(
            entity_type=EntityType.TEAM,
            entity_id=f"team-{index}",
            parent=org,
            limit_value=Decimal("10"),
        )

    with django_assert_max_num_queries(12):
        response = staff_client.get("/admin/quotas/quota/")
    found = staff_client.get("/admin/quotas/quota/?q=team-7")

    assert response.status_code == 200
    assert found.status_code == 200
    assert "team-7" in found.content.decode()


def test_parent_autocomplete_answers(staff_client, tree):
    response = staff_client.get(
        "/admin/autocomplete/",
        {
            "app_label": "quotas",
            "model_name": "quota",
            "field_name": "parent",
            "term": "res",
        },
    )

    assert response.status_code == 200
    assert any(
        r["text"].startswith("team:research") for r in response.json()["results"]
    )


def test_the_api_key_add_form_never_takes_a_secret_or_hash(staff_client):
    # Keys are added through api_key_create (tests/test_api_key_lifecycle.py): the
    # form asks only for what the service needs, never for a prefix or hash.
    response = staff_client.get("/admin/quotas/apikey/add/")

    assert response.status_code == 200
    fields = set(response.context["adminform"].form.fields)
    assert fields == {"name", "role", "scope", "expires_at", "write_rate"}
