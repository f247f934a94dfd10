"""How the admin writes amounts, ids and moments, and what its SVG charts carry
(issue 14): one format everywhere, checked on one table of cases."""

import re
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from uuid import UUID

import pytest

from allocations.admin import short_id
from horizon_quota.amounts import EMPTY, amount_display
from quotas.admin_console import moment
from quotas.admin_console.charts import Bar, Mark, Series, bar_chart, time_chart
from quotas.admin_console.export import cell
from quotas.admin_console.panels import _change_summary

D = Decimal


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (D("10000.0000"), "GPUs", "10,000 GPUs"),
        (D("10000"), "GPUs", "10,000 GPUs"),
        (D("1.00"), "", "1"),
        (D("1234.5000"), "GPU-hours", "1,234.5 GPU-hours"),
        (D("0.0001"), "GB", "0.0001 GB"),
        (D("0"), "GB", "0 GB"),
        (D("1E+3"), "", "1,000"),
        (D("9999999999999999.9999"), "", "9,999,999,999,999,999.9999"),
        (D("-1234567.25"), "", "-1,234,567.25"),
        (12345, "units", "12,345 units"),
        (None, "GPUs", EMPTY),
        (None, "", "—"),
    ],
)
def test_amounts_are_exact_without_trailing_zeros_with_separators_and_unit(
    value, unit, shown
):
    assert amount_display(value, unit) == shown


@pytest.mark.parametrize(
    ("value", "written"),
    [
        (D("10000.0000"), "10000"),
        (D("2.5000"), "2.5"),
        (None, ""),
        ("alice", "alice"),
        # Text a spreadsheet would run as a formula stays text.
        ('=HYPERLINK("http://x")', '\'=HYPERLINK("http://x")'),
        ("@SUM(A1)", "'@SUM(A1)"),
        ("-team", "'-team"),
        (datetime(2026, 12, 1, 9, 30, tzinfo=UTC), "2026-12-01T09:30:00+00:00"),
    ],
)
def test_csv_cells_are_exact_and_spreadsheet_numbers(value, written):
    assert cell(value) == written


def test_a_job_id_is_shortened_but_whole_on_hover_and_in_the_text():
    job = UUID("8a85d992-ffa1-4ac3-a146-2d0b4523dfcd")

    html = short_id(job)

    assert 'class="hq-id"' in html
    assert f'title="{job}"' in html
    # The whole id is the text (hidden by CSS, not cut): a copy takes all of it.
    assert f">{job}</span>" in html
    assert short_id(None) == EMPTY


def test_moments_are_compact_and_empty_is_the_one_marker():
    assert moment(datetime(2026, 12, 1, 9, 5, 7, tzinfo=UTC)) == "2026-12-01 09:05:07"
    assert moment(None) == EMPTY


START = datetime(2026, 12, 1, tzinfo=UTC)


def test_a_time_chart_carries_every_point_with_its_moment_and_value():
    points = [(START + timedelta(hours=h), D(v)) for h, v in [(0, 0), (5, 4), (9, 2.5)]]

    svg = time_chart(
        chart_id="c",
        title="usage",
        start=START,
        end=START + timedelta(hours=10),
        series=[Series("used", "used", points, until=START + timedelta(hours=10))],
        marks=[Mark("cap", "cap", D(10)), Mark("soft", "soft", D(8))],
        unit="GPUs",
    )

    assert svg.startswith('<svg class="hq-chart" id="c"')
    assert re.findall(r'data-v="([^"]+)"><title>', svg) == ["0", "4", "2.5"]
    assert re.findall(r'data-t="([^"]+)"', svg) == [t.isoformat() for t, _ in points]
    assert 'class="hq-chart__mark hq-chart__mark--cap"' in svg
    assert "cap 10 GPUs" in svg and "soft 8 GPUs" in svg
    # No script and nothing fetched from anywhere.
    assert "<script" not in svg and "href" not in svg


def test_a_point_above_the_axis_stays_inside_the_chart():
    svg = time_chart(
        chart_id="c",
        title="t",
        start=START,
        end=START + timedelta(days=1),
        series=[Series("used", "used", [(START, D(0)), (START, D(130))])],
        marks=[Mark("cap", "cap", D(100))],
        unit="",
    )

    ys = [float(y) for y in re.findall(r'cy="([^"]+)"', svg)]
    assert all(0 <= y <= 240 for y in ys)


def test_a_bar_chart_marks_periods_over_their_limit():
    svg = bar_chart(
        chart_id="p",
        title="closed",
        bars=[
            Bar("01 Oct", D(120), D(400), "October"),
            Bar("01 Nov", D(450), D(400), "November"),
        ],
        unit="GPU-hours",
    )

    assert re.findall(
        r'<rect x="[^"]+" y="[^"]+" width="[^"]+" height="[^"]+" '
        r'data-v="([^"]+)"',
        svg,
    ) == ["120", "450"]
    assert svg.count("hq-chart__bar--over") == 1


@pytest.mark.parametrize(
    ("changes", "summary"),
    [
        (
            {"limit_value": ["10000.0000", "12500.5"]},
            "limit_value: 10,000 GPUs → 12,500.5 GPUs",
        ),
        ({"soft_limit": [None, "80"]}, "soft_limit: — → 80 GPUs"),
        ({"overcommit_ratio": ["1.00", "1.50"]}, "overcommit_ratio: 1 → 1.5"),
        ({"period": ["none", "month"]}, "period: none → month"),
        ({"entity_id": [None, "alice"]}, "entity_id: — → alice"),
    ],
)
def test_audit_changes_write_amounts_like_the_rest_of_the_admin(changes, summary):
    assert _change_summary(changes, "GPUs") == summary
