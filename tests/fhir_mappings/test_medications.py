"""MedicationRequests: matching order ATC → RxNorm → names (brief §3b, §9.7, C7), contained Medication (§9.8)."""

from __future__ import annotations

from datetime import UTC, datetime

from tests.fhir_mappings.builders import NOW, facts, medication_request

ATC_WHO = "http://www.whocc.no/atc"
ATC_FR = "https://smt.esante.gouv.fr/terminologie-atc"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
UCD = "https://smt.esante.gouv.fr/terminologie-cip_ucd"


def test_atc_code_under_the_french_uri() -> None:
    result = facts(medications=[medication_request(codings=[{"system": ATC_FR, "code": "M05BA08"}])])
    (fact,) = result.medications
    assert (fact.concept, fact.matched_by, fact.groups) == ("zoledronic_acid", "atc", ("bisphosphonate",))


def test_atc_wins_over_rxnorm_and_names() -> None:
    request = medication_request(
        codings=[{"system": RXNORM, "code": "855332"}, {"system": ATC_WHO, "code": "B01AA03"}],
        text="Coumadin 5 mg",
    )
    (fact,) = facts(medications=[request]).medications
    assert (fact.concept, fact.matched_by, fact.provenance.code) == ("warfarin", "atc", "B01AA03")


def test_rxnorm_clinical_drug_code() -> None:
    request = medication_request(codings=[{"system": RXNORM, "code": "855332", "display": "warfarin sodium 5 MG"}])
    result = facts(medications=[request])
    assert result.medications_within(30, "anticoagulant")[0].matched_by == "rxnorm"


def test_rxnorm_lmwh_syringe_belongs_to_the_heparin_family() -> None:
    (fact,) = facts(medications=[medication_request(codings=[{"system": RXNORM, "code": "854235"}])]).medications
    assert fact.concept == "enoxaparin"
    assert set(fact.groups) == {"heparin_family", "lmwh"}


def test_french_name_with_accents_and_a_ucd_code_that_is_never_decoded() -> None:
    request = medication_request(
        codings=[{"system": UCD, "code": "3400892360690", "display": "CHOLÉCALCIFÉROL 100 000 UI sol buv"}]
    )
    (fact,) = facts(medications=[request]).medications
    assert (fact.concept, fact.matched_by, fact.groups) == ("cholecalciferol", "name", ("vitamin_d",))
    assert fact.provenance.code is None


def test_name_only_drugs_from_the_brief() -> None:
    result = facts(
        medications=[
            medication_request(rid="a", text="Chlorure de calcium 10 % IV"),
            medication_request(rid="b", text="Calcifédiol"),
            medication_request(rid="c", text="acétate de calcium 500 mg"),
        ]
    )
    assert {(m.concept, m.groups) for m in result.medications} == {
        ("calcium_chloride", ("calcium_salt", "iv_calcium")),
        ("calcifediol", ("vitamin_d", "active_vitamin_d")),
        ("calcium_acetate", ("calcium_salt", "calcium_based_binder")),
    }


def test_contained_medication_is_resolved_before_matching() -> None:
    request = medication_request(
        medicationReference={"reference": "#med1"},
        contained=[
            {
                "resourceType": "Medication",
                "id": "med1",
                "code": {"coding": [{"system": UCD, "code": "9999999"}], "text": "FRAXIPARINE 2850 UI"},
            }
        ],
    )
    result = facts(medications=[request])
    assert [(m.concept, m.matched_by) for m in result.medications] == [("nadroparin", "name")]
    assert result.issues == ()


def test_reference_that_is_not_contained_is_reported_and_matched_on_its_display() -> None:
    request = medication_request(medicationReference={"reference": "Medication/42", "display": "Sevelamer"})
    result = facts(medications=[request])
    assert [m.concept for m in result.medications] == ["sevelamer"]
    assert [i.kind for i in result.issues] == ["unresolved-medication"]


def test_unknown_bisphosphonate_falls_back_to_its_atc_class() -> None:
    (fact,) = facts(medications=[medication_request(codings=[{"system": ATC_WHO, "code": "M05BA02"}])]).medications
    assert (fact.concept, fact.groups) == ("bisphosphonate_unspecified", ("bisphosphonate",))


def test_status_dates_route_and_period_are_kept() -> None:
    request = medication_request(
        status="stopped",
        codings=[{"system": ATC_WHO, "code": "C08DB01"}],
        authoredOn="2025-06-01",
        dosageInstruction=[
            {
                "route": {"text": "oral"},
                "timing": {"repeat": {"boundsPeriod": {"start": "2025-06-01", "end": "2026-01-15"}}},
            }
        ],
    )
    (fact,) = facts(medications=[request]).medications
    assert (fact.status, fact.route) == ("stopped", "oral")
    assert fact.groups == ("ccb", "moderate_cyp3a4_inhibitor", "non_dhp_ccb")
    assert fact.period_end == datetime(2026, 1, 15, tzinfo=UTC)
    assert fact.is_within(NOW, 60) is True
    assert fact.is_within(NOW, 30) is False


def test_entered_in_error_request_is_kept_but_never_counts() -> None:
    request = medication_request(status="entered-in-error", codings=[{"system": ATC_WHO, "code": "B01AA03"}])
    result = facts(medications=[request])
    assert [m.status for m in result.medications] == ["entered-in-error"]
    assert result.medications_within(365, "warfarin") == ()


def test_unrelated_drug_is_not_a_fact() -> None:
    request = medication_request(codings=[{"system": RXNORM, "code": "197361", "display": "amlodipine 5 MG"}])
    assert facts(medications=[request]).medications == ()


def test_pas_is_not_read_as_the_french_word() -> None:
    # "PAS" (para-aminosalicylic acid) is deliberately not a synonym: "pas" means "not" in French.
    assert facts(medications=[medication_request(text="pas de traitement")]).medications == ()
