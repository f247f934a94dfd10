"""The admin as the hierarchy console: the quota tree, usage bars, filters, the
change page's panels, and the read-only allocation and history admins."""

import re
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.db import connection
from django.test.utils import CaptureQueriesContext

from allocations import services as allocation_services
from allocations.models import Allocation, AllocationStatus, UsageHistory
from allocations.selectors import usage_drift
from horizon_quota.admin_paging import EstimatedCountPaginator
from quotas import admin_console, rules
from quotas.models import Quota, ResourceType
from tests.factories import QuotaFactory, TeamQuotaFactory, UserQuotaFactory
from tests.helpers import admin_limits_form, allocate_on, used_of

pytestmark = pytest.mark.django_db

QUOTAS = "/admin/quotas/quota/"
ALLOCATIONS = "/admin/allocations/allocation/"
HISTORY = "/admin/allocations/usagehistory/"
BASE_TIME = datetime(2026, 1, 5, 9, 0, tzinfo=UTC)


def _in_order(allocation_ids) -> None:
    """Give allocations (and their history) the times of the order they were made
    in: within a test's transaction the database clock stands still."""
    for minute, allocation_id in enumerate(allocation_ids):
        at = BASE_TIME + timedelta(minutes=minute)
        Allocation.objects.filter(id=allocation_id).update(allocated_at=at)
        history = UsageHistory.objects.filter(allocation_id=allocation_id)
        history.filter(operation="allocate").update(timestamp=at)
        history.exclude(operation="allocate").update(
            timestamp=at + timedelta(seconds=30)
        )


def _rows(response) -> list[Quota]:
    return list(response.context["cl"].result_list)


# --- the tree ------------------------------------------------------------------------


@pytest.fixture
def forest(db):
    """Two organizations on concurrent_gpus and one on storage_gb, created interleaved
    so that creation order is not tree order."""
    storage = ResourceType.objects.get(slug="storage_gb")
    acme = QuotaFactory(entity_id="acme")
    globex = QuotaFactory(entity_id="globex")
    disks = QuotaFactory(entity_id="disks", resource_type=storage)
    research = TeamQuotaFactory(
        parent=acme, entity_id="research", limit_value=Decimal("10")
    )
    sales = TeamQuotaFactory(
        parent=globex, entity_id="sales", limit_value=Decimal("10")
    )
    platform = TeamQuotaFactory(
        parent=acme, entity_id="platform", limit_value=Decimal("10")
    )
    alice = UserQuotaFactory(
        parent=research, entity_id="alice", limit_value=Decimal("5")
    )
    archive = TeamQuotaFactory(
        parent=disks, entity_id="archive", limit_value=Decimal("10")
    )
    bob = UserQuotaFactory(parent=platform, entity_id="bob", limit_value=Decimal("5"))
    carol = UserQuotaFactory(
        parent=research, entity_id="carol", limit_value=Decimal("5")
    )
    dan = UserQuotaFactory(parent=sales, entity_id="dan", limit_value=Decimal("5"))
    return {
        quota.entity_id: quota
        for quota in [
            acme,
            globex,
            disks,
            research,
            sales,
            platform,
            alice,
            archive,
            bob,
            carol,
            dan,
        ]
    }


def test_the_changelist_lists_each_quota_right_after_its_parent(staff_client, forest):
    response = staff_client.get(QUOTAS)

    rows = _rows(response)
    assert response.status_code == 200
    assert len(rows) == len(forest)
    # Resource type first, then a depth-first walk, siblings by entity id.
    assert [q.entity_id for q in rows] == [
        "acme",
        "platform",
        "bob",
        "research",
        "alice",
        "carol",
        "globex",
        "sales",
        "dan",
        "disks",
        "archive",
    ]
    assert [q.resource_type_id for q in rows] == ["concurrent_gpus"] * 9 + [
        "storage_gb"
    ] * 2
    for index, quota in enumerate(rows):
        # Every quota's descendants follow it at once, all together.
        descendants = [i for i, q in enumerate(rows) if quota.id in q.path[1:]]
        assert descendants == list(range(index + 1, index + 1 + len(descendants)))


