"""The assessment page and the knowledge browser in headless Chromium, opened from real cards of real calls.

Each test is bounded by pytest-timeout and Playwright's own timeouts; screenshots of every fixture patient's
page (English and French), of a card and of the knowledge browser are saved under test-artifacts/browser/.
"""

from __future__ import annotations

import html
import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from markdown_it import MarkdownIt

from hooks.pages.palette import PALETTE
from tests.browser.a11y import check_page
from tests.browser.conftest import Browser, Service
from tests.conftest import FIXED_NOW
from tests.fhir_builders import lab
from tests.hooks.engine.conftest import CALCINOSIS_FIXTURES
from tests.hooks.pages.helpers import hook_request, token_of, with_token

pytestmark = pytest.mark.timeout(180)

FIXTURES = sorted(p.name for p in CALCINOSIS_FIXTURES.glob("*.json"))
METASTATIC = "metastatic_ckd4_hyperparathyroidism.json"
TTL_S = 1800


def link_of(cards: list[dict[str, Any]]) -> str:
    urls = {card["links"][0]["url"] for card in cards}
    assert len(urls) == 1
    return urls.pop()


def with_history(body: dict[str, Any], pid: str) -> dict[str, Any]:
    """The metastatic patient with a year of earlier results: the charts then show trends."""
    earlier = []
    for days, (calcium, phosphate, albumin, pth, egfr) in {
        40: (10.4, 5.6, 3.4, 560, 23), 120: (10.0, 5.1, 3.6, 470, 27), 220: (9.7, 4.7, 3.9, 390, 31),
        330: (9.4, 4.4, 4.0, 330, 34),
    }.items():
        earlier += [lab("17861-6", calcium, "mg/dL", days_ago=days, pid=pid, ref=(8.5, 10.5)),
                    lab("2777-1", phosphate, "mg/dL", days_ago=days, pid=pid, ref=(2.5, 4.5)),
                    lab("1751-7", albumin, "g/dL", days_ago=days, pid=pid, ref=(3.5, 5.0)),
                    lab("2731-8", pth, "pg/mL", days_ago=days, pid=pid, ref=(15, 65)),
                    lab("98979-8", egfr, "mL/min/{1.73_m2}", days_ago=days, pid=pid)]
    body["prefetch"]["observations"]["entry"] += [{"resource": r} for r in earlier]
    body["prefetch"]["observations"]["total"] = len(body["prefetch"]["observations"]["entry"])
    return body


def test_the_link_of_a_real_card_opens_the_page_with_its_charts_and_tables(
    service: Service, browser: Browser, artifacts: Path
) -> None:
    pid, body = hook_request(METASTATIC)
    cards = service.call(with_history(body, pid))
    page, status = browser.open(link_of(cards))
    assert status == 200
    assert page.locator("h1").inner_text() == "Calcinosis cutis: full assessment"
    # The stylesheet applied under the page's CSP (its hash), with no violation reported.
    assert page.evaluate("getComputedStyle(document.querySelector('h1')).color") == "rgb(11, 61, 110)"
    assert not [line for line in browser.console if "Content Security Policy" in line], browser.console
    charts = page.locator("svg.lab-chart")
    assert sorted(charts.evaluate_all("els => els.map(e => e.dataset.chart)")) == [
        "chart-ca_x_p", "chart-calcium", "chart-egfr", "chart-phosphate", "chart-pth_intact"]
    calcium = page.locator('svg[data-chart="chart-calcium"]')
    box = calcium.bounding_box()
    assert box is not None
    assert box["width"] > 300
    assert box["height"] > 100
    assert calcium.locator("g.series").evaluate_all("gs => gs.map(g => [g.dataset.series, +g.dataset.points])") == [
        ["calcium_total", 5], ["calcium_corrected_computed", 3]]
    assert calcium.locator("g.series polyline").count() == 2
    assert sorted(calcium.locator("g.threshold").evaluate_all("gs => gs.map(g => g.dataset.threshold)")) == [
        "calcium_critical", "calcium_warning"]
    assert calcium.locator("g.reference-range rect").count() == 1
    assert page.locator('svg[data-chart="chart-ca_x_p"] g.threshold').count() == 3
    # Each chart has its data table; the rules table lists the rules with their inputs.
    assert page.locator('table[data-chart="calcium"] tbody tr').count() == 8
    assert page.locator("table.rules tbody tr").count() == len(
        next(c for c in cards if c["extension"]["calcinosis-cds"]["kind"] == "subtype-assessment")
        ["extension"]["calcinosis-cds"]["rules"])
    assert "Observation/met-ca" in page.locator("table.rules").inner_text()
    assert browser.blocked == []
    check_page(page, "en")
    page.screenshot(path=str(artifacts / "assessment-metastatic-history.png"), full_page=True)
    page.set_viewport_size({"width": 1000, "height": 760})
    page.screenshot(path=str(artifacts / "readme-assessment.png"))
    page.locator("figure.chart").first.screenshot(path=str(artifacts / "readme-chart-calcium.png"))
    page.close()


