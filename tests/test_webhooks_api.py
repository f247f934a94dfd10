"""The webhook endpoints API (DESIGN §7a): /api/v1/webhooks, admin keys only."""

import uuid

import pytest
from django.db import connection
from standardwebhooks import Webhook

from quotas.events.models import WebhookAttempt, WebhookDelivery, WebhookEndpoint
from tests.factories import QuotaFactory
from tests.helpers import (
    UNKNOWN_ID,
    assert_error,
    assert_invalid,
    client_for_role,
    next_link,
)

pytestmark = pytest.mark.django_db

WEBHOOKS = "/api/v1/webhooks"
# A literal public address: nothing to resolve, and the SSRF guard lets it through.
PUBLIC_URL = "https://93.184.215.14/hooks/quota"
PUBLIC_FIELDS = {
    "id",
    "url",
    "event_types",
    "scope",
    "enabled",
    "description",
    "failing_since",
    "disabled_reason",
    "created_at",
}


@pytest.fixture(autouse=True)
def sequenced(db):
    """Give events their public id as they are written (nothing commits here)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS events_sequence IMMEDIATE")


@pytest.fixture
def admin(db):
    return client_for_role("admin", name="webhooks admin")


def _create(client, **fields):
    return client.post(WEBHOOKS, {"url": PUBLIC_URL, **fields}, format="json")


def _snapshot():
    return list(
        WebhookEndpoint.objects.order_by("id").values(
            "id", "url", "event_types", "scope_entity_id", "enabled", "description"
        )
    )


# --- Create, read, change, delete -----------------------------------------------------


def test_create_answers_201_with_a_standard_webhooks_secret_shown_once(admin, tree):
    response = _create(
        admin,
        event_types=["Quota.Threshold_Crossed", "quota.threshold_crossed"],
        scope="team:research",
        description="  research alerts ",
    )

    assert response.status_code == 201, response.content
    body = response.json()
    assert set(body) == PUBLIC_FIELDS | {"secret"}
    assert body["secret"].startswith("whsec_")
    Webhook(body["secret"])  # the library reads it
    assert body["event_types"] == ["quota.threshold_crossed"]
    assert body["scope"] == "team:research"
    assert body["description"] == "research alerts"
    assert body["enabled"] is True
    url = f"{WEBHOOKS}/{body['id']}"
    for answer in (
        admin.get(url),
        admin.get(WEBHOOKS),
        admin.patch(url, {"description": "x"}, format="json"),
    ):
        assert answer.status_code == 200
        assert "secret" not in answer.content.decode()
        assert body["secret"] not in answer.content.decode()


def test_a_quota_id_scope_means_its_entity_and_is_shown_as_given(admin, tree):
    org, team, user = tree

    body = _create(admin, scope=str(team.id)).json()

    endpoint = WebhookEndpoint.objects.get(id=body["id"])
    assert (endpoint.scope_entity_type, endpoint.scope_entity_id) == (
        "team",
        "research",
    )
    assert body["scope"] == str(team.id)


def test_defaults_are_every_type_every_quota_enabled(admin):
    body = _create(admin).json()

    assert body["event_types"] == []
    assert body["scope"] is None
    assert body["enabled"] is True
    assert body["description"] == ""


def test_patch_changes_only_the_fields_sent(admin, tree):
    created = _create(admin, event_types=["quota.changed"]).json()
    url = f"{WEBHOOKS}/{created['id']}"

    response = admin.patch(
        url, {"enabled": False, "scope": "organization:acme"}, format="json"
    )

    assert response.status_code == 200, response.content
    body = response.json()
    assert body["enabled"] is False
    assert body["scope"] == "organization:acme"
    assert body["event_types"] == ["quota.changed"]
    assert body["url"] == PUBLIC_URL
    assert admin.patch(url, {"scope": None}, format="json").json()["scope"] is None


def test_enabling_again_clears_the_failure_record(admin):
    created = _create(admin).json()
    WebhookEndpoint.objects.filter(id=created["id"]).update(
        enabled=False, disabled_reason="Every delivery failed for 3 days."
    )

    body = admin.patch(
        f"{WEBHOOKS}/{created['id']}", {"enabled": True}, format="json"
    ).json()

    assert body["enabled"] is True
    assert body["disabled_reason"] == ""
    assert body["failing_since"] is None


def test_delete_removes_the_endpoint_its_deliveries_and_log(admin):
    created = _create(admin).json()
    url = f"{WEBHOOKS}/{created['id']}"
    admin.post(f"{url}/test")

    response = admin.delete(url)

    assert response.status_code == 204
    assert admin.get(url).status_code == 404
    assert not WebhookEndpoint.objects.exists()
    assert not WebhookDelivery.objects.exists()


def test_the_list_is_newest_first_and_paged(admin):
    ids = [_create(admin, description=str(i)).json()["id"] for i in range(3)]

    first = admin.get(WEBHOOKS, {"limit": 2})

    assert [row["id"] for row in first.json()] == ids[::-1][:2]
    second = admin.get(next_link(first))
    assert [row["id"] for row in second.json()] == ids[:1]
    assert next_link(second) is None


def test_the_test_event_is_queued_for_that_endpoint_alone(admin):
    one, other = _create(admin).json(), _create(admin).json()

    response = admin.post(f"{WEBHOOKS}/{one['id']}/test")

    assert response.status_code == 202, response.content
    body = response.json()
    assert body["status"] == "pending"
    assert body["attempts"] == 0
    assert isinstance(body["event_id"], int)
    deliveries = WebhookDelivery.objects.select_related("event")
    assert [(str(d.endpoint_id), d.event.type) for d in deliveries] == [
        (one["id"], "webhook.test")
    ]
    assert other["id"] not in {str(d.endpoint_id) for d in deliveries}


def test_the_delivery_log_is_newest_first_and_paged(admin):
    created = _create(admin).json()
    delivery = WebhookDelivery.objects.get(
        id=admin.post(f"{WEBHOOKS}/{created['id']}/test").json()["id"]
    )
    for attempt in (1, 2, 3):
        WebhookAttempt.objects.create(
            delivery=delivery,
            endpoint_id=created["id"],
            event_id=delivery.event.id,
            attempt=attempt,
            status_code=500 if attempt < 3 else 200,
            duration_ms=5,
            error="HTTP 500" if attempt < 3 else "",
        )
    url = f"{WEBHOOKS}/{created['id']}/deliveries"

    first = admin.get(url, {"limit": 2})

    assert first.status_code == 200, first.content
    assert [row["attempt"] for row in first.json()] == [3, 2]
    assert first.json()[0]["status_code"] == 200
    assert first.json()[1]["error"] == "HTTP 500"
    assert set(first.json()[0]) == {
        "id",
        "delivery_id",
        "event_id",
        "attempt",
        "status_code",
        "duration_ms",
        "error",
        "next_attempt_at",
        "at",
    }
    assert [row["attempt"] for row in admin.get(next_link(first)).json()] == [1]


def test_the_lists_take_a_fixed_number_of_queries(admin, django_assert_max_num_queries):
    created = [_create(admin).json() for _ in range(5)]
    url = f"{WEBHOOKS}/{created[0]['id']}"
    for _ in range(3):
        admin.post(f"{url}/test")
    delivery = WebhookDelivery.objects.first()
    for attempt in range(1, 6):
        WebhookAttempt.objects.create(
            delivery=delivery,
            endpoint_id=created[0]["id"],
            event_id=1,
            attempt=attempt,
        )

    # At most the key and the page; the log adds its endpoint.
    with django_assert_max_num_queries(2):
        assert len(admin.get(WEBHOOKS).json()) == 5
    with django_assert_max_num_queries(3):
        assert len(admin.get(f"{url}/deliveries").json()) == 5


# --- Who may --------------------------------------------------------------------------


@pytest.mark.parametrize("role", ["viewer", "scheduler"])
def test_other_roles_get_403_even_to_read(role, admin):
    created = _create(admin).json()
    client = client_for_role(role, name=f"webhooks {role}")
    url = f"{WEBHOOKS}/{created['id']}"
    before = _snapshot()

    for response in (
        client.get(WEBHOOKS),
        client.get(url),
        client.get(f"{url}/deliveries"),
        _create(client),
        client.patch(url, {"enabled": False}, format="json"),
        client.delete(url),
        client.post(f"{url}/test"),
    ):
        assert_error(response, 403, "forbidden")
    assert _snapshot() == before
    assert not WebhookDelivery.objects.exists()


def test_no_key_gets_401(api_client, db):
    assert_error(api_client.get(WEBHOOKS), 401, "unauthorized")


def test_a_scoped_key_sees_and_makes_endpoints_inside_its_scope_only(admin):
    org_a = QuotaFactory(entity_id="org-a")
    QuotaFactory(entity_type="team", entity_id="team-a", parent=org_a)
    QuotaFactory(entity_id="org-b")
    team_admin = client_for_role("admin", name="team-a admin", scope="team:team-a")
    inside = _create(team_admin, scope="team:team-a").json()
    # Made by an unscoped key: hidden from scoped keys, whatever it is scoped to.
    admins = _create(admin, scope="team:team-a").json()
    outside = _create(admin, scope="organization:org-b").json()
    unscoped = _create(admin).json()
    scoped = client_for_role("admin", name="org-a admin", scope="organization:org-a")

    assert [row["id"] for row in scoped.get(WEBHOOKS).json()] == [inside["id"]]
    assert [row["id"] for row in team_admin.get(WEBHOOKS).json()] == [inside["id"]]
    for hidden in (outside, unscoped, admins):
        assert_error(scoped.get(f"{WEBHOOKS}/{hidden['id']}"), 404, "not_found")
        assert_error(
            scoped.patch(f"{WEBHOOKS}/{hidden['id']}", {}, format="json"),
            404,
            "not_found",
        )
        assert_error(scoped.delete(f"{WEBHOOKS}/{hidden['id']}"), 404, "not_found")
    assert _create(scoped, scope="organization:org-a").status_code == 201
    before = _snapshot()
    assert_error(_create(scoped), 403, "forbidden")
    body = assert_invalid(_create(scoped, scope="organization:org-b"), "scope")
    assert body["message"] == (
        "scope: Cannot scope a webhook endpoint to 'organization:org-b': "
        "organization 'org-b' has no quota."
    )
    assert_invalid(
        scoped.patch(
            f"{WEBHOOKS}/{inside['id']}", {"scope": "organization:org-b"}, format="json"
        ),
        "scope",
    )
    assert_error(
        scoped.patch(f"{WEBHOOKS}/{inside['id']}", {"scope": None}, format="json"),
        403,
        "forbidden",
    )
    assert _snapshot() == before


def test_a_quota_id_outside_a_scoped_keys_scope_is_not_named(admin):
    org_a = QuotaFactory(entity_id="org-a")
    QuotaFactory(entity_type="team", entity_id="team-a", parent=org_a)
    org_b = QuotaFactory(entity_id="org-b")
    scoped = client_for_role("admin", name="org-a admin", scope="organization:org-a")
    before = _snapshot()

    known = assert_invalid(_create(scoped, scope=str(org_b.id)), "scope")
    unknown = assert_invalid(_create(scoped, scope=UNKNOWN_ID), "scope")

    assert "org-b" not in known["message"]
    assert known["message"] == unknown["message"].replace(UNKNOWN_ID, str(org_b.id))
    assert _snapshot() == before


# --- Every error a clear 400 or 404, and nothing changed ------------------------------


@pytest.mark.parametrize(
    "fields, field",
    [
        ({"url": "http://10.0.0.7/hook"}, "url"),
        ({"url": "http://127.0.0.1:8080/"}, "url"),
        ({"url": "http://[::1]/"}, "url"),
        ({"url": "http://169.254.169.254/latest/meta-data"}, "url"),
        ({"url": "http://localhost/"}, "url"),
        ({"url": "ftp://93.184.215.14/"}, "url"),
        ({"url": "https://user:pw@93.184.215.14/"}, "url"),
        ({"url": "https://no-such-host.invalid/"}, "url"),
        ({"url": "http://[::1/"}, "url"),
        ({"url": ""}, "url"),
        ({"url": None}, "url"),
        ({"url": "https://93.184.215.14/" + "a" * 2000}, "url"),
        ({"event_types": ["quota.full"]}, "event_types"),
        ({"event_types": ["webhook.test"]}, "event_types"),
        ({"event_types": "quota.changed"}, "event_types"),
        ({"scope": "team:nobody"}, "scope"),
        ({"scope": "galaxy:far"}, "scope"),
        ({"scope": UNKNOWN_ID}, "scope"),
        ({"enabled": "perhaps"}, "enabled"),
        ({"description": "x" * 201}, "description"),
    ],
)
def test_invalid_input_is_a_400_naming_the_field_and_changes_nothing(
    admin, tree, fields, field
):
    created = _create(admin).json()
    before = _snapshot()

    assert_invalid(_create(admin, **fields), field)
    assert_invalid(
        admin.patch(f"{WEBHOOKS}/{created['id']}", fields, format="json"), field
    )

    assert _snapshot() == before


def test_create_without_a_url_is_a_400(admin):
    assert_invalid(admin.post(WEBHOOKS, {}, format="json"), "url")
    assert not WebhookEndpoint.objects.exists()


def test_private_targets_are_allowed_when_the_setting_says_so(admin, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = True

    response = _create(admin, url="http://127.0.0.1:9/hook")

    assert response.status_code == 201, response.content


def test_malformed_json_is_a_400(admin):
    response = admin.generic("POST", WEBHOOKS, "{", content_type="application/json")

    assert_error(response, 400, "invalid_input")
    assert not WebhookEndpoint.objects.exists()


@pytest.mark.parametrize(
    "method, suffix",
    [
        ("get", ""),
        ("patch", ""),
        ("delete", ""),
        ("get", "/deliveries"),
        ("post", "/test"),
    ],
)
def test_an_unknown_endpoint_is_a_404(admin, method, suffix):
    _create(admin)
    before = _snapshot()

    response = getattr(admin, method)(
        f"{WEBHOOKS}/{uuid.uuid4()}{suffix}", {}, format="json"
    )

    body = assert_error(response, 404, "not_found")
    assert body["message"].startswith("Webhook endpoint ")
    assert _snapshot() == before
    assert not WebhookDelivery.objects.exists()


def test_put_is_not_allowed(admin):
    created = _create(admin).json()

    response = admin.put(f"{WEBHOOKS}/{created['id']}", {}, format="json")

    assert_error(response, 405, "method_not_allowed")
