"""Request body size and JSON nesting limits (DESIGN §5: 413, 400)."""

import json

from quotas.models import Quota
from tests.helpers import QUOTAS, org_body


def _nested(depth: int) -> str:
    """A JSON quota body whose deepest value sits ``depth`` levels down."""
    padding = "[" * (depth - 1) + "]" * (depth - 1)
    return json.dumps(org_body("acme-limits", 10))[:-1] + f', "padding": {padding}}}'


def test_the_limits_have_their_defaults(settings):
    assert settings.DATA_UPLOAD_MAX_MEMORY_SIZE == 1024 * 1024
    assert settings.API_MAX_JSON_DEPTH == 32


def test_a_body_above_the_limit_answers_413_and_writes_nothing(admin_client_api):
    payload = json.dumps(org_body("acme-limits", 10, padding="x" * (1024 * 1024)))

    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    assert response.status_code == 413, response.content
    body = response.json()
    assert body["error"] == "payload_too_large"
    assert str(1024 * 1024) in body["message"]
    assert not Quota.objects.exists()


def test_a_body_at_the_limit_is_read(admin_client_api, settings):
    payload = json.dumps(org_body("acme-limits", 10))
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = len(payload.encode())

    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    assert response.status_code == 201, response.content


def test_a_body_without_content_length_is_read_as_empty(admin_client_api, settings):
    """The parser never reads past Content-Length; a body without one (chunked
    transfer, which gunicorn passes without CONTENT_LENGTH) is read as empty."""
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 1024
    payload = json.dumps(org_body("acme-limits", 10, padding="x" * 4096)).encode()

    response = admin_client_api.generic(
        "POST",
        QUOTAS,
        payload,
        content_type="application/json",
        CONTENT_LENGTH="",
    )

    assert response.status_code == 400, response.content
    assert response.json()["error"] == "invalid_input"
    assert not Quota.objects.exists()


def test_nesting_at_the_depth_limit_is_accepted(admin_client_api, settings):
    settings.API_MAX_JSON_DEPTH = 32

    response = admin_client_api.post(
        QUOTAS, data=_nested(32), content_type="application/json"
    )

    assert response.status_code == 201, response.content
    assert Quota.objects.count() == 1


def test_nesting_past_the_depth_limit_answers_400_and_writes_nothing(
    admin_client_api, settings
):
    settings.API_MAX_JSON_DEPTH = 32

    response = admin_client_api.post(
        QUOTAS, data=_nested(33), content_type="application/json"
    )

    assert response.status_code == 400, response.content
    body = response.json()
    assert body["error"] == "invalid_input"
    assert "32" in body["message"]
    assert "API_MAX_JSON_DEPTH" in body["message"]
    assert not Quota.objects.exists()


def test_brackets_inside_strings_do_not_count_as_nesting(admin_client_api, settings):
    settings.API_MAX_JSON_DEPTH = 3
    payload = json.dumps(org_body('deep-[[[{{{"', 10, padding=[{"a": 1}]))

    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    assert response.status_code == 201, response.content


def test_very_deep_nesting_is_refused_quickly_without_recursion(
    admin_client_api, settings
):
    settings.DATA_UPLOAD_MAX_MEMORY_SIZE = 8 * 1024 * 1024
    payload = "{" + '"a":[' * 1_000_000 + "]" * 1_000_000 + "}"

    response = admin_client_api.post(
        QUOTAS, data=payload, content_type="application/json"
    )

    assert response.status_code == 400, response.content
    assert "API_MAX_JSON_DEPTH" in response.json()["message"]
    assert not Quota.objects.exists()
