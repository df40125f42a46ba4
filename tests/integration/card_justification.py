"""Is every card justified by a current value in the FHIR input? A checker independent of the engine.

For each card it reads the card's public contract (``extension["calcinosis-cds"]``: ``kind``, ``flag``,
``also``, ``flags``, ``risk``, ``subtype``) and looks in the raw prefetch resources for the facts without
which that card must not exist. It re-reads the values itself: its own unit conversions, its own look-back
window from the clock, its own Payne correction, its own status filters, and only the code lists of the
knowledge tables (``fhir_mappings/tables/concepts.csv``, ``medication_names.csv``), which are data the
clinicians review, not the engine's reasoning. It checks necessary conditions (a Ca x P card needs a
calcium and a phosphate drawn within 7 days whose product reaches the threshold; a calciphylaxis card needs
a skin ulcer, necrosis or purpura finding and kidney failure evidence), so it can say "unjustified" but
never re-derives the whole decision. A card kind or flag it has no rule for is reported, never waved through.

Thresholds are those of ``hooks/engine/knowledge/red_flags.yaml`` (brief §4c, §5d); conversions are the
brief's (§4a: calcium 1 mmol/L = 4.008 mg/dL, 1 mEq/L = 2.004 mg/dL; phosphate 1 mmol/L = 3.097 mg/dL;
albumin g/L / 10 = g/dL; Payne: corrected Ca = Ca + 0.8 x (4 - albumin g/dL)).
"""

from __future__ import annotations

import csv
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from pathlib import Path
from typing import Any

__all__ = ["SUMMARY_LIMIT", "CardProblem", "InputRecord", "check_cards"]

SUMMARY_LIMIT = 140
CHEMISTRY_DAYS = 90  # the service's default chemistry look-back (settings, brief §5b)
PAIR_DAYS = 7  # Ca x P from draws within 7 days of each other (red_flags.yaml)
TOLERANCE = 0.05  # rounding of displayed values
_TABLES = Path(__file__).resolve().parents[2] / "fhir_mappings" / "tables"

# Unit -> factor to the canonical unit (mg/dL for calcium and phosphate, g/dL for albumin, pg/mL for PTH).
_TO_CANONICAL: dict[str, dict[str, float]] = {
    "calcium": {"mg/dl": 1.0, "mmol/l": 4.008, "meq/l": 2.004},
    "phosphate": {"mg/dl": 1.0, "mmol/l": 3.097},
    "albumin": {"g/dl": 1.0, "g/l": 0.1},
    "pth": {"pg/ml": 1.0, "ng/l": 1.0, "pmol/l": 9.43},
    "egfr": {},  # any mL/min spelling: the value is read as per 1.73 m2
    "bmi": {"kg/m2": 1.0},
}
_ANALYTE_CONCEPTS = {
    "calcium": ("calcium_total", "calcium_corrected"),
    "phosphate": ("phosphate",),
    "albumin": ("albumin",),
    "pth": ("pth_intact",),
    "egfr": ("egfr",),
    "bmi": ("bmi",),
}
_SEVERE_RENAL = ("esrd", "dialysis", "kidney_transplant", "ckd_4", "ckd_5")
_ANY_CKD = ("ckd", "ckd_3", "ckd_3a", "ckd_3b", *_SEVERE_RENAL)
_CALCINOSIS = ("calcinosis_cutis", "calcinosis_unspecified", "calciphylaxis", "tumoral_calcinosis")
_LESION_WORDS = re.compile(r"\b(ulcer\w*|necros\w*|necrotic|purpur\w*|livedo\w*|ulc[eè]r\w*|n[ée]cros\w*|gangren\w*)",
                           re.IGNORECASE)
_SKIN_WORDS = re.compile(r"\b(skin|cutane\w*|subcutane\w*|cutan[ée]\w*|peau|derm\w*|leg|thigh|calf|foot|toe|finger"
                         r"|abdom\w*|buttock|cuisse|jambe|pied|orteil|doigt|wound|plaie)\b", re.IGNORECASE)
_CURRENT_CLINICAL = {"active", "recurrence", "relapse"}
_NOT_ASSERTED = {"refuted", "entered-in-error"}