def test_the_entity_is_indented_by_its_depth(staff_client, forest):
    html = staff_client.get(QUOTAS).content.decode()

    cells = re.findall(
        r'<span class="hq-tree" data-depth="(\d)" style="padding-left: ([\d.]+)em">'
        r'.*?<span class="hq-tree__id">([^<]+)</span>',
        html,
    )
    depth = {entity_id: (int(d), Decimal(pad)) for d, pad, entity_id in cells}
    assert depth["acme"] == (0, Decimal("0"))
    assert depth["research"] == (1, Decimal("1.5"))
    assert depth["alice"] == (2, Decimal("3"))
    assert depth["archive"] == (1, Decimal("1.5"))
    # Children carry a branch mark; roots do not.
    assert html.count('class="hq-tree__branch"') == len(forest) - 3


def test_the_changelist_loads_its_stylesheet(staff_client, forest):
    html = staff_client.get(QUOTAS).content.decode()
    css = staff_client.get("/static/quotas/admin_console.css")

    assert "quotas/admin_console.css" in html
    assert css.status_code == 200
    assert b".hq-usage__fill" in b"".join(css.streaming_content)


# --- usage bars ---------------------------------------------------------------------


def test_every_row_has_a_usage_bar_with_its_soft_and_hard_marks(staff_client, tree):
    org, team, user = tree
    Quota.objects.filter(id=team.id).update(soft_limit=Decimal("15"))
    allocate_on(user, "20")

    html = staff_client.get(QUOTAS).content.decode()

    assert html.count('<div class="hq-usage ') == 3
    # The team: 20 of 60 used, soft mark at 15/60, hard mark at the bar's end.
    assert (
        '<div class="hq-usage hq-usage--soft" title="above soft limit: '
        '33.33% of the effective limit">'
        '<div class="hq-usage__track">'
        '<span class="hq-usage__fill" style="width: 33.33%"></span>'
        '<span class="hq-usage__mark hq-usage__mark--soft" style="left: 25.00%" '
        'title="soft limit 15"></span>'
        '<span class="hq-usage__mark hq-usage__mark--hard" style="left: 100.00%" '
        'title="hard limit 60"></span>'
        "</div>"
        '<span class="hq-usage__label">20 / 60 (33.33%)</span>'
        "</div>"
    ) in html
    # The user has no soft limit: no soft mark on its bar.
    assert '<span class="hq-usage__label">20 / 30 (66.67%)</span>' in html
    assert html.count("hq-usage__mark--soft") == 1


def _quota(**fields) -> Quota:
    values = {
        "limit_value": Decimal("100"),
        "soft_limit": None,
        "overcommit_ratio": Decimal("1"),
        "used": Decimal("0"),
    }
    values.update(fields)
    return Quota(**values)


@pytest.mark.parametrize(
    ("fields", "state"),
    [
        ({"used": Decimal("50")}, "ok"),
        ({"used": Decimal("51"), "soft_limit": Decimal("50")}, "soft"),
        ({"used": Decimal("100")}, "full"),
        ({"used": Decimal("120")}, "over"),
        ({"used": Decimal("120"), "overcommit_ratio": Decimal("1.5")}, "overcommitted"),
    ],
)
def test_the_bar_is_coloured_by_the_rules_usage_state(fields, state):
    # The states themselves are tested once, in tests/test_rules.py.
    quota = _quota(**fields)

    assert rules.quota_usage_state(quota) == state
    assert f'class="hq-usage hq-usage--{state}"' in admin_console.usage_bar(quota)


def test_with_overcommit_the_hard_mark_sits_inside_the_bar():
    # Effective limit 150: the hard limit (100) is two thirds along.
    bar = admin_console.usage_bar(
        _quota(used=Decimal("30"), overcommit_ratio=Decimal("1.5"))
    )

    assert 'style="width: 20.00%"' in bar
    assert 'hq-usage__mark--hard" style="left: 66.67%"' in bar
    assert "30 / 150 (20%)" in bar


def test_usage_beyond_the_effective_limit_stretches_the_bar():
    # A limit lowered with force below what is in use: the bar spans the usage.
    bar = admin_console.usage_bar(_quota(used=Decimal("200")))

    assert 'style="width: 100.00%"' in bar
    assert 'hq-usage__mark--hard" style="left: 50.00%"' in bar
    assert "200 / 100 (200%)" in bar


