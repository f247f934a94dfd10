"""POST /api/v1/allocations/check: the allocate predicate evaluated at every level of
the path without writing anything, and always in agreement with allocate itself
(DESIGN §3 Check, §5, §9 "/check using a different rule than allocate").
"""

from decimal import Decimal

import pytest

from quotas.models import Quota
from tests.budgets import tree as budget_tree
from tests.helpers import (
    LEVEL_FIELDS,
    allocate,
    allocation_body,
    assert_books_unchanged,
    assert_error,
    books,
    exact,
    set_fields,
)

CHECK = "/api/v1/allocations/check"
CHECK_FIELDS = {
    "allowed",
    "available",
    "requested",
    "reason",
    "warnings",
    "blocking_quota_id",
    "levels",
}


def _request(**overrides) -> dict:
    """A check request: an allocate request without the job id (unless given)."""
    body = allocation_body()
    del body["job_id"]
    body.update(overrides)
    return body


def _check(client, **overrides):
    return client.post(CHECK, _request(**overrides), format="json")


# --- Allowed -------------------------------------------------------------------------


def test_it_allows_what_fits_and_reports_every_level_leaf_first(scheduler_client, tree):
    org, team, user = tree
    allocate(
        scheduler_client, entity_type="team", entity_id="research", requested_value=5
    )

    response = _check(scheduler_client, requested_value="12.5")

    assert response.status_code == 200
    body = exact(response)
    assert set(body) == CHECK_FIELDS
    assert body["allowed"] is True
    assert body["requested"] == Decimal("12.5")
    assert body["reason"] is None
    assert body["blocking_quota_id"] is None
    assert body["warnings"] == []
    assert [set(level) for level in body["levels"]] == [LEVEL_FIELDS] * 3
    assert body["levels"] == [
        {
            "quota_id": str(user.id),
            "entity_type": "user",
            "entity_id": "alice",
            "cap": 30,
            "used": 0,
            "available": 30,
            "allowed": True,
        },
        {
            "quota_id": str(team.id),
            "entity_type": "team",
            "entity_id": "research",
            "cap": 60,
            "used": 5,
            "available": 55,
            "allowed": True,
        },
        {
            "quota_id": str(org.id),
            "entity_type": "organization",
            "entity_id": "acme",
            "cap": 100,
            "used": 5,
            "available": 95,
            "allowed": True,
        },
    ]


def test_available_is_the_headroom_of_the_tightest_level(scheduler_client, tree):
    org, team, user = tree
    allocate(
        scheduler_client, entity_type="team", entity_id="research", requested_value=45
    )

    body = exact(_check(scheduler_client, requested_value=1))

    # Alice has 30 of her own, her team only 15 left.
    assert body["allowed"] is True
    assert body["available"] == 15


def test_it_allows_exactly_up_to_the_cap(scheduler_client, tree):
    body = exact(_check(scheduler_client, requested_value=30))

    assert body["allowed"] is True
    assert body["levels"][0]["allowed"] is True


# --- Refused -------------------------------------------------------------------------


def test_it_refuses_past_the_leaf_and_names_it(scheduler_client, tree):
    org, team, user = tree

    response = _check(scheduler_client, requested_value="30.0001")

    assert response.status_code == 200
    body = exact(response)
    assert body["allowed"] is False
    assert body["requested"] == Decimal("30.0001")
    assert body["available"] == 30
    assert body["blocking_quota_id"] == str(user.id)
    assert "user alice" in body["reason"]
    assert [level["allowed"] for level in body["levels"]] == [False, True, True]


def test_it_names_the_team_when_only_the_team_refuses(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, burst_limit=Decimal("100"))

    body = exact(_check(scheduler_client, requested_value=61, allow_burst=True))

    assert body["allowed"] is False
    assert body["blocking_quota_id"] == str(team.id)
    assert "team research" in body["reason"]
    assert [level["allowed"] for level in body["levels"]] == [True, False, True]


def test_it_names_the_org_when_only_the_org_refuses(scheduler_client, tree):
    org, team, user = tree
    allocate(
        scheduler_client,
        entity_type="organization",
        entity_id="acme",
        requested_value=80,
    )

    body = exact(_check(scheduler_client, requested_value=25))

    assert body["allowed"] is False
    assert body["blocking_quota_id"] == str(org.id)
    assert "organization acme" in body["reason"]
    assert "25" in body["reason"]
    assert "20" in body["reason"]
    assert body["available"] == 20
    assert [level["allowed"] for level in body["levels"]] == [True, True, False]


def test_it_names_the_first_refusing_level_leaf_first(scheduler_client, tree):
    org, team, user = tree

    body = exact(_check(scheduler_client, requested_value=500))

    assert body["allowed"] is False
    assert body["blocking_quota_id"] == str(user.id)
    assert [level["allowed"] for level in body["levels"]] == [False, False, False]


