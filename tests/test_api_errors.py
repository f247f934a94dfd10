"""Every error is JSON ``{"error": kind, "message": text}`` (DESIGN §5, §6)."""

import json
from datetime import timedelta

import pytest
from django.urls import get_resolver
from django.utils import timezone
from rest_framework.test import APIClient

from quotas import selectors
from quotas.access.keys import api_key_create
from quotas.models import ApiKey, Quota
from tests.helpers import QUOTAS, assert_error, org_body

LEAKS = ("Traceback", 'File "', "SELECT ", "psycopg", "django.", "/work/", ".py")


def _assert_clean_error(response, status: int, kind: str) -> dict:
    """``assert_error``, and the body is DESIGN §5's JSON and nothing more: no
    traceback, SQL or path leaks into it."""
    body = assert_error(response, status, kind)
    assert response["Content-Type"].startswith("application/json")
    assert isinstance(body["message"], str)
    assert set(body) <= {"error", "message", "fields"}
    text = response.content.decode()
    for leak in LEAKS:
        assert leak not in text, f"{leak!r} leaked into {text!r}"
    return body


def _client_with_header(header: str) -> APIClient:
    # Errors must come back as responses, never escape as exceptions.
    client = APIClient(raise_request_exception=False)
    client.credentials(HTTP_AUTHORIZATION=header)
    return client


def _client_with_key(key_raw: str) -> APIClient:
    return _client_with_header(f"Api-Key {key_raw}")


# --- Malformed bodies --------------------------------------------------------------


@pytest.mark.parametrize(
    "payload",
    [
        "{",
        '{"entity_type": "organization",}',
        "{'entity_type': 'organization'}",
        '{"limit_value": 10} trailing',
        "\x00",
    ],
)
def test_malformed_json_is_refused_as_invalid_input(admin_client_api, payload):
    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    body = _assert_clean_error(response, 400, "invalid_input")
    assert "JSON" in body["message"]
    assert not Quota.objects.exists()


def test_a_body_that_is_not_utf8_is_refused_as_invalid_input(admin_client_api):
    response = admin_client_api.post(
        QUOTAS, data=b'{"entity_id": "\xff\xfe"}', content_type="application/json"
    )

    _assert_clean_error(response, 400, "invalid_input")


def test_json_nested_too_deeply_is_refused_as_invalid_input(admin_client_api):
    response = admin_client_api.post(
        QUOTAS, data="[" * 100_000 + "]" * 100_000, content_type="application/json"
    )

    _assert_clean_error(response, 400, "invalid_input")


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_literals_are_refused(admin_client_api, literal):
    payload = (
        '{"entity_type": "organization", "entity_id": "acme", '
        f'"resource_type": "concurrent_gpus", "limit_value": {literal}}}'
    )

    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    body = _assert_clean_error(response, 400, "invalid_input")
    assert literal.lstrip("-") in body["message"]
    assert not Quota.objects.exists()


@pytest.mark.parametrize(
    ("payload", "key"),
    [
        ('{"limit_value": 15, "limit_value": 16}', '"limit_value"'),
        ('{"metadata": {"a": 1, "b": [{"c": 1, "c": 2}]}}', '"c"'),
        ('{"entity_id": "x", "entity_id": "x"}', '"entity_id"'),
    ],
)
def test_a_key_twice_in_an_object_is_refused_naming_it(admin_client_api, payload, key):
    # Appended to a valid body: the key may appear in it already.
    payload = json.dumps(org_body("acme", 10))[:-1] + ", " + payload[1:]

    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    body = _assert_clean_error(response, 400, "invalid_input")
    assert body["message"] == f"Malformed JSON: the key {key} appears twice."
    assert not Quota.objects.exists()


def test_an_integer_with_too_many_digits_is_refused_without_internals(
    admin_client_api,
):
    payload = json.dumps(org_body("acme", 10))[:-1] + ', "padding": ' + "9" * 5000 + "}"

    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    body = _assert_clean_error(response, 400, "invalid_input")
    assert body["message"] == "Malformed JSON: a number has too many digits."
    assert "sys." not in body["message"]
    assert not Quota.objects.exists()


