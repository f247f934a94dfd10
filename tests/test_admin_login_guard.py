"""The admin login refuses a username + address after repeated wrong passwords
(django-axes, counted in the database so across worker processes)."""

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.test import Client

LOGIN = "/admin/login/"
PASSWORD = "correct-horse-battery-1"


@pytest.fixture
def staff_user(db):
    return get_user_model().objects.create_superuser(
        "root", "root@example.com", PASSWORD
    )


def _login(password: str, username: str = "root", ip: str = "10.0.0.1"):
    client = Client(REMOTE_ADDR=ip)
    response = client.post(
        LOGIN, {"username": username, "password": password, "next": "/admin/"}
    )
    return client, response


def _logged_in(client: Client) -> bool:
    return client.get("/admin/").status_code == 200


def test_the_limit_is_five_failures_for_fifteen_minutes(settings):
    assert settings.AXES_FAILURE_LIMIT == 5
    assert settings.AXES_COOLOFF_TIME.total_seconds() == 15 * 60
    assert settings.AXES_LOCKOUT_PARAMETERS == [["username", "ip_address"]]
    assert settings.AXES_RESET_ON_SUCCESS is True
    assert settings.AUTHENTICATION_BACKENDS[0] == "axes.backends.AxesStandaloneBackend"


def test_the_right_password_logs_in(staff_user):
    client, response = _login(PASSWORD)
    assert response.status_code == 302
    assert _logged_in(client)


def test_after_five_wrong_passwords_the_right_one_is_refused(staff_user):
    for _ in range(5):
        client, response = _login("wrong")
        assert not _logged_in(client)

    client, response = _login(PASSWORD)

    assert response.status_code == 429
    assert not _logged_in(client)


def test_the_lockout_is_per_username_and_address(staff_user):
    other = get_user_model().objects.create_superuser(
        "other", "other@example.com", PASSWORD
    )
    for _ in range(5):
        _login("wrong")

    # Same user from another address, and another user from the same address.
    client, response = _login(PASSWORD, ip="10.0.0.2")
    assert response.status_code == 302
    assert _logged_in(client)
    client, response = _login(PASSWORD, username=other.username)
    assert response.status_code == 302
    assert _logged_in(client)


def test_a_success_resets_the_failure_count(staff_user):
    for _ in range(4):
        _login("wrong")
    client, response = _login(PASSWORD)
    assert response.status_code == 302
    assert not AccessAttempt.objects.filter(username="root").exists()

    for _ in range(4):
        _login("wrong")
    client, response = _login(PASSWORD)
    assert response.status_code == 302
    assert _logged_in(client)