def test_a_forced_lowering_below_usage_shows_as_refused(
    scheduler_client, admin_client_api, tree
):
    org, team, user = tree
    allocate(scheduler_client, requested_value=20)
    lowered = admin_client_api.patch(
        f"/api/v1/quotas/{user.id}?force=true", {"limit_value": 10}, format="json"
    )
    assert lowered.status_code == 200

    body = exact(_check(scheduler_client, requested_value=1))

    assert body["allowed"] is False
    assert body["blocking_quota_id"] == str(user.id)
    assert body["available"] == 0
    assert body["levels"][0]["available"] == 0


# --- Burst, overcommit, soft limits --------------------------------------------------


def test_bursting_raises_the_cap_only_when_asked(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, burst_limit=Decimal("40"))

    plain = exact(_check(scheduler_client, requested_value=35))
    burst = exact(_check(scheduler_client, requested_value=35, allow_burst=True))

    assert plain["allowed"] is False
    assert plain["levels"][0]["cap"] == 30
    assert burst["allowed"] is True
    assert burst["levels"][0]["cap"] == 40


def test_the_cap_is_multiplied_by_the_overcommit_ratio(scheduler_client, tree):
    org, team, user = tree
    set_fields(team, limit_value=Decimal("100"))
    set_fields(user, burst_limit=Decimal("40"), overcommit_ratio=Decimal("1.5"))

    plain = exact(_check(scheduler_client, requested_value=45))
    burst = exact(_check(scheduler_client, requested_value=60, allow_burst=True))
    past = exact(_check(scheduler_client, requested_value="60.0001", allow_burst=True))

    assert plain["allowed"] is True
    assert plain["levels"][0]["cap"] == 45
    assert burst["allowed"] is True
    assert burst["levels"][0]["cap"] == 60
    assert past["allowed"] is False
    assert past["blocking_quota_id"] == str(user.id)


def test_it_warns_when_the_allocation_would_cross_a_soft_limit(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, soft_limit=Decimal("20"))

    crossing = exact(_check(scheduler_client, requested_value=25))
    within = exact(_check(scheduler_client, requested_value=20))

    assert crossing["allowed"] is True
    assert len(crossing["warnings"]) == 1
    assert "alice" in crossing["warnings"][0]
    assert within["warnings"] == []


def test_its_warnings_match_the_allocation_it_predicts(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, soft_limit=Decimal("10"))
    set_fields(org, soft_limit=Decimal("15"))

    check = exact(_check(scheduler_client, requested_value=20))
    granted = exact(allocate(scheduler_client, requested_value=20))

    assert len(check["warnings"]) == 2
    assert check["warnings"] == granted["warnings"]


# --- It writes nothing ---------------------------------------------------------------


def test_it_writes_nothing(scheduler_client, tree):
    allocate(scheduler_client, requested_value=10)
    before = books()

    allowed = _check(scheduler_client, requested_value=5)
    refused = _check(scheduler_client, requested_value=50)

    assert allowed.json()["allowed"] is True
    assert refused.json()["allowed"] is False
    assert_books_unchanged(before)


def test_checking_twice_gives_the_same_answer(scheduler_client, tree):
    first = exact(_check(scheduler_client, requested_value=29))
    second = exact(_check(scheduler_client, requested_value=29))

    assert first == second


# --- Agreement with allocate ---------------------------------------------------------

AMOUNTS = [
    "0.0001",
    "14.9999",
    "15",
    "15.0001",
    "19.9999",
    "20",
    "20.0001",
    "29.9999",
    "30",
    "30.0001",
    "35",
    "50",
    "50.0001",
]


@pytest.fixture(params=["user-bound", "org-bound"])
def busy_tree(request, scheduler_client, tree):
    """The tree with bursting limits and usage already on it.

    user-bound: alice holds 10 (her headroom 20, 30 bursting), the org holds 50.
    org-bound: alice holds 10, the org holds 75 (its headroom 15, 35 bursting).
    """
    org, team, user = tree
    set_fields(user, burst_limit=Decimal("40"))
    set_fields(org, burst_limit=Decimal("120"))
    set_fields(team, overcommit_ratio=Decimal("1.5"))
    org_usage = 50 if request.param == "user-bound" else 75
    assert allocate(scheduler_client, requested_value=10).status_code == 201
    assert (
        allocate(
            scheduler_client,
            entity_type="organization",
            entity_id="acme",
            requested_value=org_usage,
        ).status_code
        == 201
    )
    return tree


@pytest.mark.parametrize("allow_burst", [False, True])
@pytest.mark.parametrize("amount", AMOUNTS)
def test_the_check_agrees_with_allocate(
    scheduler_client, busy_tree, amount, allow_burst
):
    before = books()

    check = exact(
        _check(scheduler_client, requested_value=amount, allow_burst=allow_burst)
    )
    assert_books_unchanged(before)
    allocated = allocate(
        scheduler_client, requested_value=amount, allow_burst=allow_burst
    )

    if check["allowed"]:
        assert allocated.status_code == 201
        granted = exact(allocated)
        assert granted["warnings"] == check["warnings"]
        assert [level["quota_id"] for level in granted["levels"]] == [
            level["quota_id"] for level in check["levels"]
        ]
        assert [level["used"] for level in granted["levels"]] == [
            level["used"] + Decimal(amount) for level in check["levels"]
        ]
    else:
        refused = assert_error(allocated, 429, "resource_exhausted")
        assert refused["blocking_quota_id"] == check["blocking_quota_id"]
        assert refused["message"] == check["reason"]
        assert refused["levels"] == check["levels"]
        assert_books_unchanged(before)


