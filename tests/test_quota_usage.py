"""GET /api/v1/quotas/{id}/usage: usage statistics in the Rust service's shape
(DESIGN §5)."""

from decimal import Decimal

import pytest

from quotas.models import EntityType, Quota
from tests.factories import QuotaFactory, ResourceTypeFactory
from tests.helpers import UNKNOWN_ID, USAGE_FIELDS, exact, quota_url, set_used


def _url(quota_id) -> str:
    return f"{quota_url(quota_id)}/usage"


def test_it_reports_the_usage_of_a_quota(admin_client_api, tree):
    _, team, _ = tree
    set_used(team, 45)

    response = admin_client_api.get(_url(team.id))

    assert response.status_code == 200
    body = exact(response)
    assert set(body) == USAGE_FIELDS
    assert body == {
        "quota_id": str(team.id),
        "entity_type": "team",
        "entity_id": "research",
        "resource_type": "concurrent_gpus",
        "limit": 60,
        "effective_limit": 60,
        "usage": 45,
        "available": 15,
        "utilization_percent": 75,
        "reserved": 45,
        "consumed": 0,
        "carried_over": 0,
        "period": "none",
        "period_start": None,
        "period_end": None,
        "projected_exhaustion": None,
    }


def test_it_reports_an_unused_quota_as_zero_percent(admin_client_api, tree):
    org, _, _ = tree

    response = admin_client_api.get(_url(org.id))

    assert response.status_code == 200
    body = response.json()
    assert body["usage"] == 0
    assert body["available"] == 100
    assert body["utilization_percent"] == 0


def test_it_measures_utilization_against_the_effective_limit(admin_client_api, db):
    quota = QuotaFactory(limit_value=Decimal("100"), overcommit_ratio=Decimal("1.5"))
    set_used(quota, 50)

    response = admin_client_api.get(_url(quota.id))

    body = exact(response)
    assert body["limit"] == 100
    assert body["effective_limit"] == 150
    assert body["usage"] == 50
    assert body["available"] == 100
    assert body["utilization_percent"] == Decimal("33.33")


def test_it_renders_every_amount_as_an_exact_json_number(admin_client_api, db):
    quota = QuotaFactory(limit_value=Decimal("10.5"), overcommit_ratio=Decimal("1.25"))
    set_used(quota, "0.0001")

    response = admin_client_api.get(_url(quota.id))

    body = exact(response)
    assert body["limit"] == Decimal("10.5")
    assert body["effective_limit"] == Decimal("13.125")
    assert body["usage"] == Decimal("0.0001")
    assert body["available"] == Decimal("13.1249")
    for field in (
        "limit",
        "effective_limit",
        "usage",
        "available",
        "utilization_percent",
    ):
        assert not isinstance(body[field], str), field
    assert b'"effective_limit":13.125' in response.content


def test_it_reports_a_full_quota_as_one_hundred_percent(admin_client_api, tree):
    _, _, user = tree
    set_used(user, 30)

    body = admin_client_api.get(_url(user.id)).json()

    assert body["available"] == 0
    assert body["utilization_percent"] == 100


def test_utilization_is_not_capped_after_a_forced_lowering(admin_client_api, tree):
    _, _, user = tree
    set_used(user, 25)
    forced = admin_client_api.patch(
        f"{quota_url(user.id)}?force=true", {"limit_value": 20}, format="json"
    )

    response = admin_client_api.get(_url(user.id))

    assert forced.status_code == 200
    body = response.json()
    assert body["limit"] == 20
    assert body["effective_limit"] == 20
    assert body["usage"] == 25
    assert body["available"] == 0
    assert body["utilization_percent"] == 125


@pytest.mark.parametrize("used", [0, 5], ids=["unused", "in-use"])
def test_utilization_is_zero_when_the_effective_limit_is_zero(
    admin_client_api, db, used
):
    quota = QuotaFactory(limit_value=Decimal("0"))
    set_used(quota, used)

    response = admin_client_api.get(_url(quota.id))

    assert response.status_code == 200
    body = response.json()
    assert body["effective_limit"] == 0
    assert body["usage"] == used
    assert body["available"] == 0
    assert body["utilization_percent"] == 0


def test_it_reports_extreme_utilization_without_error(admin_client_api, db):
    # The most a quota can hold (the largest limit at the largest ratio), left in
    # use after a forced lowering to the smallest non-zero limit.
    quota = QuotaFactory(limit_value=Decimal("0.0001"))
    set_used(quota, "9999899999999999999.9000")

    response = admin_client_api.get(_url(quota.id))

    assert response.status_code == 200
    body = exact(response)
    assert body["usage"] == Decimal("9999899999999999999.9")
    assert body["utilization_percent"] == Decimal("9999899999999999999900000")


def test_it_rounds_utilization_to_two_decimal_places(admin_client_api, db):
    quota = QuotaFactory(limit_value=Decimal("3"))
    set_used(quota, 2)

    body = exact(admin_client_api.get(_url(quota.id)))

    assert body["utilization_percent"] == Decimal("66.67")


def test_each_level_reports_the_usage_of_its_whole_subtree(admin_client_api, tree):
    org, team, user = tree
    # One grant of 10 to the user is counted at every level of its path.
    set_used(user, 10)
    set_used(team, 10)
    set_used(org, 10)

    org_body = admin_client_api.get(_url(org.id)).json()
    team_body = admin_client_api.get(_url(team.id)).json()

    assert org_body["usage"] == 10
    assert org_body["utilization_percent"] == 10
    assert team_body["usage"] == 10
    assert team_body["available"] == 50


def test_it_reports_lower_case_enum_values(admin_client_api, db):
    ResourceTypeFactory(slug="tpu_hours")
    quota = QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="Alice",
        resource_type_id="tpu_hours",
    )

    body = admin_client_api.get(_url(quota.id)).json()

    assert body["entity_type"] == "user"
    assert body["entity_id"] == "Alice"
    assert body["resource_type"] == "tpu_hours"


@pytest.mark.parametrize("client_fixture", ["viewer_client", "scheduler_client"])
def test_any_role_may_read_usage(request, tree, client_fixture):
    client = request.getfixturevalue(client_fixture)
    org, _, _ = tree

    response = client.get(_url(org.id))

    assert response.status_code == 200
    assert response.json()["quota_id"] == str(org.id)


def test_it_refuses_a_request_without_credentials(api_client, tree):
    org, _, _ = tree

    response = api_client.get(_url(org.id))

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_it_answers_404_for_an_unknown_quota(admin_client_api, db):
    response = admin_client_api.get(_url(UNKNOWN_ID))

    assert response.status_code == 404
    body = response.json()
    assert body["error"] == "not_found"
    assert body["message"]


def test_it_answers_404_json_for_a_path_that_is_not_a_uuid(admin_client_api, db):
    response = admin_client_api.get(_url("not-a-uuid"))

    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


@pytest.mark.parametrize("method", ["post", "put", "patch", "delete"])
def test_it_refuses_methods_other_than_get(admin_client_api, tree, method):
    org, _, _ = tree

    response = getattr(admin_client_api, method)(_url(org.id), {}, format="json")

    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"
    assert Quota.objects.filter(id=org.id).exists()
