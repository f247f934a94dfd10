"""Charts as inline SVG, drawn on the server: no script, no library, no external host.

Pure functions of the points they are given (the selectors that read history live
with the history, in ``allocations.selectors``). Every data point is a ``<circle>``
carrying its moment and value (``data-t``, ``data-v``), so a test, or a person
reading the page source, can hold the picture to the books.
"""

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from django.utils.html import format_html, format_html_join
from django.utils.safestring import SafeString, mark_safe

from horizon_quota.amounts import amount_display

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 150, 22, 34  # margins: axis labels, legend


@dataclass
class Series:
    """A line through ``points`` (moment, value); ``step`` draws it as a staircase
    (usage holds its value until the next change)."""

    name: str
    css: str
    points: list[tuple[datetime, Decimal]] = field(default_factory=list)
    step: bool = True
    dashed: bool = False
    area: bool = False
    marked: bool = True
    # Held flat from the last point to here (usage holds until the next change).
    until: datetime | None = None


@dataclass
class Mark:
    """A horizontal line across the chart: a cap, a soft limit."""

    name: str
    css: str
    value: Decimal


class _Scale:
    def __init__(self, start: datetime, end: datetime, top: Decimal):
        self.start = start
        self.span = max((end - start).total_seconds(), 1.0)
        self.top = top if top > 0 else Decimal(1)
        self.plot_w = WIDTH - LEFT - RIGHT
        self.plot_h = HEIGHT - TOP - BOTTOM

    def x(self, moment: datetime) -> float:
        share = (moment - self.start).total_seconds() / self.span
        return round(LEFT + min(max(share, 0.0), 1.0) * self.plot_w, 1)

    def y(self, value: Decimal) -> float:
        share = float(value / self.top)
        return round(TOP + (1 - min(max(share, 0.0), 1.0)) * self.plot_h, 1)


def _nice_top(value: Decimal) -> Decimal:
    """A round number a little above ``value`` for the top of the axis."""
    if value <= 0:
        return Decimal(1)
    magnitude = Decimal(10) ** (value.adjusted())
    for step in (1, 2, 2.5, 5, 10):
        candidate = magnitude * Decimal(str(step))
        if candidate >= value:
            return candidate
    return magnitude * 10


def _when(moment: datetime, span_seconds: float) -> str:
    return moment.strftime("%d %b %H:%M" if span_seconds < 3 * 86400 else "%d %b")


def _unit(unit: str) -> SafeString:
    """The value axis's unit, once, above it."""
    return format_html(
        '<text class="hq-chart__tick hq-chart__unit" x="4" y="11">{}</text>', unit
    )


def _frame(scale: _Scale, unit: str, end: datetime) -> SafeString:
    """Axes, gridlines and their labels."""
    parts = [_unit(unit)]
    for share in (0, Decimal("0.5"), 1):
        value = scale.top * share
        y = scale.y(value)
        parts.append(
            format_html(
                '<line class="hq-chart__grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
                '<text class="hq-chart__tick" x="{}" y="{}" text-anchor="end">{}'
                "</text>",
                LEFT,
                WIDTH - RIGHT,
                y,
                y,
                LEFT - 6,
                y + 4,
                amount_display(value.normalize()),
            )
        )
    for share in (0.0, 0.5, 1.0):
        moment = scale.start + (end - scale.start) * share
        anchor = {0.0: "start", 0.5: "middle", 1.0: "end"}[share]
        parts.append(
            format_html(
                '<text class="hq-chart__tick" x="{}" y="{}" text-anchor="{}">{}</text>',
                scale.x(moment),
                HEIGHT - BOTTOM + 18,
                anchor,
                _when(moment, scale.span),
            )
        )
    return mark_safe("".join(parts))


def _path(scale: _Scale, series: Series) -> str:
    coords = []
    previous = None
    points = list(series.points)
    if series.until is not None and points and points[-1][0] < series.until:
        points.append((series.until, points[-1][1]))
    for moment, value in points:
        x, y = scale.x(moment), scale.y(value)
        if series.step and previous is not None:
            coords.append(f"{x},{previous}")
        coords.append(f"{x},{y}")
        previous = y
    return " ".join(coords)


def _series(scale: _Scale, series: Series) -> SafeString:
    if not series.points:
        return mark_safe("")
    line = _path(scale, series)
    parts = []
    if series.area:
        first_x = scale.x(series.points[0][0])
        last_x = scale.x(max(series.points[-1][0], series.until or series.points[0][0]))
        base = scale.y(Decimal(0))
        parts.append(
            format_html(
                '<polygon class="hq-chart__area hq-chart__area--{}" points="{}"/>',
                series.css,
                f"{first_x},{base} {line} {last_x},{base}",
            )
        )
    parts.append(
        format_html(
            '<polyline class="hq-chart__line hq-chart__line--{}{}" points="{}"/>',
            series.css,
            " hq-chart__line--dashed" if series.dashed else "",
            line,
        )
    )
    if series.marked:
        parts.append(
            format_html_join(
                "",
                '<circle class="hq-chart__point hq-chart__point--{}" cx="{}" cy="{}" '
                'r="2.5" data-series="{}" data-t="{}" data-v="{}"><title>{}: {} at {}'
                "</title></circle>",
                (
                    (
                        series.css,
                        scale.x(moment),
                        scale.y(value),
                        series.name,
                        moment.isoformat(),
                        f"{value.normalize():f}",
                        series.name,
                        amount_display(value),
                        moment.strftime("%Y-%m-%d %H:%M:%S"),
                    )
                    for moment, value in series.points
                ),
            )
        )
    return mark_safe("".join(parts))


