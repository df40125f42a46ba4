"""The pages' colours meet WCAG 2.2 contrast (text 4.5:1, chart lines and marks 3:1), and are the only ones used."""

from __future__ import annotations

import re

import pytest

from hooks.pages.html import page_css
from hooks.pages.palette import CONTRAST_PAIRS, PALETTE, contrast_ratio


@pytest.mark.parametrize(("what", "foreground", "background", "minimum"), CONTRAST_PAIRS,
                         ids=[pair[0] for pair in CONTRAST_PAIRS])
def test_every_colour_pair_has_enough_contrast(what: str, foreground: str, background: str, minimum: float) -> None:
    assert contrast_ratio(PALETTE[foreground], PALETTE[background]) >= minimum, what


def test_the_ratio_is_the_wcag_one() -> None:
    assert contrast_ratio("#000000", "#ffffff") == pytest.approx(21.0)
    assert contrast_ratio("#777777", "#ffffff") == pytest.approx(4.48, abs=0.01)
    assert contrast_ratio("#ffffff", "#ffffff") == pytest.approx(1.0)


def test_the_stylesheet_uses_only_the_palette() -> None:
    css = page_css()
    assert "$" not in css  # every placeholder was filled
    assert set(re.findall(r"#[0-9a-fA-F]{6}\b", css)) <= set(PALETTE.values())
    assert not re.search(r"#[0-9a-fA-F]{3}\b", css)
