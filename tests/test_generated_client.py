"""A client generated from the live schema by a third-party generator works as is.

The app runs in pytest-django's live server (a real HTTP server thread on
127.0.0.1); the schema is fetched from it, openapi-python-client (pinned in
requirements-dev.txt) generates a Python package from it, and that package runs a
scheduler's flow over HTTP: build a tree, check, allocate, be refused, replay,
release, release again. Every answer is asserted on the generated models' typed
attributes, error bodies included: the schema declares each member they carry.
"""

import importlib
import json
import subprocess
import sys
import urllib.request
import uuid

import pytest

from quotas.access.keys import api_key_create

pytest.importorskip(
    "openapi_python_client",
    reason="openapi-python-client is not installed (pip install -r "
    "requirements-dev.txt): no generator to build the client with",
)

# The live server runs in another thread: it must see committed rows.
pytestmark = pytest.mark.django_db(transaction=True)

PACKAGE = "horizon_quota_client"
# No post-generation hooks (they would run ruff on the generated code).
GENERATOR_CONFIG = f"package_name_override: {PACKAGE}\npost_hooks: []\n"


@pytest.fixture
def generated(live_server, tmp_path):
    """The client package generated from the running app's schema, imported."""
    with urllib.request.urlopen(f"{live_server.url}/api/schema/?format=json") as reply:
        assert reply.status == 200
        document = json.load(reply)
    schema_file = tmp_path / "openapi.json"
    schema_file.write_text(json.dumps(document))
    config = tmp_path / "config.yaml"
    config.write_text(GENERATOR_CONFIG)
    output = tmp_path / PACKAGE

    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "openapi_python_client",
            "generate",
            "--path",
            str(schema_file),
            "--output-path",
            str(output),
            "--meta",
            "none",
            "--config",
            str(config),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    # The generator understood the whole schema: no construct was skipped.
    assert "warning" not in (run.stdout + run.stderr).lower(), run.stdout + run.stderr

    sys.path.insert(0, str(tmp_path))
    importlib.invalidate_caches()
    try:
        yield importlib.import_module(PACKAGE)
    finally:
        sys.path.remove(str(tmp_path))
        for name in [name for name in sys.modules if name.split(".")[0] == PACKAGE]:
            del sys.modules[name]


def _modules(package):
    """The generated operations and models used below."""
    names = {
        "quota_create": "api.quotas.api_v1_quotas_create",
        "check": "api.allocations.api_v1_allocations_check_create",
        "allocate": "api.allocations.api_v1_allocations_create",
        "release": "api.allocations.api_v1_allocations_destroy",
        "models": "models",
    }
    return {
        key: importlib.import_module(f"{package.__name__}.{name}")
        for key, name in names.items()
    }


@pytest.fixture
def connect(generated, live_server):
    """Make a generated ``AuthenticatedClient`` with a new key of a role; each is
    closed at the end (an open keep-alive connection would keep the server's
    request thread, and its database connection, alive)."""
    clients = []

    def connect(role: str, scope: str | None = None):
        _, raw_key = api_key_create(name=f"generated {role}", role=role, scope=scope)
        # Sends `Authorization: Bearer <key>`, which the service accepts.
        client = generated.AuthenticatedClient(base_url=live_server.url, token=raw_key)
        clients.append(client.__enter__())
        return client

    yield connect
    for client in clients:
        client.__exit__(None, None, None)