@dataclass(frozen=True)
class CardProblem:
    card: str  # the card's summary
    problem: str


@dataclass(frozen=True)
class Lab:
    analyte: str
    value: float  # canonical unit
    when: datetime
    resource_id: str


@cache
def _codes(concepts: tuple[str, ...], *, group: bool = False) -> frozenset[str]:
    with (_TABLES / "concepts.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    if group:
        return frozenset(r["code"] for r in rows if set(r["groups"].split(";")) & set(concepts))
    return frozenset(r["code"] for r in rows if r["concept_id"] in concepts)


@cache
def _names(concepts: tuple[str, ...], *, group: bool = False) -> tuple[str, ...]:
    with (_TABLES / "concepts.csv").open(encoding="utf-8") as handle:
        rows = list(csv.DictReader(handle))
    wanted = {r["concept_id"] for r in rows if set(r["groups"].split(";")) & set(concepts)} if group else set(concepts)
    with (_TABLES / "medication_names.csv").open(encoding="utf-8") as handle:
        return tuple(r["name"].lower() for r in csv.DictReader(handle) if r["concept_id"] in wanted)


def _parse_time(value: Any) -> datetime | None:
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00")) if "T" in value else None
        if parsed is None:
            parts = [int(p) for p in value.split("-")]
            parsed = datetime(parts[0], parts[1] if len(parts) > 1 else 1, parts[2] if len(parts) > 2 else 1)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def _resources(bundle_or_resource: Any) -> list[dict[str, Any]]:
    if not isinstance(bundle_or_resource, dict):
        return []
    if bundle_or_resource.get("resourceType") != "Bundle":
        return [bundle_or_resource]
    return [e["resource"] for e in bundle_or_resource.get("entry") or () if isinstance(e.get("resource"), dict)]


def _codings(concept: Any) -> list[dict[str, Any]]:
    return [c for c in (concept or {}).get("coding") or () if isinstance(c, dict)] if isinstance(concept, dict) else []


def _text_of(resource: Mapping[str, Any]) -> str:
    code = resource.get("code") or resource.get("medicationCodeableConcept") or {}
    parts = [str(code.get("text") or "")] + [str(c.get("display") or "") for c in _codings(code)]
    parts += [str(n.get("text") or "") for n in resource.get("note") or () if isinstance(n, dict)]
    for site in resource.get("bodySite") or ():
        parts += [str(site.get("text") or "")] + [str(c.get("display") or "") for c in _codings(site)]
    if isinstance(resource.get("valueString"), str):
        parts.append(resource["valueString"])
    return " ".join(p for p in parts if p)


class InputRecord:
    """The raw FHIR input of one call (its prefetch), read without the service's mapping layer."""

    def __init__(self, prefetch: Mapping[str, Any], now: datetime) -> None:
        self.now = now
        patients = _resources(prefetch.get("patient"))
        self.patient: dict[str, Any] = patients[0] if patients else {}
        self.conditions = _resources(prefetch.get("conditions"))
        observations = _resources(prefetch.get("observations"))
        self.observations = [r for r in observations if r.get("resourceType") == "Observation"]
        self.medications = _resources(prefetch.get("medications"))
        self.procedures = _resources(prefetch.get("procedures"))
        self.labs = [lab for resource in self.observations for lab in self._read_labs(resource)]

    # ------------------------------------------------------------------ patient

    @property
    def deceased(self) -> bool:
        return self.patient.get("deceasedBoolean") is True or bool(self.patient.get("deceasedDateTime"))

    def age_days(self) -> int | None:
        born = _parse_time(self.patient.get("birthDate"))
        return None if born is None else (self.now - born).days

    def adult(self) -> bool:
        days = self.age_days()
        return days is not None and days >= 18 * 365

    # ------------------------------------------------------------------ labs

    def _read_labs(self, resource: Mapping[str, Any]) -> Iterable[Lab]:
        if resource.get("status") in {"entered-in-error", "cancelled", "preliminary", "registered"}:
            return
        when = (_parse_time(resource.get("effectiveDateTime"))
                or _parse_time((resource.get("effectivePeriod") or {}).get("start"))
                or _parse_time(resource.get("issued")))
        if when is None:
            return
        parts = [resource, *(c for c in resource.get("component") or () if isinstance(c, dict))]
        for part in parts:
            codes = {str(c.get("code")) for c in _codings(part.get("code"))}
            quantity = part.get("valueQuantity") or {}
            value = quantity.get("value")
            if not isinstance(value, int | float) or isinstance(value, bool):
                continue
            for analyte, concepts in _ANALYTE_CONCEPTS.items():
                if codes & _codes(concepts):
                    canonical = self._canonical(analyte, float(value), quantity)
                    if canonical is not None:
                        yield Lab(analyte, canonical, when, str(resource.get("id")))

    @staticmethod
    def _canonical(analyte: str, value: float, quantity: Mapping[str, Any]) -> float | None:
        unit = str(quantity.get("code") or quantity.get("unit") or "").lower().replace(" ", "")
        if analyte == "egfr":
            return value if unit.startswith("ml/min") else None
        if analyte == "bmi" and unit.startswith("kg/m"):
            return value
        factor = _TO_CANONICAL[analyte].get(unit)
        return None if factor is None else value * factor

    def current(self, analyte: str) -> list[Lab]:
        since = self.now - timedelta(days=CHEMISTRY_DAYS)
        return [lab for lab in self.labs if lab.analyte == analyte and since <= lab.when <= self.now]

    def calcium_candidates(self) -> list[tuple[float, Lab]]:
        """Every current calcium, measured and Payne-corrected with any current albumin below 4 g/dL."""
        out: list[tuple[float, Lab]] = []
        albumins = self.current("albumin")
        for calcium in self.current("calcium"):
            out.append((calcium.value, calcium))
            out += [(calcium.value + 0.8 * (4 - a.value), calcium) for a in albumins if a.value < 4]
        return out

    def max_calcium(self) -> float | None:
        values = [value for value, _ in self.calcium_candidates()]
        return max(values) if values else None

    def max_ca_x_p(self) -> float | None:
        products = [
            value * phosphate.value
            for value, calcium in self.calcium_candidates()
            for phosphate in self.current("phosphate")
            if abs((calcium.when - phosphate.when).days) <= PAIR_DAYS
        ]
        return max(products) if products else None

    def egfr_below(self, limit: float) -> bool:
        return any(lab.value < limit for lab in self.current("egfr"))

    # ------------------------------------------------------------------ conditions, procedures, medications

    def _asserted_conditions(self) -> list[dict[str, Any]]:
        out = []
        for condition in self.conditions:
            verification = {c.get("code") for c in _codings(condition.get("verificationStatus"))}
            if verification & _NOT_ASSERTED:
                continue
            clinical = {c.get("code") for c in _codings(condition.get("clinicalStatus"))}
            if clinical and not clinical & _CURRENT_CLINICAL:
                continue
            if not clinical and (condition.get("abatementDateTime") or condition.get("abatementString")):
                continue
            out.append(condition)
        return out

    def has_condition(self, concepts: tuple[str, ...]) -> bool:
        wanted = _codes(concepts)
        coded = any({str(c.get("code")) for c in _codings(r.get("code"))} & wanted for r in self._asserted_conditions())
        done = {"completed", "in-progress"}
        performed = any(p.get("status") in done and {str(c.get("code")) for c in _codings(p.get("code"))} & wanted
                        for p in self.procedures)
        return coded or performed

    def severe_renal(self) -> bool:
        return self.has_condition(_SEVERE_RENAL) or self.egfr_below(30)

    def any_ckd(self) -> bool:
        return self.has_condition(_ANY_CKD) or self.egfr_below(60)

    def calcinosis_on_record(self) -> bool:
        pattern = re.compile(r"calcinos|calcif|calciphyla", re.IGNORECASE)
        wanted = _codes(_CALCINOSIS)
        sources = [*self._asserted_conditions(), *self.observations]
        return any({str(c.get("code")) for c in _codings(r.get("code"))} & wanted or pattern.search(_text_of(r))
                   for r in sources)

    def calciphylaxis_on_record(self) -> bool:
        """Coded calciphylaxis, or a condition or result whose text names it (E83.59 "Calciphylaxis")."""
        pattern = re.compile(r"calciphyla", re.IGNORECASE)
        return self.has_condition(("calciphylaxis",)) or any(
            pattern.search(_text_of(r)) for r in [*self._asserted_conditions(), *self.observations])

    def skin_lesion(self) -> bool:
        """An asserted ulcer, necrosis, purpura or livedo finding that names or codes the skin."""
        skin_codes = _codes(("skin_ulcer", "necrosis", "purpura", "livedo", "livedoid_vasculitis", "calciphylaxis"))
        for resource in [*self._asserted_conditions(), *self.observations]:
            if {str(c.get("code")) for c in _codings(resource.get("code"))} & skin_codes:
                return True
            text = _text_of(resource)
            if _LESION_WORDS.search(text) and (_SKIN_WORDS.search(text) or resource.get("bodySite")):
                return True
        return False

    def medication(self, concepts: tuple[str, ...], days: int, *, group: bool = False,
                   current_only: bool = False) -> bool:
        """An order for one of these drugs: active or on hold, or (unless ``current_only``) written within
        ``days``. A flag that needs a drug uses the wide reading, a flag that needs its absence the narrow one,
        so that the checker never calls a card unjustified on a reading the service may not share."""
        codes, names = _codes(concepts, group=group), _names(concepts, group=group)
        since = self.now - timedelta(days=days)
        for request in self.medications:
            if request.get("resourceType") != "MedicationRequest" or request.get("status") in {"entered-in-error"}:
                continue
            authored = _parse_time(request.get("authoredOn"))
            current = request.get("status") in {"active", "on-hold"}
            if not current and (current_only or authored is None or authored < since):
                continue
            medication = request.get("medicationCodeableConcept") or {}
            text = _text_of(request).lower()
            if {str(c.get("code")) for c in _codings(medication)} & codes or any(n in text for n in names):
                return True
        return False

    def risk_factor_count(self) -> int:
        """Calciphylaxis risk factors of the 2023 consensus (red_flags.yaml) visible in the raw input."""
        albumin = self.current("albumin")
        pth = [lab.value for lab in self.labs if lab.analyte == "pth"]
        bmi = [lab.value for lab in self.labs if lab.analyte == "bmi"]
        present = [
            self.medication(("warfarin",), 365),
            self.medication(("calcium_based_binder",), 90, group=True),
            self.medication(("active_vitamin_d",), 90, group=True),
            self.medication(("heparin_family",), 90, group=True),
            any(v > 1000 or v < 300 for v in pth),
            self.has_condition(("obesity",)) or any(v >= 30 for v in bmi),
            self.has_condition(("diabetes",)),
            any(a.value < 3.0 for a in albumin),
            (self.max_calcium() or 0) > 10.2,
            any(p.value > 4.5 for p in self.current("phosphate")),
        ]
        return sum(present)


# ---------------------------------------------------------------------- one rule per flag or risk

def _at_least(value: float | None, limit: float) -> bool:
    return value is not None and value >= limit - TOLERANCE


def _ca_x_p_elevated(r: InputRecord) -> bool:
    product = r.max_ca_x_p()
    return r.adult() and (_at_least(product, 60) or (_at_least(product, 55) and r.any_ckd()))


_JUSTIFICATIONS: dict[str, tuple[str, Callable[[InputRecord], bool]]] = {
    "severe-hypercalcemia": ("a current calcium (or corrected calcium) >= 14 mg/dL",
                             lambda r: _at_least(r.max_calcium(), 14)),
    "moderate-hypercalcemia": ("a current calcium (or corrected calcium) >= 12 mg/dL",
                               lambda r: _at_least(r.max_calcium(), 12)),
    "high-calcium-phosphate-product": ("an adult with current calcium x phosphate >= 70 mg2/dL2 within 7 days",
                                       lambda r: r.adult() and _at_least(r.max_ca_x_p(), 70)),
    "elevated-calcium-phosphate-product": ("an adult with current Ca x P >= 60, or >= 55 with CKD",
                                           _ca_x_p_elevated),
    "metastatic-calcification-risk": ("an adult with current Ca x P >= 55 and CKD G4-5D",
                                      lambda r: r.adult() and _at_least(r.max_ca_x_p(), 55) and r.severe_renal()),
    "severe-hyperphosphatemia": ("a current phosphate >= 7 mg/dL with CKD",
                                 lambda r: any(_at_least(p.value, 7) for p in r.current("phosphate"))
                                 and r.any_ckd()),
    "suspected-calciphylaxis": ("kidney failure evidence and a skin ulcer, necrosis or purpura finding",
                                lambda r: r.severe_renal() and r.skin_lesion()),
    "untreated-calciphylaxis": ("calciphylaxis on record and no thiosulfate or cinacalcet order in 30 days",
                                lambda r: r.calciphylaxis_on_record()
                                and not r.medication(("sodium_thiosulfate", "cinacalcet"), 30, current_only=True)),
    "possible-non-uremic-calciphylaxis": ("a skin necrosis or purpura finding and warfarin within a year",
                                          lambda r: r.skin_lesion() and r.medication(("warfarin",), 365)),
    "neonatal-ceftriaxone-calcium": ("age <= 28 days with ceftriaxone and IV calcium",
                                     lambda r: (r.age_days() or 10**6) <= 28 and r.medication(("ceftriaxone",), 7)
                                     and r.medication(("iv_calcium",), 7, group=True)),
    "infant-ceftriaxone-gestational-age": ("age <= 133 days with ceftriaxone",
                                           lambda r: (r.age_days() or 10**6) <= 133
                                           and r.medication(("ceftriaxone",), 7)),
    "infected-ulcerated-calcinosis": ("calcinosis on record and an ulcer or infection",
                                      lambda r: r.calcinosis_on_record()),
    "joint-destruction": ("calcinosis on record", lambda r: r.calcinosis_on_record()),
    "calciphylaxis-risk-profile": ("CKD G4-5D or transplant with at least 2 consensus risk factors",
                                   lambda r: r.severe_renal() and r.risk_factor_count() >= 2),
}
_NEEDS_CALCINOSIS = {"subtype-assessment", "missing-workup", "therapy-options"}


def _flags_of(extension: Mapping[str, Any]) -> list[str]:
    flags = [extension["flag"]] if extension.get("flag") else []
    flags += list(extension.get("also") or ()) + list(extension.get("flags") or ())
    if extension.get("risk"):
        flags.append(extension["risk"])
    return flags


def check_cards(cards: list[dict[str, Any]], prefetch: Mapping[str, Any], now: datetime) -> list[CardProblem]:
    """Every way in which these cards are not justified by this input; empty when all are."""
    record = InputRecord(prefetch, now)
    problems: list[CardProblem] = []
    for card in cards:
        summary = str(card.get("summary") or "")
        extension = (card.get("extension") or {}).get("calcinosis-cds") or {}

        def problem(text: str, summary: str = summary) -> None:
            problems.append(CardProblem(summary, text))

        if len(summary) >= SUMMARY_LIMIT:
            problem(f"summary is {len(summary)} characters (limit < {SUMMARY_LIMIT})")
        if record.deceased:
            problem("card for a deceased patient")
        kind = extension.get("kind")
        if kind in _NEEDS_CALCINOSIS:
            if not record.calcinosis_on_record():
                problem(f"{kind} card without calcinosis (code or text) on record")
        elif kind not in {"red-flag", "risk"}:
            problem(f"no justification rule for card kind {kind!r}")
        elif not _flags_of(extension):
            problem(f"{kind} card names no flag or risk")
        if kind == "red-flag" and card.get("indicator") == "critical" and extension.get("flag") not in {
                "suspected-calciphylaxis", "untreated-calciphylaxis", "high-calcium-phosphate-product",
                "severe-hypercalcemia", "neonatal-ceftriaxone-calcium"}:
            problem(f"critical indicator on non-critical flag {extension.get('flag')!r}")
        for flag in _flags_of(extension):
            rule = _JUSTIFICATIONS.get(flag)
            if rule is None:
                problem(f"no justification rule for {flag!r}")
            elif not rule[1](record):
                problem(f"{flag}: the input has no {rule[0]}")
    return problems
