import importlib
from decimal import Decimal

import pytest
from rest_framework.test import APIClient

from quotas.access.keys import api_key_create
from quotas.models import EntityType, ResourceType
from tests.factories import QuotaFactory


def _client_for(role: str) -> APIClient:
    _, raw_key = api_key_create(name=f"test {role}", role=role)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


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
    """org (limit 100) → team (60) → user (30), on gpu_hours."""
    org = QuotaFactory(entity_id="acme", limit_value=Decimal("100"))
    team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="research",
        parent=org,
        limit_value=Decimal("60"),
    )
    user = QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="alice",
        parent=team,
        limit_value=Decimal("30"),
    )
    return org, team, user


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
