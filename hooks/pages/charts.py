"""Server-side SVG charts of the laboratory series of an assessment (no script, no network, no library).

One chart per analyte family: calcium (measured, laboratory-corrected and computed-corrected), phosphate,
Ca x P, PTH and eGFR, drawn from the stored snapshot's series (every Observation the service saw) with the
reference range as a band and the thresholds the rules use as dashed lines. Values are shown in the unit
the page's language puts first (SI in French). Every text that reaches the SVG is escaped; each chart has a
``<title>`` and ``<desc>`` for screen readers and a data table beside it (WCAG 1.1.1).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from markupsafe import Markup, escape

from hooks.pages.palette import PALETTE
from hooks.pages.text import PageWords

__all__ = ["Chart", "ChartRow", "charts_for"]

# (chart key, the analyte whose unit the axis uses, the series drawn on it, in order).
_CHARTS: Final = (
    ("calcium", "calcium_total", ("calcium_total", "calcium_corrected", "calcium_corrected_computed")),
    ("phosphate", "phosphate", ("phosphate",)),
    ("ca_x_p", "ca_x_p", ("ca_x_p",)),
    ("pth_intact", "pth_intact", ("pth_intact",)),
    ("egfr", "egfr", ("egfr",)),
)
_UNIT_ANALYTE: Final = {"calcium_corrected": "calcium_total", "calcium_corrected_computed": "calcium_total"}
_COLOURS: Final = (PALETTE["series-1"], PALETTE["series-2"], PALETTE["series-3"])
_MARKERS: Final = ("circle", "square", "triangle")
_WIDTH, _HEIGHT = 720, 280
_LEFT, _RIGHT, _TOP, _BOTTOM = 64, 24, 44, 40
_X_TICKS = 5
# Labels keep a ring of page colour around them, so a line or a point drawn under one never hides it.
_HALO: Final = f'stroke="{PALETTE["background"]}" stroke-width="3" paint-order="stroke" stroke-linejoin="round"'


@dataclass(frozen=True, slots=True)
class ChartRow:
    date: str
    series: str
    value: str
    range: str
    reference: str


@dataclass(frozen=True, slots=True)
class Chart:
    key: str
    title: str
    svg: Markup
    description: str
    rows: list[ChartRow] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class _Series:
    key: str
    label: str
    points: list[tuple[datetime, float]]
    colour: str
    marker: str


def _when(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        return None
    return float(value)


def _nice_step(span: float) -> float:
    raw = span / 4
    magnitude = 10.0 ** math.floor(math.log10(raw))
    return next(float(step * magnitude) for step in (1, 2, 2.5, 5, 10) if step * magnitude >= raw)


class _Frame:
    """Maps times and values to the plot area."""

    def __init__(self, times: list[datetime], values: list[float]) -> None:
        start, end = min(times), max(times)
        if end - start < timedelta(days=2):
            start, end = start - timedelta(days=7), end + timedelta(days=7)
        pad = (end - start) * 0.04
        self.start, self.end = start - pad, end + pad
        low, high = min(values), max(values)
        if high - low < 1e-9:
            low, high = low - max(abs(low) * 0.1, 1.0), high + max(abs(high) * 0.1, 1.0)
        # A point never sits on the frame: a little room above and below before rounding to the ticks.
        margin = (high - low) * 0.06
        low, high = (low - margin if low - margin >= 0 or low < 0 else 0.0), high + margin
        step = _nice_step(high - low)
        self.low, self.high, self.step = math.floor(low / step) * step, math.ceil(high / step) * step, step

    def x(self, moment: datetime) -> float:
        span = (self.end - self.start).total_seconds()
        return _LEFT + (moment - self.start).total_seconds() / span * (_WIDTH - _LEFT - _RIGHT)

    def y(self, value: float) -> float:
        return _HEIGHT - _BOTTOM - (value - self.low) / (self.high - self.low) * (_HEIGHT - _TOP - _BOTTOM)

    def y_ticks(self) -> list[float]:
        count = round((self.high - self.low) / self.step)
        return [self.low + i * self.step for i in range(count + 1)]

    def x_ticks(self) -> list[datetime]:
        span = self.end - self.start
        return [self.start + span * (i + 0.5) / _X_TICKS for i in range(_X_TICKS)]


def _marker(kind: str, x: float, y: float, colour: str, tip: str) -> str:
    title = f"<title>{escape(tip)}</title>"
    if kind == "square":
        return (f'<rect class="point" x="{x - 4.5:.1f}" y="{y - 4.5:.1f}" width="9" height="9" fill="{colour}">'
                f"{title}</rect>")
    if kind == "triangle":
        return (f'<polygon class="point" points="{x:.1f},{y - 6:.1f} {x + 5.5:.1f},{y + 4:.1f} {x - 5.5:.1f},'
                f'{y + 4:.1f}" fill="{colour}">{title}</polygon>')
    return f'<circle class="point" cx="{x:.1f}" cy="{y:.1f}" r="5" fill="{colour}">{title}</circle>'


def _svg(chart_id: str, title: str, description: str, axis: tuple[str, int], series: list[_Series],
         thresholds: list[tuple[str, str, float]], band: tuple[float, float] | None, w: PageWords) -> Markup:
    unit, decimals = axis
    values = [v for s in series for _, v in s.points] + [t[2] for t in thresholds]
    if band is not None:
        values += list(band)
    frame = _Frame([t for s in series for t, _ in s.points], values)
    muted, rule = PALETTE["muted"], PALETTE["rule"]
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 {_WIDTH} {_HEIGHT}" role="img" '
             f'aria-labelledby="{chart_id}-title {chart_id}-desc" class="lab-chart" data-chart="{escape(chart_id)}">',
             f'<title id="{chart_id}-title">{escape(title)}</title>',
             f'<desc id="{chart_id}-desc">{escape(description)}</desc>',
             f'<rect x="0" y="0" width="{_WIDTH}" height="{_HEIGHT}" fill="{PALETTE["background"]}"/>']
    bottom, right = _HEIGHT - _BOTTOM, _WIDTH - _RIGHT
    if band is not None:
        top_y, low_y = frame.y(band[1]), frame.y(band[0])
        # Inside the band when it is tall enough, else just above it (text on the page background).
        label_y = top_y + 14 if low_y - top_y >= 18 else top_y - 4
        parts.append(f'<g class="reference-range"><rect x="{_LEFT}" y="{top_y:.1f}" width="{right - _LEFT}" '
                     f'height="{max(low_y - top_y, 1):.1f}" fill="{PALETTE["band"]}"/>'
                     f'<text x="{_LEFT + 6}" y="{label_y:.1f}" font-size="12" fill="{PALETTE["band-edge"]}" '
                     f'{_HALO}>'
                     f'{escape(w.t("chart", "range"))}</text></g>')
    places = 0 if frame.step >= 1 else (1 if frame.step >= 0.1 else 2)
    for level in frame.y_ticks():
        y = frame.y(level)
        parts.append(f'<line x1="{_LEFT}" y1="{y:.1f}" x2="{right}" y2="{y:.1f}" stroke="{rule}" '
                     f'stroke-width="0.5" stroke-opacity="0.6"/><text x="{_LEFT - 6}" y="{y + 4:.1f}" '
                     f'font-size="12" text-anchor="end" fill="{muted}">{escape(w.number(level, places))}</text>')
    for moment in frame.x_ticks():
        x = frame.x(moment)
        parts.append(f'<text x="{x:.1f}" y="{bottom + 18}" font-size="12" text-anchor="middle" fill="{muted}">'
                     f"{escape(w.date(moment))}</text>")
    parts.append(f'<line x1="{_LEFT}" y1="{bottom}" x2="{right}" y2="{bottom}" stroke="{muted}"/>'
                 f'<line x1="{_LEFT}" y1="{_TOP}" x2="{_LEFT}" y2="{bottom}" stroke="{muted}"/>'
                 f'<text x="4" y="{_TOP - 12}" font-size="12" fill="{muted}">{escape(unit)}</text>')
    for name, label, value in thresholds:
        y = frame.y(value)
        parts.append(f'<g class="threshold" data-threshold="{escape(name)}"><line x1="{_LEFT}" y1="{y:.1f}" '
                     f'x2="{right}" y2="{y:.1f}" stroke="{PALETTE["threshold"]}" stroke-width="1.5" '
                     f'stroke-dasharray="6 4"/><text x="{right - 4}" y="{y - 4:.1f}" font-size="12" '
                     f'text-anchor="end" fill="{PALETTE["threshold"]}" {_HALO}>{escape(label)}</text></g>')
    legend_x = _LEFT
    for s in series:
        parts.append(f'<g class="series" data-series="{escape(s.key)}" data-points="{len(s.points)}">')
        coordinates = [(frame.x(t), frame.y(v)) for t, v in s.points]
        if len(coordinates) > 1:
            path = " ".join(f"{x:.1f},{y:.1f}" for x, y in coordinates)
            parts.append(f'<polyline points="{path}" fill="none" stroke="{s.colour}" stroke-width="2"/>')
        for (moment, value), (x, y) in zip(s.points, coordinates, strict=True):
            tip = f"{s.label}{w.colon()} {w.number(value, decimals)} {unit}, {w.date(moment)}"
            parts.append(_marker(s.marker, x, y, s.colour, tip))
        parts.append(_marker(s.marker, legend_x + 6, 16, s.colour, s.label))
        parts.append(f'<text x="{legend_x + 16}" y="{20}" font-size="12" fill="{PALETTE["text"]}">'
                     f"{escape(s.label)}</text></g>")
        legend_x += 28 + 7 * len(s.label)
    parts.append("</svg>")
    return Markup("".join(parts))  # noqa: S704 - every interpolated text above went through escape()


def _range(points: list[dict[str, Any]]) -> tuple[float, float] | None:
    """The latest reference range with both limits (laboratories rarely change it within a series)."""
    for point in reversed(points):
        limits = point.get("range")
        if isinstance(limits, list) and len(limits) == 2:
            low, high = _number(limits[0]), _number(limits[1])
            if low is not None and high is not None and low < high:
                return low, high
    return None


def _chart(key: str, unit_analyte: str, members: tuple[str, ...], series: dict[str, Any],
           w: PageWords) -> Chart | None:
    spec = w.words.display_unit(unit_analyte)
    unit, factor, decimals = spec if spec else ("", 1.0, 1)
    drawn: list[_Series] = []
    rows: list[tuple[datetime | None, ChartRow]] = []
    band: tuple[float, float] | None = None
    thresholds: dict[str, tuple[str, str, float]] = {}
    for index, member in enumerate(m for m in members if isinstance(series.get(m), dict)):
        data = series[member]
        points = [p for p in data.get("points") or () if isinstance(p, dict)]
        label = w.t("series", member)
        analyte = _UNIT_ANALYTE.get(member, member)
        plotted = []
        for point in points:
            value, moment = _number(point.get("value")), _when(point.get("at"))
            if value is None:
                continue
            if moment is not None:
                plotted.append((moment, value * factor))
            limits = point.get("range") if isinstance(point.get("range"), list) else None
            shown_range = " – ".join(w.quantity(analyte, _number(x)) for x in limits or () if _number(x) is not None)
            rows.append((moment, ChartRow(w.date(moment), label, w.quantity(analyte, value), shown_range,
                                          str(point.get("reference") or ""))))
        if plotted:
            drawn.append(_Series(member, label, sorted(plotted), _COLOURS[index % 3], _MARKERS[index % 3]))
        limits_found = _range(points)
        if band is None and limits_found is not None:
            band = (limits_found[0] * factor, limits_found[1] * factor)
        for name, value in (data.get("thresholds") or {}).items():
            number = _number(value)
            if number is not None and name not in thresholds:
                text = f"{w.t('threshold', str(name))} {w.number(number * factor, decimals)} {unit}"
                thresholds[name] = (str(name), text, number * factor)
    if not drawn:
        return None
    all_points = sorted(t for s in drawn for t, _ in s.points)
    latest = max(drawn[0].points)
    title = f"{w.t('chart', key)} ({unit})" if unit else w.t("chart", key)
    latest_text = f"{w.number(latest[1], decimals)} {unit}".strip()
    if len(all_points) == 1:
        description = w.t("chart", "describe_one", date=w.date(all_points[0]), latest=latest_text)
    else:
        description = w.t("chart", "describe", count=len(all_points), first=w.date(all_points[0]),
                          last=w.date(all_points[-1]), latest=latest_text)
    svg = _svg(f"chart-{key}", title, description, (unit, decimals), drawn, list(thresholds.values()), band, w)
    ordered = [row for _, row in sorted(rows, key=lambda r: (r[0] is None, r[0].timestamp() if r[0] else 0.0))]
    return Chart(key=key, title=title, svg=svg, description=description, rows=ordered)


def charts_for(series: Any, w: PageWords) -> list[Chart]:
    """The charts of a snapshot's ``series`` (missing or malformed parts are left out, never a 500)."""
    if not isinstance(series, dict):
        return []
    found = [_chart(key, unit, members, series, w) for key, unit, members in _CHARTS]
    return [chart for chart in found if chart is not None]
