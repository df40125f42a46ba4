"""A stand-in CDS service with the calcinosis service's four prefetch keys and a transparent handler.

Its cards state how many resources each key produced (ids sorted), so the same cards from a call with full
prefetch and from a call with none prove the FHIR fallback fetched exactly the prefetch data.
"""

from __future__ import annotations

from hooks.models import Card, CdsResponse, Source
from hooks.registry import HookCall, HookOutcome, ServiceDefinition, ServiceRegistry

__all__ = ["STUB_ID", "STUB_TEMPLATES", "stub_registry"]

STUB_ID = "stub-assessment"
STUB_TEMPLATES = {
    "patient": "Patient/{{context.patientId}}",
    "conditions": "Condition?patient={{context.patientId}}",
    "observations": "Observation?patient={{context.patientId}}&code=http://loinc.org|17861-6,http://loinc.org|2777-1",
    "medications": "MedicationRequest?patient={{context.patientId}}",
}


def _cards(call: HookCall) -> HookOutcome:
    cards = []
    for key in STUB_TEMPLATES:
        resources = call.data.resources(key)
        ids = sorted(str(r.get("id")) for r in resources)
        cards.append(
            Card(
                summary=f"{key}: {len(resources)}",
                detail=",".join(ids)[:4000] or "none",
                indicator="info",
                source=Source(label="stub"),
            )
        )
    return HookOutcome(CdsResponse(cards=cards))


ESSENTIAL = frozenset({"patient", "conditions", "observations"})


def stub_registry(*, essential: frozenset[str] = ESSENTIAL) -> ServiceRegistry:
    registry = ServiceRegistry()
    registry.register(
        ServiceDefinition(
            id=STUB_ID,
            hook="patient-view",
            title="stub",
            description="counts the resources of each prefetch key",
            prefetch=STUB_TEMPLATES,
            essential_keys=essential,
            handler=_cards,
        )
    )
    return registry
