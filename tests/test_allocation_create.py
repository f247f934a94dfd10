"""POST /api/v1/allocations: all-or-nothing along the path leaf → root, burst and
overcommit caps, soft-limit warnings, idempotent replay, leases and input rules
(DESIGN §3 Allocation, §5).

Every refused request also shows that nothing changed: no quota row, no allocation
row and no history row differs from before the request.
"""

import json
from datetime import timedelta
from decimal import Decimal
from uuid import uuid4

import pytest
from django.utils.dateparse import parse_datetime

from allocations.models import Allocation, AllocationStatus, UsageHistory
from quotas.models import EntityType, Quota, ResourceType
from tests.factories import QuotaFactory
from tests.helpers import (
    ALLOCATIONS,
    LEVEL_FIELDS,
    allocate,
    allocation_body,
    assert_books_unchanged,
    assert_error,
    assert_invalid,
    books,
    database_now,
    exact,
    set_fields,
    used_of,
)

BUILTIN_SLUGS = [
    "concurrent_gpus",
    "cpu_hours",
    "concurrent_gpus",
    "memory_gb",
    "storage_gb",
]
ALLOCATION_FIELDS = {
    "id",
    "quota_id",
    "entity_type",
    "entity_id",
    "job_id",
    "resource_type",
    "allocated_value",
    "status",
    "allocated_at",
    "released_at",
    "expires_at",
    "is_burst",
    "version",
    "metadata",
    # Budgets (DESIGN §3a): 0 and null on a concurrent resource.
    "consumed_value",
    "rate",
}


def _assert_exact_books() -> None:
    """P2: every quota's ``used`` is the sum of the active allocations in its
    subtree."""
    quotas = {quota.id: quota for quota in Quota.objects.all()}
    expected = dict.fromkeys(quotas, Decimal("0"))
    for allocation in Allocation.objects.filter(status=AllocationStatus.ACTIVE):
        quota_id = allocation.quota_id
        while quota_id is not None:
            expected[quota_id] += allocation.allocated_value
            quota_id = quotas[quota_id].parent_id
    assert {quota_id: quota.used for quota_id, quota in quotas.items()} == expected


# --- A grant -------------------------------------------------------------------------


def test_it_answers_201_with_every_allocation_field(scheduler_client, tree):
    org, team, user = tree
    job_id = str(uuid4())

    response = allocate(scheduler_client, job_id=job_id, requested_value="12.5")

    assert response.status_code == 201
    body = exact(response)
    assert set(body) == ALLOCATION_FIELDS | {"warnings", "levels"}
    stored = Allocation.objects.get()
    assert body["id"] == str(stored.id)
    assert body["quota_id"] == str(user.id)
    assert body["entity_type"] == "user"
    assert body["entity_id"] == "alice"
    assert body["job_id"] == job_id
    assert body["resource_type"] == "concurrent_gpus"
    assert body["allocated_value"] == Decimal("12.5")
    assert body["status"] == "active"
    assert parse_datetime(body["allocated_at"]) == stored.allocated_at
    assert body["allocated_at"].endswith("Z")
    assert body["released_at"] is None
    assert body["expires_at"] is None
    assert body["is_burst"] is False
    assert body["version"] == 1
    assert body["metadata"] == {}
    assert body["warnings"] == []
    assert stored.status == AllocationStatus.ACTIVE
    assert stored.allocated_value == Decimal("12.5")
    assert str(stored.job_id) == job_id


def test_it_lists_every_level_leaf_first_with_its_state_after_the_grant(
    scheduler_client, tree
):
    org, team, user = tree

    body = exact(allocate(scheduler_client, requested_value="12.5"))

    assert [set(level) for level in body["levels"]] == [LEVEL_FIELDS] * 3
    assert body["levels"] == [
        {
            "quota_id": str(user.id),
            "entity_type": "user",
            "entity_id": "alice",
            "cap": 30,
            "used": Decimal("12.5"),
            "available": Decimal("17.5"),
            "allowed": True,
        },
        {
            "quota_id": str(team.id),
            "entity_type": "team",
            "entity_id": "research",
            "cap": 60,
            "used": Decimal("12.5"),
            "available": Decimal("47.5"),
            "allowed": True,
        },
        {
            "quota_id": str(org.id),
            "entity_type": "organization",
            "entity_id": "acme",
            "cap": 100,
            "used": Decimal("12.5"),
            "available": Decimal("87.5"),
            "allowed": True,
        },
    ]


