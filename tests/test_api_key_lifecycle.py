"""API key lifecycle (DESIGN §6): list, revoke, last use, and keys in the admin."""

import io
import re
from datetime import timedelta

import pytest
from django.core.management import CommandError, call_command
from django.utils import timezone

from quotas.access import authentication
from quotas.access.keys import api_key_create, api_key_revoke
from quotas.models import ApiKey
from tests.helpers import QUOTAS, client_with_key

pytestmark = pytest.mark.django_db

KEY_FORMAT = re.compile(r"hq_[0-9a-f]{12}_[A-Za-z0-9_-]{43}")


def _run(*args: str) -> str:
    stdout = io.StringIO()
    call_command(*args, stdout=stdout)
    return stdout.getvalue()


@pytest.fixture
def three_keys():
    """An active, a revoked and an expired key, with their raw secrets."""
    active, active_raw = api_key_create(name="active-one", role="scheduler")
    revoked, revoked_raw = api_key_create(name="revoked-one", role="viewer")
    api_key_revoke(key_id_or_prefix=revoked.prefix)
    expired, expired_raw = api_key_create(
        name="expired-one",
        role="admin",
        expires_at=timezone.now() + timedelta(days=1),
    )
    ApiKey.objects.filter(id=expired.id).update(
        expires_at=timezone.now() - timedelta(minutes=1)
    )
    return {
        "active": (active, active_raw),
        "revoked": (revoked, revoked_raw),
        "expired": (expired, expired_raw),
    }


def _assert_no_secrets(output: str, keys) -> None:
    for key, raw in keys.values():
        key.refresh_from_db()
        assert raw not in output
        assert raw.split("_", 2)[2] not in output
        assert key.key_hash not in output


# list_api_keys


def test_list_shows_only_active_keys_by_default(three_keys):
    output = _run("list_api_keys")

    lines = output.splitlines()
    assert lines[0].split() == [
        "prefix",
        "name",
        "role",
        "scope",
        "created",
        "expires",
        "last",
        "used",
        "state",
    ]
    assert three_keys["active"][0].prefix in output
    assert "active-one" in output
    assert "scheduler" in output
    assert three_keys["revoked"][0].prefix not in output
    assert three_keys["expired"][0].prefix not in output
    assert "revoked-one" not in output
    assert "expired-one" not in output
    _assert_no_secrets(output, three_keys)


def test_list_all_shows_every_key_with_its_state(three_keys):
    output = _run("list_api_keys", "--all")

    rows = {line.split()[0]: line for line in output.splitlines()[2:]}
    assert rows[three_keys["active"][0].prefix].endswith("active")
    assert rows[three_keys["revoked"][0].prefix].endswith("revoked")
    assert rows[three_keys["expired"][0].prefix].endswith("expired")
    _assert_no_secrets(output, three_keys)


def test_list_shows_last_use(three_keys):
    key, raw = three_keys["active"]
    assert client_with_key(raw).get(QUOTAS).status_code == 200
    key.refresh_from_db()

    output = _run("list_api_keys")

    assert f"{key.last_used_at:%Y-%m-%dT%H:%M:%SZ}" in output


def test_list_without_keys_says_so(db):
    assert _run("list_api_keys").strip() == "No active API keys."


# revoke_api_key


def test_revoke_by_prefix_refuses_the_key(db):
    key, raw = api_key_create(name="sched", role="scheduler")
    assert client_with_key(raw).get(QUOTAS).status_code == 200

    output = _run("revoke_api_key", key.prefix)

    assert len(output.splitlines()) == 1
    assert key.prefix in output
    assert "sched" in output
    assert raw not in output
    key.refresh_from_db()
    assert key.revoked_at is not None
    response = client_with_key(raw).get(QUOTAS)
    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_revoke_by_id(db):
    key, _ = api_key_create(name="sched", role="scheduler")

    _run("revoke_api_key", str(key.id))

    key.refresh_from_db()
    assert key.revoked_at is not None


def test_revoking_twice_is_refused(db):
    key, _ = api_key_create(name="sched", role="scheduler")
    _run("revoke_api_key", key.prefix)
    key.refresh_from_db()
    first = key.revoked_at

    with pytest.raises(CommandError, match="already revoked") as exc_info:
        _run("revoke_api_key", key.prefix)

    assert exc_info.value.returncode == 1
    key.refresh_from_db()
    assert key.revoked_at == first


def test_an_unknown_prefix_is_refused(db):
    with pytest.raises(CommandError, match="No API key") as exc_info:
        _run("revoke_api_key", "deadbeef0000")

    assert exc_info.value.returncode == 1


def test_revoke_forgets_the_key_in_this_process_cache(settings):
    settings.API_KEY_CACHE_SECONDS = 60
    authentication.forget_verified_keys()
    try:
        key, raw = api_key_create(name="sched", role="scheduler")
        client = client_with_key(raw)
        assert client.get(QUOTAS).status_code == 200
        assert authentication._verified

        api_key_revoke(key_id_or_prefix=key.prefix)

        assert client.get(QUOTAS).status_code == 401
    finally:
        authentication.forget_verified_keys()


# last_used_at