@pytest.mark.parametrize("fixture", FIXTURES)
def test_a_screenshot_of_every_fixture_patients_page(service: Service, browser: Browser, artifacts: Path,
                                                     fixture: str) -> None:
    pid, body = hook_request(fixture)
    cards = service.call(body)
    if fixture.startswith("silent_"):
        assert cards == []  # a silent patient has no card, so no link and no page
        return
    for language in ("en", "fr"):
        cards = service.call(hook_request(fixture)[1], language)
        page, status = browser.open(link_of(cards))
        assert status == 200
        text = page.locator("main").inner_text()
        assert f"Patient/{pid}" in page.locator("header").inner_text()
        assert all(card["summary"] in text for card in cards)  # the cards shown, as shown
        check_page(page, language)
        # The whole English page; the first screen of the French one (full-page PNGs are the slow part).
        page.screenshot(path=str(artifacts / f"assessment-{Path(fixture).stem}-{language}.png"),
                        full_page=language == "en")
        page.close()
    assert browser.blocked == []


def test_an_expired_link_is_refused_with_a_clear_page(service: Service, browser: Browser, artifacts: Path) -> None:
    cards = service.call(hook_request(METASTATIC)[1])
    url = link_of(cards)
    try:
        service.set_clock(FIXED_NOW + timedelta(seconds=TTL_S + 1))
        page, status = browser.open(url)
        assert status == 403
        assert page.locator("h1").inner_text() == "This assessment cannot be shown"
        assert "This link has expired" in page.locator("p.reason").inner_text()
        assert "Patient/" not in page.content()
        check_page(page, "en")
        page.screenshot(path=str(artifacts / "refusal-expired.png"))
        page.close()
    finally:
        service.set_clock(FIXED_NOW)
    page, status = browser.open(url)  # the same link within its lifetime still opens
    assert status == 200
    page.close()


def test_another_patients_link_is_refused(service: Service, browser: Browser, artifacts: Path) -> None:
    mine = link_of(service.call(hook_request(METASTATIC)[1]))
    other_pid, other = hook_request("calciphylaxis_dialysis_warfarin.json")
    theirs = link_of(service.call(other, "fr"))
    page, status = browser.open(with_token(theirs, token_of(mine)))
    assert status == 403
    assert page.evaluate("document.documentElement.lang") == "fr"
    assert "émis pour un autre patient" in page.locator("p.reason").inner_text()
    assert other_pid not in page.content()
    page.screenshot(path=str(artifacts / "refusal-wrong-patient-fr.png"))
    page.close()
    page, status = browser.open(with_token(theirs, token_of(theirs)[:-4] + "AAAA"))
    assert status == 403
    assert "not valid" in page.locator("p.reason").inner_text() or "pas valide" in page.locator("p.reason").inner_text()
    page.close()


def test_the_knowledge_browser(service: Service, browser: Browser, artifacts: Path) -> None:
    for language in ("en", "fr"):
        page, status = browser.open(f"{service.base_url}/knowledge?lang={language}")
        assert status == 200
        found = check_page(page, language)
        tables = {t["caption"].split(" (")[0] for t in found["tables"]}
        assert {"Scoring rules", "Red flags", "Therapy options", "Cautions"} <= tables or \
            {"Règles de score", "Alertes", "Options thérapeutiques", "Précautions"} <= tables
        assert page.locator('table[data-table="rules"] tbody tr').count() >= 30
        assert page.locator('table[data-table^="codes-"] tbody tr').count() > 500
        page.screenshot(path=str(artifacts / f"knowledge-{language}.png"))
        page.close()
    assert browser.blocked == []


_CARD_STYLE = f"""body {{ font: 14px/1.4 "DejaVu Sans", Arial, sans-serif; margin: 16px; color: {PALETTE['text']}; }}
.card {{ width: 420px; border: 1px solid {PALETTE['rule']}; border-left: 6px solid {PALETTE['warning']};
  padding: 8px 12px; }} .card h2 {{ font-size: 15px; margin: 4px 0; }} .card a {{ color: {PALETTE['link']}; }}
.source {{ color: {PALETTE['muted']}; font-size: 12px; }} ul {{ padding-left: 18px; margin: 4px 0; }}
p {{ margin: 4px 0; }}"""


def test_a_card_as_an_ehr_sidebar_shows_it(service: Service, browser: Browser, artifacts: Path) -> None:
    """The subtype card of the README's example, rendered as markdown the way a CDS client does."""
    cards = service.call(hook_request(METASTATIC)[1])
    card = next(c for c in cards if c["extension"]["calcinosis-cds"]["kind"] == "subtype-assessment")
    links = "".join(f'<li><a href="{html.escape(link["url"])}">{html.escape(link["label"])}</a></li>'
                    for link in card["links"])
    body = (f'<div class="card"><h2>{html.escape(card["summary"])}</h2>'
            f'{MarkdownIt("commonmark", {"html": False}).render(card["detail"])}'
            f'<p class="source">{html.escape(card["source"]["label"])}</p><ul>{links}</ul></div>')
    page = browser.context.new_page()
    page.set_viewport_size({"width": 470, "height": 420})
    page.set_content(f"<!DOCTYPE html><html lang='en'><head><style>{_CARD_STYLE}</style></head><body>{body}</body>"
                     "</html>")
    detail = page.locator(".card").inner_text()
    assert "Calcium (not corrected) 10.9 mg/dL (2.72 mmol/L), 17 Nov 2026" in detail
    assert re.search(r"Full assessment", detail)
    page.locator(".card").screenshot(path=str(artifacts / "readme-card.png"))
    # The card's first link is the page, and it opens.
    page.locator("a", has_text="Full assessment").click()
    page.wait_for_load_state("load")
    assert page.locator("h1").inner_text() == "Calcinosis cutis: full assessment"
    page.close()
