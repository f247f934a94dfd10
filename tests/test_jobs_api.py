"""Jobs over HTTP (DESIGN §3b, §5, §6): several resources admitted at once, all or
nothing; checked without writing; read, released (settling budgets, §3a) and renewed
as one job.

Every refused request also shows that it changed nothing: no quota, allocation or
history row differs from before it (``tests.helpers.books``).
"""

from dataclasses import dataclass
from datetime import timedelta
from decimal import ROUND_HALF_UP, Decimal
from uuid import UUID, uuid4

import pytest
from django.db import connection
from django.db.models import F
from django.test.utils import CaptureQueriesContext
from django.utils.dateparse import parse_datetime

from allocations.models import Allocation, AllocationStatus, UsageHistory
from allocations.services.jobs import job_admit
from quotas.budgets import budget_clock_move
from quotas.models import ClosedPeriod, EntityType, Quota, ResourceType
from tests.budgets import set_clock
from tests.budgets import tree as budget_tree
from tests.factories import (
    QuotaFactory,
    ResourceTypeFactory,
    TeamQuotaFactory,
    UserQuotaFactory,
)
from tests.helpers import (
    ALLOCATIONS,
    LEVEL_FIELDS,
    UNKNOWN_ID,
    allocate_direct,
    allocation_body,
    assert_books_unchanged,
    assert_error,
    assert_invalid,
    assert_p2,
    books,
    client_for_role,
    exact,
    expire,
    set_fields,
    used_of,
)

D = Decimal
JOBS = "/api/v1/jobs"
BUILTIN_SLUGS = ("concurrent_gpus", "cpu_hours", "gpu_hours", "memory_gb", "storage_gb")

# Limits of every tree, (user, team, organization). Each resource has the same
# shape: organization acme → teams research and infra → users alice, bob (research)
# and dave (infra); organization globex → team ops → user carol. Nobody has a
# cpu_hours quota.
LIMITS = {
    "concurrent_gpus": ("16", "32", "64"),
    "memory_gb": ("1024", "2048", "4096"),
    "storage_gb": ("100", "200", "400"),
    "gpu_hours": ("1000", "2000", "4000"),
}
# The job most tests admit: 8 GPUs, 512 GiB and a 64 GPU-hour estimate.
REQUEST = {"concurrent_gpus": D("8"), "memory_gb": D("512"), "gpu_hours": D("64")}
ADMITTED = tuple(sorted(REQUEST))
ENTITY_TYPES = {
    "acme": EntityType.ORGANIZATION,
    "globex": EntityType.ORGANIZATION,
    "research": EntityType.TEAM,
    "infra": EntityType.TEAM,
    "ops": EntityType.TEAM,
    "alice": EntityType.USER,
    "bob": EntityType.USER,
    "dave": EntityType.USER,
    "carol": EntityType.USER,
}


@dataclass
class World:
    quotas: dict[tuple[str, str], Quota]

    def quota(self, entity_id: str, resource: str) -> Quota:
        return self.quotas[(entity_id, resource)]

    def path(self, resource: str, entity_id: str = "alice") -> list[Quota]:
        """The quotas of ``entity_id``'s path on ``resource``, leaf first."""
        leaf = self.quota(entity_id, resource)
        return [Quota.objects.get(id=quota_id) for quota_id in leaf.path]


def _trees(resource: ResourceType, user: str, team: str, org: str) -> dict:
    quotas = {}
    for root_id, teams in (
        ("acme", {"research": ("alice", "bob"), "infra": ("dave",)}),
        ("globex", {"ops": ("carol",)}),
    ):
        root = QuotaFactory(
            entity_id=root_id, resource_type=resource, limit_value=D(org)
        )
        quotas[(root_id, resource.slug)] = root
        for team_id, users in teams.items():
            node = TeamQuotaFactory(entity_id=team_id, parent=root, limit_value=D(team))
            quotas[(team_id, resource.slug)] = node
            for user_id in users:
                quotas[(user_id, resource.slug)] = UserQuotaFactory(
                    entity_id=user_id, parent=node, limit_value=D(user)
                )
    return quotas


@pytest.fixture
def world(db) -> World:
    quotas = {}
    for slug, limits in LIMITS.items():
        quotas.update(_trees(ResourceType.objects.get(slug=slug), *limits))
    return World(quotas)


@pytest.fixture
def budget_clock(settings):
    """The budget clock may move (tests/budgets.py); the test's transaction puts it
    back."""
    settings.BUDGET_CLOCK_ADJUSTABLE = True


@pytest.fixture
def team_client(world):
    """A scheduler key scoped to team research (of organization acme)."""
    return client_for_role("scheduler", name="team research", scope="team:research")


# --- Requests and expectations -------------------------------------------------------


def job_body(**overrides) -> dict:
    """An admission: REQUEST for user alice, with a new job id."""
    body = {
        "job_id": str(uuid4()),
        "entity_type": "user",
        "entity_id": "alice",
        "resources": {slug: str(amount) for slug, amount in REQUEST.items()},
    }
    body.update(overrides)
    return body


def admit(client, **overrides):
    return client.post(JOBS, job_body(**overrides), format="json")


def admit_ok(client, **overrides) -> dict:
    response = admit(client, **overrides)
    assert response.status_code == 201, response.content
    return exact(response)


def check(client, **overrides):
    body = job_body(**overrides)
    del body["job_id"]
    return client.post(f"{JOBS}/check", body, format="json")


def job_url(job_id, suffix: str = "") -> str:
    return f"{JOBS}/{job_id}{suffix}"


def fill(entity_id: str, resource: str, amount) -> None:
    """Test state: ``amount`` held by ``entity_id`` itself, through the engine (so
    every level above it is charged too)."""
    allocate_direct(
        amount=D(amount),
        entity_id=entity_id,
        entity_type=ENTITY_TYPES[entity_id],
        resource_type=resource,
    )


def expected_levels(world: World, resource: str, requested, entity_id="alice"):
    """Every level of ``entity_id``'s path on ``resource`` as an answer must show it
    for ``requested``, from the stored rows (caps: limit × 1, no burst, no
    carry-over in this world)."""
    levels = []
    for quota in world.path(resource, entity_id):
        cap = quota.limit_value
        levels.append(
            {
                "quota_id": str(quota.id),
                "entity_type": quota.entity_type,
                "entity_id": quota.entity_id,
                "cap": cap,
                "used": quota.used,
                "available": max(D(0), cap - quota.used),
                "allowed": quota.used + D(requested) <= cap,
            }
        )
    return levels


def expected_resource(world: World, resource: str, requested, entity_id="alice"):
    levels = expected_levels(world, resource, requested, entity_id)
    return {
        "requested": D(requested),
        "available": min(level["available"] for level in levels),
        "allowed": all(level["allowed"] for level in levels),
        "levels": levels,
    }


def path_used(world: World, resource: str, entity_id: str = "alice") -> list:
    return used_of(*world.path(resource, entity_id))


def every_used(world: World) -> dict:
    """(entity id, resource) → the stored ``used`` of every quota of the world."""
    stored = dict(Quota.objects.values_list("id", "used"))
    return {key: stored[quota.id] for key, quota in world.quotas.items()}


# --- Admission -----------------------------------------------------------------------