def test_the_scheduler_flow_with_the_generated_client(generated, connect):
    api = _modules(generated)
    models = api["models"]
    admin = connect("admin")

    # The tree, created with an admin key: org (100) → team (60) → user (30).
    def create(entity_type, entity_id, limit, parent=None):
        body = models.QuotaCreateRequest(
            entity_type=entity_type,
            entity_id=entity_id,
            resource_type="gpu_hours",
            limit_value=limit,
            parent_id=parent.id if parent else None,
        )
        response = api["quota_create"].sync_detailed(client=admin, body=body)
        assert response.status_code == 201, response.content
        assert isinstance(response.parsed, models.Quota)
        return response.parsed

    org = create(models.EntityTypeEnum.ORGANIZATION, "acme", 100)
    team = create(models.EntityTypeEnum.TEAM, "acme-research", 60, org)
    user = create(models.EntityTypeEnum.USER, "alice", 30, team)
    assert isinstance(user.id, uuid.UUID)
    assert user.parent_id == team.id
    assert user.available == 30

    scheduler = connect("scheduler")

    # Check: it fits at every level.
    check = api["check"].sync_detailed(
        client=scheduler,
        body=models.AllocationCheckRequest(
            entity_type=models.EntityTypeEnum.USER,
            entity_id="alice",
            resource_type="gpu_hours",
            requested_value=20,
        ),
    )
    assert check.status_code == 200
    result = check.parsed
    assert isinstance(result, models.CheckResult)
    assert result.allowed is True
    assert result.available == 30
    assert result.blocking_quota_id is None
    assert all(isinstance(level, models.Level) for level in result.levels)
    assert [level.quota_id for level in result.levels] == [user.id, team.id, org.id]

    # Allocate.
    def allocate(job_id, amount):
        return api["allocate"].sync_detailed(
            client=scheduler,
            body=models.AllocationCreateRequest(
                entity_type=models.EntityTypeEnum.USER,
                entity_id="alice",
                resource_type="gpu_hours",
                requested_value=amount,
                job_id=job_id,
                ttl_seconds=3600,
            ),
        )

    job = uuid.uuid4()
    granted = allocate(job, 20)
    assert granted.status_code == 201
    grant = granted.parsed
    assert isinstance(grant, models.AllocationGrant)
    assert grant.status == models.StatusEnum.ACTIVE
    assert grant.job_id == job
    assert grant.quota_id == user.id
    assert grant.allocated_value == 20
    assert grant.expires_at > grant.allocated_at
    assert grant.warnings == []
    assert [(level.quota_id, level.used) for level in grant.levels] == [
        (user.id, 20),
        (team.id, 20),
        (org.id, 20),
    ]

    # Over-allocate: the typed 429, naming the user's quota.
    refused = allocate(uuid.uuid4(), 20)
    assert refused.status_code == 429
    refusal = refused.parsed
    assert isinstance(refusal, models.QuotaExceededError)
    assert refusal.error == models.ErrorEnum.RESOURCE_EXHAUSTED
    assert refusal.blocking_quota_id == user.id
    assert refusal.requested == 20
    assert refusal.available == 10
    assert all(isinstance(level, models.Level) for level in refusal.levels)
    assert [level.allowed for level in refusal.levels] == [False, True, True]
    assert refusal.levels[0].available == 10
    assert str(user.id) in refusal.message

    # Replay: 200 with the same allocation.
    replayed = allocate(job, 20)
    assert replayed.status_code == 200
    assert isinstance(replayed.parsed, models.AllocationGrant)
    assert replayed.parsed.id == grant.id
    assert replayed.parsed.version == grant.version

    # Release, then release again: the typed 409 already_released.
    released = api["release"].sync_detailed(allocation_id=grant.id, client=scheduler)
    assert released.status_code == 200
    assert isinstance(released.parsed, models.Allocation)
    assert released.parsed.status == models.StatusEnum.RELEASED
    assert released.parsed.released_at is not None

    again = api["release"].sync_detailed(allocation_id=grant.id, client=scheduler)
    assert again.status_code == 409
    assert isinstance(again.parsed, models.Error)
    assert again.parsed.error == models.ErrorEnum.ALREADY_RELEASED
    assert str(grant.id) in again.parsed.message


def test_outside_levels_and_the_rate_limit_are_typed(generated, connect, settings):
    api = _modules(generated)
    models = api["models"]
    admin = connect("admin")
    parent = None
    for entity_type, entity_id, limit in [
        (models.EntityTypeEnum.ORGANIZATION, "acme", 10),
        (models.EntityTypeEnum.TEAM, "acme-research", 10),
        (models.EntityTypeEnum.USER, "alice", 10),
    ]:
        response = api["quota_create"].sync_detailed(
            client=admin,
            body=models.QuotaCreateRequest(
                entity_type=entity_type,
                entity_id=entity_id,
                resource_type="gpu_hours",
                limit_value=limit,
                parent_id=parent,
            ),
        )
        assert response.status_code == 201, response.content
        parent = response.parsed.id
    user_id = parent

    # A key scoped to the team sees the organization only as an outside level.
    scoped = connect("scheduler", "team:acme-research")
    check = api["check"].sync_detailed(
        client=scoped,
        body=models.AllocationCheckRequest(
            entity_type=models.EntityTypeEnum.USER,
            entity_id="alice",
            resource_type="gpu_hours",
            requested_value=4,
        ),
    )
    assert check.status_code == 200
    leaf, team, above = check.parsed.levels
    assert isinstance(leaf, models.Level) and leaf.quota_id == user_id
    assert isinstance(team, models.Level) and team.entity_id == "acme-research"
    assert isinstance(above, models.OutsideLevel)
    assert above.scope == models.ScopeEnum.OUTSIDE
    assert above.allowed is True

    # One write per window of about 31 years for every key, from now on
    # (a scheduler key's default is its role's own rate).
    settings.API_SCHEDULER_WRITE_RATE = f"1/{10**9}s"
    scheduler = connect("scheduler")
    body = models.AllocationCreateRequest(
        entity_type=models.EntityTypeEnum.USER,
        entity_id="alice",
        resource_type="gpu_hours",
        requested_value=1,
        job_id=uuid.uuid4(),
    )
    assert api["allocate"].sync_detailed(client=scheduler, body=body).status_code == 201
    throttled = api["allocate"].sync_detailed(client=scheduler, body=body)
    assert throttled.status_code == 429
    assert isinstance(throttled.parsed, models.RateLimitedError)
    assert throttled.parsed.error == models.ErrorEnum.RATE_LIMITED
    assert throttled.parsed.retry_after == int(throttled.headers["Retry-After"])
    assert throttled.parsed.retry_after >= 1