@pytest.mark.parametrize("literal", ["NaN", "Infinity"])
def test_nan_and_infinity_literals_are_refused_on_update(
    admin_client_api, tree, literal
):
    org, _, _ = tree

    response = admin_client_api.patch(
        f"{QUOTAS}/{org.id}",
        data=f'{{"limit_value": {literal}}}',
        content_type="application/json",
    )

    _assert_clean_error(response, 400, "invalid_input")
    org.refresh_from_db()
    assert org.limit_value == 100


@pytest.mark.parametrize("payload", ["[]", "[1, 2]", '"a string"', "42", "true"])
def test_a_top_level_json_value_other_than_an_object_is_refused_on_create(
    admin_client_api, payload
):
    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    _assert_clean_error(response, 400, "invalid_input")
    assert not Quota.objects.exists()


def test_a_top_level_array_of_quotas_is_refused_on_create(admin_client_api):
    response = admin_client_api.post(
        QUOTAS, data=[org_body("acme-errors", 10)], format="json"
    )

    _assert_clean_error(response, 400, "invalid_input")
    assert not Quota.objects.exists()


def test_a_json_null_body_is_refused_on_create(admin_client_api):
    response = admin_client_api.post(
        QUOTAS, data="null", content_type="application/json"
    )

    _assert_clean_error(response, 400, "invalid_input")


@pytest.mark.parametrize(
    "payload", ["[]", '[{"limit_value": 5}]', '"a string"', "42", "null"]
)
@pytest.mark.parametrize("method", ["patch", "put"])
def test_a_top_level_json_value_other_than_an_object_is_refused_on_update(
    admin_client_api, tree, method, payload
):
    org, _, _ = tree

    response = getattr(admin_client_api, method)(
        f"{QUOTAS}/{org.id}", data=payload, content_type="application/json"
    )

    _assert_clean_error(response, 400, "invalid_input")
    org.refresh_from_db()
    assert org.limit_value == 100


def test_a_validation_error_lists_the_fields(admin_client_api):
    response = admin_client_api.post(
        QUOTAS, data=org_body("acme-errors", "lots"), format="json"
    )

    body = _assert_clean_error(response, 400, "invalid_input")
    assert "limit_value" in body["fields"]
    assert all(isinstance(text, str) for text in body["fields"]["limit_value"])
    assert "limit_value" in body["message"]


def test_a_body_above_the_upload_limit_answers_413(admin_client_api, settings):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    payload = json.dumps(org_body("x" * 2048, 10))

    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    body = _assert_clean_error(response, 413, "payload_too_large")
    assert "1024" in body["message"]
    assert not Quota.objects.exists()


def test_a_body_above_the_upload_limit_answers_413_on_update(
    admin_client_api, tree, settings
):
    org, _, _ = tree
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024

    response = admin_client_api.patch(
        f"{QUOTAS}/{org.id}",
        data=json.dumps({"limit_value": 5, "padding": "x" * 2048}),
        content_type="application/json",
    )

    _assert_clean_error(response, 413, "payload_too_large")
    org.refresh_from_db()
    assert org.limit_value == 100


def test_a_host_outside_allowed_hosts_answers_400_as_json(db):
    _, raw_key = api_key_create(name="hosts", role="admin")
    client = _client_with_key(raw_key)

    response = client.get(QUOTAS, HTTP_HOST="evil.example")

    _assert_clean_error(response, 400, "invalid_input")


# --- Unknown paths and methods -----------------------------------------------------


@pytest.mark.parametrize(
    "path",
    [
        "/api/v1/nope",
        "/api/v1/",
        "/api/v1/quotas/",
        "/api/v1/quotas/not-a-uuid",
        "/api/v1/quotas/5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b/nope",
        "/api/v2/quotas",
        "/",
        "/nope",
        "/health/",
    ],
)
def test_an_unknown_path_answers_404_as_json(admin_client_api, path):
    response = admin_client_api.get(path)

    body = _assert_clean_error(response, 404, "not_found")
    assert path in body["message"]


