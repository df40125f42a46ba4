"""Code tables (fhir_mappings/tables/*.csv) and lookups: brief §1, §2, §3, §9.5, §9.7."""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections import Counter
from importlib import resources

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from fhir_mappings import terminology as t
from fhir_mappings.terminology import NameIndex, _tables, fold_text

VALID_STATUS = {"VERIFIED", "VERIFIED-secondary", "UNVERIFIED"}

# Concept ids the clinical engine references that have at least one code in the brief.
CONCEPTS_WITH_CODES = {
    "lab": """calcium_total calcium_corrected calcium_ionized albumin phosphate creatinine egfr crcl_cg urea_nitrogen
        urea pth_intact vitd_25oh vitd_1_25 alp magnesium bicarbonate ana dsdna sm centromere scl70 rnapol3 jo1 nxp2
        mda5 tif1g ck aldolase c3 c4 ace hba1c bmi crp""",
    "condition": """calcinosis_cutis calciphylaxis calcium_metabolism_disorder hypercalcemia hypocalcemia
        phosphorus_disorder hyperphosphatemia pxe limited_ssc systemic_sclerosis sclerodactyly jdm adult_dm sle
        cutaneous_lupus mctd morphea ckd ckd_3 ckd_3a ckd_3b ckd_4 ckd_5 esrd dialysis kidney_transplant primary_hpt
        secondary_hpt tertiary_hpt hpt_unspecified hypervitaminosis_d vitamin_d_deficiency sarcoidosis paget diabetes
        obesity tuberculosis illicit_drug_use extravasation heel_stick skin_ulcer necrosis purpura livedo
        livedoid_vasculitis pain_of_skin induration skin_nodule anticoagulant_long_term anticoagulant_adverse_effect
        renal_osteodystrophy metabolic_alkalosis tumoral_calcinosis calcification_muscle""",
    "medication": """warfarin heparin enoxaparin nadroparin dalteparin calcium_gluconate calcium_carbonate
        cholecalciferol ergocalciferol calcitriol alfacalcidol paricalcitol sevelamer lanthanum cinacalcet alendronate
        etidronate pamidronate zoledronic_acid risedronate ibandronate diltiazem colchicine minocycline ceftriaxone ivig
        probenecid aluminium_hydroxide sodium_thiosulfate interferon_beta_1a aminosalicylic_acid methotrexate rituximab
        heroin cyclophosphamide""",
    "bodysite": """skin_buttock skin_thigh skin_knee skin_elbow skin_shoulder skin_forearm skin_hand skin_finger
        skin_foot skin_heel skin_abdomen skin_breast skin_scrotum skin_penis skin_labium skin_face skin_jaw skin_hip
        skin_head skin_wrist skin_flank""",
}


def _csv(name: str) -> list[dict[str, str]]:
    text = resources.files("fhir_mappings").joinpath("tables", name).read_text(encoding="utf-8")
    return list(csv.DictReader(io.StringIO(text)))


def test_every_row_has_a_source_and_a_known_status() -> None:
    rows = t.concept_rows()
    assert len(rows) > 500
    for row in rows:
        assert row.source.strip(), row
        assert row.status in VALID_STATUS, row


def test_no_code_maps_to_two_concepts() -> None:
    keys = Counter((row.system, row.code) for row in t.concept_rows())
    assert [key for key, count in keys.items() if count > 1] == []


@pytest.mark.parametrize(("kind", "ids"), CONCEPTS_WITH_CODES.items())
def test_every_concept_of_the_brief_has_a_row(kind: str, ids: str) -> None:
    coded = {row.concept_id for row in t.concept_rows() if row.kind == kind}
    assert set(ids.split()) - coded == set()


def test_rows_agree_with_the_label_table() -> None:
    for row in t.concept_rows():
        assert t.concept_kind(row.concept_id) == row.kind
        if row.kind != "condition":
            assert t.concept_groups(row.concept_id) == row.groups, row
    # Condition rows may carry a row-level marker: "ESRD on dialysis" says dialysis by itself.
    assert t.lookup(t.SNOMED, "236435004").groups == ("dialysis",)  # type: ignore[union-attr]
    assert t.lookup(t.SNOMED, "46177005").groups == ()  # type: ignore[union-attr]


def test_name_only_drugs_have_names_and_classes() -> None:
    names = {(r["concept_id"], r["locale"], r["name"]) for r in _csv("medication_names.csv")}
    assert ("calcium_chloride", "fr", "chlorure de calcium") in names
    assert ("calcifediol", "fr", "calcifédiol") in names
    assert t.concept_groups("calcium_chloride") == ("calcium_salt", "iv_calcium")
    assert t.concept_groups("doxercalciferol") == ("vitamin_d", "active_vitamin_d")
    assert all(r["source"] for r in _csv("medication_names.csv"))


