"""Free-text skin findings in English and French, with negation and history (rule C5, brief §5e)."""

from __future__ import annotations

import pytest

from fhir_mappings.text import find_text_findings


def kinds(text: str, *, lesion: bool = False) -> set[str]:
    return {finding.kind for finding in find_text_findings(text, lesion_context=lesion)}


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("Calcinosis cutis of the fingers", {"calcinosis"}),
        ("Calcinose cutanée diffuse", {"calcinosis"}),
        ("calcifications sous-cutanées multiples", {"calcinosis"}),
        ("Suspected calciphylaxis", {"calciphylaxis"}),
        ("Calciphylaxie probable", {"calciphylaxis"}),
        ("Painful subcutaneous nodules on the buttocks", {"nodule", "pain"}),
        ("Nodules durs et douloureux des cuisses", {"nodule", "pain"}),
        ("Ulcère nécrotique de la jambe", {"ulcer", "necrosis"}),
        ("Non-healing ulcer with black eschar", {"ulcer", "necrosis"}),
        ("Ulcère non cicatrisé", {"ulcer"}),
        ("Purpura rétiforme et livedo", {"purpura_livedo"}),
        ("livedo reticularis of the thighs", {"purpura_livedo"}),
        ("Gangrène distale", {"necrosis"}),
        ("Cellulitis around the lesion", {"infection", "local_injury"}),
        ("Lésion surinfectée", {"infection", "local_injury"}),
        ("Acné sévère au site de la lésion", {"local_injury"}),
        ("Injection sites on both thighs", {"local_injury"}),
    ],
)
def test_asserted_findings(text: str, expected: set[str]) -> None:
    assert kinds(text) == expected


@pytest.mark.parametrize(
    "text",
    [
        "No ulceration",
        "Not tender",
        "no ulceration or necrosis",
        "Patient denies pain at the nodules",  # pain negated; nodules asserted below separately
        "Pas d'ulcération",
        "Sans nécrose ni ulcère",
        "Absence de calcinose",
        "Healed ulcer scars on the legs",
        "Cicatrices d'ulcères",
        "Calciphylaxis ruled out",
        "Antécédent de calciphylaxie",
        "History of skin ulcer",
        "Calciphylaxie écartée",
        "livedoid vasculitis",
        "douleur thoracique",
        "chest pain",
        "lesion free of infection",
    ],
)
def test_negated_historical_or_unrelated_mentions_are_ignored(text: str) -> None:
    assert kinds(text) - {"nodule"} == set()


def test_indolore_and_painless_are_not_pain() -> None:
    assert kinds("Nodules indolores des coudes") == {"nodule"}
    assert kinds("Painless nodules") == {"nodule"}
    assert kinds("Nodules non douloureux") == {"nodule"}


def test_negation_does_not_cross_a_sentence_or_a_but() -> None:
    assert kinds("Pas de fièvre. Ulcère douloureux de la cuisse.") == {"ulcer", "pain"}
    assert kinds("No fever but painful necrotic ulcer") == {"ulcer", "necrosis", "pain"}
    assert kinds("Pas de fièvre mais nodules douloureux") == {"nodule", "pain"}


def test_bare_pain_counts_only_on_a_lesion() -> None:
    assert kinds("très douloureux") == set()
    assert kinds("très douloureux", lesion=True) == {"pain"}


def test_biopsy_needs_both_words_asserted() -> None:
    assert "biopsy_calciphylaxis" in kinds("Skin biopsy consistent with calciphylaxis")
    assert "biopsy_calciphylaxis" not in kinds("Biopsy: no calciphylaxis")
    assert "biopsy_calciphylaxis" not in kinds("Calciphylaxis suspected, biopsy not done yet")
    assert "biopsy_calciphylaxis" not in kinds("Suspicion de calciphylaxie, biopsie prévue")


def test_findings_carry_body_sites_and_the_clause() -> None:
    (finding,) = find_text_findings("Calcinose des fesses. Pas d'ulcère.")
    assert finding.kind == "calcinosis"
    assert finding.body_sites == ("skin_buttock",)
    assert finding.clause == "Calcinose des fesses"


def test_empty_text() -> None:
    assert find_text_findings(None) == ()
    assert find_text_findings("   ") == ()