def test_last_used_at_is_set_on_first_use_and_not_rewritten_each_request(
    django_assert_num_queries,
):
    key, raw = api_key_create(name="sched", role="scheduler")
    assert key.last_used_at is None
    client = client_with_key(raw)

    assert client.get(QUOTAS).status_code == 200
    key.refresh_from_db()
    first = key.last_used_at
    assert first is not None

    # Within the minute: the key lookup and the list, no write.
    with django_assert_num_queries(2):
        assert client.get(QUOTAS).status_code == 200
    key.refresh_from_db()
    assert key.last_used_at == first


def test_last_used_at_is_refreshed_after_a_minute(db):
    key, raw = api_key_create(name="sched", role="scheduler")
    old = timezone.now() - timedelta(minutes=5)
    ApiKey.objects.filter(id=key.id).update(last_used_at=old)

    assert client_with_key(raw).get(QUOTAS).status_code == 200

    key.refresh_from_db()
    assert key.last_used_at > old + timedelta(minutes=4)


def test_a_refused_key_records_no_use(db):
    key, raw = api_key_create(name="sched", role="scheduler")
    api_key_revoke(key_id_or_prefix=key.prefix)

    assert client_with_key(raw).get(QUOTAS).status_code == 401

    key.refresh_from_db()
    assert key.last_used_at is None


# Admin


def test_admin_creates_a_key_and_shows_the_secret_once(staff_client):
    response = staff_client.post(
        "/admin/quotas/apikey/add/",
        {"name": "from-admin", "role": "scheduler", "scope": "", "expires_at": ""},
    )

    assert response.status_code == 200
    assert "no-store" in response["Cache-Control"]
    page = response.content.decode()
    (raw,) = set(KEY_FORMAT.findall(page))
    key = ApiKey.objects.get(name="from-admin")
    assert key.role == "scheduler"
    assert raw.split("_", 2)[1] == key.prefix
    assert key.key_hash == ApiKey.hash_key(raw)
    assert key.key_hash not in page
    # It authenticates.
    assert client_with_key(raw).get(QUOTAS).status_code == 200
    # And is never shown again: not on the list, the change page or in a message.
    for url in (
        "/admin/quotas/apikey/",
        f"/admin/quotas/apikey/{key.pk}/change/",
        "/admin/",
    ):
        later = staff_client.get(url).content.decode()
        assert raw not in later
        assert raw.split("_", 2)[2] not in later
        assert key.key_hash not in later


def test_admin_refusal_by_the_service_is_a_form_error(staff_client):
    response = staff_client.post(
        "/admin/quotas/apikey/add/",
        {"name": "   ", "role": "viewer", "scope": "", "expires_at": ""},
    )

    assert response.status_code == 200
    assert response.context["adminform"].form.errors
    assert ApiKey.objects.count() == 0


def test_admin_change_page_is_read_only_but_for_the_name_and_write_rate(staff_client):
    key, _ = api_key_create(name="sched", role="scheduler")

    response = staff_client.get(f"/admin/quotas/apikey/{key.pk}/change/")

    assert response.status_code == 200
    form = response.context["adminform"].form
    assert set(form.fields) == {"name", "write_rate", "revoke"}
    assert key.key_hash not in response.content.decode()


def test_admin_revoke_checkbox_revokes_through_the_service(staff_client):
    key, raw = api_key_create(name="sched", role="scheduler")

    response = staff_client.post(
        f"/admin/quotas/apikey/{key.pk}/change/", {"name": "sched", "revoke": "on"}
    )

    assert response.status_code == 302
    key.refresh_from_db()
    assert key.revoked_at is not None
    assert client_with_key(raw).get(QUOTAS).status_code == 401


def test_admin_revoke_action(staff_client):
    first, first_raw = api_key_create(name="one", role="viewer")
    second, second_raw = api_key_create(name="two", role="viewer")
    kept, kept_raw = api_key_create(name="kept", role="viewer")

    response = staff_client.post(
        "/admin/quotas/apikey/",
        {
            "action": "revoke_selected",
            "_selected_action": [str(first.pk), str(second.pk)],
        },
        follow=True,
    )

    assert response.status_code == 200
    assert "Revoked 2 API key(s)." in response.content.decode()
    assert client_with_key(first_raw).get(QUOTAS).status_code == 401
    assert client_with_key(second_raw).get(QUOTAS).status_code == 401
    assert client_with_key(kept_raw).get(QUOTAS).status_code == 200
    kept.refresh_from_db()
    assert kept.revoked_at is None


def test_admin_sets_and_validates_a_keys_write_rate(staff_client):
    key, _ = api_key_create(name="sched", role="scheduler")
    url = f"/admin/quotas/apikey/{key.pk}/change/"

    refused = staff_client.post(url, {"name": "sched", "write_rate": "lots"})
    assert refused.status_code == 200
    assert "Expected a rate" in refused.content.decode()
    key.refresh_from_db()
    assert key.write_rate == ""

    saved = staff_client.post(url, {"name": "sched", "write_rate": " 2000/S "})
    assert saved.status_code == 302
    key.refresh_from_db()
    assert key.write_rate == "2000/s"
