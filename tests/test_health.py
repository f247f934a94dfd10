import pytest
from django.db import connection


def test_health_answers_ok_with_the_database_up(api_client, db):
    response = api_client.get("/health")

    assert response.status_code == 200
    assert response.json() == {"status": "ok", "database": "ok"}


@pytest.mark.django_db(transaction=True)
def test_health_answers_503_when_the_database_is_unreachable(api_client):
    original = dict(connection.settings_dict)
    connection.close()
    # Point the connection at a socket directory where no server listens: a real
    # connection failure, not a simulated one.
    connection.settings_dict["HOST"] = "/nonexistent-socket-dir"
    connection.settings_dict["PORT"] = "5999"
    try:
        response = api_client.get("/health")
    finally:
        connection.close()
        connection.settings_dict.clear()
        connection.settings_dict.update(original)

    assert response.status_code == 503
    body = response.json()
    assert body["error"] == "unavailable"
    assert body["database"] == "unreachable"
