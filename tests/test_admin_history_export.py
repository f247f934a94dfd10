"""The quota page's pictures of history, the subtree's history on team and
organization pages, stable sibling order, and the CSV exports (issue 14)."""

import csv
import io
import re
from decimal import Decimal

import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext

from allocations import services as allocation_services
from allocations.selectors import usage_series
from benchmarks.populate import Size, populate
from quotas.models import Quota, ResourceType
from tests import budgets
from tests.factories import QuotaFactory, TeamQuotaFactory, UserQuotaFactory
from tests.helpers import allocate_on
from tests.test_query_plans import _explain, _full_scans

pytestmark = pytest.mark.django_db

QUOTAS = "/admin/quotas/quota/"
HISTORY_CSV = "/admin/allocations/usagehistory/export.csv"
D = Decimal


def _csv(response) -> list[dict]:
    assert response["Content-Type"].startswith("text/csv")
    body = b"".join(response.streaming_content).decode()
    return list(csv.DictReader(io.StringIO(body)))


def _panel(html: str, name: str) -> str:
    start = html.index(f'id="hq-panel-{name}"')
    end = html.find('<div class="module hq-panel', start + 1)
    return html[start : end if end > 0 else len(html)]


# --- sibling order --------------------------------------------------------------


@pytest.fixture
def two_resources(db):
    """The same organization with teams created in an order that is not the
    alphabet's, on two resource types."""
    trees = {}
    for slug in ("concurrent_gpus", "memory_gb"):
        org = QuotaFactory(entity_id="acme", resource_type_id=slug)
        for name in ("research", "platform", "infra"):
            team = TeamQuotaFactory(
                parent=org, entity_id=name, resource_type_id=slug, limit_value=10
            )
            for user in ("zed", "amy"):
                UserQuotaFactory(
                    parent=team,
                    entity_id=f"{name}-{user}",
                    resource_type_id=slug,
                    limit_value=5,
                )
        trees[slug] = org
    return trees


def test_siblings_stand_by_entity_id_under_every_resource_type(
    staff_client, two_resources
):
    rows = list(staff_client.get(QUOTAS).context["cl"].result_list)

    by_resource = {}
    for quota in rows:
        by_resource.setdefault(quota.resource_type_id, []).append(quota.entity_id)
    expected = [
        "acme",
        *("infra", "infra-amy", "infra-zed"),
        *("platform", "platform-amy", "platform-zed"),
        *("research", "research-amy", "research-zed"),
    ]
    assert by_resource == {"concurrent_gpus": expected, "memory_gb": expected}


def test_the_database_keys_quotas_written_by_plain_sql_too(db):
    # The set-based loader writes rows without the ORM: the trigger keys them.
    populate(
        connection, Size(organizations=2, teams=2, users=2, allocations=0), vacuum=False
    )

    rows = list(Quota.objects.order_by("resource_type_id", "tree_key", "id"))

    assert [q.entity_id for q in rows][:4] == [
        "bulk-org-1",
        "bulk-org-1-team-1",
        "bulk-org-1-team-1-user-1",
        "bulk-org-1-team-1-user-2",
    ]
    for quota in rows:
        assert len(quota.tree_key) == quota.depth + 1


# --- the usage chart ----------------------------------------------------------------


def _points(html: str, series: str) -> list[str]:
    chart = html[html.index('id="hq-chart-usage"') :]
    chart = chart[: chart.index("</svg>")]
    return re.findall(rf'data-series="{series}" data-t="[^"]+" data-v="([^"]+)"', chart)