def test_admission_of_three_resources_answers_201_with_one_allocation_each(
    scheduler_client, world
):
    job_id = str(uuid4())

    response = admit(
        scheduler_client,
        job_id=job_id,
        rates={"gpu_hours": 8},
        ttl_seconds=600,
        metadata={"queue": "a100"},
    )

    assert response.status_code == 201, response.content
    body = exact(response)
    assert set(body) == {
        "job_id",
        "entity_type",
        "entity_id",
        "status",
        "resources",
        "consumed",
        "allocations",
        "warnings",
        "levels",
    }
    assert body["job_id"] == job_id
    assert (body["entity_type"], body["entity_id"]) == ("user", "alice")
    assert body["status"] == "active"
    assert body["resources"] == REQUEST
    assert body["consumed"] == dict.fromkeys(ADMITTED, 0)
    assert body["warnings"] == []
    stored = {a.resource_type: a for a in Allocation.objects.all()}
    assert sorted(stored) == list(ADMITTED)
    assert [a["resource_type"] for a in body["allocations"]] == list(ADMITTED)
    for allocation in body["allocations"]:
        slug = allocation["resource_type"]
        row = stored[slug]
        assert allocation["id"] == str(row.id)
        assert allocation["quota_id"] == str(world.quota("alice", slug).id)
        assert (allocation["entity_type"], allocation["entity_id"]) == (
            "user",
            "alice",
        )
        assert allocation["job_id"] == job_id
        assert allocation["allocated_value"] == REQUEST[slug]
        assert allocation["status"] == "active"
        assert allocation["released_at"] is None
        assert allocation["is_burst"] is False
        assert allocation["version"] == 1
        assert allocation["metadata"] == {"queue": "a100"}
        assert allocation["consumed_value"] == 0
        assert allocation["rate"] == (8 if slug == "gpu_hours" else None)
        allocated_at = parse_datetime(allocation["allocated_at"])
        assert allocated_at == row.allocated_at
        assert parse_datetime(allocation["expires_at"]) == allocated_at + timedelta(
            seconds=600
        )
        assert row.status == AllocationStatus.ACTIVE
        assert str(row.job_id) == job_id
        assert row.allocated_value == REQUEST[slug]
        assert row.quota_id == world.quota("alice", slug).id


def test_admission_reports_every_resources_levels_after_the_grant(
    scheduler_client, world
):
    fill("bob", "memory_gb", "100")  # the team and organization hold more already

    body = admit_ok(scheduler_client)

    assert set(body["levels"]) == set(ADMITTED)
    for slug in ADMITTED:
        assert [set(level) for level in body["levels"][slug]] == [LEVEL_FIELDS] * 3
    acme, research, alice = (
        world.quota(e, "memory_gb") for e in ("acme", "research", "alice")
    )
    assert body["levels"]["memory_gb"] == [
        {
            "quota_id": str(alice.id),
            "entity_type": "user",
            "entity_id": "alice",
            "cap": 1024,
            "used": 512,
            "available": 512,
            "allowed": True,
        },
        {
            "quota_id": str(research.id),
            "entity_type": "team",
            "entity_id": "research",
            "cap": 2048,
            "used": 612,
            "available": 1436,
            "allowed": True,
        },
        {
            "quota_id": str(acme.id),
            "entity_type": "organization",
            "entity_id": "acme",
            "cap": 4096,
            "used": 612,
            "available": 3484,
            "allowed": True,
        },
    ]
    for slug in ("concurrent_gpus", "gpu_hours"):
        assert body["levels"][slug] == expected_levels(world, slug, 0)
        assert [level["used"] for level in body["levels"][slug]] == [REQUEST[slug]] * 3


def test_admission_charges_every_level_of_each_path_exactly(scheduler_client, world):
    before = every_used(world)

    admit_ok(scheduler_client)

    after = every_used(world)
    changed = {
        key: after[key] - before[key] for key in after if after[key] != before[key]
    }
    assert changed == {
        (entity_id, slug): REQUEST[slug]
        for slug in ADMITTED
        for entity_id in ("alice", "research", "acme")
    }
    for slug in ADMITTED:
        assert path_used(world, slug) == [REQUEST[slug]] * 3
    # The time-based resource is reserved, not yet consumed (§3a).
    hours = [Quota.objects.get(id=q.id) for q in world.path("gpu_hours")]
    assert [(q.reserved, q.consumed) for q in hours] == [(64, 0)] * 3
    assert_p2()


def test_admission_writes_one_allocate_history_row_per_allocation(
    scheduler_client, world
):
    job_id = str(uuid4())

    body = admit_ok(scheduler_client, job_id=job_id, metadata={"queue": "a100"})

    rows = {row.resource_type: row for row in UsageHistory.objects.all()}
    assert sorted(rows) == list(ADMITTED)
    assert UsageHistory.objects.count() == 3
    for allocation in body["allocations"]:
        row = rows[allocation["resource_type"]]
        assert row.operation == "allocate"
        assert str(row.allocation_id) == allocation["id"]
        assert row.quota_id == world.quota("alice", allocation["resource_type"]).id
        assert (row.entity_type, row.entity_id) == ("user", "alice")
        assert str(row.job_id) == job_id
        assert row.allocated_value == REQUEST[allocation["resource_type"]]
        assert row.consumed_delta == 0
        assert row.metadata == {"queue": "a100"}


def test_each_allocation_of_a_job_holds_its_own_idempotency_key(
    scheduler_client, world
):
    job_id = str(uuid4())
    body = admit_ok(scheduler_client, job_id=job_id)
    gpus = next(
        a for a in body["allocations"] if a["resource_type"] == "concurrent_gpus"
    )
    before = books()

    same = scheduler_client.post(
        ALLOCATIONS,
        allocation_body(job_id=job_id, requested_value=8),
        format="json",
    )
    other = scheduler_client.post(
        ALLOCATIONS,
        allocation_body(job_id=job_id, requested_value=9),
        format="json",
    )

    assert same.status_code == 200, same.content
    assert same.json()["id"] == gpus["id"]
    assert assert_error(other, 409, "conflict")["allocation_id"] == gpus["id"]
    assert_books_unchanged(before)


def test_admission_grants_up_to_every_cap_exactly(scheduler_client, world):
    # Room for exactly the request at a different level of each resource.
    fill("alice", "concurrent_gpus", D("16") - REQUEST["concurrent_gpus"])
    fill("infra", "memory_gb", "2048")
    fill("acme", "memory_gb", D("2048") - REQUEST["memory_gb"])
    fill("research", "gpu_hours", D("2000") - REQUEST["gpu_hours"])
    assert [level["available"] for level in expected_levels(world, "memory_gb", 0)] == [
        1024,
        2048,
        512,
    ]

    admit_ok(scheduler_client)

    assert path_used(world, "concurrent_gpus") == [16, 16, 16]
    assert path_used(world, "memory_gb") == [512, 512, 4096]
    assert path_used(world, "gpu_hours") == [64, 2000, 2000]
    assert_p2()


def test_admission_for_a_team_charges_the_team_and_its_organization(
    scheduler_client, world
):
    body = admit_ok(scheduler_client, entity_type="TEAM", entity_id="research")

    assert (body["entity_type"], body["entity_id"]) == ("team", "research")
    for slug in ADMITTED:
        assert [level["entity_id"] for level in body["levels"][slug]] == [
            "research",
            "acme",
        ]
        assert path_used(world, slug) == [0, REQUEST[slug], REQUEST[slug]]
    assert_p2()


