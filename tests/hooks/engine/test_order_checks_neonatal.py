"""Issue 15, clinical review findings 1, 5, 7 and 15: the neonatal ceftriaxone check never silent where the
calcium cannot be seen (medications unreadable, parenteral nutrition by its words or as a NutritionOrder, a need
that is only expected), the route of the calcium, the whole neonatal period, the EU premature-infant rule.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.fhir_builders import medication, patient
from tests.hooks.engine.order_support import (
    LOCALES,
    actions,
    checks,
    draft,
    order_cards,
    stopped,
    text,
    the_card,
    with_route,
)

NEONATE_BIRTH = "2026-11-11"  # 10 days old on 2026-11-21 (tests.fhir_builders.NOW)
INFANT_BIRTH = "2026-10-12"  # 40 days old: within 29-133 days (41 weeks post-menstrual age)
OLDER_INFANT_BIRTH = "2026-06-01"  # 173 days old
CHECK = "neonatal-ceftriaxone-calcium"


def baby(*medications: dict[str, Any], birth: str = NEONATE_BIRTH) -> list[dict[str, Any]]:
    return [patient("nb", birth=birth, gender="female"), *medications]


def ceftriaxone_draft() -> dict[str, Any]:
    return draft("J01DD04", pid="nb", rid="cef")


def extension(card: Any) -> dict[str, Any]:
    assert card.extension is not None
    return dict(card.extension["calcinosis-cds"])


# ----------------------------------------------------------------------------- finding 1: never silent


@pytest.mark.parametrize("locale", LOCALES)
def test_neonate_with_unreadable_medications_is_warned_that_calcium_was_not_checked(locale: str) -> None:
    cards = order_cards(baby(), ceftriaxone_draft(), pid="nb", locale=locale, unavailable=("medications",))
    card = the_card(cards, CHECK)
    assert card.indicator == "warning"
    assert extension(card)["notRecorded"] == "medications"
    if locale == "fr":
        assert "traitements en cours illisibles" in card.summary
        assert "nutrition parentérale" in text(card)
    else:
        assert "current medications could not be read" in card.summary
        assert "parenteral nutrition" in text(card)


def test_adult_with_unreadable_medications_gets_no_neonatal_card() -> None:
    resources = [patient("p1", birth="1980-01-01")]
    cards = order_cards(resources, draft("J01DD04", rid="cef"), unavailable=("medications",))
    assert CHECK not in checks(cards)


@pytest.mark.parametrize(("locale", "words"), [
    ("fr", "Nutrition parentérale pédiatrique avec calcium"),
    ("en", "Total parenteral nutrition, neonatal"),
])
def test_current_parenteral_nutrition_named_in_text_is_the_iv_calcium(locale: str, words: str) -> None:
    resources = baby(medication(None, text=words, pid="nb", rid="pn", days_ago=1))
    card = the_card(order_cards(resources, ceftriaxone_draft(), pid="nb", locale=locale), CHECK)
    assert card.indicator == "critical"
    assert actions(card) == [("delete", "MedicationRequest/cef")]
    assert ("Nutrition parentérale" if locale == "fr" else "Parenteral nutrition") in text(card)


def nutrition_order(formula: str, rid: str = "pn-order") -> dict[str, Any]:
    return {"resourceType": "NutritionOrder", "id": rid, "status": "draft", "intent": "order",
            "patient": {"reference": "Patient/nb"}, "dateTime": "2026-11-21T08:00:00Z",
            "enteralFormula": {"baseFormulaProductName": formula,
                               "routeofAdministration": {"text": "intraveineuse"}}}


@pytest.mark.parametrize("locale", LOCALES)
def test_parenteral_nutrition_signed_as_a_nutrition_order_with_ceftriaxone_is_critical(locale: str) -> None:
    cards = order_cards(baby(), nutrition_order("Nutrition parentérale néonatale"), ceftriaxone_draft(), pid="nb",
                        locale=locale)
    card = the_card(cards, CHECK)
    assert card.indicator == "critical"
    assert extension(card)["order"] == "MedicationRequest/cef"
    assert ("nouveau-né" if locale == "fr" else "neonate") in card.summary


def test_nutrition_order_for_a_neonate_on_ceftriaxone_says_replace_the_ceftriaxone() -> None:
    resources = baby(medication("J01DD04", pid="nb", rid="cef-current", days_ago=1))
    card = the_card(order_cards(resources, nutrition_order("Parenteral nutrition"), pid="nb"), CHECK)
    assert card.indicator == "critical"
    assert actions(card) == []  # keep the nutrition; the ceftriaxone is what to replace (S28 a)
    assert extension(card)["order"] == "NutritionOrder/pn-order"


def test_an_oral_diet_nutrition_order_is_not_parenteral_nutrition() -> None:
    diet = {"resourceType": "NutritionOrder", "id": "diet", "status": "draft", "intent": "order",
            "patient": {"reference": "Patient/nb"}, "oralDiet": {"type": [{"text": "Breast milk"}]}}
    resources = baby(medication("J01DD04", pid="nb", rid="cef-current", days_ago=1))
    assert CHECK not in checks(order_cards(resources, diet, pid="nb"))


@pytest.mark.parametrize("locale", LOCALES)
def test_neonate_ceftriaxone_without_recorded_calcium_asks_whether_calcium_is_expected(locale: str) -> None:
    card = the_card(order_cards(baby(), ceftriaxone_draft(), pid="nb", locale=locale), CHECK)
    assert card.indicator == "warning"
    assert extension(card).get("withoutPartner") is True
    assert card.suggestions is None
    if locale == "fr":
        assert "vérifier qu'aucun calcium IV ni nutrition parentérale n'est prévu" in card.summary
        assert "doit en recevoir" in text(card)
    else:
        assert "check that no IV calcium or parenteral nutrition is needed or expected" in card.summary
        assert "expected to need" in text(card)


@pytest.mark.parametrize("locale", LOCALES)
def test_older_infant_ceftriaxone_without_calcium_is_silent(locale: str) -> None:
    assert order_cards(baby(birth=OLDER_INFANT_BIRTH), ceftriaxone_draft(), pid="nb", locale=locale) == []


# ----------------------------------------------------------------------------- finding 5: route


@pytest.mark.parametrize("locale", LOCALES)
def test_oral_calcium_in_a_neonate_is_no_iv_calcium(locale: str) -> None:
    oral = with_route(medication("A12AA03", pid="nb", rid="ca-oral", days_ago=1), "per os")
    card = the_card(order_cards(baby(oral), ceftriaxone_draft(), pid="nb", locale=locale), CHECK)
    assert card.indicator == "warning"  # no critical "on IV calcium"; the expected-need warning remains
    assert extension(card).get("withoutPartner") is True


def test_oral_calcium_ordered_for_a_neonate_on_ceftriaxone_is_not_the_critical_card() -> None:
    resources = baby(medication("J01DD04", pid="nb", rid="cef-current", days_ago=1))
    oral_draft = with_route(draft("A12AA03", pid="nb", rid="ca"), "oral")
    assert CHECK not in checks(order_cards(resources, oral_draft, pid="nb"))


@pytest.mark.parametrize("locale", LOCALES)
def test_calcium_with_no_route_recorded_stays_critical_and_says_so(locale: str) -> None:
    resources = baby(medication("A12AA03", pid="nb", rid="ca", days_ago=1))
    card = the_card(order_cards(resources, ceftriaxone_draft(), pid="nb", locale=locale), CHECK)
    assert card.indicator == "critical"
    assert ("Voie d'administration du calcium non renseignée" if locale == "fr"
            else "Route of the calcium not recorded") in text(card)


def test_calcium_recorded_as_iv_is_critical_without_a_route_remark() -> None:
    resources = baby(with_route(medication("A12AA03", pid="nb", rid="ca", days_ago=1), "IV"))
    card = the_card(order_cards(resources, ceftriaxone_draft(), pid="nb"), CHECK)
    assert card.indicator == "critical"
    assert "Route of the calcium" not in text(card)


# ----------------------------------------------------------------------------- finding 15: whole neonatal period


def test_iv_calcium_stopped_ten_days_ago_still_counts_in_the_neonatal_period() -> None:
    baby_birth = "2026-11-01"  # 20 days old
    given = stopped(with_route(medication("A12AA03", pid="nb", rid="ca"), "IV"), days_ago=10)
    card = the_card(order_cards(baby(given, birth=baby_birth), ceftriaxone_draft(), pid="nb"), CHECK)
    assert card.indicator == "critical"


# ----------------------------------------------------------------------------- finding 7: EU premature-infant rule


@pytest.mark.parametrize("locale", LOCALES)
def test_infant_of_40_days_on_ceftriaxone_names_the_missing_gestational_age(locale: str) -> None:
    card = the_card(order_cards(baby(birth=INFANT_BIRTH), ceftriaxone_draft(), pid="nb", locale=locale), CHECK)
    assert card.indicator == "warning"
    assert extension(card)["notRecorded"] == "gestational-age"
    assert ("âge gestationnel à la naissance non renseigné" if locale == "fr"
            else "gestational age at birth not recorded") in card.summary
    assert ("41 semaines" if locale == "fr" else "41 weeks") in text(card)