def test_the_usage_chart_replays_the_books_of_a_subtree(staff_client, tree, settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    org, team, user = tree
    Quota.objects.update(created_at=budgets.now())
    budgets.advance(hours=1)
    first = allocate_on(user, "4")
    budgets.advance(hours=3)
    allocate_on(user, "2.5")
    budgets.advance(hours=3)
    allocation_services.allocation_release(allocation_id=first.id)
    budgets.advance(hours=1)

    for quota in (user, team, org):
        html = staff_client.get(f"{QUOTAS}{quota.id}/change/").content.decode()
        assert _points(html, "used") == ["0", "4", "6.5", "2.5"], quota


def test_a_budgets_chart_replays_reserved_and_consumed(settings):
    """Walked back from today's books, every point is the books as they stood after
    that change: reservations, reports within them, an overrun and a settle."""
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    budgets.set_clock("2026-12-01T00:00:00Z")
    user, team, org = budgets.tree(limits=("400", "600", "1000"))
    seen = []

    def step(action):
        budgets.advance(hours=6)
        action()
        user.refresh_from_db()
        seen.append((user.reserved, user.consumed))

    jobs = []
    step(lambda: jobs.append(budgets.allocate(value="100")))
    step(lambda: jobs.append(budgets.allocate(value="50")))
    step(
        lambda: allocation_services.allocation_consume(
            allocation_id=jobs[0].id, consumed_value=D(30)
        )
    )
    step(
        lambda: allocation_services.allocation_consume(
            allocation_id=jobs[0].id,
            consumed_value=D(130),  # past its 100
        )
    )
    step(
        lambda: allocation_services.allocation_release(
            allocation_id=jobs[1].id, consumed_value=D(20)
        )
    )
    budgets.advance(hours=6)

    user.refresh_from_db()
    points = usage_series(
        quota=user, start=user.period_start, end=budgets.now(), buckets=100
    )

    assert [(r, c) for _, r, c in points] == [(0, 0), *seen]
    assert seen[-1] == (0, D(150))


def test_the_budget_page_draws_the_burn_up_and_closed_periods(staff_client, settings):
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    budgets.set_clock("2026-11-01T00:00:00Z")
    user, team, org = budgets.tree(limits=("400", "600", "1000"))
    job = budgets.allocate(value="50")
    budgets.set_clock("2026-11-20T00:00:00Z")
    allocation_services.allocation_release(allocation_id=job.id, consumed_value=D(70))
    budgets.set_clock("2026-12-10T00:00:00Z")
    budgets.allocate(value="10")

    html = staff_client.get(f"{QUOTAS}{user.id}/change/").content.decode()

    assert 'id="hq-chart-burnup"' in html
    periods = html[html.index('id="hq-chart-periods"') :]
    assert re.findall(r'data-v="([^"]+)"/>', periods[: periods.index("</svg>")]) == [
        "70"
    ]


# --- subtree history and the page's layout --------------------------------------


def test_a_team_page_shows_its_users_history(staff_client, tree):
    org, team, user = tree
    bob = UserQuotaFactory(parent=team, entity_id="bob", limit_value=D(10))
    allocate_on(user, "3")
    allocate_on(bob, "2")

    for quota in (team, org):
        html = staff_client.get(f"{QUOTAS}{quota.id}/change/").content.decode()
        history = _panel(html, "history")
        assert "of the subtree" in history
        assert "user alice" in history and "user bob" in history
        assert f"subtree={quota.id}" in history


def test_a_users_page_shows_its_own_history_whatever_its_age(staff_client, tree):
    org, team, user = tree
    allocate_on(user, "3")
    user.history.update(timestamp=budgets.now().replace(year=2020))

    history = _panel(
        staff_client.get(f"{QUOTAS}{user.id}/change/").content.decode(), "history"
    )

    assert "2020-" in history
    assert "of the subtree" not in history


def test_the_action_row_is_at_the_bottom_below_the_panels(staff_client, tree):
    html = staff_client.get(f"{QUOTAS}{tree[1].id}/change/").content.decode()

    assert html.index('id="hq-panels"') < html.index('class="submit-row"')
    assert html.count('class="submit-row"') == 1


def test_form_amounts_are_shown_without_the_stored_scale(staff_client, tree):
    html = staff_client.get(f"{QUOTAS}{tree[1].id}/change/").content.decode()

    assert 'name="limit_value" value="60"' in html
    assert "60.0000" not in html


# --- CSV --------------------------------------------------------------------------


def test_the_quota_csv_is_the_filtered_list_in_its_order(staff_client, two_resources):
    query = {"entity_type__exact": "user", "q": "platform-amy"}
    listed = list(staff_client.get(QUOTAS, query).context["cl"].result_list)

    rows = _csv(staff_client.get(f"{QUOTAS}export.csv", query))

    assert [row["id"] for row in rows] == [str(q.id) for q in listed]
    assert [(row["resource_type"], row["entity_id"]) for row in rows] == [
        ("concurrent_gpus", "platform-amy"),
        ("memory_gb", "platform-amy"),
    ]
    assert rows[0]["limit_value"] == "5"
    assert rows[0]["unit"] == "GPUs"
    assert rows[0]["soft_limit"] == ""


def test_the_quota_csv_holds_every_page(staff_client, two_resources):
    rows = _csv(staff_client.get(f"{QUOTAS}export.csv"))

    assert len(rows) == Quota.objects.count() == 20
    header = list(rows[0])
    assert header[:4] == ["id", "entity_type", "entity_id", "resource_type"]


def test_the_list_links_to_the_export_of_its_filters(staff_client, two_resources):
    html = staff_client.get(QUOTAS, {"entity_type__exact": "team", "p": "1"}).content

    assert b'href="/admin/quotas/quota/export.csv?entity_type__exact=team"' in html


def test_a_quotas_history_csv(staff_client, tree):
    org, team, user = tree
    first = allocate_on(user, "1.5")
    allocation_services.allocation_release(allocation_id=first.id)

    rows = _csv(staff_client.get(HISTORY_CSV, {"quota__id__exact": user.id}))
    subtree = _csv(staff_client.get(HISTORY_CSV, {"subtree": org.id}))

    assert sorted(row["operation"] for row in rows) == ["allocate", "release"]
    assert {row["allocated_value"] for row in rows} == {"1.5"}
    assert {row["unit"] for row in rows} == {"GPUs"}
    assert {row["job_id"] for row in rows} == {str(first.job_id)}
    assert len(subtree) == 2


def test_exports_need_the_view_permission(client, tree):
    assert client.get(f"{QUOTAS}export.csv").status_code == 302
    assert client.get(HISTORY_CSV).status_code == 302


# --- flat in cost -------------------------------------------------------------------

QUOTA_PAGE_BUDGET = 11


@pytest.mark.parametrize("quotas", [10, 10_000])
def test_quota_pages_stay_within_their_budget(
    staff_client, quotas, django_assert_max_num_queries
):
    size = (
        Size(organizations=1, teams=1, users=8, allocations=50)
        if quotas == 10
        else Size(organizations=1, teams=100, users=99, allocations=20_000)
    )
    populate(connection, size, vacuum=False)
    assert Quota.objects.count() == (10 if quotas == 10 else 10_001)
    pages = [
        Quota.objects.get(entity_id="bulk-org-1"),
        Quota.objects.get(entity_id="bulk-org-1-team-1"),
        Quota.objects.get(entity_id="bulk-org-1-team-1-user-1"),
    ]
    assert ResourceType.objects.filter(slug="concurrent_gpus").exists()

    for quota in pages:
        url = f"{QUOTAS}{quota.id}/change/"
        staff_client.get(url)
        with django_assert_max_num_queries(QUOTA_PAGE_BUDGET):
            response = staff_client.get(url)
        assert response.status_code == 200
        assert 'id="hq-chart-usage"' in response.content.decode()


def test_the_pages_read_history_through_indexes(staff_client):
    """On a populated database the chart's and the subtree history's reads of
    usage_history, allocations and quotas are index scans (no full scan), as in
    tests/test_query_plans.py."""
    populate(
        connection,
        Size(organizations=10, teams=5, users=20, allocations=20_000),
        vacuum=False,
    )
    team = Quota.objects.get(entity_id="bulk-org-1-team-1")
    url = f"{QUOTAS}{team.id}/change/"
    staff_client.get(url)

    with CaptureQueriesContext(connection) as queries:
        assert staff_client.get(url).status_code == 200

    reads = [
        query["sql"]
        for query in queries.captured_queries
        if "usage_history" in query["sql"]
    ]
    assert len(reads) == 2  # the chart and the recent history
    for sql in reads:
        assert _full_scans(_explain(sql)) == [], sql


def test_an_export_with_a_refused_filter_goes_back_to_the_list(staff_client, tree):
    response = staff_client.get(HISTORY_CSV, {"subtree": "not-a-uuid"})

    assert response.status_code == 302
    assert response["Location"] == "/admin/allocations/usagehistory/?e=1"
