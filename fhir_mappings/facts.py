"""Typed, immutable clinical facts read from FHIR R4 resources.

These types are the contract between the mapping layer (``fhir_mappings``) and the clinical
engine (``hooks.engine``). They carry provenance on every value so that a card can show each
input with its value, unit, date and source resource (FDA non-device CDS criterion 4; see the
security brief §3.6). Nothing here reads the clock: ages and windows are computed against a
``now`` passed in by the caller.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import date, datetime
from typing import Literal

__all__ = [
    "AnalyteSeries",
    "CkdStage",
    "ConditionFact",
    "DataIssue",
    "DerivedValue",
    "Finding",
    "LabValue",
    "MedicationFact",
    "PatientFacts",
    "Provenance",
    "ReferenceRange",
    "SetAsideFinding",
    "SkinFindings",
    "StatusFact",
]

Sex = Literal["female", "male", "other", "unknown"]
Qualitative = Literal["positive", "negative", "equivocal"]
# "suspected": a provisional or differential diagnosis, or a text that only raises it. It may add points to a
# subtype but is never the basis of a critical card (issue 11).
Certainty = Literal["asserted", "suspected"]
_SUSPECTED_VERIFICATION = frozenset({"provisional", "differential"})


@dataclass(frozen=True, slots=True)
class Provenance:
    """Where a fact came from: the FHIR resource and the coding that was matched."""

    resource_type: str
    resource_id: str | None
    system: str | None = None
    code: str | None = None
    display: str | None = None
    # The value exactly as sent (for example "2.61 mmol/L" or "Positive 1:160"), for the card's evidence line.
    original: str | None = None
    # True when the matched code has status UNVERIFIED in the terminology tables: read, never emitted.
    unverified_code: bool = False

    @property
    def reference(self) -> str | None:
        return f"{self.resource_type}/{self.resource_id}" if self.resource_id else None


@dataclass(frozen=True, slots=True)
class ReferenceRange:
    low: float | None
    high: float | None
    # "observation" when the lab sent Observation.referenceRange, "default" when taken from the brief §4e.
    source: Literal["observation", "default"]


@dataclass(frozen=True, slots=True)
class LabValue:
    """One usable laboratory result, converted to the canonical unit of its analyte."""

    analyte: str
    value: float | None
    unit: str
    effective: datetime | None
    provenance: Provenance
    comparator: Literal["<", "<=", ">", ">="] | None = None
    qualitative: Qualitative | None = None
    interpretation: str | None = None
    reference_range: ReferenceRange | None = None
    status: str = "final"
    # "preliminary", "no-effective-date", "comparator", "value-string" ... shown on the card next to the value.
    flags: tuple[str, ...] = ()

    @property
    def is_high(self) -> bool | None:
        """Above the upper limit of the reference range (lab's own range first), None if unknown."""
        if self.interpretation in {"H", "HH", "HU", ">"}:
            return True
        if self.value is None or self.reference_range is None or self.reference_range.high is None:
            return None
        if self.comparator in {"<", "<="}:
            return False if self.value <= self.reference_range.high else None
        return self.value > self.reference_range.high

    @property
    def is_low(self) -> bool | None:
        if self.interpretation in {"L", "LL", "LU", "<"}:
            return True
        if self.value is None or self.reference_range is None or self.reference_range.low is None:
            return None
        if self.comparator in {">", ">="}:
            return False if self.value >= self.reference_range.low else None
        return self.value < self.reference_range.low

    @property
    def is_positive(self) -> bool | None:
        """For antibodies and other qualitative tests: positive, negative or unknown."""
        if self.qualitative is not None:
            return self.qualitative == "positive"
        if self.interpretation in {"POS", "DET", "A", "H", "HH"}:
            return True
        if self.interpretation in {"NEG", "ND", "N"}:
            return False
        high = self.is_high
        return high


@dataclass(frozen=True, slots=True)
class AnalyteSeries:
    """All results of one analyte: the latest usable one inside its look-back window, and the history."""

    analyte: str
    latest: LabValue | None
    # Every parsed result, newest first, including those outside the window (shown as history only, rule C1).
    history: tuple[LabValue, ...] = ()
    # The start of this analyte's look-back window: older results are history, "not current".
    window_start: datetime | None = None


@dataclass(frozen=True, slots=True)
class DerivedValue:
    """A computed value (corrected calcium, Ca x P, eGFR, CrCl) with the inputs it used."""

    name: str
    value: float
    unit: str
    method: str
    inputs: tuple[LabValue, ...]
    effective: datetime | None = None
    # "uncorrected" (rule C2), "approximate" (CrCl from eGFR), ... shown on the card.
    flags: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ConditionFact:
    concept: str
    provenance: Provenance
    clinical_status: str | None
    verification_status: str | None
    onset: datetime | None = None
    recorded: datetime | None = None
    # Body-site concept ids from the terminology tables (for example "skin_buttock").
    body_sites: tuple[str, ...] = ()
    text: str | None = None
    # Read from free text ("valve mécanique" in a note), not from a code.
    from_text: bool = False
    # Set when a current laboratory value contradicts this coded stage ("ESRD coded 2019; eGFR 95 on ...");
    # a superseded condition is shown as history and never fires a rule (issue 10).
    superseded_by: str | None = None

    @property
    def is_active(self) -> bool:
        """Counts for the rules: not refuted/entered-in-error, and not resolved/inactive/remission."""
        if self.verification_status in {"refuted", "entered-in-error"}:
            return False
        return self.clinical_status in {None, "active", "recurrence", "relapse"}

    @property
    def certainty(self) -> Certainty:
        return "suspected" if self.verification_status in _SUSPECTED_VERIFICATION else "asserted"


_CURRENT_STATUS = frozenset({"active", "on-hold"})
# Never given as ordered: a draft is not signed yet, a cancelled order never started (issue 11).
_NEVER_GIVEN = frozenset({"entered-in-error", "cancelled", "draft"})


@dataclass(frozen=True, slots=True)
class MedicationFact:
    concept: str
    provenance: Provenance
    # Drug classes from the terminology tables, e.g. ("bisphosphonate",) or ("calcium_salt", "calcium_based_binder").
    groups: tuple[str, ...] = ()
    status: str | None = None
    intent: str | None = None
    authored: datetime | None = None
    period_start: datetime | None = None
    period_end: datetime | None = None
    route: str | None = None
    # How the drug was recognised: "atc", "rxnorm", "name" (rule: ATC first, then RxNorm, then names; brief §9.7).
    matched_by: Literal["atc", "rxnorm", "name"] = "rxnorm"
    text: str | None = None

    @property
    def is_current(self) -> bool:
        """Only an active or on-hold order is current (FHIR R4 MedicationRequest.status)."""
        return self.status in _CURRENT_STATUS

    @property
    def ended(self) -> datetime | None:
        """When a stopped or completed order ended, as far as the request says (period end, else authored)."""
        if self.is_current or self.status in _NEVER_GIVEN:
            return None
        return self.period_end or self.authored

    def is_within(self, now: datetime, days: int) -> bool:
        """Current, or stopped/completed no more than ``days`` before ``now``; drafts and errors never."""
        if self.status in _NEVER_GIVEN:
            return False
        if self.is_current:
            return True
        last = self.ended
        return last is not None and (now - last).days <= days


@dataclass(frozen=True, slots=True)
class Finding:
    """One piece of evidence for a skin finding: a coded Condition/Observation or a text match."""

    kind: str
    provenance: Provenance
    matched_text: str | None = None
    effective: datetime | None = None
    body_sites: tuple[str, ...] = ()
    certainty: Certainty = "asserted"


@dataclass(frozen=True, slots=True)
class SetAsideFinding:
    """A candidate skin finding that is not used, and why ("negated", "not-skin", "other-cause"...)."""

    kind: str
    provenance: Provenance
    text: str | None
    reason: str
    cue: str | None = None


@dataclass(frozen=True, slots=True)
class SkinFindings:
    calcinosis: tuple[Finding, ...] = ()
    pain: tuple[Finding, ...] = ()
    ulcer: tuple[Finding, ...] = ()
    necrosis: tuple[Finding, ...] = ()
    purpura_livedo: tuple[Finding, ...] = ()
    nodule: tuple[Finding, ...] = ()
    calciphylaxis: tuple[Finding, ...] = ()
    biopsy_calciphylaxis: tuple[Finding, ...] = ()
    infection: tuple[Finding, ...] = ()
    joint_destruction: tuple[Finding, ...] = ()
    local_injury: tuple[Finding, ...] = ()
    set_aside: tuple[SetAsideFinding, ...] = ()

    @property
    def lesion_sites(self) -> frozenset[str]:
        sites: set[str] = set()
        for group in (self.calcinosis, self.ulcer, self.necrosis, self.purpura_livedo, self.nodule):
            for finding in group:
                sites.update(finding.body_sites)
        return frozenset(sites)


@dataclass(frozen=True, slots=True)
class StageDiscrepancy:
    """A coded kidney stage or status that a current eGFR contradicts ("ESRD coded 2019; eGFR 95 on ...")."""

    concept: str
    display: str
    coded: datetime | None
    egfr: float
    measured: datetime | None


@dataclass(frozen=True, slots=True)
class CkdStage:
    """KDIGO G category: from a current eGFR when there is one (it supersedes older coded stages), else coded."""

    stage: Literal["G1", "G2", "G3a", "G3b", "G4", "G5"] | None
    dialysis: bool
    transplant: bool
    source: str
    # Each input, and "discrepancy: ESRD coded 2019-03-01; eGFR 95 on 2026-11-10" for a superseded code.
    evidence: tuple[str, ...] = ()
    superseded: tuple[StageDiscrepancy, ...] = ()

    @property
    def discrepancies(self) -> tuple[str, ...]:
        return tuple(e.removeprefix("discrepancy: ") for e in self.evidence if e.startswith("discrepancy: "))


@dataclass(frozen=True, slots=True)
class DataIssue:
    """Something that could not be read and is therefore not used (FDA 'knowns/unknowns')."""

    kind: str
    detail: str
    provenance: Provenance | None = None


StatusValue = Literal["yes", "no", "unknown", "not-applicable"]


@dataclass(frozen=True, slots=True)
class StatusFact:
    """A yes/no fact about the patient (pregnant, breastfeeding, mechanical valve), with what decided it.

    "unknown" means nothing was recorded: rules that need the fact say so and never assume "no".
    """

    status: StatusValue
    evidence: tuple[Provenance, ...] = ()
    when: datetime | None = None
    # Why, in words a card can use ("pregnancy yes", "no pregnancy data").
    basis: str = ""


_UNKNOWN = StatusFact("unknown", basis="not assessed")


@dataclass(frozen=True, slots=True)
class PatientFacts:
    now: datetime
    patient_id: str | None
    birth_date: date | None
    sex: Sex
    labs: Mapping[str, AnalyteSeries] = field(default_factory=dict)
    conditions: tuple[ConditionFact, ...] = ()
    medications: tuple[MedicationFact, ...] = ()
    skin: SkinFindings = field(default_factory=SkinFindings)
    derived: Mapping[str, DerivedValue] = field(default_factory=dict)
    ckd: CkdStage | None = None
    issues: tuple[DataIssue, ...] = ()
    # Safety addendum G-PREG, G-BF, G-MHV (read by ``fhir_mappings.context``).
    pregnancy: StatusFact = _UNKNOWN
    breastfeeding: StatusFact = _UNKNOWN
    mechanical_valve: StatusFact = StatusFact("no", basis="no prosthetic valve recorded")
    # Patient.deceased[x]: the service stays silent for a deceased patient (issue 11).
    deceased: bool = False
    # Data kinds whose source failed (an error OperationOutcome, an unreadable key): "unknown", never "none".
    unavailable: frozenset[str] = frozenset()

    @property
    def age_years(self) -> float | None:
        if self.birth_date is None:
            return None
        return (self.now.date() - self.birth_date).days / 365.25

    @property
    def age_days(self) -> int | None:
        if self.birth_date is None:
            return None
        return (self.now.date() - self.birth_date).days

    def latest(self, analyte: str) -> LabValue | None:
        series = self.labs.get(analyte)
        return series.latest if series else None

    def active_conditions(self, *concepts: str) -> tuple[ConditionFact, ...]:
        wanted = set(concepts)
        return tuple(c for c in self.conditions if c.concept in wanted and c.is_active and c.superseded_by is None)

    def medications_within(self, days: int, *concepts: str) -> tuple[MedicationFact, ...]:
        """Medications whose concept or drug class is in ``concepts``, current or stopped within ``days``."""
        wanted = set(concepts)
        return tuple(
            m
            for m in self.medications
            if (m.concept in wanted or wanted.intersection(m.groups)) and m.is_within(self.now, days)
        )
