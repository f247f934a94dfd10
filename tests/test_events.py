"""Events (DESIGN §7a): the outbox the engine and the services write, edge-triggered
alerts, and the feed ``GET /api/v1/events``.

These tests run inside one test transaction, where nothing commits; the public id
of an event is normally given at the commit (``hq_sequence_event``), so the
``sequenced`` fixture makes the sequencer fire at each insert instead. How ids
follow the commit order is proven with real commits in
``tests/test_event_concurrency.py``.
"""

import uuid
from decimal import Decimal

import pytest
from django.db import connection

from allocations import services as allocation_services
from allocations.exceptions import QuotaExceeded
from allocations.services import jobs
from quotas import services as quota_services
from quotas.access.keys import api_key_create
from quotas.events.models import Event
from quotas.events.serializers import EventDataField
from quotas.models import EntityType, ResourceType
from tests.budgets import set_clock
from tests.factories import QuotaFactory
from tests.helpers import (
    UNKNOWN_ID,
    allocate_on,
    assert_invalid,
    client_with_key,
    expire,
    next_link,
    set_used,
    walk,
)

pytestmark = pytest.mark.django_db

D = Decimal
EVENTS = "/api/v1/events"


@pytest.fixture(autouse=True)
def sequenced(db):
    """Give events their public id as they are written (see the module docstring)."""
    with connection.cursor() as cursor:
        cursor.execute("SET CONSTRAINTS events_sequence IMMEDIATE")


def _events(*types: str) -> list[tuple]:
    """(type, entity_id, threshold or None) of every event so far, oldest first."""
    events = Event.objects.order_by("id")
    if types:
        events = events.filter(type__in=types)
    return [
        (event.type, event.entity_id, event.data.get("threshold")) for event in events
    ]


def _team(limit="10", **fields):
    """org (1000) → team (limit) → alice (limit), on concurrent GPUs, through the
    ORM (no quota.changed events)."""
    org = QuotaFactory(entity_id="acme", limit_value=D(1000))
    team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id="research",
        parent=org,
        limit_value=D(limit),
        **fields,
    )
    user = QuotaFactory(
        entity_type=EntityType.USER,
        entity_id="alice",
        parent=team,
        limit_value=D(limit),
    )
    return org, team, user


CROSSED, BACK = "quota.threshold_crossed", "quota.back_under"


# --- Crossings: edge-triggered ------------------------------------------------------


def test_a_crossing_is_one_event_and_an_allocate_that_crosses_nothing_writes_none():
    _, team, user = _team()
    allocate_on(user, "5")
    assert _events() == []

    allocate_on(user, "3")  # 80 % of both the user and the team

    assert _events() == [(CROSSED, "alice", 80), (CROSSED, "research", 80)]
    event = Event.objects.get(entity_id="research")
    assert event.quota_id == team.id
    assert event.resource_type == "concurrent_gpus"
    assert event.data == {"threshold": 80, "used": 8, "cap": 10}
    assert event.path == list(team.path)

    allocate_on(user, "1")  # 90 %: nothing new
    assert len(_events()) == 2


def test_a_jump_past_two_thresholds_fires_both_in_order():
    _, _, user = _team()
    allocate_on(user, "10")
    assert _events() == [
        (CROSSED, "alice", 80),
        (CROSSED, "alice", 100),
        (CROSSED, "research", 80),
        (CROSSED, "research", 100),
    ]


def test_back_under_re_arms_five_points_below_and_not_before():
    _, _, user = _team(limit="100")
    held = allocate_on(user, "80")
    small = allocate_on(user, "2")
    Event.objects.all().delete()

    allocation_services.allocation_release(allocation_id=small.id)  # 80 %
    allocation_services.allocation_release(
        allocation_id=allocate_on(user, "1").id
    )  # 80 % again: still fired, no event either way
    assert _events() == []

    allocation_services.allocation_release(allocation_id=held.id)  # 0 %
    assert _events() == [(BACK, "alice", 80), (BACK, "research", 80)]

    Event.objects.all().delete()
    allocate_on(user, "76")  # 76 %: re-armed, below 80: nothing
    assert _events() == []
    allocate_on(user, "4")  # 80 % again: a new crossing
    assert _events() == [(CROSSED, "alice", 80), (CROSSED, "research", 80)]


