"""``calcinosis-medication-safety`` on ``order-select`` and ``order-sign`` (issue 15): one id, two hooks.

Each drug being ordered is checked against the patient's facts and current medications (the checks and their
citations are in ``hooks/engine/knowledge/order_checks.yaml``). The prefetch is the one of
``calcinosis-assessment`` (patient, conditions, observations, current medications with their status, and the
optional procedures), so an EHR that prefetches for one serves both. Facts are built once per call; the
assessment of those facts supplies the same rules and red flags the chart card uses. Silent when no check
fires, which covers most orders; a call whose drafts order no drug the checks know costs no fact building.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from fhir_mappings import MappingOptions
from hooks.registry import HookCall, HookOutcome, LookBack, ServiceDefinition

if TYPE_CHECKING:
    from fhir_mappings.draft_orders import DraftOrder

__all__ = ["HOOKS", "SERVICE_ID", "medication_safety_services"]

SERVICE_ID = "calcinosis-medication-safety"
HOOKS = ("order-select", "order-sign")

_DESCRIPTIONS = {
    "order-select": (
        "When a drug order is selected, checks it for calcinosis and calciphylaxis risks: ceftriaxone with IV "
        "calcium in a neonate, calcium or vitamin D with high calcium, Ca x P or calciphylaxis, warfarin with "
        "calciphylaxis, bisphosphonates and colchicine under the renal limit, colchicine with strong CYP3A4/P-gp "
        "inhibitors, tetracyclines under 8 or in pregnancy, aluminium in CKD, duplicate calcinosis therapy. "
        "Silent when no check fires."
    ),
    "order-sign": (
        "Before drug orders are signed, checks each of them for the same calcinosis and calciphylaxis risks "
        "(neonatal ceftriaxone-calcium, calcium or vitamin D, warfarin, bisphosphonates, colchicine, "
        "tetracyclines, aluminium, duplicates), with a delete suggestion and, where the knowledge names one, "
        "the safer alternative. Silent when no check fires."
    ),
}


def medication_safety_services(
    chemistry_lookback_days: int = 90, serology_lookback_days: int = 365
) -> list[ServiceDefinition]:
    """The two definitions (one id); knowledge and the text pipeline are loaded now, at startup."""
    from hooks.engine.order_knowledge import load_order_checks
    from hooks.engine.order_service import assess_orders, read_orders
    from hooks.services.calcinosis import ESSENTIAL_KEYS, prefetch_templates

    load_order_checks()
    options = MappingOptions(
        chemistry_lookback_days=chemistry_lookback_days, serology_lookback_days=serology_lookback_days
    )

    def prepare_for(hook: str) -> Callable[[Mapping[str, Any]], tuple[list[DraftOrder], list[DraftOrder]]]:
        def prepare(context: Mapping[str, Any]) -> tuple[list[DraftOrder], list[DraftOrder]]:
            return read_orders(hook, context, options.locale_text_matching)

        return prepare

    def handle(call: HookCall) -> HookOutcome:
        # Read and checked in ``prepare``, before any data was fetched (a draft for another patient is a 400).
        to_check, drafts = call.prepared or read_orders(call.request.hook, call.context, options.locale_text_matching)
        unavailable = [key for key, data in call.data.keys.items() if not data.obtained]
        resources = [r for key in call.data.keys for r in call.data.resources(key)]
        encounter = call.context.get("encounterId")
        _, outcome = assess_orders(
            resources, patient_id=str(call.context["patientId"]), to_check=to_check, all_drafts=drafts,
            now=call.now, locale=call.locale, seed=call.request.hookInstance, options=options,
            unavailable=unavailable, encounter_id=str(encounter) if encounter else None,
        )
        return outcome

    return [
        ServiceDefinition(
            id=SERVICE_ID,
            hook=hook,
            title="Calcinosis medication safety",
            description=_DESCRIPTIONS[hook],
            prefetch=prefetch_templates(),
            essential_keys=ESSENTIAL_KEYS,
            look_back={"observations": LookBack(max(chemistry_lookback_days, serology_lookback_days))},
            handler=handle,
            prepare=prepare_for(hook),
            usage_requirements=(
                "Reads context.draftOrders (MedicationRequest, and ServiceRequest coded as a drug) and, for "
                "order-select, context.selections; plus Patient, Condition, Observation (LOINC), "
                "MedicationRequest and, when granted, Procedure."
            ),
        )
        for hook in HOOKS
    ]
