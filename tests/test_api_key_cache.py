"""Verified API keys are remembered for API_KEY_CACHE_SECONDS per process."""

import pytest
from django.utils import timezone

from quotas.access import authentication
from quotas.access.keys import api_key_create
from quotas.models import ApiKey
from tests.helpers import QUOTAS, client_with_key

pytestmark = pytest.mark.django_db


@pytest.fixture
def cached(settings):
    settings.API_KEY_CACHE_SECONDS = 60
    authentication.forget_verified_keys()
    yield
    authentication.forget_verified_keys()


def test_a_verified_key_is_not_looked_up_again(cached, django_assert_num_queries):
    _, raw_key = api_key_create(name="k", role="viewer")
    client = client_with_key(raw_key)
    assert client.get(QUOTAS).status_code == 200

    with django_assert_num_queries(1):  # the list itself, no key lookup
        assert client.get(QUOTAS).status_code == 200


def test_expiry_is_still_checked_on_every_request(cached):
    key, raw_key = api_key_create(name="k", role="viewer")
    client = client_with_key(raw_key)
    assert client.get(QUOTAS).status_code == 200
    # The cached row carries expires_at: move it into the past in that copy too.
    cached_key = next(iter(authentication._verified.values()))[1]
    cached_key.expires_at = timezone.now()

    response = client.get(QUOTAS)

    assert response.status_code == 401
    assert response.json()["error"] == "unauthorized"


def test_a_revocation_applies_once_the_cache_is_cleared(cached):
    key, raw_key = api_key_create(name="k", role="viewer")
    client = client_with_key(raw_key)
    assert client.get(QUOTAS).status_code == 200
    ApiKey.objects.filter(id=key.id).update(revoked_at=timezone.now())
    authentication.forget_verified_keys()

    assert client.get(QUOTAS).status_code == 401


def test_unknown_keys_are_never_cached(cached):
    client = client_with_key("hq_abcdef123456_notarealsecretatall")

    assert client.get(QUOTAS).status_code == 401
    assert authentication._verified == {}