def test_admission_and_check_warn_of_every_soft_limit_passed(
    scheduler_client, team_client, world
):
    set_fields(world.quota("research", "memory_gb"), soft_limit=D("500"))
    set_fields(world.quota("acme", "gpu_hours"), soft_limit=D("50"))
    expected = [
        "team research is above its soft limit: 512 used of 500.",
        "organization acme is above its soft limit: 64 used of 50.",
    ]

    checked = exact(check(scheduler_client))
    scoped_check = exact(check(team_client))
    admitted = admit_ok(scheduler_client)

    assert checked["allowed"] is True
    assert sorted(checked["warnings"]) == sorted(expected)
    assert sorted(admitted["warnings"]) == sorted(expected)
    # Soft limits never block, and a scoped key hears nothing of its organization.
    assert scoped_check["warnings"] == [expected[0]]
    scoped = exact(admit(team_client, entity_id="bob"))
    assert scoped["warnings"] == [
        "team research is above its soft limit: 1024 used of 500."
    ]


def test_a_burst_admission_marks_only_the_allocation_past_its_limit(
    scheduler_client, world
):
    set_fields(world.quota("alice", "concurrent_gpus"), burst_limit=D("20"))
    fill("alice", "concurrent_gpus", "10")
    before = books()

    refused = admit(scheduler_client)
    assert assert_error(refused, 429, "resource_exhausted")["blocking_quota_id"] == (
        str(world.quota("alice", "concurrent_gpus").id)
    )
    assert_books_unchanged(before)
    body = admit_ok(scheduler_client, allow_burst=True)

    bursts = {a["resource_type"]: a["is_burst"] for a in body["allocations"]}
    assert bursts == {"concurrent_gpus": True, "gpu_hours": False, "memory_gb": False}
    assert body["levels"]["concurrent_gpus"][0]["cap"] == 20
    assert body["levels"]["concurrent_gpus"][0]["used"] == 18
    assert path_used(world, "concurrent_gpus") == [18, 18, 18]
    assert_p2()


def test_sixteen_resources_are_admitted_and_seventeen_refused(scheduler_client, world):
    slugs = [f"extra_{n:02}" for n in range(12)]
    for slug in slugs:
        _trees(ResourceTypeFactory(slug=slug), "10", "20", "40")
    every = [*BUILTIN_SLUGS, *slugs]  # 17 registered types, alice has 16 of them
    sixteen = {slug: 1 for slug in every if slug != "cpu_hours"}
    _trees(ResourceType.objects.get(slug="cpu_hours"), "10", "20", "40")
    before = books()

    refused = admit(scheduler_client, resources=dict.fromkeys(every, 1))

    body = assert_invalid(refused, "resources")
    assert "16" in body["message"]
    assert_books_unchanged(before)
    granted = admit_ok(scheduler_client, resources=sixteen)
    assert len(granted["allocations"]) == 16
    assert Allocation.objects.count() == 16
    assert UsageHistory.objects.count() == 16
    assert_p2()


# --- All or nothing ------------------------------------------------------------------


@pytest.mark.parametrize("resource", ADMITTED)
@pytest.mark.parametrize("blocker", ["alice", "research", "acme"])
def test_a_level_without_room_refuses_the_whole_job_and_names_it(
    scheduler_client, world, resource, blocker
):
    cap = D(LIMITS[resource][("alice", "research", "acme").index(blocker)])
    # Room for the request less one ten-thousandth at the blocking level.
    fill(blocker, resource, cap - REQUEST[resource] + D("0.0001"))
    used_before = every_used(world)
    before = books()

    response = admit(scheduler_client)

    body = assert_error(response, 429, "resource_exhausted")
    blocking = world.quota(blocker, resource)
    assert body["resource_type"] == resource
    assert body["blocking_quota_id"] == str(blocking.id)
    assert body["requested"] == REQUEST[resource]
    assert body["available"] == REQUEST[resource] - D("0.0001")
    levels = expected_levels(world, resource, REQUEST[resource])
    assert body["levels"] == levels
    assert [level["allowed"] for level in levels] == [
        level["quota_id"] != str(blocking.id) for level in levels
    ]
    assert body["resources"] == {
        slug: expected_resource(world, slug, REQUEST[slug]) for slug in ADMITTED
    }
    assert body["message"].startswith(f"{resource}: ")
    assert f"{blocking.entity_type} {blocker}" in body["message"]
    # Nothing written for any resource.
    assert_books_unchanged(before)
    assert every_used(world) == used_before
    assert Allocation.objects.count() == UsageHistory.objects.count() == 1  # the fill
    assert_p2()


def test_the_refusal_names_the_deepest_refusing_level_and_check_agrees(
    scheduler_client, world
):
    # The organization refuses GPUs, alice herself refuses memory.
    fill("infra", "concurrent_gpus", "32")
    fill("acme", "concurrent_gpus", "26")
    fill("alice", "memory_gb", "1000")
    before = books()

    checked = exact(check(scheduler_client))
    refused = admit(scheduler_client)

    body = assert_error(refused, 429, "resource_exhausted")
    assert body["resource_type"] == "memory_gb"
    assert body["blocking_quota_id"] == str(world.quota("alice", "memory_gb").id)
    assert body["available"] == 24
    assert body["resources"]["concurrent_gpus"]["allowed"] is False
    assert body["resources"]["concurrent_gpus"]["levels"][2]["allowed"] is False
    assert checked["allowed"] is False
    assert checked["blocking_resource"] == "memory_gb"
    assert checked["blocking_quota_id"] == body["blocking_quota_id"]
    assert checked["resources"] == body["resources"]
    assert_books_unchanged(before)


# --- Retries and conflicts ------------------------------------------------------------


def test_an_identical_retry_answers_200_with_the_same_allocations(
    scheduler_client, world
):
    job_id = str(uuid4())
    first = admit_ok(scheduler_client, job_id=job_id, rates={"gpu_hours": 8})
    before = books()

    retry = admit(
        scheduler_client,
        job_id=job_id,
        rates={"gpu_hours": 8},
        # The same amounts, written otherwise; the same types in another case.
        resources={"Memory_GB": "512.0000", "GPU_hours": 64, "concurrent_gpus": "8"},
    )

    assert retry.status_code == 200, retry.content
    body = exact(retry)
    assert [a["id"] for a in body["allocations"]] == [
        a["id"] for a in first["allocations"]
    ]
    assert body["resources"] == REQUEST
    assert body["status"] == "active"
    assert body["levels"] == first["levels"]
    assert_books_unchanged(before)


@pytest.mark.parametrize(
    "change",
    [
        {"resources": {**REQUEST, "memory_gb": D("256")}},
        {"resources": {**REQUEST, "storage_gb": D("10")}},
        {"resources": {"concurrent_gpus": D("8"), "memory_gb": D("512")}},
        {"resources": {"storage_gb": D("10")}},
        {"entity_id": "bob"},
        {"entity_type": "team", "entity_id": "research"},
    ],
    ids=[
        "other-amount",
        "one-more",
        "one-less",
        "disjoint",
        "other-user",
        "other-entity-type",
    ],
)
def test_another_set_for_a_job_holding_allocations_is_a_409(
    scheduler_client, world, change
):
    job_id = str(uuid4())
    held = admit_ok(scheduler_client, job_id=job_id)
    before = books()
    if "resources" in change:
        change = {
            **change,
            "resources": {k: str(v) for k, v in change["resources"].items()},
        }

    response = admit(scheduler_client, job_id=job_id, **change)

    body = assert_error(response, 409, "conflict")
    assert body["allocation_ids"] == [a["id"] for a in held["allocations"]]
    assert job_id in body["message"]
    assert_books_unchanged(before)