def test_an_unknown_path_answers_404_as_json_without_a_key(api_client, db):
    response = api_client.post("/api/v1/nope", data={}, format="json")

    _assert_clean_error(response, 404, "not_found")


def test_an_unknown_quota_answers_404_not_found(admin_client_api):
    missing = "5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b"

    for path in (f"{QUOTAS}/{missing}", f"{QUOTAS}/{missing}/usage"):
        body = _assert_clean_error(admin_client_api.get(path), 404, "not_found")
        assert missing in body["message"]


@pytest.mark.parametrize("method", ["delete", "put", "patch"])
def test_a_wrong_method_on_the_quota_list_answers_405(admin_client_api, method):
    response = getattr(admin_client_api, method)(QUOTAS)

    _assert_clean_error(response, 405, "method_not_allowed")
    allowed = {name.strip() for name in response["Allow"].split(",")}
    assert {"GET", "POST"} <= allowed
    assert "DELETE" not in allowed


def test_a_wrong_method_on_a_quota_answers_405(admin_client_api, tree):
    org, _, _ = tree

    response = admin_client_api.post(f"{QUOTAS}/{org.id}", data={}, format="json")

    _assert_clean_error(response, 405, "method_not_allowed")


def test_a_wrong_method_on_usage_answers_405(admin_client_api, tree):
    org, _, _ = tree

    response = admin_client_api.delete(f"{QUOTAS}/{org.id}/usage")

    _assert_clean_error(response, 405, "method_not_allowed")
    org.refresh_from_db()


def test_a_wrong_method_on_health_answers_405(api_client, db):
    response = api_client.post("/health")

    _assert_clean_error(response, 405, "method_not_allowed")


# --- Content types -----------------------------------------------------------------


def test_a_plain_text_body_answers_415(admin_client_api):
    response = admin_client_api.post(
        QUOTAS, data='{"entity_id": "acme"}', content_type="text/plain"
    )

    body = _assert_clean_error(response, 415, "unsupported_media_type")
    assert "text/plain" in body["message"]
    assert not Quota.objects.exists()


def test_form_data_answers_415(admin_client_api):
    response = admin_client_api.post(
        QUOTAS, data=org_body("acme-errors", 10), format="multipart"
    )

    _assert_clean_error(response, 415, "unsupported_media_type")
    assert not Quota.objects.exists()


def test_url_encoded_form_data_answers_415(admin_client_api):
    response = admin_client_api.post(
        QUOTAS,
        data="entity_type=organization&entity_id=acme",
        content_type="application/x-www-form-urlencoded",
    )

    _assert_clean_error(response, 415, "unsupported_media_type")
    assert not Quota.objects.exists()


def test_a_plain_text_update_answers_415(admin_client_api, tree):
    org, _, _ = tree

    response = admin_client_api.patch(
        f"{QUOTAS}/{org.id}", data='{"limit_value": 5}', content_type="text/plain"
    )

    _assert_clean_error(response, 415, "unsupported_media_type")
    org.refresh_from_db()
    assert org.limit_value == 100


def test_json_with_a_charset_is_accepted(admin_client_api):
    response = admin_client_api.post(
        QUOTAS,
        data='{"entity_type": "organization", "entity_id": "acme", '
        '"resource_type": "concurrent_gpus", "limit_value": 10}',
        content_type="application/json; charset=utf-8",
    )

    assert response.status_code == 201, response.content


# --- Authentication ----------------------------------------------------------------


def test_no_authorization_header_answers_401(api_client, tree):
    org, _, _ = tree

    for path in (QUOTAS, f"{QUOTAS}/{org.id}", f"{QUOTAS}/{org.id}/usage"):
        response = api_client.get(path)

        _assert_clean_error(response, 401, "unauthorized")
        assert response["WWW-Authenticate"] == "Api-Key"


