"""Server-side SVG charts: every series point, the reference band, the thresholds, in the page's units."""

from __future__ import annotations

import re
from typing import Any
from xml.etree import ElementTree

from hooks.pages.charts import charts_for
from hooks.pages.text import page_words

SVG = "{http://www.w3.org/2000/svg}"


def series(**analytes: list[tuple[str, float]]) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for analyte, points in analytes.items():
        found[analyte] = {"unit": "mg/dL", "points": [{"at": at, "value": value, "range": [8.5, 10.5],
                                                       "reference": f"Observation/{analyte}-{i}"}
                                                      for i, (at, value) in enumerate(points)]}
    return found


def parse(svg: str) -> ElementTree.Element:
    return ElementTree.fromstring(svg)  # noqa: S314 - our own output, parsed to check it is well-formed


def test_a_series_has_one_mark_per_value_and_a_line_between_them() -> None:
    data = series(calcium_total=[("2026-09-01T09:00:00+00:00", 9.8), ("2026-10-01T09:00:00+00:00", 10.9),
                                 ("2026-11-17T09:00:00+00:00", 12.4)])
    data["calcium_total"]["thresholds"] = {"calcium_warning": 12.0, "calcium_critical": 14.0}
    chart, = charts_for(data, page_words("en"))
    root = parse(chart.svg)
    group, = [g for g in root.iter(f"{SVG}g") if g.get("class") == "series"]
    assert group.get("data-series") == "calcium_total"
    marks = [e for e in group if e.get("class") == "point"]
    assert len(marks) == 3 + 1  # three values and the legend's mark
    assert len(group.findall(f"{SVG}polyline")) == 1
    thresholds = [g.get("data-threshold") for g in root.iter(f"{SVG}g") if g.get("class") == "threshold"]
    assert thresholds == ["calcium_warning", "calcium_critical"]
    assert [g for g in root.iter(f"{SVG}g") if g.get("class") == "reference-range"]
    assert root.get("role") == "img"
    assert root.find(f"{SVG}title").text == "Calcium (mg/dL)"
    assert root.find(f"{SVG}desc").text == "3 value(s) from 1 Sep 2026 to 17 Nov 2026; latest 12.4 mg/dL."
    assert [row.value for row in chart.rows] == ["9.8 mg/dL (2.45 mmol/L)", "10.9 mg/dL (2.72 mmol/L)",
                                                 "12.4 mg/dL (3.09 mmol/L)"]


def test_higher_values_are_drawn_higher_and_later_ones_further_right() -> None:
    data = series(phosphate=[("2026-09-01T09:00:00+00:00", 3.0), ("2026-11-01T09:00:00+00:00", 6.0)])
    chart, = charts_for(data, page_words("en"))
    circles = [c for c in parse(chart.svg).iter(f"{SVG}circle") if c.find(f"{SVG}title").text.endswith("2026")]
    (x1, y1), (x2, y2) = [(float(c.get("cx")), float(c.get("cy"))) for c in circles]
    assert x2 > x1
    assert y2 < y1  # SVG y grows downwards


def test_french_charts_are_in_si_units_with_a_decimal_comma() -> None:
    data = series(calcium_total=[("2026-11-17T09:00:00+00:00", 10.9)])
    data["calcium_total"]["thresholds"] = {"calcium_warning": 12.0}
    chart, = charts_for(data, page_words("fr"))
    assert chart.title == "Calcémie (mmol/L)"
    assert "hypercalcémie modérée 2,99 mmol/L" in chart.svg
    assert chart.description == "Une valeur, le 17/11/2026\u00a0: 2,72 mmol/L."
    assert chart.rows[0].value == "2,72 mmol/L (10,9 mg/dL)"
    assert not re.search(r">\d+\.\d+<", chart.svg)  # no decimal point in any axis label


def test_calcium_measured_and_corrected_share_one_chart_with_distinct_marks() -> None:
    data = series(calcium_total=[("2026-11-17T09:00:00+00:00", 9.0)],
                  calcium_corrected_computed=[("2026-11-17T09:00:00+00:00", 10.2)])
    chart, = charts_for(data, page_words("en"))
    groups = [g for g in parse(chart.svg).iter(f"{SVG}g") if g.get("class") == "series"]
    assert [g.get("data-series") for g in groups] == ["calcium_total", "calcium_corrected_computed"]
    shapes = [{child.tag for child in g if child.get("class") == "point"} for g in groups]
    assert shapes == [{f"{SVG}circle"}, {f"{SVG}rect"}]  # not told apart by colour alone


def test_text_from_the_record_is_escaped_and_bad_points_are_left_out() -> None:
    data = series(phosphate=[("2026-11-17T09:00:00+00:00", 5.0)])
    data["phosphate"]["points"] += [{"at": "not a date", "value": 4.0, "reference": "<script>x</script>"},
                                    {"at": "2026-11-18T09:00:00+00:00", "value": "NaN"},
                                    {"at": "2026-11-19T09:00:00+00:00", "value": float("inf")},
                                    "not a point"]
    chart, = charts_for(data, page_words("en"))
    parse(chart.svg)
    assert "<script>" not in chart.svg
    assert [row.reference for row in chart.rows] == ["Observation/phosphate-0", "<script>x</script>"]
    assert chart.rows[1].date == ""  # kept in the table (escaped by the template), not on the time axis


def test_no_chart_without_values() -> None:
    assert charts_for({}, page_words("en")) == []
    assert charts_for(None, page_words("en")) == []
    assert charts_for({"egfr": {"points": []}}, page_words("en")) == []