def test_after_release_the_same_job_id_is_admitted_again(scheduler_client, world):
    job_id = str(uuid4())
    first = admit_ok(scheduler_client, job_id=job_id)
    released = scheduler_client.delete(job_url(job_id))
    assert released.status_code == 200, released.content

    again = admit(scheduler_client, job_id=job_id, resources={"memory_gb": 100})

    assert again.status_code == 201, again.content
    body = exact(again)
    assert [a["resource_type"] for a in body["allocations"]] == ["memory_gb"]
    assert body["allocations"][0]["id"] not in {a["id"] for a in first["allocations"]}
    assert body["resources"] == {"memory_gb": 100}
    assert path_used(world, "memory_gb") == [100, 100, 100]
    assert path_used(world, "concurrent_gpus") == [0, 0, 0]
    assert Allocation.objects.filter(job_id=job_id).count() == 4
    assert Allocation.objects.filter(job_id=job_id, status="active").count() == 1
    assert_p2()


def test_a_job_whose_leases_ran_out_is_expired_and_admitted_afresh(
    scheduler_client, world
):
    job_id = str(uuid4())
    first = admit_ok(scheduler_client, job_id=job_id, ttl_seconds=60)
    # The leases ran out an hour ago; the sweeper has not come yet.
    Allocation.objects.filter(job_id=job_id).update(
        expires_at=F("allocated_at") - timedelta(hours=1)
    )

    again = admit(scheduler_client, job_id=job_id, ttl_seconds=60)

    assert again.status_code == 201, again.content
    old = {a["id"] for a in first["allocations"]}
    assert not old & {a["id"] for a in exact(again)["allocations"]}
    assert set(
        Allocation.objects.filter(id__in=old).values_list("status", flat=True)
    ) == {"expired"}
    for slug in ("concurrent_gpus", "memory_gb"):
        assert path_used(world, slug) == [REQUEST[slug]] * 3
    assert_p2()


# --- Input --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"resources": {}}, "resources"),
        ({"resources": ["concurrent_gpus"]}, "resources"),
        ({"resources": None}, "resources"),
        ({"resources": {"concurrent_gpus": 0}}, "resources"),
        ({"resources": {"concurrent_gpus": -1}}, "resources"),
        ({"resources": {"concurrent_gpus": "NaN"}}, "resources"),
        ({"resources": {"concurrent_gpus": "Infinity"}}, "resources"),
        ({"resources": {"concurrent_gpus": "1.00001"}}, "resources"),
        ({"resources": {"concurrent_gpus": "1e2"}}, "resources"),
        ({"resources": {"concurrent_gpus": "eight"}}, "resources"),
        ({"resources": {"memory_gb": 1, "concurrent_gpus": None}}, "resources"),
        ({"resources": {"memory_gb": 1, "MEMORY_GB": 1}}, "resources"),
        ({"rates": {"concurrent_gpus": 1}}, "rates"),
        ({"rates": {"storage_gb": 1}}, "rates"),
        ({"rates": {"cpu_hours": 1}}, "rates"),
        ({"rates": {"gpu_hours": 0}}, "rates"),
        ({"rates": {"gpu_hours": "1.00001"}}, "rates"),
        ({"job_id": "not-a-uuid"}, "job_id"),
        ({"job_id": 12345}, "job_id"),
        ({"job_id": None}, "job_id"),
        ({"entity_type": "planet"}, "entity_type"),
        ({"entity_id": ""}, "entity_id"),
        ({"entity_id": "x" * 256}, "entity_id"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": "soon"}, "ttl_seconds"),
        ({"metadata": ["not", "an", "object"]}, "metadata"),
        ({"metadata": {"blob": "x" * (17 * 1024)}}, "metadata"),
        ({"resources": {"concurrent_gpus": "1" * 17}}, "resources"),
    ],
)
def test_invalid_admissions_are_400s_that_change_nothing(
    scheduler_client, world, change, field
):
    before = books()

    response = admit(scheduler_client, **change)

    assert_invalid(response, field)
    assert_books_unchanged(before)


@pytest.mark.parametrize("field", ["job_id", "entity_type", "entity_id", "resources"])
def test_an_admission_without_a_required_field_is_a_400(scheduler_client, world, field):
    body = job_body()
    del body[field]
    before = books()

    response = scheduler_client.post(JOBS, body, format="json")

    assert_invalid(response, field)
    assert_books_unchanged(before)


def test_too_many_resources_is_a_400_before_any_lookup(scheduler_client, world):
    before = books()

    response = admit(scheduler_client, resources={f"extra_{n}": 1 for n in range(17)})

    body = assert_invalid(response, "resources")
    assert body["message"] == "A job needs 1 to 16 resources (got 17)."
    assert_books_unchanged(before)


def test_an_unknown_resource_type_is_a_400_listing_the_valid_ones(
    scheduler_client, world
):
    before = books()

    response = admit(scheduler_client, resources={**REQUEST, "tpu_hours": 1})

    body = assert_error(response, 400, "invalid_input")
    assert "tpu_hours" in body["message"]
    for slug in BUILTIN_SLUGS:
        assert slug in body["message"]
    assert_books_unchanged(before)


def test_an_entity_without_a_quota_for_one_resource_is_a_404(scheduler_client, world):
    before = books()

    # cpu_hours sorts between resources alice has: nothing may be written for them.
    response = admit(scheduler_client, resources={**REQUEST, "cpu_hours": 1})

    body = assert_error(response, 404, "not_found")
    assert "cpu_hours" in body["message"]
    assert_books_unchanged(before)
    for slug in ADMITTED:
        assert path_used(world, slug) == [0, 0, 0]


def test_an_unknown_entity_is_a_404(scheduler_client, world):
    before = books()

    response = admit(scheduler_client, entity_id="mallory")

    assert_error(response, 404, "not_found")
    assert_books_unchanged(before)


# --- Roles and keys -----------------------------------------------------------------


def _job_calls(job_id) -> list[tuple[str, str, dict | None]]:
    return [
        ("post", JOBS, job_body()),
        (
            "post",
            f"{JOBS}/check",
            {k: v for k, v in job_body().items() if k != "job_id"},
        ),
        ("post", job_url(job_id, "/release"), {"consumed": {"gpu_hours": 1}}),
        ("delete", job_url(job_id), None),
        ("post", job_url(job_id, "/renew"), {"ttl_seconds": 60}),
    ]


def _send(client, method, url, body):
    if body is None:
        return getattr(client, method)(url)
    return getattr(client, method)(url, body, format="json")


def test_a_viewer_reads_a_job_and_changes_nothing(
    scheduler_client, viewer_client, world
):
    job_id = admit_ok(scheduler_client, ttl_seconds=60)["job_id"]
    before = books()

    for method, url, body in _job_calls(job_id):
        response = _send(viewer_client, method, url, body)
        assert_error(response, 403, "forbidden")
    read = viewer_client.get(job_url(job_id))

    assert read.status_code == 200
    assert_books_unchanged(before)


def test_every_job_call_without_a_key_is_a_401(api_client, scheduler_client, world):
    job_id = admit_ok(scheduler_client, ttl_seconds=60)["job_id"]
    before = books()

    for method, url, body in [*_job_calls(job_id), ("get", job_url(job_id), None)]:
        response = _send(api_client, method, url, body)
        assert_error(response, 401, "unauthorized")

    assert_books_unchanged(before)


# --- Check --------------------------------------------------------------------------