# --- filters --------------------------------------------------------------------------


@pytest.fixture
def loaded(tree):
    """The tree with usage: the team above its soft limit, bob at his hard limit,
    a second organization on storage_gb untouched."""
    org, team, alice = tree
    Quota.objects.filter(id=team.id).update(soft_limit=Decimal("20"))
    bob = UserQuotaFactory(parent=team, entity_id="bob", limit_value=Decimal("10"))
    storage = QuotaFactory(
        entity_id="disks", resource_type=ResourceType.objects.get(slug="storage_gb")
    )
    allocate_on(alice, "15")
    allocate_on(bob, "10")
    return {"org": org, "team": team, "alice": alice, "bob": bob, "storage": storage}


def _ids(response) -> set:
    return {quota.entity_id for quota in _rows(response)}


def test_the_entity_type_filter(staff_client, loaded):
    response = staff_client.get(QUOTAS, {"entity_type__exact": "user"})

    assert _ids(response) == {"alice", "bob"}


def test_the_resource_type_filter(staff_client, loaded):
    response = staff_client.get(QUOTAS, {"resource_type__slug__exact": "storage_gb"})

    assert _ids(response) == {"disks"}


def test_the_above_soft_limit_filter(staff_client, loaded):
    above = staff_client.get(QUOTAS, {"soft_limit": "above"})
    within = staff_client.get(QUOTAS, {"soft_limit": "within"})

    # The team holds 25 with a soft limit of 20; nobody else has a soft limit.
    assert _ids(above) == {"research"}
    assert _ids(within) == {"acme", "alice", "bob", "disks"}


def test_the_at_hard_limit_filter_compares_with_the_effective_limit(
    staff_client, loaded
):
    at = staff_client.get(QUOTAS, {"hard_limit": "at"})
    Quota.objects.filter(id=loaded["bob"].id).update(overcommit_ratio=Decimal("2"))
    overcommitted = staff_client.get(QUOTAS, {"hard_limit": "at"})
    below = staff_client.get(QUOTAS, {"hard_limit": "below"})

    assert _ids(at) == {"bob"}
    # bob holds 10 of a limit of 10, but the overcommit gives him 20.
    assert _ids(overcommitted) == set()
    assert _ids(below) == {"acme", "research", "alice", "bob", "disks"}


def test_filters_keep_the_tree_order(staff_client, forest):
    response = staff_client.get(QUOTAS, {"entity_type__exact": "user"})

    assert [q.entity_id for q in _rows(response)] == ["bob", "alice", "carol", "dan"]


# --- the change page ----------------------------------------------------------------


def _panel(html: str, name: str) -> str:
    start = html.index(f'id="hq-panel-{name}"')
    end = html.find('<div class="module hq-panel"', start)
    return html[start : end if end != -1 else None]


def test_the_change_page_shows_ancestors_and_children(staff_client, loaded):
    team, alice = loaded["team"], loaded["alice"]

    team_page = staff_client.get(f"{QUOTAS}{team.id}/change/").content.decode()
    alice_page = staff_client.get(f"{QUOTAS}{alice.id}/change/").content.decode()

    ancestors = _panel(alice_page, "ancestors")
    assert ancestors.index("organization acme") < ancestors.index("team research")
    assert f"{QUOTAS}{loaded['org'].id}/change/" in ancestors
    assert "25 / 60" in ancestors  # the team's bar
    children = _panel(team_page, "children")
    assert children.index("user alice") < children.index("user bob")
    assert f"?parent__id__exact={team.id}" in children
    assert "None: this quota is a root." in _panel(
        staff_client.get(f"{QUOTAS}{loaded['org'].id}/change/").content.decode(),
        "ancestors",
    )


def test_the_children_link_lists_them_in_the_tree_view(staff_client, loaded):
    team = loaded["team"]

    response = staff_client.get(QUOTAS, {"parent__id__exact": str(team.id)})

    assert _ids(response) == {"alice", "bob"}


