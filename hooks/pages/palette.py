"""The pages' colours, in one place: the stylesheet and the charts read them, and a test computes their
contrast (WCAG 2.2: 4.5:1 for text, 3:1 for the lines and marks of a chart against the page)."""

from __future__ import annotations

from typing import Final

__all__ = ["CONTRAST_PAIRS", "PALETTE", "contrast_ratio"]

PALETTE: Final = {
    "text": "#1a1a1a",
    "muted": "#4a4a4a",
    "background": "#ffffff",
    "panel": "#f6f8fa",
    "header": "#eef2f6",
    "rule": "#767676",
    "link": "#0b4f9c",
    "heading": "#0b3d6e",
    "critical": "#a4161a",
    "warning": "#8a4b00",
    "info": "#1f5f8b",
    "on-badge": "#ffffff",
    "note": "#fff4e0",
    "series-1": "#0b5cad",
    "series-2": "#b3470b",
    "series-3": "#2e6b30",
    "threshold": "#a4161a",
    "band": "#e3f1e3",
    "band-edge": "#2e6b30",
}

# (what, foreground, background, minimum ratio): every text and chart colour against what it sits on.
CONTRAST_PAIRS: Final = (
    ("body text", "text", "background", 4.5),
    ("secondary text", "muted", "background", 4.5),
    ("secondary text on panels", "muted", "panel", 4.5),
    ("links", "link", "background", 4.5),
    ("links on panels", "link", "panel", 4.5),
    ("headings", "heading", "background", 4.5),
    ("table headers", "text", "header", 4.5),
    ("notes", "text", "note", 4.5),
    ("critical badge", "on-badge", "critical", 4.5),
    ("warning badge", "on-badge", "warning", 4.5),
    ("info badge", "on-badge", "info", 4.5),
    ("chart series 1", "series-1", "background", 3.0),
    ("chart series 2", "series-2", "background", 3.0),
    ("chart series 3", "series-3", "background", 3.0),
    ("threshold lines and labels", "threshold", "background", 4.5),
    ("reference-range label", "band-edge", "band", 4.5),
    ("axis text", "muted", "background", 4.5),
)


def _luminance(colour: str) -> float:
    channels = [int(colour.lstrip("#")[i:i + 2], 16) / 255 for i in (0, 2, 4)]
    linear = [c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels]
    return 0.2126 * linear[0] + 0.7152 * linear[1] + 0.0722 * linear[2]


def contrast_ratio(first: str, second: str) -> float:
    """WCAG 2.2 contrast ratio of two ``#rrggbb`` colours (1 to 21)."""
    light, dark = sorted((_luminance(first), _luminance(second)), reverse=True)
    return (light + 0.05) / (dark + 0.05)