def test_check_reports_every_resource_and_writes_nothing(scheduler_client, world):
    fill("bob", "gpu_hours", "100")
    before = books()

    response = check(scheduler_client)

    assert response.status_code == 200, response.content
    body = exact(response)
    assert body == {
        "allowed": True,
        "reason": None,
        "blocking_resource": None,
        "blocking_quota_id": None,
        "warnings": [],
        "resources": {
            slug: expected_resource(world, slug, REQUEST[slug]) for slug in ADMITTED
        },
    }
    assert body["resources"]["gpu_hours"]["levels"][1]["used"] == 100
    assert body["resources"]["gpu_hours"]["available"] == 1000
    assert_books_unchanged(before)


def test_check_refuses_like_the_admission(scheduler_client, world):
    fill("bob", "memory_gb", "1000")
    fill("research", "memory_gb", "1000")  # the team has 48 left, alice 1,024
    before = books()

    response = check(scheduler_client)

    assert response.status_code == 200, response.content
    body = exact(response)
    team = world.quota("research", "memory_gb")
    assert body["allowed"] is False
    assert body["blocking_resource"] == "memory_gb"
    assert body["blocking_quota_id"] == str(team.id)
    assert body["reason"].startswith("memory_gb: ")
    assert "team research" in body["reason"]
    assert body["resources"] == {
        slug: expected_resource(world, slug, REQUEST[slug]) for slug in ADMITTED
    }
    assert body["resources"]["memory_gb"]["available"] == 48
    assert body["resources"]["memory_gb"]["allowed"] is False
    assert [lv["allowed"] for lv in body["resources"]["memory_gb"]["levels"]] == [
        True,
        False,
        True,
    ]
    assert_books_unchanged(before)
    refused = assert_error(admit(scheduler_client), 429, "resource_exhausted")
    assert refused["resource_type"] == body["blocking_resource"]
    assert refused["blocking_quota_id"] == body["blocking_quota_id"]
    assert refused["resources"] == body["resources"]
    assert_books_unchanged(before)


@pytest.mark.parametrize(
    ("change", "status", "kind"),
    [
        ({"resources": {}}, 400, "invalid_input"),
        ({"resources": {f"extra_{n}": 1 for n in range(17)}}, 400, "invalid_input"),
        ({"resources": {"tpu_hours": 1}}, 400, "invalid_input"),
        ({"resources": {"concurrent_gpus": 0}}, 400, "invalid_input"),
        ({"resources": {"concurrent_gpus": "1.00001"}}, 400, "invalid_input"),
        ({"resources": {**REQUEST, "cpu_hours": 1}}, 404, "not_found"),
        ({"entity_id": "mallory"}, 404, "not_found"),
    ],
    ids=["none", "seventeen", "unknown", "zero", "places", "no-quota", "no-entity"],
)
def test_check_refuses_bad_requests(scheduler_client, world, change, status, kind):
    if "resources" in change:
        change = {"resources": {k: str(v) for k, v in change["resources"].items()}}
    before = books()

    assert_error(check(scheduler_client, **change), status, kind)

    assert_books_unchanged(before)


@pytest.mark.parametrize(
    "change",
    [
        {"rates": {"storage_gb": 2}},
        {"rates": {"concurrent_gpus": 2}},
        {"rates": {"cpu_hours": 2}},
        {"rates": {"gpu_hours": -1}},
        {"rates": {"gpu_hours": 0}},
        {"rates": "x"},
        {"ttl_seconds": -5},
        {"ttl_seconds": 0},
        {"metadata": "x"},
        {"metadata": [1]},
    ],
    ids=[
        "rate-concurrent",
        "rate-held",
        "rate-not-asked",
        "rate-negative",
        "rate-zero",
        "rates-not-object",
        "ttl-negative",
        "ttl-zero",
        "metadata-string",
        "metadata-list",
    ],
)
def test_check_refuses_what_the_admission_refuses_with_the_same_answer(
    scheduler_client, world, change
):
    resources = {**{k: str(v) for k, v in REQUEST.items()}, "storage_gb": "1"}
    before = books()

    checked = check(scheduler_client, resources=resources, **change)
    admitted = admit(scheduler_client, resources=resources, **change)

    assert_error(checked, 400, "invalid_input")
    assert checked.json() == admitted.json()
    assert_books_unchanged(before)


def test_check_takes_a_rate_for_a_time_based_resource_as_admit_does(
    scheduler_client, world
):
    response = check(scheduler_client, rates={"gpu_hours": 8}, ttl_seconds=60)

    assert response.status_code == 200, response.content
    assert response.json()["allowed"] is True


@pytest.mark.parametrize(
    ("payload", "content_type", "status", "kind"),
    [
        ("{bad", "application/json", 400, "invalid_input"),
        ("[1]", "application/json", 400, "invalid_input"),
        ("null", "application/json", 400, "invalid_input"),
        ('{"a": 1, "a": 2}', "application/json", 400, "invalid_input"),
        ('{"consumed": {"gpu_hours": 2}}', "text/plain", 415, "unsupported_media_type"),
    ],
    ids=["malformed", "array", "null", "key-twice", "plain-text"],
)
def test_delete_refuses_a_body_that_is_not_a_json_object_and_changes_nothing(
    scheduler_client, world, payload, content_type, status, kind
):
    job_id = admit_ok(scheduler_client)["job_id"]
    before = books()

    response = scheduler_client.generic(
        "DELETE", job_url(job_id), payload, content_type
    )

    assert_error(response, status, kind)
    assert_books_unchanged(before)
    assert not Allocation.objects.filter(job_id=job_id).exclude(
        status=AllocationStatus.ACTIVE
    )


def test_delete_takes_a_json_object_body(scheduler_client, world):
    job_id = admit_ok(scheduler_client)["job_id"]

    response = scheduler_client.generic(
        "DELETE", job_url(job_id), "{}", "application/json"
    )

    assert response.status_code == 200, response.content


# --- Reading a job ------------------------------------------------------------------


def test_get_lists_the_jobs_allocations_of_every_status(scheduler_client, world):
    job_id = str(uuid4())
    first = admit_ok(scheduler_client, job_id=job_id, ttl_seconds=60)
    gpus = next(
        a for a in first["allocations"] if a["resource_type"] == "concurrent_gpus"
    )
    expire(gpus["id"])
    assert scheduler_client.delete(job_url(job_id)).status_code == 200
    second = admit_ok(scheduler_client, job_id=job_id, resources={"storage_gb": 5})

    response = scheduler_client.get(job_url(job_id))

    assert response.status_code == 200, response.content
    body = exact(response)
    statuses = {a["id"]: a["status"] for a in body["allocations"]}
    assert statuses == {
        **{a["id"]: "released" for a in first["allocations"]},
        gpus["id"]: "expired",
        second["allocations"][0]["id"]: "active",
    }
    assert body["job_id"] == job_id
    assert body["status"] == "active"
    assert body["resources"] == {"storage_gb": 5}
    assert body["consumed"] == {"storage_gb": 0}
    assert [a["resource_type"] for a in body["allocations"]] == sorted(
        a["resource_type"] for a in body["allocations"]
    )


def test_get_a_released_job_shows_what_it_held_and_consumed(scheduler_client, world):
    job_id = admit_ok(scheduler_client)["job_id"]
    scheduler_client.post(
        job_url(job_id, "/release"), {"consumed": {"gpu_hours": 40}}, format="json"
    )

    body = exact(scheduler_client.get(job_url(job_id)))

    assert body["status"] == "released"
    assert body["resources"] == REQUEST
    assert body["consumed"] == {"concurrent_gpus": 0, "gpu_hours": 40, "memory_gb": 0}
    assert {a["status"] for a in body["allocations"]} == {"released"}


