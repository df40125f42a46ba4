"""Patient context the therapy rules need: pregnancy, breastfeeding, a mechanical heart valve, and the
conditions named only in text.

Implements the safety addendum's concept groups: G-PREG (an active pregnancy Condition recorded or updated in
the last 42 weeks, a positive pregnancy-status Observation from the last 30 days, or an estimated delivery date
in the future; a later negative Observation cancels it), G-BF (an active breastfeeding Condition or the latest
breastfeeding-status Observation), G-MHV with rule S26 (f) (Z95.2 is read as a mechanical valve unless a
bioprosthesis is shown), and the text reading of issue 10 (conditions named in English or French free text,
with their assertion). The windows and the 12-55 age band are product decisions of the addendum.

When nothing is recorded, the status is "unknown", never "no": the card then says "not recorded" next to any
option whose rule needs it (docs/decisions.md, "Unknown facts").
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Final, Literal

from fhir_mappings._common import codings, parse_datetime, provenance_for
from fhir_mappings.facts import Certainty, ConditionFact, Provenance, StatusFact
from fhir_mappings.labs import effective_of
from fhir_mappings.models import Observation
from fhir_mappings.terminology import lookup
from fhir_mappings.text import Mention, read_mentions

__all__ = [
    "CONTEXT_TEXT_KINDS",
    "ValveKind",
    "context_conditions_from_text",
    "is_context_observation",
    "mechanical_valve_status",
    "status_of",
    "valve_kind",
]

# Text kinds of ``tables/text_terms.csv`` that name a condition of the patient context (concept id = kind).
CONTEXT_TEXT_KINDS: Final = frozenset(
    {
        "pregnancy", "breastfeeding", "mechanical_valve", "bioprosthetic_valve", "atrial_fibrillation",
        "hypoparathyroidism", "primary_hpt", "sarcoidosis", "myeloma", "hypercalcaemia_of_malignancy", "active_cancer",
        "kidney_transplant", "hepatic_impairment", "severe_hepatic_impairment", "surgery_not_possible",
    }
)
# An implant or a transplant stays in place: "history of mechanical valve replacement" means a valve now.
_PERSISTS: Final = frozenset({"mechanical_valve", "bioprosthetic_valve", "kidney_transplant"})
# A cancer only counts when asserted: "cancer screening" or "cancer à éliminer" is a work-up, not a cause of the
# hypercalcaemia to treat first (safety addendum S32 needs an active cancer).
_ASSERTED_ONLY: Final = frozenset({"active_cancer"})
# Safety addendum G-PREG (product decisions): Condition window 42 weeks, Observation window 30 days.
PREGNANCY_CONDITION_DAYS: Final = 42 * 7
STATUS_OBSERVATION_DAYS: Final = 30
# Safety addendum S27: pregnancy status matters for women of 12 to 55 (product decision).
CHILDBEARING_AGE: Final = (12.0, 55.0)
_ANSWERS: Final[dict[str, Literal["yes", "no", "unknown"]]] = {
    "answer_pregnant": "yes",
    "pregnancy": "yes",
    "answer_not_pregnant": "no",
    "not_pregnant": "no",
    "answer_unknown": "unknown",
    "answer_breastfeeding": "yes",
    "breastfeeding": "yes",
    "answer_not_breastfeeding": "no",
}
_STATUS_OBSERVATIONS: Final = {"pregnancy_status": "pregnancy", "breastfeeding_status": "breastfeeding"}


@dataclass(frozen=True, slots=True)
class _Reading:
    kind: str
    value: Literal["yes", "no", "unknown"]
    when: datetime | None
    provenance: Provenance
    # A due date in the future decides by itself, outside the 30-day window of status Observations.
    dated_by_due_date: bool = False


def is_context_observation(obs: Observation) -> bool:
    return any((m := lookup(c.get("system"), c.get("code"))) is not None and m.kind == "observation"
               for c in codings(obs.get("code")))


def _observation_readings(observations: Iterable[Observation], now: datetime) -> list[_Reading]:
    readings: list[_Reading] = []
    for obs in observations:
        if obs.get("status") in {"entered-in-error", "cancelled"}:
            continue
        match = next((m for c in codings(obs.get("code"))
                      if (m := lookup(c.get("system"), c.get("code"))) is not None and m.kind == "observation"), None)
        if match is None:
            continue
        when, _ = effective_of(obs)
        provenance = provenance_for("Observation", obs.get("id"), None, match)
        if match.concept_id == "estimated_delivery_date":
            # G-PREG: a due date in the future means pregnant now, however long ago it was recorded (up to
            # 42 weeks ahead: a date further out is not a delivery date of this pregnancy).
            due = parse_datetime(obs.get("valueDateTime"))
            if due is not None and now.date() <= due.date() <= (now + timedelta(days=PREGNANCY_CONDITION_DAYS)).date():
                readings.append(_Reading("pregnancy", "yes", when or now, provenance, dated_by_due_date=True))
            continue
        if match.concept_id == "gestational_age":
            # G-PREG lists the gestational-age codes: one measured in the status window is a current pregnancy.
            readings.append(_Reading("pregnancy", "yes", when, provenance))
            continue
        kind = _STATUS_OBSERVATIONS.get(match.concept_id)
        if kind is None:
            continue
        answer = next((_ANSWERS[m.concept_id] for c in codings(obs.get("valueCodeableConcept"))
                       if (m := lookup(c.get("system"), c.get("code"))) is not None and m.concept_id in _ANSWERS),
                      None)
        if answer is not None:
            readings.append(_Reading(kind, answer, when, provenance))
    return readings


def status_of(
    kind: Literal["pregnancy", "breastfeeding"],
    *,
    conditions: Sequence[ConditionFact],
    observations: Iterable[Observation],
    now: datetime,
    sex: str,
    age_years: float | None,
) -> StatusFact:
    """Pregnancy or breastfeeding status from Conditions and status Observations (G-PREG, G-BF).

    What is recorded always counts, whatever the age or the recorded sex (a pregnancy at 57 after IVF, a
    patient whose administrative gender is male). The 12-55 band and the sex only decide whether the
    absence of data is "unknown" (then named on the card) or "not applicable" (addendum S27).
    """
    readings = [r for r in _observation_readings(observations, now) if r.kind == kind]
    recent = [r for r in readings if r.dated_by_due_date
              or (r.when is not None and (now - r.when).days <= STATUS_OBSERVATION_DAYS)]
    latest = max(recent, key=lambda r: r.when or now, default=None)
    for condition in conditions:
        value = _ANSWERS.get(condition.concept)
        if condition.concept not in {kind, "not_pregnant" if kind == "pregnancy" else ""} or value is None:
            continue
        if not condition.is_active:
            continue
        when = condition.recorded or condition.onset
        if kind == "pregnancy" and when is not None and (now - when).days > PREGNANCY_CONDITION_DAYS:
            continue
        candidate = _Reading(kind, value, when, condition.provenance)
        # A later observation decides; an undated condition counts only when no observation says otherwise.
        if latest is None or (when is not None and latest.when is not None and when > latest.when):
            latest = candidate
    if latest is not None and latest.value != "unknown":
        return StatusFact(latest.value, (latest.provenance,), latest.when, f"{kind} {latest.value}")
    low, high = CHILDBEARING_AGE
    if sex == "male" or (age_years is not None and not low <= age_years <= high):
        return StatusFact("not-applicable", basis="nothing recorded; outside the 12-55 age band or male")
    if latest is not None:
        return StatusFact("unknown", (latest.provenance,), latest.when, f"{kind} recorded as unknown")
    return StatusFact("unknown", basis=f"no {kind} data")


ValveKind = Literal["mechanical", "unrecorded", "biological", "none"]


def valve_kind(conditions: Sequence[ConditionFact]) -> tuple[ValveKind, tuple[ConditionFact, ...]]:
    """The heart-valve prosthesis on record, and the conditions that say so (S26 a, e, f).

    "unrecorded" is Z95.2 ("prosthetic valve") with no bioprosthesis shown. :func:`mechanical_valve_status`
    treats it as mechanical (S26 f: the safe default for a DOAC); a rule that would relax a contraindication for a
    mechanical valve asks for the valve type instead. An implanted valve does not resolve: a valve code marked
    inactive or resolved (a problem list tidied up) still counts; only a refuted or entered-in-error one does not
    (clinical review of issue 10).
    """
    kept = [c for c in conditions if c.verification_status not in {"refuted", "entered-in-error"}]
    mechanical = tuple(c for c in kept if c.concept == "mechanical_valve")
    if mechanical:
        return "mechanical", mechanical
    prosthetic = tuple(c for c in kept if c.concept == "prosthetic_valve")
    biological = tuple(c for c in kept if c.concept == "bioprosthetic_valve")
    if prosthetic and not biological:
        return "unrecorded", prosthetic
    if biological:
        return "biological", biological
    return "none", ()


def mechanical_valve_status(conditions: Sequence[ConditionFact]) -> StatusFact:
    """S26 (f): a mechanical valve coded or named, or Z95.2 ("prosthetic valve") without a bioprosthesis shown."""
    kind, found = valve_kind(conditions)
    provenance = tuple(c.provenance for c in found)
    if kind == "mechanical":
        return StatusFact("yes", provenance, basis="mechanical valve recorded")
    if kind == "unrecorded":
        return StatusFact("yes", provenance, basis="prosthetic valve of unrecorded type: treated as mechanical")
    if kind == "biological":
        return StatusFact("no", provenance, basis="biological valve")
    return StatusFact("no", basis="no prosthetic valve recorded")


def _keeps(mention: Mention) -> Certainty | None:
    if mention.assertion == "positive" or (mention.assertion == "historical" and mention.kind in _PERSISTS):
        return "asserted"
    if mention.assertion == "hypothetical" and mention.kind not in _ASSERTED_ONLY:
        return "suspected"
    return None


def context_conditions_from_text(
    texts: Iterable[str],
    *,
    resource_type: str,
    resource_id: str | None,
    coded: Iterable[str],
    clinical_status: str | None,
    verification_status: str | None,
    onset: datetime | None,
    recorded: datetime | None,
) -> list[ConditionFact]:
    """Context conditions a text names that its resource is not already coded with ("valve mécanique")."""
    already = set(coded)
    found: dict[str, ConditionFact] = {}
    for text in texts:
        for mention in read_mentions(text):
            if mention.kind not in CONTEXT_TEXT_KINDS or mention.kind in already or mention.kind in found:
                continue
            certainty = _keeps(mention)
            if certainty is None:
                continue
            verification = verification_status
            if certainty == "suspected" and verification not in {"provisional", "differential"}:
                verification = "provisional"
            found[mention.kind] = ConditionFact(
                concept=mention.kind,
                provenance=Provenance(resource_type, resource_id, display=mention.text, original=mention.sentence),
                clinical_status=clinical_status,
                verification_status=verification,
                onset=onset,
                recorded=recorded,
                text=mention.sentence,
                from_text=True,
            )
    return list(found.values())

