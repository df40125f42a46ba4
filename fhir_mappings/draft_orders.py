"""The draft orders of an ``order-select`` or ``order-sign`` call, as the drugs they order (issue 15).

Hook library 1.0.1: ``context.draftOrders`` is a Bundle of request resources not yet signed (MedicationRequest,
ServiceRequest, NutritionOrder, DeviceRequest...); ``order-select`` adds ``context.selections``, ``Type/id``
references into that Bundle. Only orders for drugs are read here: a MedicationRequest, a ServiceRequest
whose ``code`` names a drug (an IV calcium infusion ordered as a service), and a NutritionOrder whose formula or
diet names parenteral nutrition or a calcium additive (read by its words). Both go through the one medication
recogniser (:func:`fhir_mappings.medications.read_medication_request`: ATC, RxNorm, then EN/FR names), so a
draft and a current order are recognised alike.

The context is checked strictly because cards about the wrong order or patient would be dangerous: an order
whose subject is another patient, or a selection that names nothing in the Bundle, is a :class:`DraftOrderError`
(the service answers 400). Drafts are otherwise taken as vendors send them (an STU3-style ``doseQuantity`` is
no reason to refuse). No web imports: the error carries the FHIRPath-like location for the OperationOutcome.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from pydantic import ValidationError

from fhir_mappings.facts import DataIssue, MedicationFact
from fhir_mappings.medications import read_medication_request
from fhir_mappings.models import MEDICATION_REQUEST, MedicationRequest

__all__ = ["DraftOrder", "DraftOrderError", "read_draft_orders", "selected"]

# The resource that names the patient: ``subject`` on request resources, ``patient`` on NutritionOrder.
_SUBJECT_FIELDS: Final = ("subject", "patient")
# Never to be signed: these are not orders being written (order-sign may re-send revised orders: any other status).
_NOT_ORDERS: Final = frozenset({"entered-in-error", "revoked", "cancelled"})
# The elements that name the drug: when one of them is invalid, or missing, the drug is not identified.
_DRUG_ELEMENTS: Final = ("medicationCodeableConcept", "medicationReference", "contained")
# Kept beside them when the rest of a draft is invalid (each only if valid itself).
_ORDER_ELEMENTS: Final = ("resourceType", "id", "status", "intent", "authoredOn")


class DraftOrderError(ValueError):
    """The draft orders cannot be read safely; ``expression`` says where (``context.draftOrders.entry[2]``)."""

    def __init__(self, message: str, expression: str) -> None:
        super().__init__(message)
        self.expression = expression


@dataclass(frozen=True, slots=True)
class DraftOrder:
    """One order of the Bundle: its reference, what it orders, and the drugs recognised in it (maybe none)."""

    resource_type: str
    resource_id: str | None
    # How the Bundle names the entry (``fullUrl``), for selections that use it.
    full_url: str | None
    status: str | None
    medications: tuple[MedicationFact, ...] = ()
    issues: tuple[DataIssue, ...] = ()
    # 1-based, among the orders of the Bundle (Patient and Medication entries not counted): how a card names a
    # draft it could not read (the sender's text never reaches a card).
    position: int = 0
    # Why the drug of this drug order could not be identified ("malformed-resource": invalid or missing where
    # the drug is named; "unresolved-medication": a Medication not sent, and no name to read it by); None when
    # the drug was read, recognised or not.
    not_identified: str | None = None

    @property
    def reference(self) -> str | None:
        """The relative reference a ``delete`` action names (CDS Hooks 2.0 Action.resourceId)."""
        return f"{self.resource_type}/{self.resource_id}" if self.resource_id else None

    @property
    def is_order(self) -> bool:
        return self.status not in _NOT_ORDERS

    @property
    def shown_as(self) -> str:
        """How a card's extension names the draft: its reference, else its fullUrl, else its type."""
        return self.reference or self.full_url or self.resource_type


def _patient_of(resource: Mapping[str, Any]) -> str | None:
    for name in _SUBJECT_FIELDS:
        subject = resource.get(name)
        if isinstance(subject, Mapping):
            reference = subject.get("reference")
            return reference if isinstance(reference, str) else None
    return None


