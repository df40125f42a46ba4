"""Prefetch values: resource, searchset Bundle, null, OperationOutcome (CDS Hooks 2.0 prefetch)."""

from __future__ import annotations

from typing import Any

from fhir.resources.R4B.condition import Condition
from fhir.resources.R4B.medicationrequest import MedicationRequest
from fhir.resources.R4B.observation import Observation

from fhir_mappings import classify_prefetch_value
from tests.fhir_mappings.builders import condition, medication_request, observation, quantity

OUTCOME = {
    "resourceType": "OperationOutcome",
    "issue": [{"severity": "error", "code": "forbidden", "diagnostics": "access denied"}],
}


def bundle(*entries: Any, link: list[dict[str, str]] | None = None) -> dict[str, Any]:
    value: dict[str, Any] = {"resourceType": "Bundle", "type": "searchset", "entry": list(entries)}
    if link is not None:
        value["link"] = link
    return value


def test_null_prefetch() -> None:
    result = classify_prefetch_value(None)
    assert (result.kind, result.resources, result.issues) == ("null", (), ())


def test_single_resource_is_present() -> None:
    patient = {"resourceType": "Patient", "id": "p1"}
    result = classify_prefetch_value(patient)
    assert result.kind == "present"
    assert result.resources == (patient,)


def test_operation_outcome_alone() -> None:
    result = classify_prefetch_value(OUTCOME)
    assert result.kind == "operation-outcome"
    assert result.outcomes[0]["issue"][0]["diagnostics"] == "access denied"
    assert result.resources == ()


def test_searchset_bundle_unwraps_resources_and_keeps_the_next_link() -> None:
    first, second = observation("2777-1", rid="a"), observation("17861-6", rid="b")
    value = bundle(
        {"resource": first, "search": {"mode": "match"}},
        {"resource": second},
        link=[
            {"relation": "self", "url": "https://ehr/fhir/Observation?patient=1"},
            {"relation": "next", "url": "https://ehr/fhir/Observation?patient=1&page=2"},
        ],
    )
    result = classify_prefetch_value(value)
    assert result.kind == "present"
    assert [r["id"] for r in result.resources] == ["a", "b"]
    assert result.next_link == "https://ehr/fhir/Observation?patient=1&page=2"


def test_empty_bundle_is_present_with_no_resources() -> None:
    result = classify_prefetch_value(bundle())
    assert (result.kind, result.resources, result.next_link) == ("present", (), None)


def test_bundle_holding_only_an_operation_outcome() -> None:
    result = classify_prefetch_value(bundle({"resource": OUTCOME, "search": {"mode": "outcome"}}))
    assert result.kind == "operation-outcome"
    assert len(result.outcomes) == 1


def test_outcome_entry_beside_resources_keeps_the_resources() -> None:
    result = classify_prefetch_value(bundle({"resource": observation("2777-1")}, {"resource": OUTCOME}))
    assert result.kind == "present"
    assert len(result.resources) == 1
    assert len(result.outcomes) == 1


def test_malformed_entries_are_skipped_and_reported_never_raised() -> None:
    good = observation("2777-1", rid="good")
    result = classify_prefetch_value(
        bundle({"resource": good}, "not an entry", {"resource": ["x"]}, {"resource": {"id": "no-type"}}, {})
    )
    assert [r["id"] for r in result.resources] == ["good"]
    assert len(result.issues) == 3
    assert {issue.kind for issue in result.issues} == {"malformed-resource"}


def test_non_resource_prefetch_value_is_treated_as_absent_with_an_issue() -> None:
    for value in ("text", 42, ["a"], {"no": "resourceType"}):
        result = classify_prefetch_value(value)
        assert result.kind == "null"
        assert len(result.issues) == 1


def test_the_test_builders_make_valid_r4_resources() -> None:
    # The inputs of these tests are real FHIR: checked with the reference R4B models (same shapes as R4 here).
    Observation.model_validate(
        observation(
            "2000-8",
            value=2.4,
            unit="mmol/L",
            referenceRange=[{"low": quantity(2.2, "mmol/L"), "high": quantity(2.6, "mmol/L")}],
            interpretation=[{"coding": [{"code": "N"}]}],
        )
    )
    Condition.model_validate(
        condition("L94.2", system="http://hl7.org/fhir/sid/icd-10-cm", subject={"reference": "Patient/p1"})
    )
    MedicationRequest.model_validate(
        medication_request(codings=[{"system": "http://www.whocc.no/atc", "code": "M05BA08"}])
    )
