"""Per-key write throttle counted in PostgreSQL (quotas/access/throttling.py)."""

import threading

import pytest
from django.db import connection, connections
from rest_framework.test import APIClient

from quotas.access.throttling import count_write
from quotas.models import ApiKey, Quota
from tests.helpers import QUOTAS, client_for_role, org_body

# A window of about 31 years: no window boundary falls inside a test.
PERIOD = 10**9


def _client(role: str = "admin") -> APIClient:
    return client_for_role(role, name=f"throttle {role}", raise_request_exception=False)


def _create(client: APIClient, entity_id: str):
    return client.post(QUOTAS, org_body(entity_id, 10), format="json")


def _assert_rate_limited(response):
    assert response.status_code == 429, response.content
    body = response.json()
    assert body["error"] == "rate_limited"
    assert body["error"] != "resource_exhausted"
    assert body["message"]
    retry_after = int(response["Retry-After"])
    assert 1 <= retry_after <= 60
    # The body repeats the header as an integer, for clients that read only it.
    assert body["retry_after"] == retry_after


def test_the_throttle_is_on_by_default_in_settings(settings):
    assert settings.API_WRITE_RATE == (6000, 60)
    assert settings.REST_FRAMEWORK["DEFAULT_THROTTLE_CLASSES"] == [
        "quotas.access.throttling.ApiKeyWriteThrottle"
    ]


def test_writes_past_the_limit_answer_429_rate_limited(db, settings):
    settings.API_WRITE_RATE = "3/min"
    client = _client()

    for number in range(3):
        assert _create(client, f"org-{number}").status_code == 201

    _assert_rate_limited(_create(client, "org-over"))
    assert not Quota.objects.filter(entity_id="org-over").exists()
    assert Quota.objects.count() == 3


def test_every_write_method_counts(db, settings, tree):
    settings.API_WRITE_RATE = "3/min"
    org, _, user = tree
    client = _client()

    assert (
        client.patch(f"{QUOTAS}/{org.id}", {"limit_value": 90}, format="json")
    ).status_code == 200
    assert (
        client.put(f"{QUOTAS}/{org.id}", {"limit_value": 95}, format="json")
    ).status_code == 200
    assert client.delete(f"{QUOTAS}/{user.id}").status_code == 204

    _assert_rate_limited(
        client.patch(f"{QUOTAS}/{org.id}", {"limit_value": 1}, format="json")
    )
    org.refresh_from_db()
    assert org.limit_value == 95


def test_reads_are_never_throttled(db, settings, tree):
    settings.API_WRITE_RATE = "1/min"
    org, _, _ = tree
    client = _client()
    assert _create(client, "org-a").status_code == 201
    _assert_rate_limited(_create(client, "org-b"))

    for _ in range(5):
        assert client.get(QUOTAS).status_code == 200
        assert client.get(f"{QUOTAS}/{org.id}").status_code == 200
        assert client.get(f"{QUOTAS}/{org.id}/usage").status_code == 200


def test_the_limit_is_per_key_and_keys_are_independent(db, settings):
    settings.API_WRITE_RATE = "2/min"
    first, second = _client(), _client()

    assert _create(first, "first-1").status_code == 201
    assert _create(first, "first-2").status_code == 201
    _assert_rate_limited(_create(first, "first-3"))

    assert _create(second, "second-1").status_code == 201
    assert _create(second, "second-2").status_code == 201
    _assert_rate_limited(_create(second, "second-3"))
    _assert_rate_limited(_create(first, "first-4"))


def test_refused_writes_are_not_counted(db, settings):
    settings.API_WRITE_RATE = "1/min"
    viewer = _client("viewer")
    for number in range(3):
        assert _create(viewer, f"viewer-{number}").status_code == 403


def test_off_disables_the_throttle(db, settings):
    settings.API_WRITE_RATE = None
    client = _client()
    for number in range(5):
        assert _create(client, f"org-{number}").status_code == 201
    key = ApiKey.objects.get(name="throttle admin")
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rate_limits WHERE key_id = %s", [key.pk])
        assert cursor.fetchone()[0] == 0


def test_past_windows_are_deleted_by_the_next_write(db):
    key_id = 10**15
    with connection.cursor() as cursor:
        cursor.execute(
            "INSERT INTO rate_limits (key_id, window_start, count) "
            "VALUES (%s, 0, 7), (%s, 60, 9)",
            [key_id, key_id],
        )
    count, remaining = count_write(key_id, 60)
    assert count == 1
    assert 0 < remaining <= 60
    with connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM rate_limits WHERE key_id = %s", [key_id])
        assert cursor.fetchone()[0] == 1


@pytest.mark.django_db(transaction=True)
def test_the_count_is_shared_by_separate_database_connections():
    """Two threads, each with its own connection (as two worker processes would
    have), share one counter: together they get exactly the limit."""
    key_id = 10**15 + 1
    per_thread = 25
    counts = []
    errors = []
    barrier = threading.Barrier(2)

    def work():
        try:
            barrier.wait()
            for _ in range(per_thread):
                counts.append(count_write(key_id, PERIOD)[0])
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    # Each call saw a distinct count: no increment was lost between connections.
    assert sorted(counts) == list(range(1, 2 * per_thread + 1))
    with connection.cursor() as cursor:
        cursor.execute("DELETE FROM rate_limits WHERE key_id = %s", [key_id])
