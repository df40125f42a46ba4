"""Issue 15, clinical review findings 6, 8-12, 16-19 and 21, from FHIR input to the card in English and French:
non-uraemic calciphylaxis on warfarin, per-product bisphosphonate limits, the missing weight behind an eGFR
approximation, macrolides and pristinamycin with colchicine and the renal contraindication, warfarin and
ceftriaxone duplicates, every missing fact named with the check's own words, brand names, French wording.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_builders import condition, lab, medication, normal_chemistry, patient
from tests.hooks.engine.order_support import LOCALES, actions, checks, draft, egfr, order_cards, text, the_card

THIGH = "371305003"


def adult(gender: str = "male", birth: str = "1960-05-01") -> dict[str, Any]:
    return patient("p1", birth=birth, gender=gender)


def crcl(value: float) -> dict[str, Any]:
    return lab("35591-7", value, "mL/min")


def extension(card: Any) -> dict[str, Any]:
    assert card.extension is not None
    return dict(card.extension["calcinosis-cds"])


def facts_of(card: Any) -> list[str]:
    return [line for line in text(card).splitlines() if line.startswith("- ")]


# ----------------------------------------------------------------------------- finding 6: non-uraemic calciphylaxis


def painful_necrosis_on_warfarin() -> list[dict[str, Any]]:
    return [adult(), medication("B01AA03", text="Warfarin", rid="warf-current", days_ago=200),
            condition("301364008", "snomed"), condition("423902002", "snomed", sites=(THIGH,)), *normal_chemistry()]


@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_with_the_non_uraemic_calciphylaxis_pattern_is_flagged(locale: str) -> None:
    card = the_card(order_cards(painful_necrosis_on_warfarin(), draft("B01AA03", rid="warf"), locale=locale),
                    "warfarin-calciphylaxis")
    assert ("calciphylaxie non urémique" if locale == "fr" else "non-uraemic calciphylaxis") in card.summary
    assert actions(card) == [("delete", "MedicationRequest/warf")]


def test_warfarin_with_painful_necrosis_on_dialysis_is_the_uraemic_card() -> None:
    # Without the normal chemistry (a normal eGFR supersedes a legacy ESRD code): on dialysis.
    resources = [*painful_necrosis_on_warfarin()[:4], condition("N18.6"), condition("Z99.2")]
    card = the_card(order_cards(resources, draft("B01AA03", rid="warf")), "warfarin-calciphylaxis")
    assert "non-uraemic" not in card.summary
    assert card.summary == "Warfarin with calciphylaxis: a major risk factor"


# ----------------------------------------------------------------------------- finding 8: per-product thresholds


@pytest.mark.parametrize("locale", LOCALES)
def test_risedronate_at_crcl_32_is_within_its_label(locale: str) -> None:
    assert order_cards([adult(), crcl(32)], draft("M05BA07", rid="rise"), locale=locale) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_risedronate_at_crcl_25_is_below_its_30_limit(locale: str) -> None:
    card = the_card(order_cards([adult(), crcl(25)], draft("M05BA07", rid="rise"), locale=locale),
                    "bisphosphonate-renal-30")
    assert ("ClCr 30 mL/min" if locale == "fr" else "CrCl 30 mL/min") in card.summary
    assert card.source.url == "https://www.ncbi.nlm.nih.gov/pmc/articles/PMC3459591/"


@pytest.mark.parametrize("locale", LOCALES)
def test_alendronate_at_crcl_32_is_below_its_35_limit_citing_the_fosamax_label(locale: str) -> None:
    card = the_card(order_cards([adult(), crcl(32)], draft("M05BA04", rid="alen"), locale=locale),
                    "bisphosphonate-renal")
    assert ("ClCr 35 mL/min" if locale == "fr" else "CrCl 35 mL/min") in card.summary
    assert "FOSAMAX" in (card.source.label or "")


@pytest.mark.parametrize("locale", LOCALES)
def test_zoledronic_acid_names_both_strengths(locale: str) -> None:
    card = the_card(order_cards([adult(), crcl(33)], draft("M05BA08", rid="zol"), locale=locale),
                    "bisphosphonate-renal")
    assert "5 mg" in text(card)
    assert "4 mg (Zometa)" in text(card)
    assert ("Vérifier le dosage" if locale == "fr" else "Check the strength") in text(card)


# ----------------------------------------------------------------------------- finding 9: weight not recorded


def older_woman_no_weight() -> list[dict[str, Any]]:
    return [adult(gender="female", birth="1941-02-01"), lab("2160-0", 1.2, "mg/dL")]


@pytest.mark.parametrize(("code", "check"), [("M05BA04", "bisphosphonate-renal"), ("M04AC01", "colchicine-renal")])
@pytest.mark.parametrize("locale", LOCALES)
def test_eGFR_approximation_without_weight_names_the_missing_weight(locale: str, code: str, check: str) -> None:
    card = the_card(order_cards(older_woman_no_weight(), draft(code, rid="d"), locale=locale), check)
    assert extension(card)["notRecorded"] == "weight"
    assert ("pas de poids récent" if locale == "fr" else "no recent weight") in card.summary
    assert any(("DFG" if locale == "fr" else "eGFR") in line for line in facts_of(card))
    assert text(card).count("approximation") == 1  # said once, in the missing-weight words


def test_a_recent_weight_gives_a_cockcroft_gault_crcl_and_no_weight_card() -> None:
    resources = [*older_woman_no_weight(), lab("29463-7", 70, "kg", days_ago=2)]
    cards = order_cards(resources, draft("M05BA04", rid="alen"))
    assert all(extension(c).get("notRecorded") != "weight" for c in cards)


# ----------------------------------------------------------------------------- finding 10: colchicine partners


@pytest.mark.parametrize(("words", "label"), [("Azithromycine 250 mg", "azithromycin"),
                                              ("Pristinamycine 500 mg", "pristinamycin")])
@pytest.mark.parametrize("locale", LOCALES)
def test_colchicine_with_azithromycin_or_pristinamycin_is_flagged(locale: str, words: str, label: str) -> None:
    resources = [adult(), egfr(90), medication(None, text=words, rid="abx", days_ago=2)]
    card = the_card(order_cards(resources, draft("M04AC01", rid="colch"), locale=locale),
                    "colchicine-strong-inhibitor")
    assert label in card.summary.lower()


def test_colchicine_with_spiramycin_is_silent() -> None:
    resources = [adult(), egfr(90), medication(None, text="Spiramycine 3 MUI", rid="abx", days_ago=2)]
    assert order_cards(resources, draft("M04AC01", rid="colch")) == []


@pytest.mark.parametrize("locale", LOCALES)
def test_colchicine_with_clarithromycin_at_egfr_45_is_a_label_contraindication(locale: str) -> None:
    resources = [adult(), egfr(45), medication("J01FA09", rid="clari", days_ago=2)]
    card = the_card(order_cards(resources, draft("M04AC01", rid="colch"), locale=locale),
                    "colchicine-strong-inhibitor")
    assert ("RCP / étiquetage américain et britannique" if locale == "fr" else "label contraindication (US, UK)") \
        in card.summary
    assert any("45" in line for line in facts_of(card))


# ----------------------------------------------------------------------------- finding 11 and 21: duplicates


@pytest.mark.parametrize(("code", "rid"), [("B01AA03", "warf"), ("J01DD04", "cef")])
@pytest.mark.parametrize("locale", LOCALES)
def test_warfarin_and_ceftriaxone_repeats_are_duplicates(locale: str, code: str, rid: str) -> None:
    resources = [adult(), *normal_chemistry(), medication(code, rid=f"{rid}-current", days_ago=20)]
    card = the_card(order_cards(resources, draft(code, rid=rid), locale=locale), "duplicate-therapy")
    assert ("déjà prescrit" if locale == "fr" else "already prescribed") in card.summary


@pytest.mark.parametrize("locale", LOCALES)
def test_sevelamer_while_on_lanthanum_is_a_same_class_duplicate(locale: str) -> None:
    resources = [adult(), medication("V03AE03", rid="lanthanum", days_ago=30)]
    card = the_card(order_cards(resources, draft("V03AE02", rid="sev"), locale=locale), "duplicate-therapy")
    if locale == "fr":
        assert "même classe déjà prescrite (carbonate de lanthane)" in card.summary
    else:
        assert "same class already prescribed (lanthanum carbonate)" in card.summary


# ----------------------------------------------------------------------------- finding 12: every missing fact


@pytest.mark.parametrize("locale", LOCALES)
def test_woman_without_birth_date_on_minocycline_is_told_both_facts_are_missing(locale: str) -> None:
    woman = patient("p1", gender="female")
    del woman["birthDate"]
    (card,) = order_cards([woman], draft("J01AA08", rid="mino"), locale=locale)
    assert extension(card)["notRecordedAll"] == ["pregnancy", "birth-date"]
    assert ("8 ans" if locale == "fr" else "8 years") in text(card)
    assert ("grossesse" if locale == "fr" else "pregnancy") in text(card).lower()


@pytest.mark.parametrize("locale", LOCALES)
def test_man_without_birth_date_on_minocycline_gets_no_neonatal_words_nor_empty_age(locale: str) -> None:
    man = patient("p1", gender="male")
    del man["birthDate"]
    (card,) = order_cards([man], draft("J01AA08", rid="mino"), locale=locale)
    assert extension(card)["notRecorded"] == "birth-date"
    assert "28" not in text(card)
    assert ("limite de 8 ans" if locale == "fr" else "under-8 limit") in card.summary
    assert all(line.strip() not in {"- Age", "- Âge"} for line in text(card).splitlines())


# ----------------------------------------------------------------------------- finding 16: names the knowledge verifies


def test_fosamax_by_its_brand_name_is_checked_as_alendronate() -> None:
    fosamax = draft(None, rid="fos", text="FOSAMAX 70 mg comprimé")
    card = the_card(order_cards([adult(), egfr(20)], fosamax), "bisphosphonate-renal")
    assert card.summary.startswith("Alendronate")


# ----------------------------------------------------------------------------- findings 17-19: French wording


def test_french_remove_label_has_no_elision_error() -> None:
    cards = order_cards([adult(), egfr(20)], draft("M05BA04", rid="alen"), locale="fr")
    labels = [s.label for s in cards[0].suggestions or ()]
    assert labels == ["Supprimer la prescription (brouillon)\u00a0: acide alendronique"]


def test_french_calcium_summary_uses_the_chart_term() -> None:
    resources = [adult(), condition("N18.6"), condition("Z99.2"), lab("17861-6", 10.0, "mg/dL"),
                 lab("2777-1", 7.5, "mg/dL"), lab("1751-7", 4.0, "g/dL")]
    card = the_card(order_cards(resources, draft("A12AA04", rid="caco3"), locale="fr"),
                    "calcium-vitamin-d-high-calcium")
    assert "malgré un produit phosphocalcique élevé" in card.summary
    assert "Ca × P élevés" not in text(card)


def test_french_colchicine_card_says_rcp_not_notice() -> None:
    resources = [adult(), egfr(90), medication("J01FA09", rid="clari", days_ago=2)]
    card = the_card(order_cards(resources, draft("M04AC01", rid="colch"), locale="fr"),
                    "colchicine-strong-inhibitor")
    assert "RCP / étiquetage américain et britannique" in text(card)
    assert "notice" not in text(card).lower()
    assert "colchicine-renal" not in checks(order_cards(resources, draft("M04AC01", rid="c2"), locale="fr"))