def test_it_charges_the_amount_to_every_level_of_the_path(scheduler_client, tree):
    org, team, user = tree

    allocate(scheduler_client, requested_value="7.25")
    allocate(scheduler_client, requested_value="0.0001")

    assert used_of(user, team, org) == [Decimal("7.2501")] * 3
    _assert_exact_books()


def test_it_charges_only_the_levels_above_an_allocation_made_on_the_team(
    scheduler_client, tree
):
    org, team, user = tree

    response = allocate(
        scheduler_client, entity_type="team", entity_id="research", requested_value=5
    )

    assert response.status_code == 201
    assert [level["quota_id"] for level in response.json()["levels"]] == [
        str(team.id),
        str(org.id),
    ]
    assert used_of(user, team, org) == [0, 5, 5]
    _assert_exact_books()


def test_it_writes_one_allocate_history_row_with_the_entity_identity(
    scheduler_client, tree
):
    org, team, user = tree
    job_id = str(uuid4())

    body = allocate(
        scheduler_client, job_id=job_id, requested_value=4, metadata={"queue": "a100"}
    ).json()

    row = UsageHistory.objects.get()
    assert row.operation == "allocate"
    assert str(row.allocation_id) == body["id"]
    assert row.quota_id == user.id
    assert row.entity_type == "user"
    assert row.entity_id == "alice"
    assert row.resource_type == "concurrent_gpus"
    assert row.allocated_value == 4
    assert str(row.job_id) == job_id
    assert row.metadata == {"queue": "a100"}