def _mark(scale: _Scale, mark: Mark, unit: str) -> SafeString:
    y = scale.y(mark.value)
    return format_html(
        '<line class="hq-chart__mark hq-chart__mark--{}" x1="{}" x2="{}" y1="{}" '
        'y2="{}" data-v="{}"/><text class="hq-chart__label hq-chart__label--{}" '
        'x="{}" y="{}">{} {}</text>',
        mark.css,
        LEFT,
        WIDTH - RIGHT,
        y,
        y,
        f"{mark.value.normalize():f}",
        mark.css,
        WIDTH - RIGHT + 6,
        y + 4,
        mark.name,
        amount_display(mark.value, unit),
    )


def _legend(series: list[Series]) -> SafeString:
    return format_html_join(
        "",
        '<g class="hq-chart__legend"><rect class="hq-chart__key hq-chart__key--{}" '
        'x="{}" y="{}" width="12" height="4"/><text class="hq-chart__label" x="{}" '
        'y="{}">{}</text></g>',
        (
            (
                item.css,
                WIDTH - RIGHT + 6,
                HEIGHT - BOTTOM - 14 * (len(series) - index) - 4,
                WIDTH - RIGHT + 22,
                HEIGHT - BOTTOM - 14 * (len(series) - index) + 1,
                item.name,
            )
            for index, item in enumerate(series)
        ),
    )


def time_chart(
    *,
    chart_id: str,
    title: str,
    start: datetime,
    end: datetime,
    series: list[Series],
    marks: list[Mark],
    unit: str,
) -> SafeString:
    """Lines of ``series`` over [start, end], with ``marks`` across; the value axis
    reaches above the highest of them all."""
    values = [v for s in series for _, v in s.points] + [m.value for m in marks]
    scale = _Scale(start, end, _nice_top(max(values, default=Decimal(0))))
    return format_html(
        '<svg class="hq-chart" id="{}" role="img" viewBox="0 0 {} {}" '
        'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        "<title>{}</title>{}{}{}{}</svg>",
        chart_id,
        WIDTH,
        HEIGHT,
        title,
        _frame(scale, unit, end),
        mark_safe("".join(_series(scale, s) for s in series)),
        mark_safe("".join(_mark(scale, m, unit) for m in marks)),
        _legend([s for s in series if s.name]),
    )


@dataclass
class Bar:
    label: str
    value: Decimal
    limit: Decimal
    title: str


def bar_chart(*, chart_id: str, title: str, bars: list[Bar], unit: str) -> SafeString:
    """One bar per item (oldest left), with its limit as a tick across it."""
    top = _nice_top(max([b.value for b in bars] + [b.limit for b in bars]))
    scale = _Scale(datetime(2000, 1, 1), datetime(2000, 1, 2), top)
    slot = scale.plot_w / max(len(bars), 1)
    width = min(slot * 0.6, 48)
    parts = []
    for index, bar in enumerate(bars):
        x = round(LEFT + slot * index + (slot - width) / 2, 1)
        y = scale.y(bar.value)
        limit_y = scale.y(bar.limit)
        parts.append(
            format_html(
                '<g class="hq-chart__bar{}"><title>{}</title>'
                '<rect x="{}" y="{}" width="{}" height="{}" data-v="{}"/>'
                '<line class="hq-chart__mark hq-chart__mark--cap" x1="{}" x2="{}" '
                'y1="{}" y2="{}"/><text class="hq-chart__tick" x="{}" y="{}" '
                'text-anchor="middle">{}</text></g>',
                " hq-chart__bar--over" if bar.value > bar.limit else "",
                bar.title,
                x,
                y,
                round(width, 1),
                round(scale.y(Decimal(0)) - y, 1),
                f"{bar.value.normalize():f}",
                x - 3,
                round(x + width + 3, 1),
                limit_y,
                limit_y,
                round(x + width / 2, 1),
                HEIGHT - BOTTOM + 18,
                bar.label,
            )
        )
    return format_html(
        '<svg class="hq-chart" id="{}" role="img" viewBox="0 0 {} {}" '
        'preserveAspectRatio="xMinYMin meet" xmlns="http://www.w3.org/2000/svg">'
        "<title>{}</title>{}{}</svg>",
        chart_id,
        WIDTH,
        HEIGHT,
        title,
        _frame_values(scale, unit),
        mark_safe("".join(parts)),
    )


def _frame_values(scale: _Scale, unit: str) -> SafeString:
    return _unit(unit) + format_html_join(
        "",
        '<line class="hq-chart__grid" x1="{}" x2="{}" y1="{}" y2="{}"/>'
        '<text class="hq-chart__tick" x="{}" y="{}" text-anchor="end">{}</text>',
        (
            (
                LEFT,
                WIDTH - RIGHT,
                scale.y(scale.top * share),
                scale.y(scale.top * share),
                LEFT - 6,
                scale.y(scale.top * share) + 4,
                amount_display((scale.top * share).normalize()),
            )
            for share in (0, Decimal("0.5"), 1)
        ),
    )
