"""The admin console in a real browser: Debian's headless Chromium, driven by
Playwright against pytest-django's live server.

Playwright talks to the system's /usr/bin/chromium over the DevTools protocol; its
own browser downloads (``playwright install``) are never used. The database work is
done before the browser starts and checked after it has closed, so no ORM call runs
while Playwright's event loop is alive in this thread.
"""

from decimal import Decimal
from pathlib import Path

import pytest
from django.contrib.auth import get_user_model
from playwright.sync_api import expect, sync_playwright

from quotas.models import Quota
from tests.factories import QuotaFactory

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-dev-shm-usage",
]

pytestmark = [
    pytest.mark.browser,
    # The live server runs in another thread: it must see committed rows.
    pytest.mark.django_db(transaction=True),
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason=f"Debian's chromium is not installed at {CHROMIUM}",
    ),
]


def test_an_admin_edits_the_tree_and_sees_hierarchy_errors(live_server):
    get_user_model().objects.create_superuser("root", "root@example.com", "pw-root-1")
    org = QuotaFactory(entity_id="acme", limit_value=Decimal("100"))
    team = QuotaFactory(
        entity_type="team", entity_id="research", parent=org, limit_value=60
    )
    user = QuotaFactory(
        entity_type="user", entity_id="alice", parent=team, limit_value=30
    )
    Quota.objects.filter(id__in=[org.id, team.id, user.id]).update(
        reserved=Decimal("12")
    )
    base = live_server.url

    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(
            executable_path=str(CHROMIUM), args=CHROMIUM_ARGS
        )
        try:
            page = browser.new_page()
            page.set_default_timeout(20_000)

            # Log in through the admin's own form.
            page.goto(f"{base}/admin/login/?next=/admin/quotas/quota/")
            page.fill("#id_username", "root")
            page.fill("#id_password", "pw-root-1")
            page.click("input[type=submit]")

            # The tree: each quota after its parent, indented, with a usage bar
            # styled by the console's stylesheet.
            page.wait_for_url(f"{base}/admin/quotas/quota/")
            expect(page.locator(".hq-tree__id")).to_have_text(
                ["acme", "research", "alice"]
            )
            starts = page.locator(".hq-tree__id").evaluate_all(
                "labels => labels.map(label => label.getBoundingClientRect().left)"
            )
            assert starts[0] < starts[1] < starts[2]
            expect(page.locator(".hq-usage")).to_have_count(3)
            track = page.locator(".hq-usage__track").first
            assert track.evaluate("t => getComputedStyle(t).position") == "relative"
            expect(page.locator(".hq-usage__label").nth(1)).to_have_text(
                "12 / 60 (20%)"
            )

            # Raise the team's limit through the change form.
            page.locator(".hq-tree__id", has_text="research").click()
            expect(page.locator("#hq-panel-children")).to_contain_text("user alice")
            page.fill("#id_limit_value", "70")
            page.click("input[name=_save]")
            expect(page.locator(".messagelist .success")).to_contain_text(
                "was changed successfully"
            )

            # A child above its parent: the hierarchy error is on the page.
            page.locator(".hq-tree__id", has_text="alice").click()
            page.fill("#id_limit_value", "80")
            page.click("input[name=_save]")
            expect(page.locator(".errornote")).to_be_visible()
            expect(page.locator(".errorlist")).to_contain_text(
                "limit_value (80) exceeds the parent's limit_value (70)"
            )
            expect(page.locator("#hq-panel-ancestors")).to_contain_text("team research")
        finally:
            browser.close()

    team.refresh_from_db()
    user.refresh_from_db()
    assert team.limit_value == Decimal("70")
    assert user.limit_value == Decimal("30")