def test_it_grants_up_to_the_cap_exactly_and_not_a_unit_more(scheduler_client, tree):
    org, team, user = tree

    assert allocate(scheduler_client, requested_value="29.9999").status_code == 201
    assert allocate(scheduler_client, requested_value="0.0001").status_code == 201
    before = books()
    refused = allocate(scheduler_client, requested_value="0.0001")

    body = assert_error(refused, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(user.id)
    assert_books_unchanged(before)
    assert used_of(user, team, org) == [30, 30, 30]


# --- All or nothing ------------------------------------------------------------------


def test_it_refuses_when_the_org_is_full_and_names_it(scheduler_client, tree):
    org, team, user = tree
    # 80 held directly on the organization: alice and her team still have room.
    allocate(
        scheduler_client,
        entity_type="organization",
        entity_id="acme",
        requested_value=80,
    )
    before = books()

    response = allocate(scheduler_client, requested_value=25)

    body = assert_error(response, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(org.id)
    assert Decimal(str(body["requested"])) == 25
    assert Decimal(str(body["available"])) == 20
    assert "organization acme" in body["message"]
    assert "25" in body["message"]
    assert "20" in body["message"]
    assert_books_unchanged(before)
    assert used_of(user, team, org) == [0, 0, 80]
    assert Allocation.objects.filter(entity_id="alice").count() == 0
    assert UsageHistory.objects.filter(entity_id="alice").count() == 0


def test_it_refuses_when_the_team_is_full_and_leaves_the_user_uncharged(
    scheduler_client, tree
):
    org, team, user = tree
    allocate(
        scheduler_client, entity_type="team", entity_id="research", requested_value=50
    )
    before = books()

    response = allocate(scheduler_client, requested_value=11)

    body = assert_error(response, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(team.id)
    assert Decimal(str(body["available"])) == 10
    assert "team research" in body["message"]
    assert_books_unchanged(before)
    assert used_of(user, team, org) == [0, 50, 50]


def test_it_names_the_leaf_when_every_level_refuses(scheduler_client, tree):
    org, team, user = tree
    before = books()

    response = allocate(scheduler_client, requested_value=500)

    body = assert_error(response, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(user.id)
    assert "user alice" in body["message"]
    assert_books_unchanged(before)


def test_a_refused_job_can_be_granted_once_there_is_room(scheduler_client, tree):
    org, team, user = tree
    job_id = str(uuid4())
    assert (
        allocate(scheduler_client, job_id=job_id, requested_value=31).status_code == 429
    )

    response = allocate(scheduler_client, job_id=job_id, requested_value=30)

    assert response.status_code == 201
    assert used_of(user, team, org) == [30, 30, 30]


# --- Burst and overcommit ------------------------------------------------------------


def test_it_bursts_above_the_effective_limit_up_to_the_burst_limit(
    scheduler_client, tree
):
    org, team, user = tree
    set_fields(user, burst_limit=Decimal("40"))

    response = allocate(scheduler_client, requested_value=40, allow_burst=True)

    assert response.status_code == 201
    body = exact(response)
    assert body["is_burst"] is True
    assert body["levels"][0]["cap"] == 40
    assert Allocation.objects.get().is_burst is True
    assert used_of(user, team, org) == [40, 40, 40]


def test_it_refuses_past_the_burst_limit(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, burst_limit=Decimal("40"))
    before = books()

    response = allocate(scheduler_client, requested_value="40.0001", allow_burst=True)

    body = assert_error(response, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(user.id)
    assert_books_unchanged(before)


def test_it_refuses_to_burst_without_allow_burst(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, burst_limit=Decimal("40"))
    before = books()

    response = allocate(scheduler_client, requested_value=35)

    body = assert_error(response, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(user.id)
    assert Decimal(str(body["available"])) == 30
    assert_books_unchanged(before)


def test_the_burst_cap_is_the_burst_limit_times_the_overcommit_ratio(
    scheduler_client, tree
):
    org, team, user = tree
    set_fields(team, limit_value=Decimal("100"))
    set_fields(user, burst_limit=Decimal("40"), overcommit_ratio=Decimal("1.5"))

    granted = allocate(scheduler_client, requested_value=60, allow_burst=True)
    before = books()
    refused = allocate(scheduler_client, requested_value="0.0001", allow_burst=True)

    assert granted.status_code == 201
    assert exact(granted)["levels"][0]["cap"] == 60
    assert exact(granted)["is_burst"] is True
    body = assert_error(refused, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(user.id)
    assert_books_unchanged(before)


def test_a_level_without_a_burst_limit_caps_at_its_effective_limit_even_when_bursting(
    scheduler_client, tree
):
    org, team, user = tree
    # Alice may burst to 100, her team has no burst limit: 60 stays its cap.
    set_fields(user, burst_limit=Decimal("100"))
    before = books()

    response = allocate(scheduler_client, requested_value=61, allow_burst=True)

    body = assert_error(response, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(team.id)
    assert "team research" in body["message"]
    assert_books_unchanged(before)
    assert (
        allocate(scheduler_client, requested_value=60, allow_burst=True).status_code
        == 201
    )


def test_it_is_a_burst_when_any_level_ends_above_its_effective_limit(
    scheduler_client, tree
):
    org, team, user = tree
    set_fields(team, burst_limit=Decimal("80"))
    allocate(
        scheduler_client, entity_type="team", entity_id="research", requested_value=40
    )

    # Alice stays within her own 30; her team ends at 65, above its 60.
    response = allocate(scheduler_client, requested_value=25, allow_burst=True)

    assert response.status_code == 201
    assert response.json()["is_burst"] is True


def test_it_is_not_a_burst_when_every_level_stays_within_its_effective_limit(
    scheduler_client, tree
):
    org, team, user = tree
    set_fields(user, burst_limit=Decimal("40"))

    response = allocate(scheduler_client, requested_value=30, allow_burst=True)

    assert response.status_code == 201
    assert response.json()["is_burst"] is False
    assert Allocation.objects.get().is_burst is False


def test_the_overcommit_ratio_multiplies_the_cap(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, overcommit_ratio=Decimal("1.5"))

    granted = allocate(scheduler_client, requested_value=45)
    before = books()
    refused = allocate(scheduler_client, requested_value="0.0001")

    assert granted.status_code == 201
    assert exact(granted)["levels"][0]["cap"] == 45
    # Within the effective limit: overcommit is not a burst.
    assert exact(granted)["is_burst"] is False
    body = assert_error(refused, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(user.id)
    assert_books_unchanged(before)


# --- Soft limits ---------------------------------------------------------------------


def test_crossing_a_soft_limit_warns_but_grants(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, soft_limit=Decimal("20"))

    response = allocate(scheduler_client, requested_value=25)

    assert response.status_code == 201
    warnings = response.json()["warnings"]
    assert len(warnings) == 1
    assert "alice" in warnings[0]
    assert used_of(user, team, org) == [25, 25, 25]


def test_it_does_not_warn_at_or_below_the_soft_limit(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, soft_limit=Decimal("20"))

    response = allocate(scheduler_client, requested_value=20)

    assert response.status_code == 201
    assert response.json()["warnings"] == []


def test_it_warns_for_every_level_above_its_soft_limit(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, soft_limit=Decimal("10"))
    set_fields(org, soft_limit=Decimal("15"))

    response = allocate(scheduler_client, requested_value=20)

    assert response.status_code == 201
    warnings = response.json()["warnings"]
    assert len(warnings) == 2
    assert "alice" in warnings[0]
    assert "acme" in warnings[1]


# --- Idempotency ---------------------------------------------------------------------


def test_a_replay_answers_200_with_the_same_allocation_and_charges_nothing(
    scheduler_client, tree
):
    org, team, user = tree
    request = allocation_body(requested_value=10, metadata={"try": 1})
    first = scheduler_client.post(ALLOCATIONS, request, format="json")
    before = books()

    again = scheduler_client.post(ALLOCATIONS, request, format="json")

    assert first.status_code == 201
    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    replayed = {key: again.json()[key] for key in ALLOCATION_FIELDS}
    assert replayed == {key: first.json()[key] for key in ALLOCATION_FIELDS}
    assert_books_unchanged(before)
    assert used_of(user, team, org) == [10, 10, 10]
    assert UsageHistory.objects.filter(operation="allocate").count() == 1


def test_a_replay_carries_the_levels_and_warnings_of_the_path(scheduler_client, tree):
    org, team, user = tree
    set_fields(user, soft_limit=Decimal("5"))
    request = allocation_body(requested_value=10)
    first = scheduler_client.post(ALLOCATIONS, request, format="json")

    again = scheduler_client.post(ALLOCATIONS, request, format="json")

    assert again.status_code == 200
    assert [level["quota_id"] for level in again.json()["levels"]] == [
        str(user.id),
        str(team.id),
        str(org.id),
    ]
    # Nothing happened in between: the replay answers exactly what the grant did.
    assert exact(again) == exact(first)
    assert used_of(user, team, org) == [10, 10, 10]
    assert UsageHistory.objects.filter(operation="allocate").count() == 1


def test_a_replay_spelling_the_same_amount_differently_is_still_a_replay(
    scheduler_client, tree
):
    job_id = str(uuid4())
    first = allocate(scheduler_client, job_id=job_id, requested_value=10)
    before = books()

    again = allocate(scheduler_client, job_id=job_id, requested_value="10.000")

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert_books_unchanged(before)


def test_a_replay_is_answered_even_when_a_second_grant_would_not_fit(
    scheduler_client, tree
):
    job_id = str(uuid4())
    first = allocate(scheduler_client, job_id=job_id, requested_value=25)
    before = books()

    again = allocate(scheduler_client, job_id=job_id, requested_value=25)

    assert again.status_code == 200
    assert again.json()["id"] == first.json()["id"]
    assert_books_unchanged(before)


def test_the_same_job_with_a_different_value_is_a_conflict(scheduler_client, tree):
    org, team, user = tree
    job_id = str(uuid4())
    first = allocate(scheduler_client, job_id=job_id, requested_value=10)
    before = books()

    response = allocate(scheduler_client, job_id=job_id, requested_value=11)

    body = assert_error(response, 409, "conflict")
    assert body["allocation_id"] == first.json()["id"]
    assert_books_unchanged(before)
    assert used_of(user, team, org) == [10, 10, 10]


def test_the_same_job_for_a_different_entity_is_a_conflict(scheduler_client, tree):
    job_id = str(uuid4())
    allocate(scheduler_client, job_id=job_id, requested_value=10)
    before = books()

    response = allocate(
        scheduler_client,
        job_id=job_id,
        entity_type="team",
        entity_id="research",
        requested_value=10,
    )

    assert_error(response, 409, "conflict")
    assert_books_unchanged(before)


def test_a_released_job_may_allocate_again(scheduler_client, tree):
    org, team, user = tree
    job_id = str(uuid4())
    first = allocate(scheduler_client, job_id=job_id, requested_value=10)
    released = scheduler_client.delete(f"{ALLOCATIONS}/{first.json()['id']}")

    again = allocate(scheduler_client, job_id=job_id, requested_value=10)

    assert released.status_code == 200
    assert again.status_code == 201
    assert again.json()["id"] != first.json()["id"]
    assert used_of(user, team, org) == [10, 10, 10]
    assert Allocation.objects.filter(job_id=job_id).count() == 2
    _assert_exact_books()


def test_the_same_job_on_another_resource_type_is_a_separate_allocation(
    scheduler_client, tree
):
    org, team, user = tree
    cpu = QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="alice",
        resource_type=ResourceType.objects.get(slug="cpu_hours"),
        limit_value=Decimal("50"),
    )
    job_id = str(uuid4())

    gpu = allocate(scheduler_client, job_id=job_id, requested_value=10)
    cpu_grant = allocate(
        scheduler_client, job_id=job_id, resource_type="cpu_hours", requested_value=10
    )

    assert gpu.status_code == 201
    assert cpu_grant.status_code == 201
    assert cpu_grant.json()["id"] != gpu.json()["id"]
    assert cpu_grant.json()["quota_id"] == str(cpu.id)
    assert used_of(user, cpu) == [10, 10]
    assert Allocation.objects.filter(job_id=job_id, status="active").count() == 2


# --- Leases and metadata -------------------------------------------------------------


def test_ttl_seconds_sets_expires_at_that_long_after_allocated_at(
    scheduler_client, tree
):
    response = allocate(scheduler_client, ttl_seconds=3600)

    assert response.status_code == 201
    body = response.json()
    allocated_at = parse_datetime(body["allocated_at"])
    expires_at = parse_datetime(body["expires_at"])
    assert abs(expires_at - allocated_at - timedelta(seconds=3600)) < timedelta(
        seconds=1
    )
    stored = Allocation.objects.get()
    assert stored.expires_at == expires_at
    # The database clock, not the app server's, sets both.
    assert abs(allocated_at - database_now()) < timedelta(seconds=5)


@pytest.mark.parametrize("ttl", ["absent", None])
def test_without_ttl_expires_at_is_null(scheduler_client, tree, ttl):
    request = allocation_body()
    if ttl != "absent":
        request["ttl_seconds"] = ttl

    response = scheduler_client.post(ALLOCATIONS, request, format="json")

    assert response.status_code == 201
    assert response.json()["expires_at"] is None
    assert Allocation.objects.get().expires_at is None


@pytest.mark.parametrize("ttl", [0, -1, "abc", 1.5, 366 * 24 * 3600 + 1])
def test_it_refuses_a_bad_ttl(scheduler_client, tree, ttl):
    before = books()

    response = allocate(scheduler_client, ttl_seconds=ttl)

    assert_invalid(response, "ttl_seconds")
    assert_books_unchanged(before)


def test_metadata_is_stored_and_returned(scheduler_client, tree):
    metadata = {"queue": "a100", "tags": ["nightly", "eval"], "nested": {"n": 1.5}}

    response = allocate(scheduler_client, metadata=metadata)

    assert response.status_code == 201
    assert exact(response)["metadata"] == {
        "queue": "a100",
        "tags": ["nightly", "eval"],
        "nested": {"n": Decimal("1.5")},
    }
    assert Allocation.objects.get().metadata == metadata


def test_metadata_numbers_stay_numbers(scheduler_client, tree):
    text = json.dumps(allocation_body()).replace(
        '"requested_value": 10',
        '"requested_value": 10, "metadata": {"ratio": 0.1, "big": 12345678901234567890,'
        ' "sci": 2.5e3, "neg": -7.25}',
    )

    response = scheduler_client.post(
        ALLOCATIONS, data=text, content_type="application/json"
    )

    assert response.status_code == 201
    expected = {"ratio": 0.1, "big": 12345678901234567890, "sci": 2500.0, "neg": -7.25}
    assert response.json()["metadata"] == expected
    assert Allocation.objects.get().metadata == expected
    assert UsageHistory.objects.get().metadata == expected


def test_it_refuses_metadata_numbers_too_large_to_store(scheduler_client, tree):
    text = json.dumps(allocation_body()).replace(
        '"requested_value": 10', '"requested_value": 10, "metadata": {"n": 1e400}'
    )
    before = books()

    response = scheduler_client.post(
        ALLOCATIONS, data=text, content_type="application/json"
    )

    assert_invalid(response, "metadata")
    assert_books_unchanged(before)


@pytest.mark.parametrize("depth", [100, 500, 900, 5000])
def test_deeply_nested_metadata_is_never_a_server_error(scheduler_client, tree, depth):
    nested = '{"a": ' * depth + "1" + "}" * depth
    text = json.dumps(allocation_body()).replace(
        '"requested_value": 10', f'"requested_value": 10, "metadata": {nested}'
    )
    before = books()

    response = scheduler_client.post(
        ALLOCATIONS, data=text, content_type="application/json"
    )

    assert response.status_code in {201, 400}
    if response.status_code == 400:
        assert_error(response, 400, "invalid_input")
        assert_books_unchanged(before)
    else:
        assert Allocation.objects.get().metadata == json.loads(nested)


@pytest.mark.parametrize(
    "metadata",
    [{"note": "a\u0000b"}, {"a\u0000": 1}, {"tags": [{"deep": "\u0000"}]}],
)
def test_metadata_with_a_nul_character_is_refused_not_a_server_error(
    scheduler_client, tree, metadata
):
    before = books()

    response = allocate(scheduler_client, metadata=metadata)

    assert_invalid(response, "metadata")
    assert_books_unchanged(before)


def test_an_entity_id_with_a_nul_character_is_refused(scheduler_client, tree):
    before = books()

    response = allocate(scheduler_client, entity_id="ali\u0000ce")

    assert_invalid(response, "entity_id")
    assert_books_unchanged(before)


def test_metadata_within_16_kib_is_accepted(scheduler_client, tree):
    response = allocate(scheduler_client, metadata={"blob": "x" * 16000})

    assert response.status_code == 201


def test_it_refuses_metadata_over_16_kib(scheduler_client, tree):
    before = books()

    response = allocate(scheduler_client, metadata={"blob": "x" * (16 * 1024)})

    assert_invalid(response, "metadata")
    assert_books_unchanged(before)


@pytest.mark.parametrize("metadata", [["a", "b"], "text", 5, True])
def test_it_refuses_metadata_that_is_not_an_object(scheduler_client, tree, metadata):
    before = books()

    response = allocate(scheduler_client, metadata=metadata)

    assert_invalid(response, "metadata")
    assert_books_unchanged(before)


def test_null_metadata_means_none_as_rust_clients_send_it(scheduler_client, tree):
    response = allocate(scheduler_client, metadata=None)

    assert response.status_code == 201
    assert response.json()["metadata"] == {}


@pytest.mark.parametrize("text", [r"\ud800", r"a\udc00b"])
def test_it_refuses_a_lone_surrogate_in_metadata(scheduler_client, tree, text):
    before = books()

    response = scheduler_client.post(
        "/api/v1/allocations",
        data=(
            '{"entity_type":"user","entity_id":"alice","resource_type":"concurrent_gpus",'
            f'"requested_value":1,"job_id":"{uuid4()}","metadata":{{"k":"{text}"}}}}'
        ),
        content_type="application/json",
    )

    assert_invalid(response, "metadata")
    assert_books_unchanged(before)


# --- Input rules ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "value",
    [
        0,
        "0",
        "0.0000",
        -1,
        "-1",
        "-0.0001",
        "1.00001",
        Decimal("1.00001"),
        "NaN",
        "Infinity",
        "-Infinity",
        "1e3",
        "abc",
        "",
        " ",
        "١٢",
        True,
        None,
        [1],
        {"value": 1},
        "12345678901234567",
    ],
)
def test_it_refuses_a_bad_requested_value(scheduler_client, tree, value):
    before = books()

    response = allocate(scheduler_client, requested_value=value)

    assert_invalid(response, "requested_value")
    assert_books_unchanged(before)


def test_it_refuses_a_missing_requested_value(scheduler_client, tree):
    request = allocation_body()
    del request["requested_value"]
    before = books()

    response = scheduler_client.post(ALLOCATIONS, request, format="json")

    assert_invalid(response, "requested_value")
    assert_books_unchanged(before)


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
def test_it_refuses_non_finite_json_numbers(scheduler_client, tree, literal):
    text = json.dumps(allocation_body()).replace(
        '"requested_value": 10', f'"requested_value": {literal}'
    )
    assert literal in text
    before = books()

    response = scheduler_client.post(
        ALLOCATIONS, data=text, content_type="application/json"
    )

    assert_error(response, 400, "invalid_input")
    assert_books_unchanged(before)


def test_it_takes_a_numeric_string_with_four_places(scheduler_client, tree):
    response = allocate(scheduler_client, requested_value="1.2345")

    assert response.status_code == 201
    assert exact(response)["allocated_value"] == Decimal("1.2345")
    assert Allocation.objects.get().allocated_value == Decimal("1.2345")


@pytest.mark.parametrize("job_id", ["not-a-uuid", 12345, 0, "", None, ["x"], "1234"])
def test_it_refuses_a_job_id_that_is_not_a_uuid_string(scheduler_client, tree, job_id):
    before = books()

    response = allocate(scheduler_client, job_id=job_id)

    assert_invalid(response, "job_id")
    assert_books_unchanged(before)


@pytest.mark.parametrize(
    "field", ["job_id", "entity_type", "entity_id", "resource_type"]
)
def test_it_refuses_a_request_missing_a_required_field(scheduler_client, tree, field):
    request = allocation_body()
    del request[field]
    before = books()

    response = scheduler_client.post(ALLOCATIONS, request, format="json")

    assert_invalid(response, field)
    assert_books_unchanged(before)


@pytest.mark.parametrize("entity_type", ["project", "", None, 1])
def test_it_refuses_an_unknown_entity_type(scheduler_client, tree, entity_type):
    before = books()

    response = allocate(scheduler_client, entity_type=entity_type)

    assert_invalid(response, "entity_type")
    assert_books_unchanged(before)


@pytest.mark.parametrize("entity_id", ["", "x" * 256, None])
def test_it_refuses_a_bad_entity_id(scheduler_client, tree, entity_id):
    before = books()

    response = allocate(scheduler_client, entity_id=entity_id)

    assert_invalid(response, "entity_id")
    assert_books_unchanged(before)


def test_an_entity_id_of_255_characters_is_looked_up(scheduler_client, tree):
    long_name = "x" * 255
    QuotaFactory(entity_id=long_name)

    response = allocate(
        scheduler_client, entity_type="organization", entity_id=long_name
    )

    assert response.status_code == 201
    assert response.json()["entity_id"] == long_name


def test_it_refuses_an_unknown_resource_type_listing_the_valid_slugs(
    scheduler_client, tree
):
    before = books()

    response = allocate(scheduler_client, resource_type="tpu_hours")

    body = assert_invalid(response, "resource_type")
    for slug in BUILTIN_SLUGS:
        assert slug in body["message"]
    assert_books_unchanged(before)


def test_it_answers_404_when_the_entity_has_no_quota(scheduler_client, tree):
    before = books()

    response = allocate(scheduler_client, entity_id="bob")

    body = assert_error(response, 404, "not_found")
    assert "bob" in body["message"]
    assert_books_unchanged(before)


def test_it_answers_404_when_the_entity_has_no_quota_of_that_resource_type(
    scheduler_client, tree
):
    before = books()

    response = allocate(scheduler_client, resource_type="cpu_hours")

    assert_error(response, 404, "not_found")
    assert_books_unchanged(before)


@pytest.mark.parametrize("entity_type", ["USER", "User", " user "])
def test_the_entity_type_is_matched_case_insensitively(
    scheduler_client, tree, entity_type
):
    org, team, user = tree

    response = allocate(scheduler_client, entity_type=entity_type)

    assert response.status_code == 201
    assert response.json()["entity_type"] == "user"
    assert response.json()["quota_id"] == str(user.id)


def test_the_resource_type_is_matched_case_insensitively(scheduler_client, tree):
    response = allocate(scheduler_client, resource_type="Concurrent_GPUs")

    assert response.status_code == 201
    assert response.json()["resource_type"] == "concurrent_gpus"


def test_unknown_request_fields_are_ignored(scheduler_client, tree):
    response = allocate(scheduler_client, priority="high", force=True)

    assert response.status_code == 201


# --- Forced lowering -----------------------------------------------------------------


def test_a_forced_lowering_below_usage_refuses_new_allocations(
    scheduler_client, admin_client_api, tree
):
    org, team, user = tree
    running = allocate(scheduler_client, requested_value=20).json()
    lowered = admin_client_api.patch(
        f"/api/v1/quotas/{user.id}?force=true", {"limit_value": 10}, format="json"
    )
    assert lowered.status_code == 200
    before = books()

    response = allocate(scheduler_client, requested_value=1)

    body = assert_error(response, 429, "resource_exhausted")
    assert body["blocking_quota_id"] == str(user.id)
    assert Decimal(str(body["available"])) == 0
    assert_books_unchanged(before)
    # The running job keeps its quota.
    assert Allocation.objects.get(id=running["id"]).status == AllocationStatus.ACTIVE
    assert used_of(user, team, org) == [20, 20, 20]


# --- Permissions ---------------------------------------------------------------------


def test_a_viewer_may_not_allocate(viewer_client, tree):
    before = books()

    response = allocate(viewer_client)

    assert_error(response, 403, "forbidden")
    assert_books_unchanged(before)


def test_an_admin_may_allocate(admin_client_api, tree):
    assert allocate(admin_client_api).status_code == 201


def test_it_needs_an_api_key(api_client, tree):
    before = books()

    response = allocate(api_client)

    assert_error(response, 401, "unauthorized")
    assert_books_unchanged(before)


def test_it_refuses_an_invalid_api_key(api_client, tree):
    api_client.credentials(HTTP_AUTHORIZATION="Api-Key hq_nope_nope")
    before = books()

    response = allocate(api_client)

    assert_error(response, 401, "unauthorized")
    assert_books_unchanged(before)