def test_a_write_without_a_key_answers_401_and_changes_nothing(api_client, db):
    response = api_client.post(QUOTAS, data=org_body("acme-errors", 10), format="json")

    _assert_clean_error(response, 401, "unauthorized")
    assert not Quota.objects.exists()


@pytest.mark.parametrize(
    "header",
    [
        "Bearer",
        "Bearer   ",
        "Api-Key",
        "Api-Key ",
        "Api-Key    ",
        "Token hq_abc_def",
        "Basic dXNlcjpwYXNz",
        "hq_abc_def",
    ],
)
def test_a_malformed_authorization_header_answers_401(db, header):
    response = _client_with_header(header).get(QUOTAS)

    body = _assert_clean_error(response, 401, "unauthorized")
    assert "Api-Key" in body["message"]


@pytest.mark.parametrize(
    "raw_key",
    [
        "hq_000000000000_notarealkeynotarealkeynotarealkey",
        "not-a-key",
        "hq__",
        "xx_abc_def",
        "hq_" + "a" * 100 + "_secret",
        "hq_abc\x00_secret",
        "hq_abc_sec\x00ret",
        "hq_abc_sécret",
    ],
)
def test_an_unknown_key_answers_401(db, raw_key):
    response = _client_with_key(raw_key).get(QUOTAS)

    _assert_clean_error(response, 401, "unauthorized")


def test_a_key_with_the_right_prefix_and_a_wrong_secret_answers_401(db):
    key, raw_key = api_key_create(name="real", role="admin")

    response = _client_with_key(f"hq_{key.prefix}_{'x' * 43}").get(QUOTAS)

    _assert_clean_error(response, 401, "unauthorized")
    assert _client_with_key(raw_key).get(QUOTAS).status_code == 200


def test_the_keyword_is_matched_without_regard_to_case(db):
    _, raw_key = api_key_create(name="case", role="viewer")

    response = _client_with_header(f"api-key {raw_key}").get(QUOTAS)

    assert response.status_code == 200


def test_a_revoked_key_answers_401(db):
    key, raw_key = api_key_create(name="revoked", role="admin")
    ApiKey.objects.filter(id=key.id).update(revoked_at=timezone.now())

    response = _client_with_key(raw_key).get(QUOTAS)

    body = _assert_clean_error(response, 401, "unauthorized")
    assert "revoked" in body["message"]


def test_an_expired_key_answers_401(db):
    key, raw_key = api_key_create(
        name="expired", role="admin", expires_at=timezone.now() - timedelta(seconds=1)
    )

    response = _client_with_key(raw_key).get(QUOTAS)

    body = _assert_clean_error(response, 401, "unauthorized")
    assert "expired" in body["message"]


def test_a_key_expiring_later_still_works(db):
    _, raw_key = api_key_create(
        name="later", role="viewer", expires_at=timezone.now() + timedelta(hours=1)
    )

    response = _client_with_key(raw_key).get(QUOTAS)

    assert response.status_code == 200


def test_a_revoked_admin_key_cannot_write(db):
    key, raw_key = api_key_create(name="revoked", role="admin")
    ApiKey.objects.filter(id=key.id).update(revoked_at=timezone.now())

    response = _client_with_key(raw_key).post(
        QUOTAS, data=org_body("acme-errors", 10), format="json"
    )

    _assert_clean_error(response, 401, "unauthorized")
    assert not Quota.objects.exists()


# --- Roles -------------------------------------------------------------------------


@pytest.fixture(params=["viewer", "scheduler"])
def read_only_client(request, db):
    return request.getfixturevalue(f"{request.param}_client")


def test_viewer_and_scheduler_cannot_create_quotas(read_only_client):
    response = read_only_client.post(
        QUOTAS, data=org_body("acme-errors", 10), format="json"
    )

    _assert_clean_error(response, 403, "forbidden")
    assert not Quota.objects.exists()


