"""The console for people (issue 14) in a real browser: Debian's headless Chromium
driven by Playwright against pytest-django's live server, at 1400 and 1920 px.

As in test_admin_browser.py, the database work is done before the browser starts
and checked after it has closed, so no ORM call runs while Playwright's event loop
is alive in this thread. Screenshots of every page go to ``$SCREENSHOT_DIR`` when
set, else to the test's temporary directory; the path is printed for review.
"""

import csv
import io
import os
from datetime import datetime
from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect, sync_playwright

from allocations import services as allocation_services
from allocations.models import UsageHistory
from quotas.services import quota_create
from tests import budgets
from tests.test_admin_browser import CHROMIUM, CHROMIUM_ARGS

pytestmark = [
    pytest.mark.browser,
    # The live server runs in another thread: it must see committed rows.
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"Debian's chromium is not installed at {CHROMIUM}",
    ),
]

D = Decimal
WIDTHS = (1400, 1920)


def _at(moment: str) -> None:
    budgets.set_clock(datetime.fromisoformat(moment))


def _quota(entity_type, entity_id, resource, parent=None, **fields):
    return quota_create(
        entity_type=entity_type,
        entity_id=entity_id,
        resource_type=resource,
        parent_id=parent.id if parent else None,
        **fields,
    )


def _allocate(quota, value, **options):
    return budgets.allocate(
        entity_id=quota.entity_id,
        value=value,
        resource=quota.resource_type_id,
        **options,
    )


def _console(settings) -> dict:
    """Two resource types over three months of the budget clock: a GPU tree with a
    user pushed past 90 %, and a GPU-hours budget with two closed months and a
    current one that is projected to run out."""
    settings.BUDGET_CLOCK_ADJUSTABLE = True
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-1")

    # A monthly GPU-hours budget: October and November close, December is current.
    _at("2026-10-03T09:00:00+00:00")
    month = {"period": "month"}
    org_h = _quota("organization", "acme", "gpu_hours", limit_value=D(1000), **month)
    team_h = _quota("team", "research", "gpu_hours", org_h, limit_value=D(600), **month)
    alice_h = _quota("user", "alice", "gpu_hours", team_h, limit_value=D(400), **month)
    job = _allocate(alice_h, "150")
    _at("2026-10-10T09:00:00+00:00")
    allocation_services.allocation_consume(allocation_id=job.id, consumed_value=D(40))
    _at("2026-10-20T09:00:00+00:00")
    allocation_services.allocation_release(allocation_id=job.id, consumed_value=D(120))
    _at("2026-11-04T09:00:00+00:00")
    job = _allocate(alice_h, "200")
    _at("2026-11-21T09:00:00+00:00")
    allocation_services.allocation_release(allocation_id=job.id, consumed_value=D(380))

    # Concurrent GPUs, and December's budget, day by day.
    _at("2026-12-01T03:00:00+00:00")
    org = _quota(
        "organization", "acme", "concurrent_gpus", limit_value=D(100), soft_limit=D(80)
    )
    research = _quota("team", "research", "concurrent_gpus", org, limit_value=D(60))
    platform = _quota("team", "platform", "concurrent_gpus", org, limit_value=D(30))
    alice = _quota(
        "user",
        "alice",
        "concurrent_gpus",
        research,
        limit_value=D(30),
        soft_limit=D(20),
    )
    bob = _quota("user", "bob", "concurrent_gpus", research, limit_value=D(20))
    carol = _quota("user", "carol", "concurrent_gpus", platform, limit_value=D(10))
    _at("2026-12-02T10:00:00+00:00")
    first = _allocate(alice, "4")
    budget_job = _allocate(alice_h, "200")
    _at("2026-12-05T10:00:00+00:00")
    _allocate(alice, "6")
    _allocate(bob, "5")
    _at("2026-12-06T10:00:00+00:00")
    allocation_services.allocation_consume(
        allocation_id=budget_job.id, consumed_value=D(60)
    )
    _at("2026-12-09T10:00:00+00:00")
    _allocate(alice, "3.5")
    _at("2026-12-12T10:00:00+00:00")
    allocation_services.allocation_release(allocation_id=first.id)
    allocation_services.allocation_consume(
        allocation_id=budget_job.id, consumed_value=D(150)
    )
    _at("2026-12-15T10:00:00+00:00")
    # Carol past 90 % of her limit: on the dashboard.
    _allocate(carol, "9.5")
    _at("2026-12-18T10:00:00+00:00")
    allocation_services.allocation_consume(
        allocation_id=budget_job.id, consumed_value=D(250)
    )
    _at("2026-12-19T10:00:00+00:00")
    _allocate(alice_h, "100")
    _at("2026-12-20T09:00:00+00:00")
    return {
        "alice": alice,
        "research": research,
        "carol": carol,
        "alice_h": alice_h,
    }


def _screenshot_dir(tmp_path) -> Path:
    folder = Path(os.environ.get("SCREENSHOT_DIR") or tmp_path / "screenshots")
    folder.mkdir(parents=True, exist_ok=True)
    print(f"\nscreenshots: {folder}")
    return folder


