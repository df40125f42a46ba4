"""The full assessment as one JSON document, stored with the audit record and shown by the assessment page.

The page renders this document as it was when the cards were made (issue 12: "rendered from the audit trail's
stored facts, not recomputed"): the differential with its scores, each rule that fired with its inputs and
citation, the gates, the red flags, the patient-specific filtering of therapy, the work-up, the data set
aside or not used, the knowledge version, and the time series of calcium (measured and corrected),
phosphate, Ca x P, PTH and eGFR drawn from every Observation the service saw, with reference ranges and the
thresholds the rules use. Values are in the canonical units of ``fhir_mappings``; the page formats them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fhir_mappings.derived import TimeIndex, ca_x_p, calcium_for_draw, nearest_within
from fhir_mappings.facts import LabValue, PatientFacts, StatusFact
from hooks.engine.assessment import Assessment
from hooks.engine.evidence import Evidence
from hooks.engine.knowledge import Knowledge, load_knowledge

__all__ = ["MAX_SERIES_POINTS", "SNAPSHOT_VERSION", "assessment_snapshot"]

SNAPSHOT_VERSION = 1
_SERIES = ("calcium_total", "calcium_corrected", "phosphate", "pth_intact", "egfr")
# The record is kept for years: a series keeps its newest points only (a long dialysis history has thousands).
MAX_SERIES_POINTS = 400
# Ca x P pairs draws within 7 days (brief §5d); albumin pairs within 48 h (brief §4b, rule C2).
_PAIRING_HOURS = 168.0
_ALBUMIN_HOURS = 48.0
_THRESHOLDS = {
    "calcium_total": ("calcium_warning", "calcium_critical"),
    "calcium_corrected": ("calcium_warning", "calcium_critical"),
    "phosphate": ("phosphate_ckd_warning",),
    "ca_x_p": ("ca_x_p_ckd_warning", "ca_x_p_any_warning", "ca_x_p_critical"),
    "pth_intact": ("pth_ckd_high", "pth_major"),
    "egfr": ("bisphosphonate_crcl", "colchicine_crcl"),
}


Iso = Callable[[datetime], str]


def _iso_memo() -> Iso:
    """``datetime.isoformat`` with a memo for one snapshot: a draw time appears in its series point and in the
    evidence of every rule that read it (100 texts of 18 moments for the dialysis call, at ~1 µs each). Keyed
    by the offset too: 10:00+01:00 and 09:00Z are equal datetimes but are written as they were received."""
    texts: dict[tuple[datetime, timedelta | None], str] = {}

    def iso(moment: datetime) -> str:
        key = (moment, moment.utcoffset())
        text = texts.get(key)
        if text is None:
            text = texts[key] = moment.isoformat()
        return text

    return iso


def _evidence(items: tuple[Evidence, ...] | list[Evidence], iso: Iso) -> list[dict[str, Any]]:
    return [item.to_dict(iso) for item in items]


def _point(value: LabValue, iso: Iso) -> dict[str, Any]:
    point: dict[str, Any] = {"at": iso(value.effective) if value.effective else None, "value": value.value,
                             "reference": value.provenance.reference}
    if value.reference_range is not None:
        point["range"] = [value.reference_range.low, value.reference_range.high]
    if value.flags:
        point["flags"] = list(value.flags)
    return point


def _bounded(series: dict[str, Any]) -> dict[str, Any]:
    """Oldest first, at most ``MAX_SERIES_POINTS`` (the newest); ``omitted`` says how many older were left out."""
    points = series["points"]
    if len(points) > MAX_SERIES_POINTS:
        series["omitted"] = len(points) - MAX_SERIES_POINTS
        series["points"] = points[-MAX_SERIES_POINTS:]
    return series


def _series(facts: PatientFacts, knowledge: Knowledge, iso: Iso) -> dict[str, Any]:
    found: dict[str, Any] = {}
    for analyte in _SERIES:
        history = [v for v in (facts.labs[analyte].history if analyte in facts.labs else ()) if v.value is not None]
        if history:
            found[analyte] = _bounded({"unit": history[0].unit, "points": [_point(v, iso) for v in reversed(history)]})
    calcium = [v for v in (facts.labs["calcium_total"].history if "calcium_total" in facts.labs else ())
               if v.value is not None and v.effective is not None]
    albumin = TimeIndex(facts.labs["albumin"].history if "albumin" in facts.labs else ())
    ionized = TimeIndex(facts.labs["calcium_ionized"].history if "calcium_ionized" in facts.labs else ())
    phosphate = TimeIndex(facts.labs["phosphate"].history if "phosphate" in facts.labs else ())
    corrected, products = [], []
    for value in reversed(calcium):
        draw = calcium_for_draw(value, albumin=albumin, ionized=ionized, albumin_pairing_hours=_ALBUMIN_HOURS,
                                correct_when_albumin_at_least_4=False)
        if draw is None:
            continue
        if "uncorrected" not in draw.flags and "albumin-at-least-4" not in draw.flags:
            corrected.append({"at": iso(value.effective) if value.effective else None, "value": draw.value})
        paired = nearest_within(value, phosphate, _PAIRING_HOURS)
        product = ca_x_p(draw, paired) if paired is not None else None
        if product is not None:
            products.append({"at": iso(product.effective) if product.effective else None,
                             "value": round(product.value, 2)})
    if corrected:
        found["calcium_corrected_computed"] = _bounded({"unit": "mg/dL", "points": corrected})
    if products:
        found["ca_x_p"] = _bounded({"unit": "mg2/dL2", "points": products})
    for analyte, names in _THRESHOLDS.items():
        if analyte in found:
            found[analyte]["thresholds"] = {name: knowledge.threshold(name) for name in names}
    return found


def _status(status: StatusFact) -> dict[str, Any]:
    return {"status": status.status, "basis": status.basis,
            "evidence": [p.reference for p in status.evidence if p.reference]}


def assessment_snapshot(assessment: Assessment, facts: PatientFacts,
                        knowledge: Knowledge | None = None) -> dict[str, Any]:
    """Everything the assessment page shows, as plain JSON (no locale: the page localises)."""
    knowledge = knowledge or load_knowledge()
    iso = _iso_memo()
    a = assessment
    plan = a.therapy
    ckd = facts.ckd
    return {
        "version": SNAPSHOT_VERSION,
        "knowledge": {"version": a.ruleset_version, "hash": a.ruleset_hash},
        "evaluatedAt": iso(facts.now),
        "patient": {
            "reference": f"Patient/{facts.patient_id}" if facts.patient_id else None,
            "ageYears": round(facts.age_years, 1) if facts.age_years is not None else None,
            "sex": facts.sex,
            "pregnancy": _status(facts.pregnancy),
            "breastfeeding": _status(facts.breastfeeding),
            "mechanicalValve": _status(facts.mechanical_valve),
            "ckd": None if ckd is None else {"stage": ckd.stage, "dialysis": ckd.dialysis,
                                             "transplant": ckd.transplant, "source": ckd.source,
                                             "discrepancies": list(ckd.discrepancies)},
        },
        "subtype": a.subtype,
        "suggestion": {"minScore": knowledge.min_score, "minLead": knowledge.min_lead},
        "differential": [{"subtype": s, "score": score} for s, score in a.differential],
        "calcinosis": _evidence(a.calcinosis, iso),
        "rules": [{"id": h.rule.id, "finding": h.rule.finding.model_dump(), "points": h.rule.points,
                   "basis": h.rule.basis, "evidence": _evidence(h.evidence, iso)} for h in a.hits],
        "gates": {
            "metabolicAbnormality": {"holds": bool(a.metabolic), "evidence": _evidence(a.metabolic.evidence, iso)},
            "workupComplete": {"holds": bool(a.workup_complete), "missing": list(a.missing_for_idiopathic)},
            "calciphylaxisKept": a.calciphylaxis_kept,
        },
        "flags": [{"id": f.id, "indicator": f.indicator, "basis": f.basis, "evidence": _evidence(f.evidence, iso)}
                  for f in a.flags],
        "risks": [{"id": r.id, "factors": list(r.risk_factors), "evidence": _evidence(r.evidence, iso)}
                  for r in a.risks],
        "therapy": None if plan is None else {
            "subtype": plan.subtype,
            "extent": plan.extent,
            "indication": plan.indication,
            "options": list(plan.options),
            "variants": dict(plan.variants),
            "current": [{"option": u.option, "medication": u.medication,
                         "since": iso(u.since) if u.since else None} for u in plan.current],
            "tried": [{"option": u.option, "medication": u.medication,
                       "stopped": iso(u.stopped) if u.stopped else None} for u in plan.tried],
            "cautions": [{"id": c.caution_id, "option": c.option, "reason": c.reason, "level": c.level,
                          "contraindicates": c.contraindicates, "evidence": _evidence(c.evidence, iso)}
                         for c in plan.cautions],
            "unknowns": list(plan.unknowns),
        },
        "workup": {"missing": list(a.workup.missing), "deferred": list(a.workup.deferred),
                   "lastValues": {item: e.to_dict(iso) for item, e in a.workup.last_values}},
        "history": _evidence(a.history, iso),
        "unknowns": list(a.unknowns),
        "notUsed": [{"kind": k, "concept": c, "count": n, "code": code} for k, c, n, code in a.not_used],
        "setAside": [{"kind": s.kind, "reason": s.reason, "cue": s.cue, "reference": s.provenance.reference}
                     for s in facts.skin.set_aside],
        "series": _series(facts, knowledge, iso),
    }
