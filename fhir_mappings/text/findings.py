"""Skin findings asserted in free text, scoped to the skin, with the mentions set aside and why.

Implements the clinical brief §2c (text detection of calcinosis and calciphylaxis), §5a/§5c R9, R31, R38
(lesion words, local injury, biopsy showing calciphylaxis), §5d (joint destruction), §9.3 (the differential
diagnoses of calciphylaxis) and product rule C5 (negated, historical, family and hypothetical mentions),
on the mentions that :mod:`fhir_mappings.text.pipeline` reads.

Scope (issue 11): an ulcer, necrosis, nodule, pain or infection counts only when it is about skin or
subcutaneous tissue: the resource is coded as a skin lesion or has a skin body site (``skin_context``), or
the sentence names the skin or a skin site, or the text describes a calcinosis lesion. A term right next to
another organ ("peptic ulcer", "acute tubular necrosis", "urinary tract infection", "chest pain") is not a
skin finding; an ulcer named with another cause ("pressure ulcer", "diabetic foot ulcer") is a differential
diagnosis of calciphylaxis, not a calciphylaxis lesion. A calcinosis mention next to a vascular, visceral
or disc word is not calcinosis cutis. Every mention left out is returned with its reason.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

from fhir_mappings.terminology import find_bodysite_names, fold_text
from fhir_mappings.text.pipeline import Mention, names_skin_words, read_mentions

__all__ = [
    "Certainty",
    "SetAside",
    "TextFinding",
    "TextKind",
    "find_text_findings",
    "read_skin_text",
    "text_names_skin",
]

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
Certainty = Literal["asserted", "suspected"]
# Why a mention is not used: its assertion, or a scope rule.
SetAsideReason = Literal[
    "negated", "historical", "family", "not-skin", "other-cause", "non-cutaneous", "no-skin-site", "no-lesion"
]

# Term kinds that are skin findings only when the text or the resource is about the skin.
_SKIN_SCOPED: Final = frozenset({"ulcer", "necrosis", "nodule", "infection"})
# Lesions that exist only in the skin: a text naming one is about the skin.
_SKIN_LESIONS: Final = frozenset({"calcinosis", "calciphylaxis", "eschar", "purpura_livedo", "skin_infection"})
# Pain counts on a text that keeps one of these lesions (or a lesion word, or a skin context).
_PAIN_NEEDS: Final = frozenset({"calcinosis", "calciphylaxis", "ulcer", "necrosis", "purpura_livedo", "nodule"})
_OUTPUT: Final[dict[str, TextKind]] = {
    "calcinosis": "calcinosis",
    "calciphylaxis": "calciphylaxis",
    "ulcer": "ulcer",
    "necrosis": "necrosis",
    "eschar": "necrosis",
    "purpura_livedo": "purpura_livedo",
    "pain": "pain",
    "nodule": "nodule",
    "infection": "infection",
    "skin_infection": "infection",
    # An ulcer whose very name gives another cause ("escarre", "decubitus"): always set aside.
    "other_cause_ulcer": "ulcer",
    "joint_destruction": "joint_destruction",
    "local_injury": "local_injury",
}
# Words of another organ within this many tokens of the term take it out of the skin ("peptic ulcer").
_ORGAN_WINDOW: Final = 3
# A named other cause of an ulcer within this many tokens ("ulcère du pied diabétique").
_CAUSE_WINDOW: Final = 5
# A vascular/visceral/disc word within this many tokens of "calcinosis" ("calcinosis of intervertebral disc").
_CALCIFICATION_WINDOW: Final = 5
# A biopsy followed by one of these (same sentence) is not a result yet (R38 needs a reported result).
_NOT_DONE: Final = frozenset(
    {
        "pending", "planned", "scheduled", "requested", "awaited", "not done", "to do",
        "prevue", "programmee", "envisagee", "demandee", "en attente", "a faire", "a prevoir",
    }
)


@dataclass(frozen=True, slots=True)
class TextFinding:
    kind: TextKind
    # The sentence the finding was read from, as written (for the card's evidence line).
    clause: str
    body_sites: tuple[str, ...] = ()
    # "suspected" when the text only raises it ("suspicion de calciphylaxie", "possible calcinosis").
    certainty: Certainty = "asserted"


@dataclass(frozen=True, slots=True)
class SetAside:
    """A mention that is not used, and why (shown as "not used" in the full assessment)."""

    kind: str
    clause: str
    reason: SetAsideReason
    cue: str | None = None


def _near(mention: Mention, others: Iterable[Mention], window: int) -> Mention | None:
    for other in others:
        if other.sentence_index == mention.sentence_index and (
            other.start - window < mention.end and mention.start < other.end + window
        ):
            return other
    return None


def _sites(sentence: str) -> tuple[str, ...]:
    return find_bodysite_names(fold_text(sentence))


def _biopsy_result(biopsy: Mention) -> bool:
    after = fold_text(biopsy.sentence.split(biopsy.text, 1)[-1])
    padded = f" {after} "
    return biopsy.assertion == "positive" and not any(f" {word} " in padded for word in _NOT_DONE)


def read_skin_text(
    text: str | None, *, skin_context: bool = False
) -> tuple[tuple[TextFinding, ...], tuple[SetAside, ...]]:
    """The skin findings ``text`` asserts (one per kind) and every candidate mention set aside, with why.

    ``skin_context``: the text belongs to a resource already about the skin (coded as a skin lesion, or
    with a skin body site), so "painful", "nodules" or "ulcère" there are skin findings.
    """
    mentions = read_mentions(text)
    if not mentions:
        return (), ()
    by_kind: dict[str, list[Mention]] = {}
    for mention in mentions:
        by_kind.setdefault(mention.kind, []).append(mention)
    organs = by_kind.get("non_skin_site", [])
    causes = by_kind.get("other_ulcer_cause", [])
    calcifications = by_kind.get("non_cutaneous_calcification", [])
    skin_sentences = {m.sentence_index for m in by_kind.get("skin_word", [])}
    describes_skin_lesion = any(
        m.assertion in {"positive", "hypothetical"} for k in _SKIN_LESIONS for m in by_kind.get(k, ())
    )

    found: dict[TextKind, TextFinding] = {}
    set_aside: list[SetAside] = []

    def keep(kind: TextKind, mention: Mention) -> None:
        certainty: Certainty = "suspected" if mention.assertion == "hypothetical" else "asserted"
        current = found.get(kind)
        if current is None or (current.certainty == "suspected" and certainty == "asserted"):
            found[kind] = TextFinding(kind, mention.sentence, _sites(mention.sentence), certainty)

    def aside(mention: Mention, reason: SetAsideReason, cue: str | None = None) -> None:
        set_aside.append(SetAside(_OUTPUT.get(mention.kind, mention.kind), mention.sentence, reason, cue))

    def out_of_scope(mention: Mention) -> bool:
        """True (and recorded) when a scope rule takes the mention out of the skin."""
        kind = mention.kind
        if kind == "other_cause_ulcer":
            aside(mention, "other-cause", mention.text)
            return True
        if kind == "calcinosis" and (other := _near(mention, calcifications, _CALCIFICATION_WINDOW)):
            aside(mention, "non-cutaneous", other.text)
            return True
        if kind not in _SKIN_SCOPED and kind != "pain":
            return False
        if other := _near(mention, organs, _ORGAN_WINDOW):
            aside(mention, "not-skin", other.text)
            return True
        if kind in {"ulcer", "necrosis", "infection"} and (other := _near(mention, causes, _CAUSE_WINDOW)):
            aside(mention, "other-cause", other.text)
            return True
        named_skin = mention.sentence_index in skin_sentences or bool(_sites(mention.sentence))
        if kind == "pain":
            lesion = skin_context or named_skin or any(k in found for k in _PAIN_NEEDS) or any(
                m.assertion == "positive" for m in by_kind.get("lesion_word", ())
            )
            if not lesion:
                aside(mention, "no-lesion")
            return not lesion
        if not (skin_context or named_skin or describes_skin_lesion):
            aside(mention, "no-skin-site")
            return True
        return False

    # Pain last: it needs to know which lesions were kept.
    for mention in sorted(mentions, key=lambda m: m.kind == "pain"):
        if mention.kind not in _OUTPUT:
            continue
        if mention.assertion in {"negated", "historical", "family"}:
            aside(mention, mention.assertion, mention.cue)
            continue
        if out_of_scope(mention):
            continue
        output = _OUTPUT[mention.kind]
        keep(output, mention)
        if output == "infection":
            # R9 counts infection at the lesion site as a local injury as well.
            keep("local_injury", mention)

    calciphylaxis = found.get("calciphylaxis")
    biopsies = [m for m in by_kind.get("biopsy", []) if _biopsy_result(m)]
    if biopsies and calciphylaxis is not None and calciphylaxis.certainty == "asserted":
        # R38 needs both asserted in the text: a biopsy result and calciphylaxis.
        found["biopsy_calciphylaxis"] = TextFinding("biopsy_calciphylaxis", biopsies[0].sentence,
                                                    _sites(biopsies[0].sentence))
    return tuple(found.values()), tuple(set_aside)


def find_text_findings(text: str | None, *, lesion_context: bool = False) -> tuple[TextFinding, ...]:
    """The skin findings of :func:`read_skin_text`, without the mentions set aside."""
    return read_skin_text(text, skin_context=lesion_context)[0]


def text_names_skin(text: str | None) -> bool:
    """The text names the skin, the subcutaneous tissue or a skin site ("skin", "sous-cutané", "cuisse")."""
    if not text or not text.strip():
        return False
    return bool(find_bodysite_names(fold_text(text))) or names_skin_words(text)
