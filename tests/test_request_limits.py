"""Request body size and JSON nesting limits (DESIGN §5: 413, 400), and bodies
without a length (411)."""

import http.client
import json
import uuid
from decimal import Decimal

import pytest

from allocations.models import Allocation, AllocationStatus
from quotas.access.keys import api_key_create
from quotas.models import Quota
from tests.budgets import allocate as budget_allocate
from tests.budgets import tree as budget_tree
from tests.helpers import (
    ALLOCATIONS,
    QUOTAS,
    assert_books_unchanged,
    assert_error,
    books,
    org_body,
)
from tests.live import gunicorn


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
    """The parser never reads past Content-Length; a body without one and without
    a Transfer-Encoding is read as empty (one declared chunked is a 411, below)."""
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


# --- Bodies without a length ----------------------------------------------------------


def test_a_chunked_body_without_content_length_answers_411_and_writes_nothing(
    admin_client_api,
):
    response = admin_client_api.generic(
        "POST",
        QUOTAS,
        json.dumps(org_body("acme-limits", 10)),
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="chunked",
    )

    body = assert_error(response, 411, "length_required")
    assert "Content-Length" in body["message"]
    assert not Quota.objects.exists()


def test_any_transfer_encoding_without_content_length_answers_411(
    scheduler_client, tree
):
    before = books()

    response = scheduler_client.generic(
        "DELETE",
        f"{ALLOCATIONS}/{uuid.uuid4()}",
        "",
        content_type="application/json",
        CONTENT_LENGTH="",
        HTTP_TRANSFER_ENCODING="gzip, chunked",
    )

    assert_error(response, 411, "length_required")
    assert_books_unchanged(before)


def test_a_transfer_encoding_with_content_length_is_read(admin_client_api):
    payload = json.dumps(org_body("acme-limits", 10))

    response = admin_client_api.generic(
        "POST",
        QUOTAS,
        payload,
        content_type="application/json",
        HTTP_TRANSFER_ENCODING="identity",
    )

    assert response.status_code == 201, response.content


def _send_chunked(port: int, method: str, path: str, body: dict, key: str):
    """(status, JSON answer) of a request whose body is sent chunked, as
    http.client sends it: ``Transfer-Encoding: chunked`` and no Content-Length."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        chunks = iter([json.dumps(body).encode()])
        conn.request(
            method,
            path,
            body=chunks,
            headers={
                "Authorization": f"Api-Key {key}",
                "Content-Type": "application/json",
                "Accept": "application/json",
            },
            encode_chunked=True,
        )
        response = conn.getresponse()
        raw = response.read()
    finally:
        conn.close()
    return response.status, json.loads(raw)


@pytest.mark.concurrency
@pytest.mark.django_db(transaction=True)
def test_chunked_releases_over_http_answer_411_and_settle_nothing():
    """Under gunicorn a chunked body used to reach the view as empty: the release
    settled the whole reservation (10) instead of the 2 sent."""
    budget_tree(names=("alice", "research", "acme"))
    job_id = uuid.uuid4()
    allocation = budget_allocate(entity_id="alice", value="10", job_id=job_id)
    key = api_key_create(name="scheduler", role="scheduler")[1]
    before = books()

    with gunicorn(workers=1) as port:
        released = _send_chunked(
            port,
            "DELETE",
            f"{ALLOCATIONS}/{allocation.id}",
            {"consumed_value": 2},
            key,
        )
        job = _send_chunked(
            port,
            "POST",
            f"/api/v1/jobs/{job_id}/release",
            {"consumed": {"gpu_hours": 2}},
            key,
        )

    for status, body in (released, job):
        assert status == 411, body
        assert body["error"] == "length_required"
        assert "Content-Length" in body["message"]
    assert_books_unchanged(before)
    stored = Allocation.objects.get(id=allocation.id)
    assert stored.status == AllocationStatus.ACTIVE
    assert stored.allocated_value == Decimal("10")
