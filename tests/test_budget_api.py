"""Budgets over HTTP (DESIGN §3a, §5): the quota's budget fields, consume, settle on
release, usage statistics with the projection, and the closed periods."""

import uuid

import pytest
from rest_framework.test import APIClient

from allocations.models import Allocation
from quotas.access.keys import api_key_create
from quotas.models import Quota
from tests.budgets import advance, set_clock

pytestmark = pytest.mark.django_db

QUOTAS = "/api/v1/quotas"
ALLOCATIONS = "/api/v1/allocations"


@pytest.fixture(autouse=True)
def clock(settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    set_clock("2026-11-10T00:00:00Z")


def _client(role="admin", scope=None):
    _, raw_key = api_key_create(name=role, role=role, scope=scope)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Api-Key {raw_key}")
    return client


@pytest.fixture
def admin():
    return _client()


@pytest.fixture
def budget(admin):
    """acme (10,000 GPU-hours a month, 1,000 carried over at most) → research."""
    org = admin.post(
        QUOTAS,
        {
            "entity_type": "organization",
            "entity_id": "acme",
            "resource_type": "gpu_hours",
            "limit_value": 10000,
            "period": "Month",
            "carryover_limit": 1000,
        },
        format="json",
    )
    assert org.status_code == 201, org.json()
    team = admin.post(
        QUOTAS,
        {
            "entity_type": "team",
            "entity_id": "research",
            "parent_id": org.json()["id"],
            "resource_type": "gpu_hours",
            "limit_value": 4000,
            "period": "month",
        },
        format="json",
    )
    assert team.status_code == 201, team.json()
    return org.json(), team.json()


def _allocate(client, value=32, **extra):
    response = client.post(
        ALLOCATIONS,
        {
            "entity_type": "team",
            "entity_id": "research",
            "resource_type": "gpu_hours",
            "job_id": str(uuid.uuid4()),
            "requested_value": value,
            **extra,
        },
        format="json",
    )
    assert response.status_code == 201, response.json()
    return response.json()


def _error(response, status, kind):
    assert response.status_code == status, response.content
    body = response.json()
    assert body["error"] == kind
    return body


def test_a_budget_quota_shows_its_period_and_books(budget):
    org, team = budget

    assert org["period"] == "month"
    assert org["carryover_limit"] == 1000
    assert org["period_start"] == "2026-11-01T00:00:00Z"
    assert org["period_end"] == "2026-12-01T00:00:00Z"
    assert (org["reserved"], org["consumed"], org["carried_over"]) == (0, 0, 0)
    assert org["used"] == 0 and org["effective_limit"] == 10000


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"resource_type": "concurrent_gpus", "period": "month"}, "period"),
        ({"resource_type": "memory_gb", "carryover_limit": 5}, "carryover_limit"),
        ({"period": "fortnight"}, "period"),
        ({"carryover_limit": 101}, "carryover_limit"),
        ({"carryover_limit": -1}, "carryover_limit"),
        ({"carryover_limit": "1.00001"}, "carryover_limit"),
    ],
)
def test_invalid_budget_settings_are_400s_that_change_nothing(admin, db, body, field):
    sent = {
        "entity_type": "organization",
        "entity_id": "x",
        "resource_type": "gpu_hours",
        "limit_value": 100,
        **body,
    }

    error = _error(admin.post(QUOTAS, sent, format="json"), 400, "invalid_input")

    assert field in error["fields"]
    assert not Quota.objects.exists()


def test_consume_charges_the_increment_and_is_idempotent(admin, budget):
    allocation = _allocate(admin, 32)
    url = f"{ALLOCATIONS}/{allocation['id']}/consume"

    first = admin.post(url, {"consumed_value": 10}, format="json")
    again = admin.post(url, {"consumed_value": "10"}, format="json")
    lower = admin.post(url, {"consumed_value": 9}, format="json")

    assert first.status_code == again.status_code == 200
    assert first.json()["consumed_value"] == 10
    assert again.json()["version"] == first.json()["version"]
    _error(lower, 400, "invalid_input")
    team = admin.get(f"{QUOTAS}/{budget[1]['id']}").json()
    assert (team["reserved"], team["consumed"], team["used"]) == (22, 10, 32)


@pytest.mark.parametrize(
    ("how", "charged"), [("query", 20), ("body", 20), ("none", 32)]
)
def test_release_settles_with_a_value_from_the_query_or_the_body(
    admin, budget, how, charged
):
    allocation = _allocate(admin, 32)
    url = f"{ALLOCATIONS}/{allocation['id']}"

    if how == "query":
        response = admin.delete(f"{url}?consumed_value=20")
    elif how == "body":
        response = admin.delete(url, {"consumed_value": 20}, format="json")
    else:
        response = admin.delete(url)

    assert response.status_code == 200, response.json()
    assert response.json()["consumed_value"] == charged
    team = admin.get(f"{QUOTAS}/{budget[1]['id']}").json()
    assert (team["reserved"], team["consumed"]) == (0, charged)
    history = admin.get(f"{QUOTAS}/{budget[1]['id']}/history").json()
    assert [row["operation"] for row in history] == ["release", "allocate"]
    assert history[0]["consumed_delta"] == charged