def test_the_boundaries_fall_where_the_caps_say(scheduler_client, busy_tree):
    """The agreement above is not vacuous: both answers occur, with and without
    bursting."""
    org, team, user = busy_tree
    bound = 20 if Quota.objects.get(id=org.id).used == 60 else 15
    burst_bound = 30

    def allowed(amount, allow_burst=False):
        body = _check(scheduler_client, requested_value=amount, allow_burst=allow_burst)
        return body.json()["allowed"]

    assert allowed(str(bound)) is True
    assert allowed(str(Decimal(bound) + Decimal("0.0001"))) is False
    assert allowed(str(burst_bound), allow_burst=True) is True
    assert allowed("30.0001", allow_burst=True) is False


# --- Input rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [0, "0", -1, "-0.5", "1.00001", "NaN", "Infinity", "1e3", "abc", None, True],
)
def test_it_refuses_a_bad_requested_value(scheduler_client, tree, value):
    before = books()

    response = _check(scheduler_client, requested_value=value)

    body = assert_error(response, 400, "invalid_input")
    assert body["fields"]["requested_value"]
    assert_books_unchanged(before)


@pytest.mark.parametrize(
    "field", ["entity_type", "entity_id", "resource_type", "requested_value"]
)
def test_it_refuses_a_request_missing_a_required_field(scheduler_client, tree, field):
    request = _request()
    del request[field]

    response = scheduler_client.post(CHECK, request, format="json")

    body = assert_error(response, 400, "invalid_input")
    assert body["fields"][field]


def test_it_refuses_an_unknown_entity_type(scheduler_client, tree):
    body = assert_error(
        _check(scheduler_client, entity_type="project"), 400, "invalid_input"
    )
    assert body["fields"]["entity_type"]


def test_it_refuses_an_unknown_resource_type_listing_the_valid_slugs(
    scheduler_client, tree
):
    response = _check(scheduler_client, resource_type="tpu_hours")

    body = assert_error(response, 400, "invalid_input")
    for slug in [
        "concurrent_gpus",
        "cpu_hours",
        "concurrent_gpus",
        "memory_gb",
        "storage_gb",
    ]:
        assert slug in body["message"]


def test_it_answers_404_for_an_entity_without_a_quota(scheduler_client, tree):
    before = books()

    response = _check(scheduler_client, entity_id="bob")

    assert_error(response, 404, "not_found")
    assert_books_unchanged(before)


def test_the_entity_type_is_matched_case_insensitively(scheduler_client, tree):
    org, team, user = tree

    body = _check(scheduler_client, entity_type="USER").json()

    assert body["allowed"] is True
    assert body["levels"][0]["quota_id"] == str(user.id)


@pytest.mark.parametrize(
    "change",
    [
        {"rate": -1},
        {"rate": 0},
        {"rate": 2},  # concurrent_gpus is held, not consumed
        {"rate": "abc"},
        {"ttl_seconds": -5},
        {"ttl_seconds": 0},
        {"ttl_seconds": "soon"},
        {"metadata": "x"},
        {"metadata": [1]},
    ],
    ids=[
        "rate-negative",
        "rate-zero",
        "rate-concurrent",
        "rate-text",
        "ttl-negative",
        "ttl-zero",
        "ttl-text",
        "metadata-string",
        "metadata-list",
    ],
)
def test_it_refuses_what_allocate_refuses_with_the_same_answer(
    scheduler_client, tree, change
):
    before = books()

    checked = _check(scheduler_client, **change)
    allocated = allocate(scheduler_client, **change)

    assert_error(checked, 400, "invalid_input")
    assert checked.json() == allocated.json()
    assert_books_unchanged(before)


def test_it_takes_what_allocate_takes(scheduler_client, tree):
    response = _check(
        scheduler_client, ttl_seconds=60, metadata={"queue": "a100"}, rate=None
    )

    assert response.status_code == 200, response.content
    assert response.json()["allowed"] is True


def test_it_takes_a_rate_on_a_time_based_resource(scheduler_client, db):
    budget_tree(names=("alice", "research", "acme"))

    response = _check(scheduler_client, resource_type="gpu_hours", rate=8)

    assert response.status_code == 200, response.content
    assert response.json()["allowed"] is True


def test_a_job_id_in_the_request_is_ignored(scheduler_client, tree):
    response = _check(scheduler_client, job_id="not even a uuid")

    assert response.status_code == 200
    assert response.json()["allowed"] is True


# --- Permissions ---------------------------------------------------------------------


def test_a_viewer_may_not_check(viewer_client, tree):
    assert_error(_check(viewer_client), 403, "forbidden")


def test_an_admin_may_check(admin_client_api, tree):
    assert _check(admin_client_api).status_code == 200


def test_it_needs_an_api_key(api_client, tree):
    assert_error(_check(api_client), 401, "unauthorized")