@pytest.mark.parametrize("method", ["patch", "put"])
def test_viewer_and_scheduler_cannot_update_quotas(read_only_client, tree, method):
    org, _, _ = tree

    response = getattr(read_only_client, method)(
        f"{QUOTAS}/{org.id}", data={"limit_value": 200}, format="json"
    )

    _assert_clean_error(response, 403, "forbidden")
    org.refresh_from_db()
    assert org.limit_value == 100


def test_viewer_and_scheduler_cannot_delete_quotas(read_only_client, tree):
    _, _, user = tree

    response = read_only_client.delete(f"{QUOTAS}/{user.id}")

    _assert_clean_error(response, 403, "forbidden")
    assert Quota.objects.filter(id=user.id).exists()


def test_viewer_and_scheduler_can_read_quotas(read_only_client, tree):
    org, _, _ = tree

    assert read_only_client.get(QUOTAS).status_code == 200
    assert read_only_client.get(f"{QUOTAS}/{org.id}").status_code == 200
    assert read_only_client.get(f"{QUOTAS}/{org.id}/usage").status_code == 200


def test_an_admin_can_create_update_and_delete_quotas(admin_client_api):
    created = admin_client_api.post(
        QUOTAS, data=org_body("acme-errors", 10), format="json"
    )
    quota_id = created.json()["id"]
    updated = admin_client_api.patch(
        f"{QUOTAS}/{quota_id}", data={"limit_value": 20}, format="json"
    )
    deleted = admin_client_api.delete(f"{QUOTAS}/{quota_id}")

    assert created.status_code == 201
    assert updated.status_code == 200
    assert deleted.status_code == 204


def test_a_forbidden_write_to_a_missing_quota_does_not_reveal_it(viewer_client):
    response = viewer_client.delete(f"{QUOTAS}/5f0c6f7e-3f7a-4b43-9b7e-0c1d2e3f4a5b")

    _assert_clean_error(response, 403, "forbidden")


# --- Server errors -----------------------------------------------------------------


@pytest.fixture
def crashing_selectors(monkeypatch):
    def crash(*args, **kwargs):
        raise RuntimeError('SELECT secret FROM "quotas" -- internal detail')

    monkeypatch.setattr(selectors, "quota_list", crash)
    monkeypatch.setattr(selectors, "quota_get", crash)


@pytest.fixture
def crash_client(db) -> APIClient:
    """A viewer whose requests come back as responses even when a view raises."""
    _, raw_key = api_key_create(name="crash", role="viewer")
    return _client_with_key(raw_key)


def test_an_unhandled_exception_answers_500_without_a_traceback(
    crash_client, crashing_selectors, caplog
):
    response = crash_client.get(QUOTAS)

    body = _assert_clean_error(response, 500, "internal_error")
    assert body == {"error": "internal_error", "message": "An internal error occurred."}
    assert "Traceback" not in response.content.decode()
    assert "secret" not in response.content.decode()
    # The traceback goes to the log instead.
    assert any(record.exc_info for record in caplog.records)


def test_an_unhandled_exception_on_a_detail_path_answers_500_json(
    crash_client, crashing_selectors, tree
):
    org, _, _ = tree

    for path in (f"{QUOTAS}/{org.id}", f"{QUOTAS}/{org.id}/usage"):
        response = crash_client.get(path)

        _assert_clean_error(response, 500, "internal_error")
        assert "Traceback" not in response.content.decode()


def test_the_django_level_handlers_answer_json(rf):
    request = rf.get("/somewhere")
    resolver = get_resolver()

    for status, kind in (
        (400, "invalid_input"),
        (403, "forbidden"),
        (404, "not_found"),
        (500, "internal_error"),
    ):
        handler = resolver.resolve_error_handler(status)
        response = (
            handler(request) if status == 500 else handler(request, Exception("x"))
        )

        assert response.status_code == status
        assert response["Content-Type"].startswith("application/json")
        assert json.loads(response.content)["error"] == kind
