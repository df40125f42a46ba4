"""Conditions and skin findings: brief §2, §9.5, §9.8 and rule C5 (§5e)."""

from __future__ import annotations

import pytest

from tests.fhir_mappings.builders import CIM10, ICD10CM, SNOMED, condition, facts, observation


def test_condition_concept_status_onset_and_body_site() -> None:
    result = facts(
        conditions=[
            condition(
                "L94.2",
                system=ICD10CM,
                onsetDateTime="2025-09-01",
                bodySite=[{"coding": [{"system": SNOMED, "code": "22180002"}]}],
            )
        ]
    )
    (fact,) = result.conditions
    assert (fact.concept, fact.clinical_status, fact.is_active) == ("calcinosis_cutis", "active", True)
    assert fact.onset is not None
    assert fact.onset.year == 2025
    assert fact.body_sites == ("skin_buttock",)
    assert result.skin.calcinosis[0].body_sites == ("skin_buttock",)
    assert result.skin.lesion_sites == frozenset({"skin_buttock"})


@pytest.mark.parametrize(
    ("clinical", "verification"),
    [
        ("active", "refuted"),
        ("active", "entered-in-error"),
        ("resolved", None),
        ("inactive", None),
        ("remission", None),
    ],
)
def test_refuted_erroneous_and_past_conditions_are_not_active(clinical: str, verification: str | None) -> None:
    result = facts(conditions=[condition("55464009", clinical=clinical, verification=verification)])
    assert [c.concept for c in result.conditions] == ["sle"]
    assert result.active_conditions("sle") == ()


def test_refuted_calcinosis_gives_no_skin_finding() -> None:
    result = facts(conditions=[condition("L94.2", system=ICD10CM, verification="refuted")])
    assert result.skin.calcinosis == ()


def test_both_codings_of_one_condition_give_one_fact_per_concept() -> None:
    both = condition("46177005")
    both["code"]["coding"].append({"system": ICD10CM, "code": "N18.6"})
    result = facts(conditions=[both])
    assert [c.concept for c in result.conditions] == ["esrd"]


def test_calcinosis_from_snomed_17141001_is_read_on_input() -> None:
    result = facts(conditions=[condition("17141001")])
    assert result.skin.calcinosis[0].provenance.code == "17141001"
    assert result.skin.calcinosis[0].provenance.unverified_code is False


@pytest.mark.parametrize(
    ("system", "code"),
    [(SNOMED, "237900002"), (SNOMED, "717043006"), ("https://www.orpha.net", "ORPHA:280062")],
)
def test_coded_calciphylaxis(system: str, code: str) -> None:
    assert len(facts(conditions=[condition(code, system=system)]).skin.calciphylaxis) == 1


def test_e83_59_is_calciphylaxis_only_with_an_ulcer_or_necrosis_code() -> None:
    alone = facts(conditions=[condition("E83.59", system=ICD10CM)])
    assert alone.skin.calciphylaxis == ()
    with_ulcer = facts(conditions=[condition("E83.59", system=ICD10CM, rid="a"), condition("46742003", rid="b")])
    assert [f.provenance.code for f in with_ulcer.skin.calciphylaxis] == ["E83.59"]
    resolved_ulcer = facts(
        conditions=[condition("E83.59", system=ICD10CM, rid="a"), condition("46742003", rid="b", clinical="resolved")]
    )
    assert resolved_ulcer.skin.calciphylaxis == ()


def test_french_e83_5_with_gangrene_r02_is_calciphylaxis() -> None:
    result = facts(conditions=[condition("E835", system=CIM10, rid="a"), condition("R02", system=CIM10, rid="b")])
    assert [f.provenance.code for f in result.skin.calciphylaxis] == ["E83.5"]
    assert len(result.skin.necrosis) == 1


