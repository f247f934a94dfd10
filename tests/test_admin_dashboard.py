"""The console's dashboard (issue 14): quotas at or near their hard limit, budgets
projected to run out this period, top consumers, the day's events and key figures,
each row linking to its quota, in a flat number of queries."""

import re
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection

from allocations.models import UsageRepair
from benchmarks.populate import Size, populate
from quotas import rules
from quotas.admin_console import dashboard
from quotas.events.services import quota_event, record_events
from quotas.models import Quota
from tests import budgets
from tests.factories import QuotaFactory, TeamQuotaFactory, UserQuotaFactory
from tests.helpers import allocate_on, set_fields, set_used

pytestmark = pytest.mark.django_db

DASHBOARD = "/admin/quotas/quota/dashboard/"
D = Decimal


def _section(html: str, name: str) -> str:
    start = html.index(f'id="{name}"')
    end = html.find('<div class="module hq-panel"', start + 1)
    return html[start : end if end > 0 else len(html)]


@pytest.fixture
def crowd(tree):
    """The tree (org 100 → team 60 → user 30), a second user at 95 % of 10 and a
    third at 80 % of 10."""
    org, team, alice = tree
    carol = UserQuotaFactory(parent=team, entity_id="carol", limit_value=D(10))
    dave = UserQuotaFactory(parent=team, entity_id="dave", limit_value=D(10))
    allocate_on(carol, "9.5")
    allocate_on(dave, "8")
    allocate_on(alice, "3")
    return {"org": org, "team": team, "alice": alice, "carol": carol, "dave": dave}


def test_the_index_links_to_the_dashboard(staff_client, db):
    html = staff_client.get("/admin/").content.decode()

    assert f'href="{DASHBOARD}"' in html


def test_it_lists_quotas_at_or_past_90_percent_and_links_to_them(staff_client, crowd):
    html = staff_client.get(DASHBOARD).content.decode()

    near = _section(html, "hq-near-limit")
    assert "user carol" in near
    assert f'href="/admin/quotas/quota/{crowd["carol"].id}/change/"' in near
    assert "user dave" not in near  # 80 %
    assert "user alice" not in near


def test_the_fullest_come_first_and_an_unused_zero_limit_is_not_near(crowd):
    set_used(crowd["alice"], "30")  # 100 %
    empty = UserQuotaFactory(parent=crowd["team"], entity_id="erin", limit_value=0)

    rows = dashboard.near_hard_limit()

    assert [row["entity"] for row in rows] == ["user alice", "user carol"]
    assert str(empty.id) not in {str(row["id"]) for row in rows}


def test_near_follows_the_effective_limit_with_overcommit(crowd):
    # 9.5 of 10 × 1.5: 63 %, no longer near.
    set_fields(crowd["carol"], overcommit_ratio=D("1.5"))

    assert "user carol" not in {row["entity"] for row in dashboard.near_hard_limit()}


def test_a_budgets_carry_over_adds_to_its_limit_in_every_list(staff_client, crowd):
    # 9.5 of (10 + 5 carried over): 63 %, neither near nor at the hard limit, in
    # the dashboard and in the changelist's filter alike (the model's rule).
    set_fields(crowd["carol"], carried_over=D(5))

    assert "user carol" not in {row["entity"] for row in dashboard.near_hard_limit()}
    at_limit = staff_client.get("/admin/quotas/quota/", {"hard_limit": "at"})
    assert crowd["carol"] not in list(at_limit.context["cl"].result_list)
    set_used(crowd["carol"], "15")
    at_limit = staff_client.get("/admin/quotas/quota/", {"hard_limit": "at"})
    assert [q.entity_id for q in at_limit.context["cl"].result_list] == ["carol"]


def test_top_consumers_are_the_users_that_use_most_per_resource(crowd):
    storage = QuotaFactory(entity_id="disks", resource_type_id="storage_gb")
    archive = TeamQuotaFactory(parent=storage, entity_id="archive")
    UserQuotaFactory(parent=archive, entity_id="zoe", resource_type_id="storage_gb")
    set_used(
        UserQuotaFactory(
            parent=archive, entity_id="yan", resource_type_id="storage_gb"
        ),
        "7",
    )

    groups = dashboard.top_consumers(per_resource=2)

    assert [group["resource_type"] for group in groups] == [
        "concurrent_gpus",
        "storage_gb",
    ]
    assert [row["entity"] for row in groups[0]["rows"]] == ["user carol", "user dave"]
    assert [row["used"] for row in groups[0]["rows"]] == ["9.5 GPUs", "8 GPUs"]
    assert [row["entity"] for row in groups[1]["rows"]] == ["user yan"]


