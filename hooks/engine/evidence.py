"""Evidence: the inputs a rule used, ready for a card line and for the audit record (FDA criterion 4)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from fhir_mappings.facts import ConditionFact, DerivedValue, Finding, LabValue, MedicationFact, StatusFact

__all__ = [
    "FALSE",
    "Evidence",
    "Result",
    "combine",
    "condition_evidence",
    "derived_evidence",
    "finding_evidence",
    "lab_evidence",
    "medication_evidence",
    "status_evidence",
]


@dataclass(frozen=True, slots=True)
class Evidence:
    """One input a rule used, ready to show on a card and to store in the audit record."""

    kind: str
    concept: str
    value: float | None = None
    unit: str | None = None
    text: str | None = None
    date: datetime | None = None
    reference: str | None = None
    flags: tuple[str, ...] = ()
    # What a medication's route is read from, for the card to name it (addendum S25): the order's
    # dosageInstruction.route, else the drug's own text (``form``), whose dose form may say it ("eye drops").
    route: str | None = None
    form: str | None = None

    def to_dict(self, iso: Callable[[datetime], str] = datetime.isoformat) -> dict[str, Any]:
        """``iso``: how dates are written (a snapshot passes its memo of them)."""
        data: dict[str, Any] = {"kind": self.kind, "concept": self.concept}
        if self.value is not None:
            data["value"] = self.value
        if self.unit:
            data["unit"] = self.unit
        if self.text:
            data["text"] = self.text
        if self.date:
            data["date"] = iso(self.date)
        if self.reference:
            data["reference"] = self.reference
        if self.flags:
            data["flags"] = list(self.flags)
        if self.route:
            data["route"] = self.route
        if self.form:
            data["form"] = self.form
        return data


@dataclass(frozen=True, slots=True)
class Result:
    holds: bool
    evidence: tuple[Evidence, ...] = ()

    def __bool__(self) -> bool:
        return self.holds


FALSE = Result(False)


def lab_evidence(value: LabValue) -> Evidence:
    return Evidence(
        kind="lab",
        concept=value.analyte,
        value=value.value,
        unit=value.unit,
        text=value.provenance.original,
        date=value.effective,
        reference=value.provenance.reference,
        flags=value.flags + ((value.comparator,) if value.comparator else ()),
    )


def derived_evidence(value: DerivedValue) -> tuple[Evidence, ...]:
    own = Evidence(
        kind="derived",
        concept=value.name,
        value=round(value.value, 2),
        unit=value.unit,
        text=value.method,
        date=value.effective,
        flags=value.flags,
    )
    return (own, *(lab_evidence(v) for v in value.inputs))


def condition_evidence(condition: ConditionFact) -> Evidence:
    flags = tuple(s for s in (condition.clinical_status, condition.verification_status) if s)
    if condition.from_text:
        flags += ("from-text",)
    return Evidence(
        kind="condition",
        concept=condition.concept,
        text=condition.provenance.display or condition.text,
        date=condition.onset or condition.recorded,
        reference=condition.provenance.reference,
        flags=flags,
    )


def medication_evidence(medication: MedicationFact) -> Evidence:
    """A medication with its start (current) or its end (stopped) date, so the card can say which."""
    ended = medication.ended
    return Evidence(
        kind="medication",
        concept=medication.concept,
        text=medication.provenance.display or medication.text,
        date=ended if ended is not None else (medication.period_start or medication.authored),
        reference=medication.provenance.reference,
        flags=tuple(s for s in (medication.status,) if s),
        route=medication.route,
        form=medication.text,
    )


def finding_evidence(finding: Finding) -> Evidence:
    return Evidence(
        kind="finding",
        concept=finding.kind,
        text=finding.matched_text or finding.provenance.display,
        date=finding.effective,
        reference=finding.provenance.reference,
        flags=finding.body_sites + (("suspected",) if finding.certainty == "suspected" else ()),
    )


def status_evidence(concept: str, status: StatusFact) -> tuple[Evidence, ...]:
    """A pregnancy, breastfeeding or valve status, with the resource that decided it (if any)."""
    references: list[str | None] = [p.reference for p in status.evidence if p.reference] or [None]
    return tuple(
        Evidence(kind="status", concept=concept, text=status.basis, date=status.when, reference=reference,
                 flags=(status.status,))
        for reference in references
    )


def combine(results: Iterable[Result]) -> tuple[Evidence, ...]:
    """The evidence of several results, each input once."""
    seen: dict[tuple[str, str, str | None, str | None], Evidence] = {}
    for result in results:
        for item in result.evidence:
            seen.setdefault((item.kind, item.concept, item.reference, item.text), item)
    return tuple(seen.values())