def _is_this_patient(reference: str, patient_id: str, aliases: frozenset[str]) -> bool:
    """Relative, absolute (``https://ehr/fhir/Patient/1``) or a fullUrl alias of the patient."""
    return reference in aliases or reference == f"Patient/{patient_id}" or reference.endswith(f"/Patient/{patient_id}")


def _as_medication_request(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A ServiceRequest for a drug read like a MedicationRequest: its ``code`` is the medication."""
    return {
        "resourceType": "MedicationRequest",
        **{k: resource[k] for k in ("id", "status", "intent", "authoredOn") if k in resource},
        "medicationCodeableConcept": resource.get("code") or {},
    }


def _concept_texts(value: Any) -> list[str]:
    """The text and displays of a CodeableConcept (or a list of them), and plain strings (product names)."""
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [t for item in value for t in _concept_texts(item)]
    if not isinstance(value, Mapping):
        return []
    texts = [value["text"]] if isinstance(value.get("text"), str) else []
    codings = value.get("coding")
    for coding in codings if isinstance(codings, list) else []:
        if isinstance(coding, Mapping) and isinstance(coding.get("display"), str):
            texts.append(coding["display"])
    return texts


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _nutrition_as_medication_request(resource: Mapping[str, Any]) -> dict[str, Any]:
    """A NutritionOrder read like a MedicationRequest by its words: parenteral nutrition, or a calcium additive,
    named in its formula or diet (brief §9.2: calcium-containing parenteral nutrition; review of issue 15)."""
    formula: Mapping[str, Any] = _mapping(resource.get("enteralFormula"))
    texts = [t for key in ("baseFormulaType", "baseFormulaProductName", "additiveType", "additiveProductName")
             for t in _concept_texts(formula.get(key))]
    diet = _mapping(resource.get("oralDiet"))
    texts += _concept_texts(diet.get("type"))
    supplements = resource.get("supplement")
    for supplement in supplements if isinstance(supplements, list) else []:
        if isinstance(supplement, Mapping):
            texts += _concept_texts(supplement.get("type")) + _concept_texts(supplement.get("productName"))
    body: dict[str, Any] = {
        "resourceType": "MedicationRequest",
        **{k: resource[k] for k in ("id", "status", "intent") if k in resource},
        "medicationCodeableConcept": {"text": " ; ".join(texts)} if texts else {},
    }
    if isinstance(resource.get("dateTime"), str):
        body["authoredOn"] = resource["dateTime"]
    route = formula.get("routeofAdministration")
    if isinstance(route, Mapping):
        body["dosageInstruction"] = [{"route": route}]
    return body


def _valid_request(raw: Mapping[str, Any], kind: object) -> tuple[MedicationRequest | None, list[DataIssue]]:
    """The request as sent, else its drug and order elements alone (an invalid dose, route or date must not hide
    the drug: what is dropped counts as not recorded, an unknown route as IV); None when the drug elements
    themselves are invalid."""
    try:
        return MEDICATION_REQUEST.validate_python(raw), []
    except ValidationError as exc:
        issues = [DataIssue("malformed-resource", f"draft {kind}: {exc.error_count()} invalid field(s)")]
        invalid = {str(error["loc"][0]) for error in exc.errors() if error["loc"]}
    if invalid & set(_DRUG_ELEMENTS):
        return None, issues
    kept = {k: raw[k] for k in (*_ORDER_ELEMENTS, *_DRUG_ELEMENTS) if k in raw and k not in invalid}
    try:
        return MEDICATION_REQUEST.validate_python(kept), issues
    except ValidationError:
        return None, issues


def _medications(resource: Mapping[str, Any], locales: tuple[str, ...], definitions: Mapping[str, Mapping[str, Any]]
                 ) -> tuple[list[MedicationFact], list[DataIssue], str | None]:
    """(the drugs recognised, the issues, why the drug was not identified: see ``DraftOrder.not_identified``)."""
    kind = resource.get("resourceType")
    raw = (resource if kind == "MedicationRequest" else _nutrition_as_medication_request(resource)
           if kind == "NutritionOrder" else _as_medication_request(resource))
    request, issues = _valid_request(raw, kind)
    if request is None:
        return [], issues, "malformed-resource"
    facts, read_issues = read_medication_request(request, locales, definitions)
    issues += read_issues
    if kind != "MedicationRequest":
        facts = [replace(f, provenance=replace(f.provenance, resource_type=str(kind))) for f in facts]
    # A draft is not yet given: its status stays what the EHR sent ("draft"), never "active".
    return facts, issues, None if facts else _why_not_identified(request, read_issues)


def _why_not_identified(request: MedicationRequest, read_issues: list[DataIssue]) -> str | None:
    """For a request with no drug recognised: why nothing names its drug, or None when something does (a drug
    this service does not know is identified, and not checked because no check is about it)."""
    if request.get("medicationCodeableConcept"):
        return None
    reference = request.get("medicationReference")
    if not reference:
        return "malformed-resource"  # medication[x] is required (1..1)
    unresolved = any(i.kind == "unresolved-medication" for i in read_issues)
    return "unresolved-medication" if unresolved and not reference.get("display") else None


def read_draft_orders(
    bundle: Mapping[str, Any], patient_id: str, locales: tuple[str, ...] = ("en", "fr")
) -> list[DraftOrder]:
    """Every order of ``draftOrders``; raises :class:`DraftOrderError` for an order about another patient."""
    entries = bundle.get("entry")
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise DraftOrderError("draftOrders.entry must be a list", "context.draftOrders.entry")
    resources: list[tuple[int, Mapping[str, Any], str | None]] = []
    for index, entry in enumerate(entries):
        where = f"context.draftOrders.entry[{index}]"
        if not isinstance(entry, Mapping) or not isinstance(entry.get("resource"), Mapping):
            raise DraftOrderError("each draftOrders entry needs a resource", where)
        resource = entry["resource"]
        if not isinstance(resource.get("resourceType"), str):
            raise DraftOrderError("a draft order has no resourceType", f"{where}.resource")
        rid = resource.get("id")
        if rid is not None and not isinstance(rid, str):
            raise DraftOrderError("a draft order id must be a string", f"{where}.resource.id")
        full_url = entry.get("fullUrl")
        resources.append((index, resource, full_url if isinstance(full_url, str) else None))
    aliases = frozenset(url for _, r, url in resources if url and r.get("resourceType") == "Patient"
                        and r.get("id") == patient_id)
    definitions: dict[str, Mapping[str, Any]] = {}
    for _, resource, url in resources:
        if resource.get("resourceType") == "Medication" and isinstance(resource.get("id"), str):
            definitions[f"Medication/{resource['id']}"] = resource
            if url:
                definitions[url] = resource
    orders: list[DraftOrder] = []
    for index, resource, url in resources:
        kind = str(resource["resourceType"])
        if kind in {"Patient", "Medication"}:
            continue
        reference = _patient_of(resource)
        if reference is not None and not _is_this_patient(reference, patient_id, aliases):
            # Security brief §2.2 and issue 15: a draft about another patient is refused, never assessed.
            raise DraftOrderError(
                f"a draft {kind} is about another patient than context.patientId",
                f"context.draftOrders.entry[{index}].resource.{'patient' if 'patient' in resource else 'subject'}",
            )
        medications: list[MedicationFact] = []
        issues: list[DataIssue] = []
        not_identified: str | None = None
        if kind in {"MedicationRequest", "ServiceRequest", "NutritionOrder"}:
            medications, issues, not_identified = _medications(resource, locales, definitions)
        status = resource.get("status")
        orders.append(DraftOrder(kind, resource.get("id"), url, status if isinstance(status, str) else None,
                                 tuple(medications), tuple(issues), position=len(orders) + 1,
                                 # Only a MedicationRequest is surely a drug order (most ServiceRequests are not).
                                 not_identified=not_identified if kind == "MedicationRequest" else None))
    return orders


def selected(orders: Sequence[DraftOrder], selections: Sequence[str]) -> list[DraftOrder]:
    """The orders ``context.selections`` names (order-select); a selection naming nothing is an error."""
    chosen: list[DraftOrder] = []
    for index, selection in enumerate(selections):
        match = next((o for o in orders if selection in {o.reference, o.full_url}), None)
        if match is None:
            raise DraftOrderError("a selection names no resource in draftOrders", f"context.selections[{index}]")
        if match not in chosen:
            chosen.append(match)
    return chosen
