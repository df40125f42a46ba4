"""Conservative English and French free-text matching for skin findings.

Implements the clinical brief §2c (text detection of calcinosis/calciphylaxis: "calcinosis", "calcinose",
"calcification cutanée", "calciphylax*"), §9.8 (FR Core R69 conditions carry free text), the lesion words
of §5a/§5c R31 (ulcer, necrosis/eschar, purpura, livedo, painful nodules), R9 (local injury, infection,
acne at the lesion site), R38 (biopsy showing calciphylaxis), §5d (joint destruction, "lysis") and product
rule C5 (§5e): negated or historical mentions are ignored in both languages ("no ulceration", "not
tender", "pas d'ulcération", "indolore", "healed ulcer scars", "ruled out", "antécédent de").

Text is folded (accents and case removed) and cut into clauses at sentence punctuation and at a few
conjunctions ("but", "mais", "with", "avec", "and", "et"). A cue negates a match when it stands at most six
words before it in the same clause ("non" only right before it, so "non-healing ulcer" stays positive);
a history or exclusion cue anywhere in the clause discards every match of that clause.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final, Literal

from fhir_mappings.terminology import find_bodysite_names, fold_text

__all__ = ["TextFinding", "TextKind", "find_text_findings"]

TextKind = Literal[
    "calcinosis",
    "calciphylaxis",
    "ulcer",
    "necrosis",
    "purpura_livedo",
    "pain",
    "nodule",
    "infection",
    "joint_destruction",
    "local_injury",
    "biopsy_calciphylaxis",
]

# Patterns run on folded text: lower-case ASCII words separated by single spaces.
_PATTERNS: Final[dict[str, re.Pattern[str]]] = {
    "calcinosis": re.compile(
        r"\bcalcinos\w*|\bcalcifications? (?:cutanees?|sous cutanees?)\b"
        r"|\b(?:cutaneous|subcutaneous|skin) calcifications?\b"
    ),
    "calciphylaxis": re.compile(r"\bcalciphyla\w*"),
    "ulcer": re.compile(r"\bulcer\w*"),
    "necrosis": re.compile(r"\bnecro\w*|\beschars?\b|\bescarres?\b|\bgangren\w*"),
    # "livedo" as a whole word: livedoid vasculitis (L95.0) is a different disease and never counts.
    "purpura_livedo": re.compile(r"\bpurpura\w*|\blivedo\b"),
    "pain": re.compile(r"\bpainful\b|\bpain\b|\btender(?:ness)?\b|\bdouloureu\w*|\bdouleurs?\b"),
    "nodule": re.compile(r"\bnodul\w*"),
    "infection": re.compile(r"\binfect\w*|\bsurinfect\w*|\bcellulitis\b|\babscess\w*|\babces\b"),
    "joint_destruction": re.compile(r"\b(?:osteo)?lys(?:e|is)\b|\bjoint destruction\b|\bdestruction articulaire\b"),
    "local_injury": re.compile(
        r"\btrauma\w*|\binjur(?:y|ies)\b|\bblessures?\b|\bacne\b|\bpanniculit\w*"
        r"|\binjection sites?\b|\bsites? d injection\b|\bpoints? d injection\b|\bpilomatric\w*"
    ),
    "biopsy": re.compile(r"\bbiops\w*"),
}
# Pain counts only next to a lesion word ("douleur thoracique" is not a skin finding).
_LESION_KINDS: Final = ("calcinosis", "calciphylaxis", "ulcer", "necrosis", "purpura_livedo", "nodule")
_LESION_EXTRA: Final = re.compile(r"\blesions?\b|\bplaques?\b|\bpapules?\b|\bindurat\w*")

_NEGATIONS: Final = frozenset(
    {
        "no",
        "not",
        "without",
        "denies",
        "denied",
        "never",
        "none",
        "negative",
        "free",
        "absence",
        "pas",
        "sans",
        "aucun",
        "aucune",
        "ni",
        "jamais",
        "negatif",
    }
)
_IMMEDIATE_NEGATIONS: Final = frozenset({"non"})
_HISTORY: Final = frozenset(
    {
        "history",
        "healed",
        "scar",
        "scars",
        "scarring",
        "previous",
        "previously",
        "prior",
        "past",
        "former",
        "resolved",
        "excluded",
        "absent",
        "antecedent",
        "antecedents",
        "atcd",
        "cicatrice",
        "cicatrices",
        "cicatrise",
        "cicatrisee",
        "cicatrisees",
        "cicatrises",
        "ancien",
        "ancienne",
        "anciens",
        "anciennes",
        "resolu",
        "resolue",
        "gueri",
        "guerie",
        "exclu",
        "exclue",
        "ecarte",
        "ecartee",
        "elimine",
        "eliminee",
    }
)
_HISTORY_PHRASES: Final = ("ruled out",)
# "non cicatrisé", "not healed": the wound is still open, which is the opposite of history.
_HISTORY_UNDONE: Final = frozenset({"non", "not", "pas", "never", "jamais"})
_NOT_DONE: Final = frozenset(
    {
        "not",
        "pending",
        "planned",
        "scheduled",
        "requested",
        "awaited",
        "pas",
        "prevue",
        "programmee",
        "envisagee",
        "demandee",
        "attente",
        "faire",
    }
)
_CLAUSE_SPLIT: Final = re.compile(r"[.;:!?\n\r]+")
_CONJUNCTIONS: Final = re.compile(r"\b(?:but|however|although|mais|cependant|with|avec|and|et)\b")
_NEGATION_WINDOW: Final = 6


@dataclass(frozen=True, slots=True)
class TextFinding:
    kind: TextKind
    # The clause the finding was read from, as written (for the card's evidence line).
    clause: str
    body_sites: tuple[str, ...] = ()


def _is_historical(words: list[str], folded: str) -> bool:
    if any(phrase in folded for phrase in _HISTORY_PHRASES):
        return True
    for index, word in enumerate(words):
        if word in _HISTORY and not (index > 0 and words[index - 1] in _HISTORY_UNDONE):
            return True
    return False


def _is_negated(folded: str, start: int) -> bool:
    before = folded[:start].split()
    if before and before[-1] in _IMMEDIATE_NEGATIONS:
        return True
    return any(word in _NEGATIONS for word in before[-_NEGATION_WINDOW:])


def _not_done(folded: str, end: int) -> bool:
    return any(word in _NOT_DONE for word in folded[end:].split()[:_NEGATION_WINDOW])


def _positive_kinds(folded: str) -> set[str]:
    words = folded.split()
    if _is_historical(words, folded):
        return set()
    found: set[str] = set()
    for kind, pattern in _PATTERNS.items():
        for match in pattern.finditer(folded):
            if _is_negated(folded, match.start()):
                continue
            # A biopsy that is planned or not done yet shows nothing (R38 needs a reported result).
            if kind == "biopsy" and _not_done(folded, match.end()):
                continue
            found.add(kind)
            break
    return found


def find_text_findings(text: str | None, *, lesion_context: bool = False) -> tuple[TextFinding, ...]:
    """Skin findings asserted (not negated, not historical) in ``text``.

    ``lesion_context`` says the text belongs to a resource already coded as a skin lesion, so a bare
    "painful"/"douloureux" there is a pain finding.
    """
    if not text or not text.strip():
        return ()
    sites = find_bodysite_names(fold_text(text))
    per_clause: list[tuple[str, set[str]]] = []
    for raw_clause in _CLAUSE_SPLIT.split(text):
        folded_clause = fold_text(raw_clause)
        if not folded_clause:
            continue
        for part in _CONJUNCTIONS.split(folded_clause):
            kinds = _positive_kinds(part.strip())
            if kinds:
                per_clause.append((raw_clause.strip(), kinds))
    all_kinds = set().union(*(kinds for _, kinds in per_clause)) if per_clause else set()
    has_lesion = (
        lesion_context or any(k in all_kinds for k in _LESION_KINDS) or bool(_LESION_EXTRA.search(fold_text(text)))
    )
    results: dict[str, TextFinding] = {}
    for clause, kinds in per_clause:
        for kind in sorted(kinds):
            out_kinds: list[TextKind] = []
            if kind == "biopsy":
                # R38 needs both words asserted in the text: a biopsy and calciphylaxis.
                if "calciphylaxis" in all_kinds:
                    out_kinds.append("biopsy_calciphylaxis")
            elif kind == "pain":
                if has_lesion:
                    out_kinds.append("pain")
            elif kind == "infection":
                # R9 counts infection at the lesion site as a local injury as well.
                out_kinds.extend(("infection", "local_injury"))
            else:
                out_kinds.append(_as_kind(kind))
            for out in out_kinds:
                results.setdefault(out, TextFinding(out, clause, sites))
    return tuple(results.values())


_KIND_NAMES: Final[dict[str, TextKind]] = {
    "calcinosis": "calcinosis",
    "calciphylaxis": "calciphylaxis",
    "ulcer": "ulcer",
    "necrosis": "necrosis",
    "purpura_livedo": "purpura_livedo",
    "nodule": "nodule",
    "joint_destruction": "joint_destruction",
    "local_injury": "local_injury",
}


def _as_kind(kind: str) -> TextKind:
    return _KIND_NAMES[kind]
