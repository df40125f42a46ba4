"""Cards for clinicians (``render``), with the words, numbers and safe markdown they are written in (``text``)."""

from hooks.engine.cards.render import (
    EXTENSION_KEY,
    MAX_DETAIL_CHARS,
    MAX_DETAIL_LINES,
    OVERRIDE_REASON_SYSTEM,
    render_cards,
)

__all__ = ["EXTENSION_KEY", "MAX_DETAIL_CHARS", "MAX_DETAIL_LINES", "OVERRIDE_REASON_SYSTEM", "render_cards"]
