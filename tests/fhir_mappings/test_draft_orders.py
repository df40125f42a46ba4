"""Issue 15: the draftOrders of order-select / order-sign, read strictly for the patient and leniently for content."""

from __future__ import annotations

from typing import Any

import pytest

from fhir_mappings.draft_orders import DraftOrderError, read_draft_orders, selected


def bundle(*resources: dict[str, Any]) -> dict[str, Any]:
    return {"resourceType": "Bundle", "entry": [{"resource": r} for r in resources]}


def request(rid: str, subject: str | None = "Patient/p1", **extra: Any) -> dict[str, Any]:
    resource: dict[str, Any] = {"resourceType": "MedicationRequest", "id": rid, "status": "draft", "intent": "order",
                                "medicationCodeableConcept": {"coding": [{"system": "http://www.whocc.no/atc",
                                                                          "code": "J01DD04"}]}}
    if subject is not None:
        resource["subject"] = {"reference": subject}
    resource.update(extra)
    return resource


def test_an_absolute_reference_to_the_same_patient_is_accepted() -> None:
    (order,) = read_draft_orders(bundle(request("a", "https://ehr.example/fhir/Patient/p1")), "p1")
    assert [m.concept for m in order.medications] == ["ceftriaxone"]
    assert order.reference == "MedicationRequest/a"


def test_a_nutrition_order_for_another_patient_is_refused_where_it_says_so() -> None:
    diet = {"resourceType": "NutritionOrder", "id": "diet", "status": "draft", "patient": {"reference": "Patient/p2"}}
    with pytest.raises(DraftOrderError) as refused:
        read_draft_orders(bundle(request("a"), diet), "p1")
    assert refused.value.expression == "context.draftOrders.entry[1].resource.patient"


@pytest.mark.parametrize("entries", [[{"fullUrl": "x"}], ["not an entry"], [{"resource": {"id": "no-type"}}]])
def test_entries_that_are_not_resources_are_refused(entries: list[Any]) -> None:
    with pytest.raises(DraftOrderError):
        read_draft_orders({"resourceType": "Bundle", "entry": entries}, "p1")


def test_a_medication_reference_into_the_bundle_is_resolved() -> None:
    medication = {"resourceType": "Medication", "id": "m1",
                  "code": {"coding": [{"system": "http://www.whocc.no/atc", "code": "M04AC01"}]}}
    ordered = request("a", medicationReference={"reference": "Medication/m1"})
    del ordered["medicationCodeableConcept"]
    (order,) = read_draft_orders(bundle(medication, ordered), "p1")
    assert [m.concept for m in order.medications] == ["colchicine"]


def test_a_draft_entered_in_error_is_not_an_order_and_an_unreadable_one_is_not_guessed() -> None:
    wrong, broken = read_draft_orders(bundle(request("a", status="entered-in-error"),
                                             request("b", medicationCodeableConcept="ceftriaxone")), "p1")
    assert not wrong.is_order
    assert broken.medications == ()


def test_selections_by_reference_or_full_url() -> None:
    orders = read_draft_orders({"resourceType": "Bundle", "entry": [
        {"fullUrl": "urn:uuid:5b3c", "resource": request("a")}, {"resource": request("b")}]}, "p1")
    assert [o.resource_id for o in selected(orders, ["urn:uuid:5b3c", "MedicationRequest/b"])] == ["a", "b"]
    with pytest.raises(DraftOrderError):
        selected(orders, ["MedicationRequest/c"])


def test_a_nutrition_order_naming_parenteral_nutrition_is_read_with_its_route() -> None:
    order = {"resourceType": "NutritionOrder", "id": "pn", "status": "draft", "intent": "order",
             "patient": {"reference": "Patient/p1"},
             "enteralFormula": {"baseFormulaType": {"text": "Nutrition parentérale"},
                                "additiveProductName": "gluconate de calcium",
                                "routeofAdministration": {"coding": [{"display": "Intravenous"}]}}}
    (draft,) = read_draft_orders(bundle(order), "p1")
    assert draft.reference == "NutritionOrder/pn"
    assert {m.concept for m in draft.medications} == {"parenteral_nutrition", "calcium_gluconate"}
    assert {m.route for m in draft.medications} == {"Intravenous"}
    assert {m.provenance.resource_type for m in draft.medications} == {"NutritionOrder"}


@pytest.mark.parametrize("formula", [["not", "a", "mapping"], "text", None, {"baseFormulaType": 3}])
def test_a_nutrition_order_of_odd_shape_is_read_without_drugs(formula: Any) -> None:
    order = {"resourceType": "NutritionOrder", "id": "odd", "status": "draft", "patient": {"reference": "Patient/p1"},
             "enteralFormula": formula, "supplement": 7, "oralDiet": [1]}
    (draft,) = read_draft_orders(bundle(order), "p1")
    assert draft.medications == ()