def test_the_change_page_shows_active_allocations_and_history(staff_client, loaded):
    alice = loaded["alice"]
    first = Allocation.objects.get(quota_id=alice.id).id
    second = allocate_on(alice, "2").id
    released = Allocation.objects.get(id=allocate_on(alice, "1").id)
    allocation_services.allocation_release(allocation_id=released.id)
    _in_order([first, second, released.id])

    html = staff_client.get(f"{QUOTAS}{alice.id}/change/").content.decode()

    allocations = _panel(html, "allocations")
    active = Allocation.objects.filter(quota_id=alice.id, status="active")
    assert active.count() == 2
    for allocation in active:
        assert str(allocation.job_id) in allocations
    assert f"{ALLOCATIONS}{second}/change/" in allocations
    assert str(released.job_id) not in allocations
    assert (
        f"{ALLOCATIONS}?quota__id__exact={alice.id}&amp;status__exact=active"
        in allocations
    )
    history = _panel(html, "history")
    # Newest first: the release, then the three allocations.
    operations = re.findall(r"<td>(allocate|release)</td>", history)
    assert operations == ["release", "allocate", "allocate", "allocate"]
    assert f"{HISTORY}?quota__id__exact={alice.id}" in history


def test_panels_show_a_bounded_number_of_rows(staff_client, tree):
    org, team, user = tree
    for _ in range(admin_console.PANEL_ROWS + 3):
        allocate_on(user, "1")

    html = staff_client.get(f"{QUOTAS}{user.id}/change/").content.decode()

    allocations = _panel(html, "allocations")
    assert allocations.count(f'href="{ALLOCATIONS}') == admin_console.PANEL_ROWS + 1
    assert f"The latest {admin_console.PANEL_ROWS}." in allocations
    history = _panel(html, "history")
    assert history.count("<td>allocate</td>") == admin_console.PANEL_ROWS


def test_the_change_page_shows_recent_audit_changes(staff_client, tree):
    org, team, user = tree

    saved = staff_client.post(
        f"{QUOTAS}{team.id}/change/",
        admin_limits_form("70", reason="more GPUs for the paper deadline"),
    )
    html = staff_client.get(f"{QUOTAS}{team.id}/change/").content.decode()

    assert saved.status_code == 302
    audit = _panel(html, "audit")
    assert "limit_value: 60 GPUs → 70 GPUs" in audit
    assert "more GPUs for the paper deadline" in audit
    assert "root" in audit  # the staff user who saved it