def test_a_rate_charges_hours_held(admin, budget):
    allocation = _allocate(admin, 32, rate=8)
    advance(hours=3)

    released = admin.delete(f"{ALLOCATIONS}/{allocation['id']}").json()

    assert allocation["rate"] == 8
    assert released["consumed_value"] == 24


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [
        ("post", "/consume", {"consumed_value": 1}),
        ("delete", "?consumed_value=1", None),
    ],
)
def test_consumption_on_a_concurrent_resource_is_a_400(admin, db, method, suffix, body):
    admin.post(
        QUOTAS,
        {
            "entity_type": "team",
            "entity_id": "t",
            "resource_type": "concurrent_gpus",
            "limit_value": 8,
        },
        format="json",
    )
    held = admin.post(
        ALLOCATIONS,
        {
            "entity_type": "team",
            "entity_id": "t",
            "resource_type": "concurrent_gpus",
            "job_id": str(uuid.uuid4()),
            "requested_value": 2,
        },
        format="json",
    ).json()

    response = getattr(admin, method)(
        f"{ALLOCATIONS}/{held['id']}{suffix}", body, format="json"
    )

    _error(response, 400, "invalid_input")
    assert Allocation.objects.get(id=held["id"]).status == "active"


def test_a_rate_on_a_concurrent_resource_is_a_400(admin, db):
    admin.post(
        QUOTAS,
        {
            "entity_type": "team",
            "entity_id": "t",
            "resource_type": "concurrent_gpus",
            "limit_value": 8,
        },
        format="json",
    )

    response = admin.post(
        ALLOCATIONS,
        {
            "entity_type": "team",
            "entity_id": "t",
            "resource_type": "concurrent_gpus",
            "job_id": str(uuid.uuid4()),
            "requested_value": 2,
            "rate": 1,
        },
        format="json",
    )

    assert "rate" in _error(response, 400, "invalid_input")["fields"]
    assert not Allocation.objects.exists()


@pytest.mark.parametrize(
    ("body", "status", "kind"),
    [
        ({}, 400, "invalid_input"),
        ({"consumed_value": -1}, 400, "invalid_input"),
        ({"consumed_value": "NaN"}, 400, "invalid_input"),
        ({"consumed_value": 1.00001}, 400, "invalid_input"),
    ],
)
def test_bad_consume_bodies_are_400s(admin, budget, body, status, kind):
    allocation = _allocate(admin, 32)

    _error(
        admin.post(f"{ALLOCATIONS}/{allocation['id']}/consume", body, format="json"),
        status,
        kind,
    )

    assert Allocation.objects.get(id=allocation["id"]).consumed_value == 0


def test_consume_of_an_unknown_or_released_allocation(admin, budget):
    allocation = _allocate(admin, 32)
    admin.delete(f"{ALLOCATIONS}/{allocation['id']}")

    _error(
        admin.post(
            f"{ALLOCATIONS}/{uuid.uuid4()}/consume",
            {"consumed_value": 1},
            format="json",
        ),
        404,
        "not_found",
    )
    _error(
        admin.post(
            f"{ALLOCATIONS}/{allocation['id']}/consume",
            {"consumed_value": 40},
            format="json",
        ),
        409,
        "already_released",
    )


def test_a_viewer_cannot_consume(admin, budget):
    allocation = _allocate(admin, 32)

    response = _client("viewer").post(
        f"{ALLOCATIONS}/{allocation['id']}/consume",
        {"consumed_value": 1},
        format="json",
    )

    _error(response, 403, "forbidden")


def test_usage_stats_project_when_the_budget_runs_out(admin, budget):
    team_id = budget[1]["id"]
    allocation = _allocate(admin, 1000)
    # 900 consumed over the 9 days since the period began: 100 a day.
    admin.post(
        f"{ALLOCATIONS}/{allocation['id']}/consume",
        {"consumed_value": 900},
        format="json",
    )

    usage = admin.get(f"{QUOTAS}/{team_id}/usage").json()

    assert (usage["reserved"], usage["consumed"], usage["carried_over"]) == (
        100,
        900,
        0,
    )
    assert usage["period"] == "month"
    assert usage["period_start"] == "2026-11-01T00:00:00Z"
    # 3,000 left at 100 a day: 30 days, after the period ends.
    assert usage["projected_exhaustion"] is None
    admin.post(
        f"{ALLOCATIONS}/{allocation['id']}/consume",
        {"consumed_value": 3600},
        format="json",
    )
    usage = admin.get(f"{QUOTAS}/{team_id}/usage").json()
    # 3,600 in 9 days is 400 a day; 400 left (used 3,600 of 4,000): one more day.
    assert usage["projected_exhaustion"] == "2026-11-11T00:00:00Z"


def test_closed_periods_are_listed_newest_first_and_scoped(admin, budget):
    org, team = budget
    allocation = _allocate(admin, 100)
    admin.delete(f"{ALLOCATIONS}/{allocation['id']}?consumed_value=100")
    for moment in ("2026-12-05T00:00:00Z", "2027-01-05T00:00:00Z"):
        set_clock(moment)
        _allocate(admin, 1)

    periods = admin.get(f"{QUOTAS}/{org['id']}/periods")
    first = admin.get(f"{QUOTAS}/{org['id']}/periods", {"limit": 1})

    assert periods.status_code == 200
    rows = periods.json()
    assert [row["period_start"] for row in rows] == [
        "2026-12-01T00:00:00Z",
        "2026-11-01T00:00:00Z",
    ]
    assert rows[1]["consumed"] == 100
    assert rows[1]["carried_forward"] == 1000  # min(1,000, 10,000 - 100)
    assert rows[0]["carried_over"] == 1000
    assert len(first.json()) == 1 and 'rel="next"' in first["Link"]
    team_key = _client("viewer", scope="team:research")
    assert team_key.get(f"{QUOTAS}/{org['id']}/periods").status_code == 404
    assert team_key.get(f"{QUOTAS}/{team['id']}/periods").status_code == 200
    _error(admin.get(f"{QUOTAS}/{uuid.uuid4()}/periods"), 404, "not_found")