# Events get their public id when they commit.
@pytest.mark.django_db(transaction=True)
def test_events_of_the_last_day_are_listed_newest_first(staff_client, crowd):
    record_events(
        [quota_event("quota.threshold_crossed", crowd["carol"], threshold=90)]
    )
    html = staff_client.get(DASHBOARD).content.decode()

    events = _section(html, "hq-events")
    assert "quota.threshold_crossed" in events
    assert "threshold 90%" in events
    assert f'href="/admin/quotas/quota/{crowd["carol"].id}/change/"' in events


# Events get their public id when they commit.
@pytest.mark.django_db(transaction=True)
def test_events_older_than_a_day_are_left_out(crowd):
    record_events([quota_event("quota.changed", crowd["carol"])])
    now = budgets.now()

    assert dashboard.recent_events(now)[0]
    assert dashboard.recent_events(now + timedelta(days=2))[0] == []


# Events get their public id when they commit.
@pytest.mark.django_db(transaction=True)
def test_key_figures_count_the_allocations_and_the_last_repair(staff_client, crowd):
    run = "6c1d7a3e-43c4-4a39-9c52-0b6f8a1f7e11"
    UsageRepair.objects.create(
        run_id=run,
        quota=crowd["carol"],
        entity_type="user",
        entity_id="carol",
        resource_type="concurrent_gpus",
        stored=D(12),
        actual=D("9.5"),
        delta=D("2.5"),
    )
    record_events([quota_event("usage.repaired", crowd["carol"], run_id=run)])

    html = staff_client.get(DASHBOARD).content.decode()

    figures = html[html.index('id="hq-figures"') :]
    values = re.findall(r'class="hq-figure__value">([^<]+)<', figures)
    # 3 allocations made within the minute; 3 active; one quota repaired.
    assert values == ["0.05", "3", "1 quota(s)"]
    assert "total |drift| 2.5" in figures


# --- budgets projected to run out ------------------------------------------------


@pytest.fixture
def budget(settings):
    """A monthly GPU-hours budget of 400, ten days into December."""
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    budgets.set_clock("2026-12-01T00:00:00Z")
    user, team, org = budgets.tree(limits=("400", "600", "1000"))
    return user


def _consume(value, *, at, reserve="1"):
    job = budgets.allocate(value=reserve)
    budgets.set_clock(at)
    budgets.services.allocation_release(allocation_id=job.id, consumed_value=D(value))


def test_a_budget_burning_too_fast_is_projected_to_run_out(staff_client, budget):
    # 200 consumed in 10 days: 600 by the month's end, past 400.
    _consume("200", at="2026-12-11T00:00:00Z")

    html = staff_client.get(DASHBOARD).content.decode()

    running = _section(html, "hq-running-out")
    assert "user user" in running
    assert f'href="/admin/quotas/quota/{budget.id}/change/"' in running
    # The rules' moment: 200 more at 20 a day, 10 days on.
    assert "2026-12-21 00:00" in running


def test_a_budget_that_lasts_its_period_is_not_listed(budget):
    # 100 consumed in 10 days: 310 by the month's end, under 400.
    _consume("100", at="2026-12-11T00:00:00Z")

    assert dashboard.running_out(budgets.now()) == []


def test_the_predicate_agrees_with_the_rules_projection(budget):
    """projected_to_run_out_q lists exactly the budgets whose
    rules.projected_exhaustion falls in the period: the user (out on the 21st) and
    the team (on the 31st), not the organization."""
    _consume("150", at="2026-12-11T00:00:00Z")
    now = budgets.now()
    for quota in Quota.objects.filter(period="month"):
        projected = rules.projected_exhaustion(
            used=quota.used,
            cap=quota.effective_limit,
            consumed=quota.consumed,
            since=quota.period_start,
            until=quota.period_end,
            now=now,
        )
        listed = (
            Quota.objects.filter(rules.projected_to_run_out_q(now), id=quota.id)
        ).exists()
        assert listed == (projected is not None), quota


# --- flat in cost -------------------------------------------------------------------

# The session and the user; the budget clock; near the limit, running out, top
# consumers, events; the allocation rate, the active allocations, the last repair
# event and (when there is one) its run: whatever the number of quotas.
DASHBOARD_BUDGET = 11


@pytest.mark.parametrize("quotas", [10, 10_000])
def test_the_dashboard_stays_within_its_budget(
    staff_client, crowd, quotas, django_assert_max_num_queries
):
    size = (
        Size(organizations=1, teams=1, users=8, allocations=20)
        if quotas == 10
        else Size(organizations=1, teams=100, users=99, allocations=20_000)
    )
    populate(connection, size, vacuum=False)
    staff_client.get(DASHBOARD)  # warm the session and content-type caches

    with django_assert_max_num_queries(DASHBOARD_BUDGET):
        response = staff_client.get(DASHBOARD)

    assert response.status_code == 200
    assert "user carol" in _section(response.content.decode(), "hq-near-limit")
