import importlib
import json
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from rest_framework.test import APIClient

from quotas.access.throttling import forget_tallies
from quotas.models import ResourceType
from tests.factories import QuotaFactory, TeamQuotaFactory, UserQuotaFactory
from tests.helpers import client_for_role


def _client_for(role: str) -> APIClient:
    return client_for_role(role, name=f"test {role}")


@pytest.fixture
def api_client() -> APIClient:
    """A client without credentials."""
    return APIClient()


@pytest.fixture
def admin_client_api(db) -> APIClient:
    return _client_for("admin")


@pytest.fixture
def scheduler_client(db) -> APIClient:
    return _client_for("scheduler")


@pytest.fixture
def viewer_client(db) -> APIClient:
    return _client_for("viewer")


@pytest.fixture
def tree(db):
    """org (limit 100) → team (60) → user (30), on concurrent_gpus."""
    org = QuotaFactory(entity_id="acme", limit_value=Decimal("100"))
    team = TeamQuotaFactory(entity_id="research", parent=org, limit_value=Decimal("60"))
    user = UserQuotaFactory(entity_id="alice", parent=team, limit_value=Decimal("30"))
    return org, team, user


@pytest.fixture
def staff(db):
    """A superuser for the Django admin."""
    return get_user_model().objects.create_superuser("root", "root@example.com", "pw")


@pytest.fixture
def staff_client(client, staff):
    """Django's test client, logged in to the admin as ``staff``."""
    client.force_login(staff)
    return client


@pytest.fixture
def schema(api_client, db) -> dict:
    """The OpenAPI document the API serves."""
    response = api_client.get("/api/schema/?format=json")
    assert response.status_code == 200
    return json.loads(response.content)


@pytest.fixture(autouse=True)
def fresh_write_tallies():
    """Each test starts with no uncounted writes and no key known over its limit
    in this process (quotas.access.throttling counts in batches)."""
    forget_tallies()
    yield
    forget_tallies()


@pytest.fixture(autouse=True)
def builtin_resource_types(request):
    """Tests with ``transaction=True`` flush every table afterwards, taking the rows
    of the data migration with them; put the built-in resource types back."""
    marker = request.node.get_closest_marker("django_db")
    names = request.fixturenames
    if marker is None and "db" not in names and "transactional_db" not in names:
        return
    transactional = "transactional_db" in names or (
        marker is not None and marker.kwargs.get("transaction", False)
    )
    request.getfixturevalue("transactional_db" if transactional else "db")
    migration = importlib.import_module("quotas.migrations.0002_builtin_resource_types")
    for slug, name, unit, kind in migration.BUILTIN:
        ResourceType.objects.get_or_create(
            slug=slug, defaults={"name": name, "unit": unit, "kind": kind}
        )
