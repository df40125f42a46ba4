"""``calcinosis-assessment`` on ``patient-view``: subtype, missing work-up, therapy options, red flags.

Prefetch templates ask for what the assessment reads and no more (CDS Hooks 2.0 #prefetch-template;
2.0 tokens only, no ``today()``). The Observation code list is generated from the terminology tables,
never typed by hand.
"""

from __future__ import annotations

from functools import lru_cache

from hooks.registry import HookCall, HookOutcome, LookBack, ServiceDefinition

__all__ = ["ESSENTIAL_KEYS", "SERVICE_ID", "calcinosis_assessment", "prefetch_templates"]

SERVICE_ID = "calcinosis-assessment"
ESSENTIAL_KEYS = frozenset({"patient", "conditions", "observations"})
# Results per page asked of the EHR: most servers allow 100; the service's page cap bounds the total.
PAGE_SIZE = 100


@lru_cache(maxsize=1)
def prefetch_templates() -> dict[str, str]:
    """The queries, short enough for gateways that cap a URL at 2,048 characters once encoded (issue 11).

    Observation codes are sent bare (a token without a system matches the code in any system; the mapping
    layer keeps only LOINC), newest first, so a long record is complete once it reaches past the longest
    look-back (``complete_after_days``). Procedures (dialysis, valve replacement, transplant) are optional.
    """
    from fhir_mappings.terminology import observation_loinc_codes

    codes = ",".join(observation_loinc_codes())
    return {
        "patient": "Patient/{{context.patientId}}",
        "conditions": f"Condition?patient={{{{context.patientId}}}}&_count={PAGE_SIZE}",
        "observations": f"Observation?patient={{{{context.patientId}}}}&code={codes}&_sort=-date&_count={PAGE_SIZE}",
        "medications": f"MedicationRequest?patient={{{{context.patientId}}}}&_count={PAGE_SIZE}",
        "procedures": f"Procedure?patient={{{{context.patientId}}}}&_count={PAGE_SIZE}",
    }


def calcinosis_assessment(chemistry_lookback_days: int = 90, serology_lookback_days: int = 365) -> ServiceDefinition:
    """The service definition; look-back windows come from settings (brief §5b, rule C1)."""
    from fhir_mappings import MappingOptions
    from fhir_mappings.text import warm_up
    from hooks.engine.knowledge import load_knowledge
    from hooks.engine.service import assess_hook_call

    # Load the knowledge files and build the text pipeline now (at startup), not in the first request that
    # needs them: importing the engine also imports the R4B model used for suggestions (about 250 ms), and
    # edsnlp takes about 2 s to build, more than a call's work budget.
    load_knowledge()
    warm_up()

    options = MappingOptions(
        chemistry_lookback_days=chemistry_lookback_days, serology_lookback_days=serology_lookback_days
    )

    def handle(call: HookCall) -> HookOutcome:
        return assess_hook_call(call, options)

    return ServiceDefinition(
        id=SERVICE_ID,
        hook="patient-view",
        title="Calcinosis cutis assessment",
        description=(
            "When a chart opens, suggests the likely calcinosis cutis subtype (dystrophic, metastatic, "
            "idiopathic, iatrogenic, calciphylaxis) with its evidence, lists missing work-up and therapy "
            "options with cautions, and raises red flags (suspected calciphylaxis, very high calcium x "
            "phosphate, severe hypercalcaemia). Silent for every other patient."
        ),
        prefetch=prefetch_templates(),
        essential_keys=ESSENTIAL_KEYS,
        # Serology is read over the longest window (365 days): older results are never "current".
        look_back={"observations": LookBack(max(chemistry_lookback_days, serology_lookback_days))},
        handler=handle,
        usage_requirements=(
            "Reads Patient, Condition, Observation (LOINC), MedicationRequest and, when granted, Procedure. "
            "Without prefetch, needs fhirServer (and fhirAuthorization unless the server is open)."
        ),
    )