def test_a_hierarchy_error_keeps_the_panels(staff_client, tree):
    org, team, user = tree

    response = staff_client.post(
        f"{QUOTAS}{user.id}/change/",
        admin_limits_form("80"),
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "exceeds the parent" in html
    assert "team research" in _panel(html, "ancestors")


# --- allocations admin --------------------------------------------------------------


@pytest.fixture
def booked(tree):
    """alice holds three active allocations and one released; bob one active."""
    org, team, alice = tree
    bob = UserQuotaFactory(parent=team, entity_id="bob", limit_value=Decimal("10"))
    ids = [allocate_on(alice, value).id for value in ("5", "7", "4")]
    gone = allocate_on(alice, "3").id
    allocation_services.allocation_release(allocation_id=gone)
    bobs = allocate_on(bob, "2").id
    _in_order([*ids, gone, bobs])
    return {
        "org": org,
        "team": team,
        "alice": alice,
        "bob": bob,
        "active": ids,
        "released": gone,
        "bobs": bobs,
    }


def _release(client, ids, **extra):
    return client.post(
        ALLOCATIONS,
        {
            "action": "release_selected",
            "_selected_action": [str(i) for i in ids],
            "index": "0",
            **extra,
        },
        follow=True,
    )


def test_releasing_selected_allocations_restores_every_level(staff_client, booked):
    org, team, alice = booked["org"], booked["team"], booked["alice"]
    first, second, kept = booked["active"]
    assert used_of(org, team, alice) == [Decimal("18")] * 2 + [Decimal("16")]

    response = _release(staff_client, [first, second, booked["released"]])

    messages = [str(m) for m in response.context["messages"]]
    assert messages == ["2 released, 1 already released."]
    # 5 + 7 came back at the user, the team and the organization.
    assert used_of(org, team, alice) == [Decimal("6"), Decimal("6"), Decimal("4")]
    assert set(
        Allocation.objects.filter(status=AllocationStatus.ACTIVE).values_list(
            "id", flat=True
        )
    ) == {kept, booked["bobs"]}
    assert (
        UsageHistory.objects.filter(
            operation="release", allocation_id__in=[first, second]
        ).count()
        == 2
    )
    assert usage_drift() == []


def test_releasing_twice_reports_them_already_released(staff_client, booked):
    first = booked["active"][0]
    _release(staff_client, [first])

    response = _release(staff_client, [first])

    assert [str(m) for m in response.context["messages"]] == [
        "0 released, 1 already released."
    ]
    assert UsageHistory.objects.filter(allocation_id=first).count() == 2
    assert usage_drift() == []


def test_releasing_needs_the_change_permission(client, booked):
    viewer = get_user_model().objects.create_user("viewer", password="pw")
    viewer.is_staff = True
    viewer.save()
    viewer.user_permissions.add(Permission.objects.get(codename="view_allocation"))
    client.force_login(viewer)

    page = client.get(ALLOCATIONS)
    response = _release(client, [booked["active"][0]])

    assert page.status_code == 200
    assert "release_selected" not in page.content.decode()
    assert response.status_code == 200
    assert Allocation.objects.get(id=booked["active"][0]).status == "active"


def test_the_allocation_list_shows_entity_value_and_status(staff_client, booked):
    response = staff_client.get(ALLOCATIONS)

    html = response.content.decode()
    assert response.status_code == 200
    assert len(_rows(response)) == 5
    assert "user:alice" in html
    assert f"{QUOTAS}{booked['alice'].id}/change/" in html
    assert '<td class="field-value">7 GPUs</td>' in html
    # Newest first (alloc_allocated_idx).
    assert [a.id for a in _rows(response)] == [
        booked["bobs"],
        booked["released"],
        *reversed(booked["active"]),
    ]


def test_the_allocation_filters(staff_client, booked):
    released = staff_client.get(ALLOCATIONS, {"status__exact": "released"})
    by_resource = staff_client.get(ALLOCATIONS, {"resource_type": "storage_gb"})
    by_quota = staff_client.get(
        ALLOCATIONS, {"quota__id__exact": str(booked["bob"].id)}
    )
    bad_quota = staff_client.get(ALLOCATIONS, {"quota__id__exact": "nope"})

    assert [a.id for a in _rows(released)] == [booked["released"]]
    assert _rows(by_resource) == []
    assert [a.id for a in _rows(by_quota)] == [booked["bobs"]]
    assert "user:bob (concurrent_gpus)" in by_quota.content.decode()
    assert bad_quota.status_code == 302
    assert "e=1" in bad_quota.url


def test_allocations_are_searched_by_job_and_entity(staff_client, booked):
    bobs = Allocation.objects.get(id=booked["bobs"])

    by_job = staff_client.get(ALLOCATIONS, {"q": str(bobs.job_id)})
    by_entity = staff_client.get(ALLOCATIONS, {"q": "alice"})
    partial = staff_client.get(ALLOCATIONS, {"q": "ali"})

    assert [a.id for a in _rows(by_job)] == [bobs.id]
    assert len(_rows(by_entity)) == 4
    assert _rows(partial) == []  # exact ids only: the lookups stay on indexes


@pytest.mark.parametrize("url", [ALLOCATIONS, HISTORY])
def test_rows_cannot_be_added_changed_or_deleted(staff_client, booked, url):
    model = Allocation if url == ALLOCATIONS else UsageHistory
    row = model.objects.first()
    before = Allocation.objects.count(), UsageHistory.objects.count()

    add = staff_client.get(f"{url}add/")
    view = staff_client.get(f"{url}{row.id}/change/")
    change = staff_client.post(f"{url}{row.id}/change/", {"status": "released"})
    delete = staff_client.post(f"{url}{row.id}/delete/", {"post": "yes"})
    listing = staff_client.get(url)

    assert add.status_code == 403
    assert view.status_code == 200
    assert 'name="_save"' not in view.content.decode()
    assert change.status_code == 403
    assert delete.status_code == 403
    assert "delete_selected" not in listing.content.decode()
    assert (Allocation.objects.count(), UsageHistory.objects.count()) == before
    assert usage_drift() == []


# --- usage history admin ------------------------------------------------------------


def test_history_lists_each_quotas_rows_newest_first(staff_client, booked):
    response = staff_client.get(HISTORY)

    rows = [(row.quota_id, row.allocation_id, row.operation) for row in _rows(response)]
    alice, bob = sorted([booked["alice"].id, booked["bob"].id])
    by_quota = {
        booked["alice"].id: [
            (booked["alice"].id, booked["released"], "release"),
            (booked["alice"].id, booked["released"], "allocate"),
            *((booked["alice"].id, a, "allocate") for a in reversed(booked["active"])),
        ],
        booked["bob"].id: [(booked["bob"].id, booked["bobs"], "allocate")],
    }
    # history_quota_idx order: by quota, then newest first.
    assert rows == by_quota[alice] + by_quota[bob]


def test_history_filters(staff_client, booked):
    releases = staff_client.get(HISTORY, {"operation__exact": "release"})
    by_resource = staff_client.get(HISTORY, {"resource_type": "concurrent_gpus"})
    by_quota = staff_client.get(HISTORY, {"quota__id__exact": str(booked["bob"].id)})

    assert [row.allocation_id for row in _rows(releases)] == [booked["released"]]
    assert len(_rows(by_resource)) == 6
    assert [row.allocation_id for row in _rows(by_quota)] == [booked["bobs"]]


def test_history_is_searched_by_job_and_entity(staff_client, booked):
    released = Allocation.objects.get(id=booked["released"])

    by_job = staff_client.get(HISTORY, {"q": str(released.job_id)})
    by_entity = staff_client.get(HISTORY, {"q": "bob"})
    by_quota = staff_client.get(HISTORY, {"q": str(booked["alice"].id)})

    assert sorted(row.operation for row in _rows(by_job)) == ["allocate", "release"]
    assert [row.allocation_id for row in _rows(by_entity)] == [booked["bobs"]]
    assert len(_rows(by_quota)) == 5


def test_history_of_a_deleted_quota_is_still_listed(staff_client, tree):
    org, team, user = tree
    allocation_id = allocate_on(user, "1").id
    allocation_services.allocation_release(allocation_id=allocation_id)
    user_id = user.id
    Quota.objects.filter(id=user_id).delete()

    response = staff_client.get(HISTORY, {"quota__id__exact": str(user_id)})

    assert len(_rows(response)) == 2
    assert f"quota {user_id} (deleted)" in response.content.decode()


# --- counting -----------------------------------------------------------------------


def _history_rows(quota, count):
    UsageHistory.objects.bulk_create(
        UsageHistory(
            quota_id=quota.id,
            entity_type=quota.entity_type,
            entity_id=quota.entity_id,
            resource_type=quota.resource_type_id,
            allocated_value=Decimal("1"),
            operation="allocate",
            job_id=uuid.uuid4(),
        )
        for _ in range(count)
    )


def test_the_paginator_counts_exactly_up_to_its_cap(tree):
    org, team, user = tree
    _history_rows(user, 12)
    paginator = type("Small", (EstimatedCountPaginator,), {"count_cap": 12})(
        UsageHistory.objects.order_by("quota_id", "-timestamp", "-id"), 5
    )

    with CaptureQueriesContext(connection) as queries:
        assert paginator.count == 12
    assert not paginator.count_is_estimate
    assert len(queries) == 1
    assert "LIMIT 13" in queries[0]["sql"]


def test_past_its_cap_the_paginator_estimates_and_never_counts_the_table(tree):
    org, team, user = tree
    _history_rows(user, 40)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE usage_history")
    paginator = type("Small", (EstimatedCountPaginator,), {"count_cap": 10})(
        UsageHistory.objects.order_by("quota_id", "-timestamp", "-id"), 5
    )

    with CaptureQueriesContext(connection) as queries:
        count = paginator.count

    assert paginator.count_is_estimate
    # The planner's estimate after ANALYZE is the table's size; at worst the rows
    # already seen, so every page up to the cap can be reached.
    assert count == 40
    counts = [q["sql"] for q in queries if "COUNT(" in q["sql"]]
    assert counts and all("LIMIT 11" in sql for sql in counts)
    assert any(q["sql"].startswith("EXPLAIN") for q in queries)


def test_the_history_changelist_uses_the_estimate(staff_client, tree, monkeypatch):
    org, team, user = tree
    _history_rows(user, 30)
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE usage_history")
    monkeypatch.setattr(EstimatedCountPaginator, "count_cap", 10)

    with CaptureQueriesContext(connection) as queries:
        response = staff_client.get(HISTORY)

    assert response.status_code == 200
    assert response.context["cl"].result_count == 30
    assert len(_rows(response)) == 30  # one page: 30 < list_per_page
    assert not [
        q for q in queries if "COUNT(" in q["sql"] and "LIMIT 11" not in q["sql"]
    ]


# --- query budgets ------------------------------------------------------------------

# The same budget for a small and a large table: nothing grows with the rows.
QUOTA_CHANGELIST_BUDGET = 6
# Budgets and charts: the closed periods (their panel and bars), the budget clock,
# and the usage chart's downsampled history.
QUOTA_CHANGE_PAGE_BUDGET = 11
ALLOCATION_CHANGELIST_BUDGET = 6
HISTORY_CHANGELIST_BUDGET = 6


@pytest.fixture(params=[10, 200], ids=["10-rows", "200-rows"])
def crowd(request, db):
    """An organization with N teams, one of them with N users, and one user with N
    allocations (and so N history rows)."""
    size = request.param
    org = QuotaFactory(entity_id="big", limit_value=Decimal("100000"))
    teams = [
        TeamQuotaFactory(
            parent=org, entity_id=f"team-{i:03}", limit_value=Decimal("100")
        )
        for i in range(size)
    ]
    users = [
        UserQuotaFactory(
            parent=teams[0], entity_id=f"user-{i:03}", limit_value=Decimal("50")
        )
        for i in range(size)
    ]
    for _ in range(size):
        allocate_on(users[0], "0.1")
    return {"org": org, "team": teams[0], "user": users[0], "size": size}


def test_the_quota_changelist_stays_within_its_budget(
    staff_client, crowd, django_assert_max_num_queries
):
    staff_client.get(QUOTAS)  # warm the content-type and session caches

    with django_assert_max_num_queries(QUOTA_CHANGELIST_BUDGET):
        response = staff_client.get(QUOTAS)
    with django_assert_max_num_queries(QUOTA_CHANGELIST_BUDGET):
        filtered = staff_client.get(
            QUOTAS, {"entity_type__exact": "user", "soft_limit": "within", "p": "1"}
        )

    assert response.status_code == 200
    assert len(_rows(response)) == min(100, 1 + 2 * crowd["size"])
    assert filtered.status_code == 200


@pytest.mark.parametrize("which", ["org", "team", "user"])
def test_the_quota_change_page_stays_within_its_budget(
    staff_client, crowd, which, django_assert_max_num_queries
):
    url = f"{QUOTAS}{crowd[which].id}/change/"
    staff_client.get(url)

    with django_assert_max_num_queries(QUOTA_CHANGE_PAGE_BUDGET):
        response = staff_client.get(url)

    assert response.status_code == 200
    assert 'id="hq-panels"' in response.content.decode()


def test_the_allocation_changelist_stays_within_its_budget(
    staff_client, crowd, django_assert_max_num_queries
):
    staff_client.get(ALLOCATIONS)

    with django_assert_max_num_queries(ALLOCATION_CHANGELIST_BUDGET):
        response = staff_client.get(ALLOCATIONS)
    with django_assert_max_num_queries(ALLOCATION_CHANGELIST_BUDGET):
        by_quota = staff_client.get(
            ALLOCATIONS, {"quota__id__exact": str(crowd["user"].id)}
        )

    assert len(_rows(response)) == min(100, crowd["size"])
    assert by_quota.status_code == 200


def test_the_history_changelist_stays_within_its_budget(
    staff_client, crowd, django_assert_max_num_queries
):
    staff_client.get(HISTORY)

    with django_assert_max_num_queries(HISTORY_CHANGELIST_BUDGET):
        response = staff_client.get(HISTORY)
    with django_assert_max_num_queries(HISTORY_CHANGELIST_BUDGET):
        searched = staff_client.get(HISTORY, {"q": crowd["user"].entity_id})

    assert len(_rows(response)) == min(100, crowd["size"])
    assert searched.status_code == 200