def test_get_an_unknown_job_is_a_404(scheduler_client, world):
    assert_error(scheduler_client.get(job_url(UNKNOWN_ID)), 404, "not_found")
    assert_error(scheduler_client.get(job_url("not-a-uuid")), 404, "not_found")


# --- Release -------------------------------------------------------------------------


def test_release_settles_each_allocation_once_with_the_reported_consumption(
    scheduler_client, world
):
    fill("bob", "gpu_hours", "100")
    job_id = admit_ok(scheduler_client, rates={"gpu_hours": 8})["job_id"]

    response = scheduler_client.post(
        job_url(job_id, "/release"), {"consumed": {"GPU_Hours": "20.5"}}, format="json"
    )

    assert response.status_code == 200, response.content
    body = exact(response)
    assert body["status"] == "released"
    assert body["consumed"] == {
        "concurrent_gpus": 0,
        "gpu_hours": D("20.5"),
        "memory_gb": 0,
    }
    for allocation in body["allocations"]:
        assert allocation["status"] == "released"
        assert allocation["released_at"] is not None
        assert allocation["version"] == 2
    # Concurrent resources give everything back; the budget keeps what was consumed.
    assert path_used(world, "concurrent_gpus") == [0, 0, 0]
    assert path_used(world, "memory_gb") == [0, 0, 0]
    hours = [Quota.objects.get(id=q.id) for q in world.path("gpu_hours")]
    assert [(q.reserved, q.consumed, q.used) for q in hours] == [
        (0, D("20.5"), D("20.5")),
        (100, D("20.5"), D("120.5")),
        (100, D("20.5"), D("120.5")),
    ]
    releases = {
        row.resource_type: row
        for row in UsageHistory.objects.filter(job_id=job_id, operation="release")
    }
    assert sorted(releases) == list(ADMITTED)
    assert {slug: row.consumed_delta for slug, row in releases.items()} == {
        "concurrent_gpus": 0,
        "gpu_hours": D("20.5"),
        "memory_gb": 0,
    }
    for allocation in body["allocations"]:
        assert (
            str(releases[allocation["resource_type"]].allocation_id) == allocation["id"]
        )
    assert_p2()


def test_an_overrun_reported_at_release_is_charged_in_full(scheduler_client, world):
    job_id = admit_ok(scheduler_client)["job_id"]

    response = scheduler_client.post(
        job_url(job_id, "/release"), {"consumed": {"gpu_hours": 100}}, format="json"
    )

    assert response.status_code == 200, response.content
    hours = [Quota.objects.get(id=q.id) for q in world.path("gpu_hours")]
    assert [(q.reserved, q.consumed) for q in hours] == [(0, 100)] * 3
    assert_p2()


def test_releasing_a_released_job_is_a_409_that_changes_nothing(
    scheduler_client, world
):
    job_id = admit_ok(scheduler_client)["job_id"]
    url = job_url(job_id, "/release")
    assert scheduler_client.post(url, {}, format="json").status_code == 200
    before = books()

    again = scheduler_client.post(url, {"consumed": {"gpu_hours": 1}}, format="json")
    deleted = scheduler_client.delete(job_url(job_id))

    assert_error(again, 409, "already_released")
    assert_error(deleted, 409, "already_released")
    assert_books_unchanged(before)
    assert UsageHistory.objects.filter(job_id=job_id, operation="release").count() == 3


@pytest.mark.parametrize(
    ("consumed", "field"),
    [
        ({"concurrent_gpus": 1}, None),
        ({"gpu_hours": 10, "memory_gb": 0}, None),
        ({"storage_gb": 1}, None),
        ({"cpu_hours": 1}, None),
        ({"tpu_hours": 1}, None),
        ({"gpu_hours": -1}, "consumed"),
        ({"gpu_hours": "NaN"}, "consumed"),
        ({"gpu_hours": "1.00001"}, "consumed"),
        ({"gpu_hours": None}, "consumed"),
        (["gpu_hours"], "consumed"),
    ],
)
def test_a_bad_consumed_map_is_a_400_and_releases_nothing(
    scheduler_client, world, consumed, field
):
    job_id = admit_ok(scheduler_client)["job_id"]
    before = books()

    response = scheduler_client.post(
        job_url(job_id, "/release"), {"consumed": consumed}, format="json"
    )

    body = assert_error(response, 400, "invalid_input")
    if field:
        assert field in body["fields"]
    assert_books_unchanged(before)
    assert set(
        Allocation.objects.filter(job_id=job_id).values_list("status", flat=True)
    ) == {"active"}


def test_a_final_value_below_an_earlier_report_is_a_400(scheduler_client, world):
    body = admit_ok(scheduler_client)
    hours = next(a for a in body["allocations"] if a["resource_type"] == "gpu_hours")
    reported = scheduler_client.post(
        f"{ALLOCATIONS}/{hours['id']}/consume", {"consumed_value": 30}, format="json"
    )
    assert reported.status_code == 200, reported.content
    before = books()

    response = scheduler_client.post(
        job_url(body["job_id"], "/release"),
        {"consumed": {"gpu_hours": 20}},
        format="json",
    )

    assert_error(response, 400, "invalid_input")
    assert_books_unchanged(before)
    settled = scheduler_client.post(
        job_url(body["job_id"], "/release"),
        {"consumed": {"gpu_hours": 30}},
        format="json",
    )
    assert settled.status_code == 200, settled.content
    release_row = UsageHistory.objects.get(
        allocation_id=hours["id"], operation="release"
    )
    assert release_row.consumed_delta == 0  # the 30 were charged by the report
    assert [
        (q.reserved, q.consumed)
        for q in (Quota.objects.get(id=q.id) for q in world.path("gpu_hours"))
    ] == [(0, 30)] * 3
    assert_p2()


def test_delete_settles_a_budget_on_its_whole_reservation(scheduler_client, world):
    job_id = admit_ok(scheduler_client)["job_id"]

    response = scheduler_client.delete(job_url(job_id))

    assert response.status_code == 200, response.content
    body = exact(response)
    assert body["status"] == "released"
    assert body["consumed"] == {"concurrent_gpus": 0, "gpu_hours": 64, "memory_gb": 0}
    hours = [Quota.objects.get(id=q.id) for q in world.path("gpu_hours")]
    assert [(q.reserved, q.consumed) for q in hours] == [(0, 64)] * 3
    assert path_used(world, "concurrent_gpus") == [0, 0, 0]
    assert path_used(world, "memory_gb") == [0, 0, 0]
    deltas = dict(
        UsageHistory.objects.filter(job_id=job_id, operation="release").values_list(
            "resource_type", "consumed_delta"
        )
    )
    assert deltas == {"concurrent_gpus": 0, "gpu_hours": 64, "memory_gb": 0}
    assert_p2()