def test_hysteresis_usage_between_the_re_arm_line_and_the_threshold_stays_quiet():
    _, _, user = _team(limit="100")
    first = allocate_on(user, "78")
    second = allocate_on(user, "2")  # 80 %: crossed
    Event.objects.all().delete()

    allocation_services.allocation_release(allocation_id=second.id)  # 78 %
    third = allocate_on(user, "2")  # 80 %
    allocation_services.allocation_release(allocation_id=third.id)  # 78 %
    assert _events() == []  # flapping around 80 is one crossing, not many

    allocation_services.allocation_release(allocation_id=first.id)
    assert [kind for kind, *_ in _events()] == [BACK, BACK]


def test_a_refused_allocation_and_a_check_write_no_events():
    _, _, user = _team()
    allocate_on(user, "5")
    with pytest.raises(QuotaExceeded):
        allocate_on(user, "6")
    allocation_services.allocation_check(
        entity_type="user",
        entity_id="alice",
        resource_type="concurrent_gpus",
        requested_value=D(5),
    )
    assert _events() == []


def test_soft_limit_exceeded_once_until_usage_falls_five_points_of_the_cap_below():
    _, _, user = _team(limit="100", soft_limit=D(50))
    held = allocate_on(user, "51")
    assert _events("quota.soft_limit_exceeded") == [
        ("quota.soft_limit_exceeded", "research", None)
    ]
    event = Event.objects.get(type="quota.soft_limit_exceeded")
    assert event.data == {"soft_limit": 50, "used": 51, "cap": 100}

    allocation_services.allocation_release(allocation_id=allocate_on(user, "1").id)
    allocation_services.allocation_release(allocation_id=held.id)
    allocate_on(user, "46")  # below 45 in between: re-armed; 46 is not above 50
    allocate_on(user, "5")
    assert len(_events("quota.soft_limit_exceeded")) == 2


def test_per_quota_thresholds_replace_the_default(settings):
    settings.ALERT_THRESHOLDS = [90]
    _, team, user = _team(limit="100", alert_thresholds=[D(50), D(75)])
    allocate_on(user, "80")
    assert _events() == [(CROSSED, "research", 50), (CROSSED, "research", 75)]

    allocate_on(user, "10")  # the user has the default: 90
    assert _events()[-1] == (CROSSED, "alice", 90)


def test_no_thresholds_means_no_alerts(settings):
    settings.ALERT_THRESHOLDS = []
    _, team, user = _team(limit="100", alert_thresholds=[])
    allocate_on(user, "100")
    assert _events() == []


def test_a_cap_of_zero_with_usage_counts_as_past_every_threshold():
    _, team, user = _team(limit="10")
    allocate_on(user, "2")
    extra = allocate_on(user, "1")
    team.limit_value = D(0)
    team.save(update_fields=["limit_value"])
    allocation_services.allocation_release(allocation_id=extra.id)
    # The release re-evaluated the team: 2 used of a cap of 0.
    assert _events() == [(CROSSED, "research", 80), (CROSSED, "research", 100)]


# --- Allocation events --------------------------------------------------------------


def test_an_overrun_is_one_event_when_consumption_passes_the_reservation():
    org = quota_services.quota_create(
        entity_type="organization",
        entity_id="o",
        resource_type="gpu_hours",
        limit_value=D(1000),
        period="month",
    )
    allocation = allocate_on(org, "10")
    allocation_services.allocation_consume(
        allocation_id=allocation.id, consumed_value=D(9)
    )
    assert _events("allocation.overrun") == []

    allocation_services.allocation_consume(
        allocation_id=allocation.id, consumed_value=D(12)
    )
    allocation_services.allocation_consume(
        allocation_id=allocation.id, consumed_value=D(15)
    )
    allocation_services.allocation_release(
        allocation_id=allocation.id, consumed_value=D(16)
    )

    overruns = Event.objects.filter(type="allocation.overrun")
    assert overruns.count() == 1
    assert overruns[0].data == {
        "allocation_id": str(allocation.id),
        "job_id": str(allocation.job_id),
        "allocated_value": 10,
        "consumed_value": 12,
    }


