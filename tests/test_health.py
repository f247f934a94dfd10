from contextlib import contextmanager

import pytest
from django.db import connection


@contextmanager
def _database_at(**settings):
    """The connection pointed elsewhere for the block, then back: a socket directory
    where no server listens is a real connection failure, not a simulated one."""
    original = dict(connection.settings_dict)
    connection.close()
    connection.settings_dict.update(settings)
    try:
        yield
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)


def test_health_answers_ok_with_the_database_up(api_client, db):
    response = api_client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db(transaction=True)
def test_health_answers_503_when_the_database_is_unreachable(api_client):
    with _database_at(HOST="/nonexistent-socket-dir", PORT="5999"):
        response = api_client.get("/health")

    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable"
    assert body["database"] == "unreachable"
    # /health sends no Retry-After, so its body has no retry_after either.
    assert "retry_after" not in body


@pytest.mark.django_db(transaction=True)
def test_an_api_call_answers_503_unavailable_when_the_database_is_down(
    admin_client_api,
):
    with _database_at(HOST="/nonexistent-socket-dir"):
        response = admin_client_api.get("/api/v1/quotas")

    assert response.status_code == 503
    assert response.json()["error"] == "unavailable"
    assert response["Retry-After"] == "1"
    # The body repeats the header, for clients that only see the body.
    assert response.json()["retry_after"] == 1


@pytest.mark.django_db(transaction=True)
def test_a_recently_healthy_connection_skips_the_check_but_a_broken_one_is_replaced(
    settings,
):
    settings.DATABASE_HEALTH_CHECK_DELAY = 60
    connection.ensure_connection()
    connection.close_if_unusable_or_obsolete()  # end of a healthy request
    first = connection.connection

    connection.close_if_health_check_failed()  # start of the next request
    assert connection.connection is first  # trusted: no round trip, kept

    connection.health_check_done = False
    first.close()  # the server side went away; psycopg knows it is closed
    connection.close_if_health_check_failed()
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert connection.connection is not first  # checked, closed, reconnected


@pytest.mark.django_db(transaction=True)
def test_an_old_connection_is_checked_again(settings):
    settings.DATABASE_HEALTH_CHECK_DELAY = 60
    connection.ensure_connection()
    connection.healthy_at = float("-inf")  # last seen healthy long ago
    connection.health_check_done = False

    connection.close_if_health_check_failed()

    assert connection.health_check_done
    assert connection.healthy_at > float("-inf")


@pytest.mark.django_db(transaction=True)
def test_a_lock_held_too_long_answers_409_with_retry_after(admin_client_api, settings):
    import threading

    from quotas.models import Quota
    from tests.factories import QuotaFactory

    org = QuotaFactory(limit_value=100)
    locked, release = threading.Event(), threading.Event()

    def hold_the_row():
        from django.db import transaction

        with transaction.atomic():
            Quota.objects.select_for_update().get(id=org.id)
            locked.set()
            release.wait(10)
        connection.close()

    holder = threading.Thread(target=hold_the_row)
    holder.start()
    locked.wait(10)
    try:
        with connection.cursor() as cursor:
            cursor.execute("SET lock_timeout = '200ms'")
        response = admin_client_api.patch(
            f"/api/v1/quotas/{org.id}", {"limit_value": 90}, format="json"
        )
    finally:
        release.set()
        holder.join()

    assert response.status_code == 409
    assert response.json()["error"] == "conflict"
    assert response["Retry-After"] == "1"
    assert response.json()["retry_after"] == 1
    org.refresh_from_db()
    assert org.limit_value == 100