def test_delete_charges_rate_times_hours_held(scheduler_client, world, budget_clock):
    job_id = admit_ok(scheduler_client, rates={"gpu_hours": 8})["job_id"]
    budget_clock_move(advance=timedelta(hours=2))

    response = scheduler_client.delete(job_url(job_id))

    assert response.status_code == 200, response.content
    body = exact(response)
    # The budget clock runs on (clock_timestamp() + offset): the hours held are the
    # two it was moved plus the instants the requests took, read off the rows.
    row = UsageHistory.objects.get(
        job_id=job_id, resource_type="gpu_hours", operation="release"
    )
    started = Allocation.objects.get(id=row.allocation_id).budget_started_at
    held = row.timestamp - started
    assert timedelta(hours=2) <= held < timedelta(hours=2, seconds=30)
    charged = (D(8) * D(held // timedelta(microseconds=1)) / D(3600 * 10**6)).quantize(
        D("0.0001"), rounding=ROUND_HALF_UP
    )
    assert D(16) <= charged < D("16.07")
    assert body["consumed"] == {
        "concurrent_gpus": 0,
        "gpu_hours": charged,
        "memory_gb": 0,
    }
    hours = [Quota.objects.get(id=q.id) for q in world.path("gpu_hours")]
    assert [(q.reserved, q.consumed, q.used) for q in hours] == [
        (0, charged, charged)
    ] * 3
    assert row.consumed_delta == charged
    assert_p2()


def test_a_job_is_charged_to_its_budgets_current_period(scheduler_client, budget_clock):
    """§3a within a job: a monthly budget spent in November refuses the whole job,
    writing nothing; in December it has been rolled over and admits it."""
    set_clock("2026-11-10T00:00:00Z")
    hours = budget_tree(names=("uu", "tt", "oo"), limits=("100", "200", "400"))
    memory = ResourceType.objects.get(slug="memory_gb")
    org = QuotaFactory(entity_id="oo", resource_type=memory, limit_value=D("64"))
    team = TeamQuotaFactory(entity_id="tt", parent=org, limit_value=D("64"))
    UserQuotaFactory(entity_id="uu", parent=team, limit_value=D("64"))
    resources = {"gpu_hours": 100, "memory_gb": 1}
    spent = admit_ok(scheduler_client, entity_id="uu", resources=resources)["job_id"]
    settled = scheduler_client.post(
        job_url(spent, "/release"), {"consumed": {"gpu_hours": 100}}, format="json"
    )
    assert settled.status_code == 200, settled.content
    before = books()

    refused = admit(scheduler_client, entity_id="uu", resources=resources)

    body = assert_error(refused, 429, "resource_exhausted")
    assert body["resource_type"] == "gpu_hours"
    assert body["blocking_quota_id"] == str(hours[0].id)
    assert body["available"] == 0
    assert_books_unchanged(before)
    set_clock("2026-12-02T00:00:00Z")
    admitted = admit_ok(scheduler_client, entity_id="uu", resources=resources)
    assert [level["used"] for level in admitted["levels"]["gpu_hours"]] == [100] * 3
    rolled = [Quota.objects.get(id=q.id) for q in hours]
    assert [(q.reserved, q.consumed) for q in rolled] == [(100, 0)] * 3
    assert {q.period_start.isoformat() for q in rolled} == {"2026-12-01T00:00:00+00:00"}
    assert ClosedPeriod.objects.filter(consumed=100).count() == 3
    assert_p2()


@pytest.mark.parametrize("method", ["post", "delete"])
def test_releasing_an_unknown_job_is_a_404(scheduler_client, world, method):
    before = books()

    response = _send(
        scheduler_client,
        method,
        job_url(UNKNOWN_ID, "/release" if method == "post" else ""),
        {} if method == "post" else None,
    )

    assert_error(response, 404, "not_found")
    assert_books_unchanged(before)


# --- Renew ---------------------------------------------------------------------------


def test_renew_extends_every_active_lease(scheduler_client, world):
    job_id = admit_ok(scheduler_client, ttl_seconds=60)["job_id"]
    other = admit_ok(scheduler_client, entity_id="bob", ttl_seconds=60)
    before = {a.id: a.expires_at for a in Allocation.objects.filter(job_id=job_id)}

    response = scheduler_client.post(
        job_url(job_id, "/renew"), {"ttl_seconds": 3600}, format="json"
    )

    assert response.status_code == 200, response.content
    body = exact(response)
    assert body["status"] == "active"
    assert len(body["allocations"]) == 3
    # One statement renews them all, from its own clock (statement time).
    assert len({allocation["expires_at"] for allocation in body["allocations"]}) == 1
    for allocation in body["allocations"]:
        allocated_at = parse_datetime(allocation["allocated_at"])
        expires_at = parse_datetime(allocation["expires_at"])
        assert timedelta(seconds=3600) <= expires_at - allocated_at
        assert expires_at - allocated_at < timedelta(seconds=3600 + 30)
        assert expires_at > before[UUID(allocation["id"])]
        assert allocation["version"] == 2
        assert Allocation.objects.get(id=allocation["id"]).expires_at == expires_at
    # Another job's leases are left alone.
    for allocation in other["allocations"]:
        assert Allocation.objects.get(id=allocation["id"]).expires_at == parse_datetime(
            allocation["expires_at"]
        )


def test_renewing_a_released_job_is_a_409(scheduler_client, world):
    job_id = admit_ok(scheduler_client, ttl_seconds=60)["job_id"]
    scheduler_client.delete(job_url(job_id))
    before = books()

    response = scheduler_client.post(
        job_url(job_id, "/renew"), {"ttl_seconds": 3600}, format="json"
    )

    assert_error(response, 409, "already_released")
    assert_books_unchanged(before)


def test_renewing_a_job_whose_leases_ran_out_is_a_409(scheduler_client, world):
    job_id = admit_ok(scheduler_client, ttl_seconds=60)["job_id"]
    Allocation.objects.filter(job_id=job_id).update(
        expires_at=F("allocated_at") - timedelta(seconds=1)
    )
    before = books()

    response = scheduler_client.post(
        job_url(job_id, "/renew"), {"ttl_seconds": 3600}, format="json"
    )

    assert_error(response, 409, "conflict")
    assert_books_unchanged(before)


def test_renewing_an_unknown_job_is_a_404(scheduler_client, world):
    response = scheduler_client.post(
        job_url(UNKNOWN_ID, "/renew"), {"ttl_seconds": 60}, format="json"
    )

    assert_error(response, 404, "not_found")


@pytest.mark.parametrize("ttl", [0, -5, "soon", None, 366 * 24 * 3600 + 1])
def test_renewing_with_a_bad_ttl_is_a_400(scheduler_client, world, ttl):
    job_id = admit_ok(scheduler_client, ttl_seconds=60)["job_id"]
    before = books()

    response = scheduler_client.post(
        job_url(job_id, "/renew"), {"ttl_seconds": ttl}, format="json"
    )

    assert_invalid(response, "ttl_seconds")
    assert_books_unchanged(before)


# --- Scoped keys ---------------------------------------------------------------------


def _names_nothing_of_acme(world: World, text: str) -> None:
    assert "acme" not in text
    for slug in LIMITS:
        assert str(world.quota("acme", slug).id) not in text


def test_a_team_key_admits_a_job_for_its_user(team_client, world):
    job_id = str(uuid4())

    response = admit(team_client, job_id=job_id)
    replay = admit(team_client, job_id=job_id)

    assert response.status_code == 201, response.content
    assert replay.status_code == 200, replay.content
    body = exact(response)
    for slug in ADMITTED:
        assert body["levels"][slug] == [
            *expected_levels(world, slug, 0)[:2],
            {"scope": "outside", "allowed": True},
        ]
    assert exact(replay)["levels"] == body["levels"]
    _names_nothing_of_acme(world, response.content.decode())
    _names_nothing_of_acme(world, replay.content.decode())
    for slug in ADMITTED:
        assert path_used(world, slug) == [REQUEST[slug]] * 3


@pytest.mark.parametrize(
    ("entity_type", "entity_id"),
    [("user", "carol"), ("user", "dave"), ("team", "infra"), ("organization", "acme")],
)
def test_a_team_key_admits_nothing_outside_its_scope(
    team_client, world, entity_type, entity_id
):
    before = books()

    response = admit(team_client, entity_type=entity_type, entity_id=entity_id)
    checked = check(team_client, entity_type=entity_type, entity_id=entity_id)

    assert_error(response, 404, "not_found")
    assert_error(checked, 404, "not_found")
    assert_books_unchanged(before)


def test_a_refusal_above_a_team_keys_scope_names_nothing_of_it(team_client, world):
    # The organization has 4,096 − 3,700 = 396 GiB left: alice and her team have room.
    fill("dave", "memory_gb", "1000")
    fill("infra", "memory_gb", "1000")
    fill("acme", "memory_gb", "1700")
    before = books()

    response = admit(team_client)
    checked = check(team_client)

    body = assert_error(response, 429, "resource_exhausted")
    assert body["resource_type"] == "memory_gb"
    assert body["blocking_quota_id"] is None
    assert body["available"] is None
    assert body["requested"] == 512
    assert body["levels"] == [
        *expected_levels(world, "memory_gb", 512)[:2],
        {"scope": "outside", "allowed": False},
    ]
    assert body["resources"]["memory_gb"] == {
        "requested": 512,
        "available": None,
        "allowed": False,
        "levels": body["levels"],
    }
    for slug in ("concurrent_gpus", "gpu_hours"):
        visible = expected_levels(world, slug, REQUEST[slug])[:2]
        assert body["resources"][slug] == {
            "requested": REQUEST[slug],
            "available": min(level["available"] for level in visible),
            "allowed": True,
            "levels": [*visible, {"scope": "outside", "allowed": True}],
        }
    _names_nothing_of_acme(world, response.content.decode())
    assert "396" not in body["message"] and "3700" not in body["message"]
    assert_books_unchanged(before)
    assert checked.status_code == 200, checked.content
    result = exact(checked)
    assert result["allowed"] is False
    assert result["blocking_resource"] == "memory_gb"
    assert result["blocking_quota_id"] is None
    assert result["resources"] == body["resources"]
    _names_nothing_of_acme(world, checked.content.decode())


def test_a_job_held_in_another_organization_is_a_plain_409(
    scheduler_client, team_client, world
):
    job_id = str(uuid4())
    held = admit_ok(scheduler_client, job_id=job_id, entity_id="carol")
    before = books()

    response = admit(team_client, job_id=job_id)

    body = assert_error(response, 409, "conflict")
    assert "allocation_ids" not in body
    text = response.content.decode()
    for name in ("carol", "globex", "ops"):
        assert name not in text
    for allocation in held["allocations"]:
        assert allocation["id"] not in text
        assert allocation["quota_id"] not in text
    assert_books_unchanged(before)


def test_a_team_key_cannot_touch_a_job_outside_its_scope(
    scheduler_client, team_client, world
):
    job_id = admit_ok(scheduler_client, entity_id="carol", ttl_seconds=60)["job_id"]
    before = books()

    for method, url, body in [
        ("get", job_url(job_id), None),
        ("post", job_url(job_id, "/release"), {"consumed": {"gpu_hours": 1}}),
        ("delete", job_url(job_id), None),
        ("post", job_url(job_id, "/renew"), {"ttl_seconds": 3600}),
    ]:
        response = _send(team_client, method, url, body)
        assert_error(response, 404, "not_found")
        assert "carol" not in response.content.decode()

    assert_books_unchanged(before)


def test_a_team_key_reads_releases_and_renews_its_users_job(team_client, world):
    job_id = admit_ok(team_client, ttl_seconds=60)["job_id"]

    read = team_client.get(job_url(job_id))
    renewed = team_client.post(
        job_url(job_id, "/renew"), {"ttl_seconds": 600}, format="json"
    )
    released = team_client.post(
        job_url(job_id, "/release"), {"consumed": {"gpu_hours": 10}}, format="json"
    )

    assert read.status_code == renewed.status_code == released.status_code == 200
    assert exact(released)["consumed"]["gpu_hours"] == 10
    assert path_used(world, "gpu_hours") == [10, 10, 10]
    assert path_used(world, "memory_gb") == [0, 0, 0]
    assert_p2()


def test_check_and_admission_name_the_same_blocking_resource_under_a_scope(db):
    """Two resources refused at the organization, above a team key's scope: the
    check must name the resource the admission names. The organization's quota
    ids are chosen so that the lock order (by id) and the resource names disagree.
    """
    org_ids = {
        "concurrent_gpus": UUID("ffffffff-ffff-4fff-bfff-ffffffffffff"),
        "memory_gb": UUID("00000000-0000-4000-8000-000000000001"),
    }
    for slug, org_id in org_ids.items():
        org = QuotaFactory(
            id=org_id,
            entity_id="zeta",
            resource_type=ResourceType.objects.get(slug=slug),
            limit_value=D("10"),
        )
        team = TeamQuotaFactory(entity_id="zteam", parent=org, limit_value=D("10"))
        UserQuotaFactory(entity_id="zed", parent=team, limit_value=D("10"))
        allocate_direct(
            amount=D("10"),
            entity_type="organization",
            entity_id="zeta",
            resource_type=slug,
        )
    resources = {"concurrent_gpus": 1, "memory_gb": 1}
    request = {"entity_type": "user", "entity_id": "zed", "resources": resources}
    unscoped = client_for_role("scheduler", name="all")
    scoped = client_for_role("scheduler", name="zteam", scope="team:zteam")
    before = books()

    for key, client in (("unscoped", unscoped), ("team:zteam", scoped)):
        checked = exact(client.post(f"{JOBS}/check", request, format="json"))
        refused = assert_error(
            client.post(JOBS, {**request, "job_id": str(uuid4())}, format="json"),
            429,
            "resource_exhausted",
        )
        assert checked["allowed"] is False, key
        assert checked["blocking_quota_id"] == refused["blocking_quota_id"], key
        assert checked["blocking_resource"] == refused["resource_type"], key
        assert checked["resources"] == refused["resources"], key

    assert refused["blocking_quota_id"] is None
    assert_books_unchanged(before)


# --- One statement per admission -----------------------------------------------------


def _eight_resources(world: World) -> list[str]:
    extra = [f"extra_{n}" for n in range(4)]
    for slug in extra:
        _trees(ResourceTypeFactory(slug=slug), "10", "20", "40")
    return sorted([*LIMITS, *extra])


@pytest.mark.parametrize("count", [1, 3, 8])
@pytest.mark.parametrize(
    ("entity_type", "entity_id"),
    [("user", "alice"), ("team", "research"), ("organization", "acme")],
)
@pytest.mark.parametrize("with_rate", [False, True], ids=["no-rate", "rate"])
def test_an_admission_is_one_sql_statement(
    world, count, entity_type, entity_id, with_rate
):
    slugs = _eight_resources(world)
    chosen = ["gpu_hours", *(s for s in slugs if s != "gpu_hours")][:count]
    rates = {"gpu_hours": D("2")} if with_rate else None

    with CaptureQueriesContext(connection) as queries:
        result = job_admit(
            entity_type=entity_type,
            entity_id=entity_id,
            job_id=uuid4(),
            resources=dict.fromkeys(chosen, D("1")),
            rates=rates,
        )

    assert sorted(a.resource_type for a in result.allocations) == sorted(chosen)
    statements = [query["sql"] for query in queries.captured_queries]
    assert len(statements) == 1, "\n".join(statements)
    assert statements[0].startswith("SELECT hq_admit(")
