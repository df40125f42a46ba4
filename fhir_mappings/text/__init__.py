"""Free text in English and French: assertion-aware term mentions (``pipeline``) and skin findings (``findings``)."""

from fhir_mappings.text.findings import (
    SetAside,
    TextFinding,
    TextKind,
    find_text_findings,
    read_skin_text,
    text_names_skin,
)
from fhir_mappings.text.pipeline import Assertion, Mention, read_mentions, warm_up

__all__ = [
    "Assertion",
    "Mention",
    "SetAside",
    "TextFinding",
    "TextKind",
    "find_text_findings",
    "read_mentions",
    "read_skin_text",
    "text_names_skin",
    "warm_up",
]