def test_observation_loinc_codes_cover_the_core_chemistry_and_no_unverified_code() -> None:
    codes = t.observation_loinc_codes()
    assert {"17861-6", "2000-8", "2777-1", "14879-1", "2731-8", "98979-8", "35591-7"} <= set(codes)
    assert len(codes) == len(set(codes))
    assert "49765-1" not in codes  # Synthea's "Calcium in Blood" is not in the brief
    assert all(t.is_emittable(t.LOINC, code) for code in codes)


def test_loinc_codes_for_an_analyte_in_table_order() -> None:
    assert t.loinc_codes_for("calcium_total") == ("17861-6", "2000-8")
    assert t.loinc_codes_for("phosphate") == ("2777-1", "14879-1")
    assert t.loinc_codes_for("egfr")[0] == "98979-8"
    assert t.loinc_codes_for("not-an-analyte") == ()


def test_unverified_rows_are_never_emittable_and_placeholder_codes_are_not_rows() -> None:
    assert not any(row.code == "UNVERIFIED" for row in t.concept_rows())
    assert not t.is_emittable(t.SNOMED, "UNVERIFIED")
    assert t.is_emittable(t.SNOMED, "237900002")
    # VERIFIED-secondary is emittable (accept on input; re-check before hard-coding, brief "How to read").
    assert t.is_emittable(t.SNOMED, "17141001")


def test_loinc_2028_9_is_bicarbonate_only_under_loinc() -> None:
    assert t.lookup(t.LOINC, "2028-9").concept_id == "bicarbonate"  # type: ignore[union-attr]
    assert t.lookup("urn:oid:2.16.840.1.113883.6.238", "2028-9") is None  # CDC race code system


@pytest.mark.parametrize(
    ("system", "code", "concept", "normalised"),
    [
        (t.ICD10_CM, "I96", "necrosis", "I96"),
        (t.ICD10_CM, "l942", "calcinosis_cutis", "L94.2"),
        (t.ICD10_CM, "N1832", "ckd_3b", "N18.32"),
        (t.ICD10_CM, "T801XXA", "extravasation", "T80.1XXA"),
        ("http://hl7.org/fhir/sid/icd-10", "E83.5", "calcium_metabolism_disorder", "E83.5"),
        ("https://smt.esante.gouv.fr/terminologie-cim-10", "N185", "ckd_5", "N18.5"),
        ("https://smt.esante.gouv.fr/terminologie-cim-10/", "L94.2", "calcinosis_cutis", "L94.2"),
        ("https://mos.esante.gouv.fr/NOS/TRE_R310-CIM10/FHIR/TRE-R310-CIM10", "Z99.2", "dialysis", "Z99.2"),
        ("https://mos.esante.gouv.fr/NOS/TRE_R311-CIM10Atih/FHIR/TRE-R311-CIM10Atih", "M34.1", "limited_ssc", "M34.1"),
        ("http://hl7.org/fhir/sid/icd-10-fr", "L98.4", "skin_ulcer", "L98.4"),
        # ATIH national extensions fall back to their WHO parent (§9.5).
        (t.ICD10, "E83.58", "calcium_metabolism_disorder", "E83.5"),
        (t.ICD10, "E11.90", "diabetes", "E11.9"),
        (t.ICD10, "L97.8", "skin_ulcer", "L97"),
        (t.ORPHANET, "ORPHA:280062", "calciphylaxis", "280062"),
        (t.ORPHANET, "280065", "calciphylaxis", "280065"),
        ("https://smt.esante.gouv.fr/terminologie-atc", "m05ba08", "zoledronic_acid", "M05BA08"),
    ],
)
def test_lookup_normalises_systems_and_codes(system: str, code: str, concept: str, normalised: str) -> None:
    match = t.lookup(system, code)
    assert match is not None
    assert (match.concept_id, match.code) == (concept, normalised)


def test_parent_fallback_is_only_for_who_icd10() -> None:
    # An ICD-10-CM child that the table does not list is not silently widened to another code.
    assert t.lookup(t.ICD10_CM, "E83.58") is None
    assert t.lookup(t.ICD10_CM, "M32.11") is None


def test_french_semantics_of_e83_5_and_n18_5() -> None:
    # In CIM-10, N18.5 is the stage 5 that carries ESRD (§9.5) and E83.5 is the calcium-metabolism code
    # that carries calciphylaxis together with skin codes; both differ from their ICD-10-CM namesakes.
    assert t.lookup(t.ICD10, "N18.5").concept_id == "ckd_5"  # type: ignore[union-attr]
    assert t.lookup(t.ICD10_CM, "N18.6").concept_id == "esrd"  # type: ignore[union-attr]
    assert t.lookup(t.ICD10, "N18.6") is None
    assert t.lookup(t.ICD10, "E83.5").concept_id == "calcium_metabolism_disorder"  # type: ignore[union-attr]
    assert t.lookup(t.ICD10_CM, "E83.5") is None


