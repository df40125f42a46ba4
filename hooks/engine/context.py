"""The evaluation context the predicates read: the facts, the knowledge, results evaluated so far, and the
clinical readings several rules share (calcium, eGFR, CrCl, CKD stage, age band).

``confirmed_only`` is set while a critical red flag is evaluated: a suspected finding (a provisional or
differential diagnosis, or a text that only raises it) is then not evidence (issue 11).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypeVar

from fhir_mappings.facts import DerivedValue, LabValue, PatientFacts
from hooks.engine.evidence import FALSE, Evidence, Result, condition_evidence, derived_evidence, lab_evidence
from hooks.engine.knowledge import Knowledge

__all__ = ["AgeBand", "EvalContext", "RenalEstimate"]

_STAGE_ORDER = {"G1": 1, "G2": 2, "G3a": 3, "G3b": 4, "G4": 5, "G5": 6}
AgeBand = Literal["neonate", "child_under_8", "child", "adult", "unknown"]
ReadingT = TypeVar("ReadingT")


@dataclass(frozen=True, slots=True)
class RenalEstimate:
    """The kidney function a CrCl-threshold rule used, and which estimate it was (safety addendum S36)."""

    value: float
    method: Literal["crcl-reported", "crcl-cockcroft-gault", "egfr-approximation"]
    evidence: tuple[Evidence, ...]


@dataclass(slots=True)
class EvalContext:
    facts: PatientFacts
    knowledge: Knowledge
    rules: dict[str, Result] = field(default_factory=dict)
    rule_groups: dict[str, str | None] = field(default_factory=dict)
    gates: dict[str, Result] = field(default_factory=dict)
    # Red flags raised so far (therapy rules read them: no excision in suspected calciphylaxis).
    flags: dict[str, Result] = field(default_factory=dict)
    # Options offered to this patient before cautions run (a combination caution needs both drugs).
    offered: frozenset[str] = frozenset()
    # The subtypes the work-up is for (the suggestion, or the top two when indeterminate).
    focus: frozenset[str] = frozenset()
    # The suggested subtype, once scored (flags are evaluated after it: no surgery flag on calciphylaxis).
    subtype: str | None = None
    confirmed_only: bool = False
    # The shared readings below, each worked out once per facts (issue 14: calcium is read by a dozen rules).
    # Only readings of ``facts`` alone are kept: nothing that depends on ``confirmed_only`` or on results
    # evaluated so far. Not init fields, so ``dataclasses.replace`` (the order checks swap the facts) starts
    # an empty memo, and the memo is dropped whenever ``facts`` is no longer the object it was read from.
    _readings: dict[str, Any] = field(default_factory=dict, init=False, repr=False, compare=False)
    _readings_of: PatientFacts | None = field(default=None, init=False, repr=False, compare=False)

    def _reading(self, name: str, read: Callable[[], ReadingT]) -> ReadingT:
        if self._readings_of is not self.facts:
            self._readings = {}
            self._readings_of = self.facts
        if name not in self._readings:
            self._readings[name] = read()
        value: ReadingT = self._readings[name]
        return value

    # ----------------------------------------------------------------- shared clinical readings

    def calcium(self) -> tuple[float | None, LabValue | None, tuple[Evidence, ...]]:
        """Corrected calcium in mg/dL, or measured total calcium when no albumin is paired (rule C2).

        Returns the value, the total-calcium result whose reference range applies, and the evidence.
        """
        return self._reading("calcium", self._calcium)

    def _calcium(self) -> tuple[float | None, LabValue | None, tuple[Evidence, ...]]:
        derived = self.facts.derived.get("calcium_corrected")
        if derived is not None:
            basis = next((v for v in derived.inputs if v.analyte == "calcium_total"), None)
            return derived.value, basis, derived_evidence(derived)
        for analyte in ("calcium_corrected", "calcium_total"):
            latest = self.facts.latest(analyte)
            if latest is not None and latest.value is not None:
                return latest.value, latest, (lab_evidence(latest),)
        return None, None, ()

    def egfr(self) -> tuple[float | None, tuple[Evidence, ...]]:
        return self._reading("egfr", self._egfr)

    def _egfr(self) -> tuple[float | None, tuple[Evidence, ...]]:
        latest = self.facts.latest("egfr")
        if latest is not None and latest.value is not None:
            return latest.value, (lab_evidence(latest),)
        derived = self.facts.derived.get("egfr_ckd_epi_2021")
        if derived is not None:
            return derived.value, derived_evidence(derived)
        return None, ()

    def renal_for_dosing(self) -> RenalEstimate | None:
        """For thresholds written as CrCl (S1, S8, S22): reported CrCl, else Cockcroft-Gault, else eGFR.

        The card says which was used; an eGFR stands in only when weight or creatinine is missing (S36).
        """
        return self._reading("renal_for_dosing", self._renal_for_dosing)

    def _renal_for_dosing(self) -> RenalEstimate | None:
        reported = self.facts.latest("crcl_cg")
        if reported is not None and reported.value is not None and reported.comparator is None:
            return RenalEstimate(reported.value, "crcl-reported", (lab_evidence(reported),))
        computed: DerivedValue | None = self.facts.derived.get("crcl_cockcroft_gault")
        if computed is not None:
            return RenalEstimate(computed.value, "crcl-cockcroft-gault", derived_evidence(computed))
        value, evidence = self.egfr()
        if value is None:
            return None
        return RenalEstimate(value, "egfr-approximation", evidence)

    def in_ckd_3_to_5(self) -> Result:
        stage = self.stage_at_least("G3a")
        if stage:
            return stage
        conditions = self.facts.active_conditions("ckd_3", "ckd_3a", "ckd_3b", "ckd_4", "ckd_5", "esrd", "dialysis")
        return Result(bool(conditions), tuple(condition_evidence(c) for c in conditions))

    def stage_at_least(self, stage: str) -> Result:
        ckd = self.facts.ckd
        if ckd is None:
            return FALSE
        rank = 6 if ckd.dialysis else _STAGE_ORDER.get(ckd.stage or "", 0)
        if rank >= _STAGE_ORDER[stage]:
            text = f"{ckd.stage or ''}{'D' if ckd.dialysis else ''} ({ckd.source})"
            return Result(True, (Evidence(kind="derived", concept="ckd_stage", text=text),))
        return FALSE

    def ca_x_p(self) -> DerivedValue | None:
        return self.facts.derived.get("ca_x_p")

    def is_adult(self) -> bool:
        age = self.facts.age_years
        return age is not None and age >= self.knowledge.threshold("adult_age_years")

    def age_band(self) -> AgeBand:
        """Safety addendum S28: neonate (<= 28 days), child under 8 (tetracyclines), child, adult."""
        days, years = self.facts.age_days, self.facts.age_years
        if days is None or years is None:
            return "unknown"
        if days <= self.knowledge.threshold("neonate_days"):
            return "neonate"
        if years < self.knowledge.threshold("minocycline_min_age_years"):
            return "child_under_8"
        if years < self.knowledge.threshold("adult_age_years"):
            return "child"
        return "adult"