def test_unspecified_calcium_disorder_e83_50_never_counts_as_calciphylaxis() -> None:
    result = facts(conditions=[condition("E83.50", system=ICD10CM, rid="a"), condition("46742003", rid="b")])
    assert result.skin.calciphylaxis == ()


def test_livedoid_vasculitis_is_not_livedo() -> None:
    result = facts(conditions=[condition("L95.0", system=ICD10CM, rid="a")])
    assert result.skin.purpura_livedo == ()
    result = facts(conditions=[condition("238772004", rid="b")])
    assert len(result.skin.purpura_livedo) == 1


def test_fr_core_r69_condition_is_read_from_its_text() -> None:
    r69 = condition(
        "R69",
        system=CIM10,
        text="Calcinose cutanée des fesses et des cuisses, nodules douloureux",
        onsetDateTime="2025-10-01",
    )
    result = facts(conditions=[r69])
    assert result.conditions == ()
    assert result.skin.calcinosis[0].matched_text is not None
    assert set(result.skin.calcinosis[0].body_sites) == {"skin_buttock", "skin_thigh"}
    assert len(result.skin.nodule) == 1
    assert len(result.skin.pain) == 1


def test_uncoded_condition_text_and_notes() -> None:
    result = facts(
        conditions=[condition(None, text="Calciphylaxis", note=[{"text": "Painful retiform purpura on the abdomen"}])]
    )
    assert len(result.skin.calciphylaxis) == 1
    assert len(result.skin.purpura_livedo) == 1
    assert len(result.skin.pain) == 1
    assert "skin_abdomen" in result.skin.purpura_livedo[0].body_sites


def test_text_of_a_coded_lesion_adds_pain_and_nodules() -> None:
    coded = condition("L94.2", system=CIM10, text="Calcinose sous-cutanée diffuse : nodules fermes douloureux")
    result = facts(conditions=[coded])
    assert len(result.skin.calcinosis) == 1
    assert result.skin.calcinosis[0].matched_text is None  # the coded finding wins over the text one
    assert len(result.skin.nodule) == 1
    assert len(result.skin.pain) == 1


def test_notes_of_a_coded_lesion_add_findings_without_duplicating_the_coded_one() -> None:
    result = facts(conditions=[condition("L94.2", system=ICD10CM, note=[{"text": "calcinosis, tender"}])])
    assert len(result.skin.calcinosis) == 1
    assert len(result.skin.pain) == 1  # "tender" on a coded lesion


def test_observation_with_coded_necrotic_eschar_value() -> None:
    obs = observation(
        "72300-6",
        rid="wound",
        valueCodeableConcept={"coding": [{"system": SNOMED, "code": "421306004", "display": "Necrotic eschar"}]},
    )
    result = facts(observations=[obs])
    assert [f.provenance.reference for f in result.skin.necrosis] == ["Observation/wound"]


def test_observation_text_biopsy_showing_calciphylaxis() -> None:
    obs = observation("22637-3", rid="path", valueString="Biopsie cutanée : aspect de calciphylaxie.")
    result = facts(observations=[obs])
    assert len(result.skin.biopsy_calciphylaxis) == 1
    negative = observation("22637-3", rid="path2", valueString="Skin biopsy negative for calciphylaxis.")
    assert facts(observations=[negative]).skin.biopsy_calciphylaxis == ()


def test_joint_destruction_from_imaging_text_and_historical_injury_ignored() -> None:
    obs = observation(
        "18748-4",
        valueString="Calcinose pelvienne massive avec lyse de la tête fémorale. Ancien traumatisme local.",
    )
    result = facts(observations=[obs])
    assert len(result.skin.joint_destruction) == 1
    assert len(result.skin.calcinosis) == 1
    assert result.skin.local_injury == ()


def test_injection_site_injury_from_text() -> None:
    result = facts(conditions=[condition(None, text="Nodules aux sites d'injection (fesses)")])
    assert len(result.skin.local_injury) == 1
    assert result.skin.local_injury[0].body_sites == ("skin_buttock",)