def _running_totals(quota) -> list[str]:
    """``used`` after each history row of a concurrent quota, oldest first."""
    used, totals = D(0), ["0"]
    for row in UsageHistory.objects.filter(quota_id=quota.id).order_by("timestamp"):
        used += (
            row.allocated_value
            if row.operation == "allocate"
            else -(row.allocated_value)
        )
        totals.append(f"{used.normalize():f}")
    return totals


def _fits(page) -> dict:
    """Whether the page scrolls sideways, and whether the results table sticks out
    of (or scrolls inside) its area."""
    return page.evaluate(
        """() => {
            const doc = document.scrollingElement;
            const table = document.querySelector('#result_list');
            const area = table.closest('.results');
            return {
                doc: doc.scrollWidth <= doc.clientWidth,
                table: table.getBoundingClientRect().right
                    <= area.getBoundingClientRect().right + 1,
                scroll: area.scrollWidth <= area.clientWidth,
            };
        }"""
    )


def test_the_console_reads_well_at_1400_and_1920_px(live_server, settings, tmp_path):
    console = _console(settings)
    shots = _screenshot_dir(tmp_path)
    expected_points = _running_totals(console["alice"])
    base = live_server.url
    quota_page = f"{base}/admin/quotas/quota/{{}}/change/"

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.set_default_timeout(20_000)
            page.goto(f"{base}/admin/login/?next=/admin/")
            page.fill("#id_username", "root")
            page.fill("#id_password", "pw-root-1")
            page.click("input[type=submit]")
            page.wait_for_url(f"{base}/admin/")

            for width in WIDTHS:
                page.set_viewport_size({"width": width, "height": 900})

                # The admin's index links to the dashboard.
                page.goto(f"{base}/admin/")
                page.screenshot(path=shots / f"index-{width}.png", full_page=True)
                page.click("#hq-index-dashboard a")

                # The dashboard lists carol, pushed past 90 %, and links to her.
                expect(page.locator("#hq-near-limit")).to_contain_text("user carol")
                expect(page.locator("#hq-running-out")).to_contain_text("user alice")
                # Key figures: the rate, then the 6 allocations still active.
                expect(page.locator(".hq-figure__value").nth(1)).to_have_text("6")
                page.screenshot(path=shots / f"dashboard-{width}.png", full_page=True)

                # The quota list fits: no horizontal scroll, the table inside.
                page.goto(f"{base}/admin/quotas/quota/")
                expect(page.locator(".hq-tree__id").first).to_be_visible()
                fits = _fits(page)
                page.screenshot(path=shots / f"quota-list-{width}.png", full_page=True)
                assert fits == {"doc": True, "table": True, "scroll": True}, width

                # Alice's page: the usage chart's points are her history's books.
                page.goto(quota_page.format(console["alice"].id))
                chart = page.locator("svg#hq-chart-usage")
                expect(chart).to_be_visible()
                points = chart.locator("circle.hq-chart__point--used").evaluate_all(
                    "points => points.map(p => p.dataset.v)"
                )
                assert points == expected_points
                # The action row is the page's last thing, below the panels.
                order = page.evaluate(
                    """() => {
                        const row = document.querySelector('.submit-row');
                        const panels = document.querySelector('#hq-panels');
                        return panels.compareDocumentPosition(row)
                            & Node.DOCUMENT_POSITION_FOLLOWING;
                    }"""
                )
                assert order
                page.screenshot(path=shots / f"quota-user-{width}.png", full_page=True)

                # The team's page shows its subtree's history.
                page.goto(quota_page.format(console["research"].id))
                expect(page.locator("#hq-panel-history")).to_contain_text("user bob")
                page.screenshot(path=shots / f"quota-team-{width}.png", full_page=True)

                # The budget: burn-up with its projection, closed months as bars.
                page.goto(quota_page.format(console["alice_h"].id))
                expect(page.locator("svg#hq-chart-burnup")).to_be_visible()
                expect(page.locator("svg#hq-chart-periods rect")).to_have_count(2)
                page.screenshot(
                    path=shots / f"quota-budget-{width}.png", full_page=True
                )
                page.locator("#hq-panel-charts").screenshot(
                    path=shots / f"quota-budget-charts-{width}.png"
                )

                page.goto(f"{base}/admin/allocations/allocation/")
                fits = _fits(page)
                page.screenshot(path=shots / f"allocations-{width}.png", full_page=True)
                assert fits == {"doc": True, "table": True, "scroll": True}, width

                page.goto(f"{base}/admin/allocations/usagehistory/")
                fits = _fits(page)
                page.screenshot(path=shots / f"history-{width}.png", full_page=True)
                assert fits == {"doc": True, "table": True, "scroll": True}, width

            # The CSV export is the filtered list, every row in the list's order.
            page.goto(f"{base}/admin/quotas/quota/?entity_type__exact=user")
            listed = page.locator(".hq-tree__id").all_inner_texts()
            with page.expect_download() as download:
                page.click("#hq-export-csv")
            exported = Path(download.value.path()).read_text()
        finally:
            browser.close()

    rows = list(csv.DictReader(io.StringIO(exported)))
    assert [row["entity_id"] for row in rows] == listed
    assert {row["entity_type"] for row in rows} == {"user"}
    limits = {
        (row["resource_type"], row["entity_id"]): row["limit_value"] for row in rows
    }
    assert limits[("concurrent_gpus", "carol")] == "10"
    assert limits[("gpu_hours", "alice")] == "400"