def test_an_overrun_reported_at_release_is_an_event():
    org = quota_services.quota_create(
        entity_type="organization",
        entity_id="o",
        resource_type="gpu_hours",
        limit_value=D(1000),
        period="month",
    )
    allocation = allocate_on(org, "10")
    allocation_services.allocation_release(
        allocation_id=allocation.id, consumed_value=D(11)
    )
    assert _events("allocation.overrun") == [("allocation.overrun", "o", None)]


def test_an_expired_lease_is_an_event_about_the_allocations_quota():
    _, _, user = _team(limit="100")
    allocation = allocate_on(user, "5", ttl_seconds=60)
    expire(allocation.id)

    (event,) = Event.objects.filter(type="allocation.expired")
    assert event.quota_id == user.id
    assert event.data["allocation_id"] == str(allocation.id)
    assert event.data["allocated_value"] == 5


def test_a_closed_budget_period_is_an_event(settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    set_clock("2026-11-15T12:00:00Z")
    org = quota_services.quota_create(
        entity_type="organization",
        entity_id="o",
        resource_type="gpu_hours",
        limit_value=D(100),
        period="month",
        carryover_limit=D(10),
    )
    allocation = allocate_on(org, "30")
    allocation_services.allocation_release(
        allocation_id=allocation.id, consumed_value=D(30)
    )
    set_clock("2026-12-02T00:00:00Z")
    allocation_services.budgets_roll()

    (event,) = Event.objects.filter(type="budget.period_closed")
    assert event.quota_id == org.id
    assert event.data["period"] == "month"
    assert event.data["consumed"] == 30
    assert event.data["carried_forward"] == 10
    assert event.data["period_start"].startswith("2026-11-01")


def test_a_job_admission_alerts_on_every_resource():
    for slug in ("concurrent_gpus", "memory_gb"):
        QuotaFactory(
            entity_type=EntityType.USER,
            entity_id="bob",
            resource_type=ResourceType.objects.get(slug=slug),
            limit_value=D(10),
        )
    jobs.job_admit(
        entity_type="user",
        entity_id="bob",
        job_id=uuid.uuid4(),
        resources={"concurrent_gpus": D(8), "memory_gb": D(10)},
    )
    crossed = Event.objects.filter(type=CROSSED).order_by("id")
    assert sorted(
        (event.resource_type, event.data["threshold"]) for event in crossed
    ) == [("concurrent_gpus", 80), ("memory_gb", 80), ("memory_gb", 100)]


# --- Service events -----------------------------------------------------------------


def test_quota_changes_are_events_with_what_changed_and_why():
    org = quota_services.quota_create(
        entity_type="organization",
        entity_id="o",
        resource_type="concurrent_gpus",
        limit_value=D(10),
        reason="new customer",
    )
    quota_services.quota_update(
        quota_id=org.id, changes={"limit_value": D(20)}, reason="grew"
    )
    quota_services.quota_delete(quota_id=org.id)

    changes = [
        (event.data["action"], event.data["changes"], event.data["reason"])
        for event in Event.objects.filter(type="quota.changed").order_by("id")
    ]
    assert changes[0][0] == "create" and changes[0][2] == "new customer"
    assert changes[0][1]["limit_value"] == [None, "10"]
    assert changes[1] == ("update", {"limit_value": ["10", "20"]}, "grew")
    assert changes[2][0] == "delete"
    assert "actor" not in Event.objects.filter(type="quota.changed")[0].data


def test_lowering_a_cap_below_usage_crosses_thresholds():
    _, team, user = _team(limit="100")
    allocate_on(user, "70")
    Event.objects.all().delete()

    quota_services.quota_update(
        quota_id=user.id, changes={"limit_value": D(70)}, force=True
    )
    assert _events(CROSSED) == [(CROSSED, "alice", 80), (CROSSED, "alice", 100)]


def test_new_thresholds_fire_for_what_usage_has_already_reached():
    _, team, user = _team(limit="100")
    allocate_on(user, "85")
    Event.objects.all().delete()

    quota_services.quota_update(
        quota_id=team.id, changes={"alert_thresholds": [D(50), D(90)]}
    )
    assert _events(CROSSED) == [(CROSSED, "research", 50)]
    team.refresh_from_db()
    assert team.alert_thresholds == [D(50), D(90)]


def test_a_usage_repair_is_an_event_with_the_stored_and_actual_books():
    _, team, user = _team(limit="100")
    allocate_on(user, "5")
    set_used(team, "7")
    allocation_services.usage_reconcile(fix=True)

    (event,) = Event.objects.filter(type="usage.repaired")
    assert event.quota_id == team.id
    assert event.data["stored"] == 7
    assert event.data["actual"] == 5


# --- Thresholds through the API -----------------------------------------------------


def test_thresholds_are_set_read_and_cleared_through_the_api(admin_client_api):
    created = admin_client_api.post(
        "/api/v1/quotas",
        {
            "entity_type": "organization",
            "entity_id": "o",
            "resource_type": "concurrent_gpus",
            "limit_value": 10,
            "alert_thresholds": [100, "50", 75.5],
        },
        format="json",
    )
    assert created.status_code == 201, created.content
    assert created.json()["alert_thresholds"] == [50, 75.5, 100]

    url = f"/api/v1/quotas/{created.json()['id']}"
    cleared = admin_client_api.patch(url, {"alert_thresholds": None}, format="json")
    assert cleared.json()["alert_thresholds"] is None
    none = admin_client_api.patch(url, {"alert_thresholds": []}, format="json")
    assert none.json()["alert_thresholds"] == []


@pytest.mark.parametrize(
    "thresholds",
    [
        [0],
        [-5],
        [1000.01],
        [80, 80],
        [1.001],
        "80",
        [str(n) for n in range(1, 12)],
        ["eighty"],
    ],
    ids=[
        "zero",
        "negative",
        "above-1000",
        "twice",
        "3-places",
        "not-a-list",
        "11",
        "word",
    ],
)
def test_invalid_thresholds_are_a_400_and_change_nothing(admin_client_api, thresholds):
    org = QuotaFactory(entity_id="o", limit_value=D(10))
    response = admin_client_api.patch(
        f"/api/v1/quotas/{org.id}", {"alert_thresholds": thresholds}, format="json"
    )
    assert_invalid(response, "alert_thresholds")
    org.refresh_from_db()
    assert org.alert_thresholds is None
    assert Event.objects.count() == 0


# --- The feed -----------------------------------------------------------------------


def _crossings(users=3, org="acme"):
    """One team per call with ``users`` users each crossing 80 %."""
    root = QuotaFactory(entity_id=org, limit_value=D(1000))
    team = QuotaFactory(
        entity_type=EntityType.TEAM,
        entity_id=f"{org}-team",
        parent=root,
        limit_value=D(1000),
    )
    for index in range(users):
        user = QuotaFactory(
            entity_type=EntityType.USER,
            entity_id=f"{org}-u{index}",
            parent=team,
            limit_value=D(10),
        )
        allocate_on(user, "9")
    return root, team


def test_the_feed_is_oldest_first_and_resumes_after_the_last_id(admin_client_api):
    _crossings(users=5)
    first = admin_client_api.get(EVENTS, {"limit": 2})
    assert first.status_code == 200
    ids = [event["id"] for event in first.json()]
    assert len(ids) == 2 and ids == sorted(ids)
    link = next_link(first)
    assert f"after={ids[-1]}" in link

    pages = walk(admin_client_api, link)
    everything = admin_client_api.get(EVENTS).json()
    assert len(everything) == 5
    assert [event["id"] for event in everything] == ids + [
        event_id for page in pages for event_id in page
    ]
    assert set(everything[0]) == {
        "id",
        "type",
        "occurred_at",
        "quota_id",
        "entity_type",
        "entity_id",
        "resource_type",
        "data",
    }
    assert admin_client_api.get(EVENTS, {"after": everything[-1]["id"]}).json() == []


def test_the_feed_writes_amounts_and_times_as_the_rest_of_the_api(admin_client_api):
    _crossings(users=1)
    answer = admin_client_api.get(EVENTS)

    crossing = answer.json()[0]
    assert crossing["data"]["threshold"] == 80
    assert b'"cap":10,' in answer.content.replace(b" ", b"")
    assert b".0000" not in answer.content and b"+00:00" not in answer.content


@pytest.mark.parametrize(
    "data, shown",
    [
        (
            {"cap": Decimal("19.000000"), "used": Decimal("16.5000")},
            {"cap": 19, "used": Decimal("16.5")},
        ),
        ({"at": "2026-12-01T00:00:00+00:00"}, {"at": "2026-12-01T00:00:00Z"}),
        ({"at": "2026-12-01T00:00:00.25+00:00"}, {"at": "2026-12-01T00:00:00.25Z"}),
        ({"at": "2026-12-01T00:00:00+01:00"}, {"at": "2026-12-01T00:00:00+01:00"}),
        (
            {"changes": {"limit_value": [Decimal("10.0000"), Decimal("2E+1")]}},
            {"changes": {"limit_value": [10, 20]}},
        ),
        (
            {"reason": "+00:00", "n": 3, "none": None},
            {"reason": "+00:00", "n": 3, "none": None},
        ),
    ],
)
def test_event_data_is_shown_in_the_apis_formats(data, shown):
    assert EventDataField().to_representation(data) == shown


def test_the_feed_filters_by_type(admin_client_api):
    _crossings(users=1)
    quota_services.quota_create(
        entity_type="organization",
        entity_id="other",
        resource_type="concurrent_gpus",
        limit_value=D(1),
    )
    changed = admin_client_api.get(EVENTS, {"type": "QUOTA.CHANGED"}).json()
    assert [event["type"] for event in changed] == ["quota.changed"]
    both = admin_client_api.get(
        f"{EVENTS}?type=quota.changed,quota.threshold_crossed"
    ).json()
    repeated = admin_client_api.get(
        f"{EVENTS}?type=quota.changed&type=quota.threshold_crossed"
    ).json()
    assert len(both) == len(repeated) == 2


@pytest.mark.parametrize(
    "params, field",
    [
        ({"after": "-1"}, "after"),
        ({"after": "x"}, "after"),
        ({"after": "1.5"}, "after"),
        ({"after": "9" * 30}, "after"),
        ({"type": "quota.full"}, "type"),
        ({"type": "webhook.test"}, "type"),
        ({"limit": "0"}, "limit"),
    ],
)
def test_bad_feed_parameters_are_a_400(admin_client_api, params, field):
    assert_invalid(admin_client_api.get(EVENTS, params), field)


def test_every_role_may_read_the_feed_and_no_key_may_not(viewer_client, api_client):
    assert viewer_client.get(EVENTS).status_code == 200
    assert api_client.get(EVENTS).status_code == 401
    assert api_client.post(EVENTS, {}, format="json").status_code in (401, 405)


def test_a_scoped_key_sees_only_the_events_of_its_subtree(db):
    _crossings(users=2, org="org-a")
    _, team_b = _crossings(users=2, org="org-b")
    quota_services.quota_update(quota_id=team_b.id, changes={"limit_value": D(999)})

    _, raw_a = api_key_create(name="a", role="viewer", scope="organization:org-a")
    _, raw_team_b = api_key_create(name="b", role="viewer", scope="team:org-b-team")
    seen_a = client_with_key(raw_a).get(EVENTS).json()
    seen_b = client_with_key(raw_team_b).get(EVENTS).json()

    assert seen_a and all(e["entity_id"].startswith("org-a") for e in seen_a)
    assert seen_b and all(e["entity_id"].startswith("org-b") for e in seen_b)
    assert {e["type"] for e in seen_b} == {CROSSED, "quota.changed"}
    # Filtering by type or paging never widens a scope.
    typed = client_with_key(raw_a).get(EVENTS, {"type": "quota.changed"}).json()
    assert typed == []
    assert client_with_key(raw_a).get(EVENTS, {"after": 0, "limit": 1000}).json() == (
        seen_a
    )


def test_events_outlive_their_quota(admin_client_api):
    org = quota_services.quota_create(
        entity_type="organization",
        entity_id="gone",
        resource_type="concurrent_gpus",
        limit_value=D(1),
    )
    quota_services.quota_delete(quota_id=org.id)
    feed = admin_client_api.get(EVENTS).json()
    assert [event["quota_id"] for event in feed] == [str(org.id), str(org.id)]
    assert UNKNOWN_ID not in {event["quota_id"] for event in feed}
