"""Basic accessibility checks run in the browser: language, heading order, table semantics, text contrast."""

from __future__ import annotations

import itertools
import re
from typing import Any

from playwright.sync_api import Page

from hooks.pages.palette import contrast_ratio

_HEADINGS = """() => Array.from(document.querySelectorAll('h1,h2,h3,h4,h5,h6'))
  .map(h => [Number(h.tagName[1]), h.textContent.trim()])"""

_TABLES = """() => Array.from(document.querySelectorAll('table')).map(t => ({
  caption: t.caption ? t.caption.textContent.trim() : '',
  head: t.tHead ? t.tHead.querySelectorAll('th').length : 0,
  unscoped: Array.from(t.querySelectorAll('th'))
    .filter(th => !['col', 'row'].includes(th.getAttribute('scope'))).length,
  bodyRows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
  rowHeaders: t.tBodies.length ? t.tBodies[0].querySelectorAll('th[scope=row]').length : 0,
}))"""

# Every HTML element with text of its own: its colour, the first opaque background behind it, and what it is.
_TEXT_COLOURS = """() => {
  const opaque = el => { for (; el; el = el.parentElement) { const c = getComputedStyle(el).backgroundColor;
    if (c && !c.startsWith('rgba(0, 0, 0, 0)') && c !== 'transparent') return c; } return 'rgb(255, 255, 255)'; };
  const found = [];
  for (const el of document.body.querySelectorAll('*')) {
    if (el.closest('svg')) continue;
    const own = Array.from(el.childNodes).some(n => n.nodeType === 3 && n.textContent.trim());
    if (!own || !el.getClientRects().length) continue;
    found.push([getComputedStyle(el).color, opaque(el), el.tagName.toLowerCase() + '.' + el.className]);
  }
  return found;
}"""


def _hex(css: str) -> str:
    channels = [int(float(x)) for x in re.findall(r"[\d.]+", css)[:3]]
    return "#" + "".join(f"{c:02x}" for c in channels)


def check_page(page: Page, lang: str) -> dict[str, Any]:
    """Assert the basic checks; return what was found (for the test's own assertions)."""
    assert page.evaluate("document.documentElement.lang") == lang
    assert page.title()
    headings = page.evaluate(_HEADINGS)
    levels = [level for level, _ in headings]
    assert levels, headings
    assert levels[0] == 1, headings
    assert levels.count(1) == 1, headings
    assert all(b - a <= 1 for a, b in itertools.pairwise(levels)), headings  # never skips a level
    assert all(text for _, text in headings)
    tables = page.evaluate(_TABLES)
    for table in tables:
        assert table["caption"], table
        assert table["head"] >= 1, table
        assert table["unscoped"] == 0, table
    failures = []
    for colour, background, where in page.evaluate(_TEXT_COLOURS):
        ratio = contrast_ratio(_hex(colour), _hex(background))
        if ratio < 4.5:
            failures.append((where, colour, background, round(ratio, 2)))
    assert not failures, failures[:10]
    labelled = page.evaluate("""() => Array.from(document.querySelectorAll('svg[role=img]')).map(svg =>
      svg.getAttribute('aria-labelledby').split(' ')
        .map(id => (document.getElementById(id) || {}).textContent || ''))""")
    assert all(all(part.strip() for part in parts) for parts in labelled), labelled
    return {"headings": headings, "tables": tables}