def test_livedoid_vasculitis_is_not_livedo() -> None:
    assert t.lookup(t.ICD10_CM, "L95.0").concept_id == "livedoid_vasculitis"  # type: ignore[union-attr]
    assert t.lookup(t.SNOMED, "238772004").concept_id == "livedo"  # type: ignore[union-attr]


def test_cip_and_ucd_codes_are_accepted_but_never_mapped() -> None:
    for system in (
        "https://smt.esante.gouv.fr/terminologie-bdpm",
        "https://smt.esante.gouv.fr/terminologie-cip_ucd",
        "http://data.esante.gouv.fr/ansm/medicament/UCD",
    ):
        assert t.is_unmapped_drug_system(system)
        assert t.lookup(system, "3400892360690") is None


def test_body_sites_carry_their_rule_groups() -> None:
    assert t.lookup(t.SNOMED, "22180002").groups == ("fatty_central",)  # type: ignore[union-attr]
    assert t.lookup(t.SNOMED, "84607009").concept_id == "skin_heel"  # type: ignore[union-attr]
    assert t.concept_groups("skin_shoulder") == ("acral_periarticular",)
    assert t.concept_groups("skin_scrotum") == ("genital",)


def test_concept_display_in_english_and_french() -> None:
    assert t.concept_display("calcium_total") == "Total calcium"
    assert t.concept_display("calcium_total", "fr") == "Calcium total"
    assert t.concept_display("pth_intact", "fr") == "Parathormone intacte"
    assert t.concept_display("calciphylaxis", "fr") == "Calciphylaxie"
    for concept_id in t.concept_ids():
        assert t.concept_display(concept_id, "en")
        assert t.concept_display(concept_id, "fr")


def test_medication_name_matching_is_accent_and_case_insensitive() -> None:
    assert t.find_medication_names(t.fold_text("ZOMETA 4 mg/100 mL")) == ("zoledronic_acid",)
    assert t.find_medication_names(t.fold_text("Héparine sodique")) == ("heparin",)
    assert t.find_medication_names(t.fold_text("HEPARINE")) == ("heparin",)
    # Whole words only: "calcitriol" is not found inside another word.
    assert t.find_medication_names(t.fold_text("precalcitriolx")) == ()
    assert t.find_medication_names(t.fold_text("warfarine"), ("en",)) == ()


def _every_name_scan(folded: str, index: NameIndex, locales: tuple[str, ...]) -> tuple[str, ...]:
    """The definition the index must keep: every name of the table, in row order, as whole words."""
    rows = sorted(entry for entries in index.by_first_word.values() for entry in entries)
    found = dict.fromkeys(c for _, name, c, locale in rows if locale in locales and f" {name} " in f" {folded} ")
    return tuple(found)


_TABLE_WORDS = sorted({word for index in (_tables().medication_names, _tables().bodysite_names)
                       for entries in index.by_first_word.values() for _, name, _, _ in entries
                       for word in name.split()})


@settings(max_examples=300, deadline=None)
@given(words=st.lists(st.one_of(st.sampled_from(_TABLE_WORDS), st.sampled_from(["de", "du", "left", "x", "10"])),
                      max_size=12),
       locales=st.sampled_from([("en", "fr"), ("en",), ("fr",)]))
def test_the_first_word_index_finds_what_a_scan_of_every_name_finds(words: list[str], locales: tuple[str, ...]) -> None:
    folded = fold_text(" ".join(words))
    for index in (_tables().medication_names, _tables().bodysite_names):
        assert index.find(folded, locales) == _every_name_scan(folded, index, locales)


@pytest.mark.parametrize("text", ["Héparine SC", "HEPARINE sc", "Warfarine 5 mg", "œdème", "Ca++ / P", "  x  "])
def test_folding_is_the_same_for_ascii_and_accented_text(text: str) -> None:
    decomposed = unicodedata.normalize("NFKD", text)
    slow = re.sub(r"[^0-9a-z]+", " ", "".join(c for c in decomposed if not unicodedata.combining(c)).casefold())
    assert fold_text(text) == slow.strip()


def test_a_name_without_letters_is_refused_at_load() -> None:
    with pytest.raises(ValueError, match="no letter or digit"):
        NameIndex.of("medication_names.csv", [{"name": " - ", "concept_id": "x", "locale": "en"}])
