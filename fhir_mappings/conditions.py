"""Conditions, skin findings and the CKD stage.

Implements the clinical brief §2a–§2d (ICD-10-CM, SNOMED CT and body-site codes), §2c and §9.5 (calcinosis
and calciphylaxis detection: L94.2 in both ICD systems, SNOMED 237900002/717043006, ORPHA 280062/280065,
17141001 on input; E83.59 / WHO E83.5 count as calciphylaxis ONLY together with an ulcer or necrosis skin
code), §9.8 (FR Core: when the code is R69 or absent, text matching on ``code.text`` and ``note``; this module reads
both for every active Condition), rule C5
(refuted/entered-in-error and negated text ignored) and §4d/§9.5 (KDIGO G category from eGFR or coded CKD,
whichever is more severe; N18.5 + Z99.2 is ESRD on dialysis in French data).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Final

from fhir_mappings._common import (
    codings,
    first_code,
    match_codings,
    notes_text,
    parse_datetime,
    period_start,
    provenance_for,
)
from fhir_mappings.context import context_conditions_from_text
from fhir_mappings.derived import G_ORDER, GCategory, kdigo_g_category
from fhir_mappings.facts import (
    Certainty,
    CkdStage,
    ConditionFact,
    DerivedValue,
    Finding,
    LabValue,
    Provenance,
    SetAsideFinding,
    SkinFindings,
    StageDiscrepancy,
)
from fhir_mappings.models import CodeableConcept, Condition, Observation
from fhir_mappings.terminology import ICD10, ICD10_CM, find_bodysite_names, fold_text, lookup
from fhir_mappings.text import SetAside, TextFinding, read_skin_text, text_names_skin

__all__ = [
    "FindingsCollector",
    "add_calciphylaxis_proxies",
    "body_sites_of",
    "ckd_stage",
    "read_condition",
    "read_finding_observation",
]

FINDING_OF_CONCEPT: Final[dict[str, str]] = {
    "calcinosis_cutis": "calcinosis",
    "calciphylaxis": "calciphylaxis",
    "skin_ulcer": "ulcer",
    "necrosis": "necrosis",
    "purpura": "purpura_livedo",
    "livedo": "purpura_livedo",
    "pain_of_skin": "pain",
    "skin_nodule": "nodule",
    # SNOMED 6595006 "Calcinosis" (and its descendants sent with it) is calcinosis cutis only on the skin.
    "calcinosis_unspecified": "calcinosis",
}
# Broad codes ("Pain" 22253000, "Necrosis of anatomical site", "Calcinosis") count as skin findings only on a
# resource with a skin body site or a text that names the skin (issue 11); otherwise they are set aside.
_NEEDS_SKIN_SITE: Final = "needs_skin_site"
# Calciphylaxis has no ICD code of its own: E83.59 (ICD-10-CM) or E83.5 (WHO/CIM-10) with a skin ulcer or
# necrosis code (brief §2c, §5c R39, §9.5).
_CALCIPHYLAXIS_PROXY: Final = frozenset({(ICD10_CM, "E83.59"), (ICD10, "E83.5")})
_CALCIPHYLAXIS_SKIN: Final = frozenset({"ulcer", "necrosis"})
_STAGE_OF_CONCEPT: Final[dict[str, GCategory]] = {
    # Stage 3 without a/b is read as the less severe G3a; more severe evidence (eGFR) still wins.
    "ckd_3": "G3a",
    "ckd_3a": "G3a",
    "ckd_3b": "G3b",
    "ckd_4": "G4",
    "ckd_5": "G5",
    "esrd": "G5",
    "dialysis": "G5",
}
_ACTIVE_CLINICAL: Final = frozenset({"active", "recurrence", "relapse"})
_NOT_CONFIRMED: Final = frozenset({"refuted", "entered-in-error"})


class FindingsCollector:
    """Gathers skin findings; one finding per (kind, resource) so a coded and a text match do not double."""

    def __init__(self) -> None:
        self._findings: dict[str, dict[str, Finding]] = {}
        self._set_aside: list[SetAsideFinding] = []
        # Kinds found on coded resources (the E83.59 calciphylaxis proxy needs a coded ulcer or necrosis).
        self.coded_kinds: set[str] = set()

    def add(self, kind: str, finding: Finding) -> None:
        key = finding.provenance.reference or f"{finding.provenance.resource_type}#{id(finding)}"
        group = self._findings.setdefault(kind, {})
        current = group.get(key)
        # One finding per (kind, resource); an asserted reading replaces a suspected one.
        if current is None or (current.certainty == "suspected" and finding.certainty == "asserted"):
            group[key] = finding

    def add_coded(self, kind: str, finding: Finding) -> None:
        self.coded_kinds.add(kind)
        self.add(kind, finding)

    def set_aside(self, item: SetAsideFinding) -> None:
        self._set_aside.append(item)

    def add_text(
        self,
        found: tuple[tuple[TextFinding, ...], tuple[SetAside, ...]],
        provenance: Provenance,
        effective: datetime | None,
        sites: tuple[str, ...],
        certainty: Certainty = "asserted",
    ) -> None:
        findings, set_aside = found
        for text_finding in findings:
            merged = tuple(dict.fromkeys((*sites, *text_finding.body_sites)))
            # A text in a provisional diagnosis stays suspected whatever it asserts.
            level: Certainty = "suspected" if "suspected" in (certainty, text_finding.certainty) else "asserted"
            self.add(text_finding.kind,
                     Finding(text_finding.kind, provenance, text_finding.clause, effective, merged, level))
        for item in set_aside:
            self.set_aside(SetAsideFinding(item.kind, provenance, item.clause, item.reason, item.cue))

    def has(self, kind: str) -> bool:
        return bool(self._findings.get(kind))

    def build(self) -> SkinFindings:
        def of(kind: str) -> tuple[Finding, ...]:
            return tuple(self._findings.get(kind, {}).values())

        return SkinFindings(
            calcinosis=of("calcinosis"),
            pain=of("pain"),
            ulcer=of("ulcer"),
            necrosis=of("necrosis"),
            purpura_livedo=of("purpura_livedo"),
            nodule=of("nodule"),
            calciphylaxis=of("calciphylaxis"),
            biopsy_calciphylaxis=of("biopsy_calciphylaxis"),
            infection=of("infection"),
            joint_destruction=of("joint_destruction"),
            local_injury=of("local_injury"),
            set_aside=tuple(self._set_aside),
        )


def body_sites_of(concepts: Iterable[CodeableConcept | None], locales: tuple[str, ...]) -> tuple[str, ...]:
    """Body-site concept ids from SNOMED skin-structure codes (brief §2d), else from the site's text."""
    sites: dict[str, None] = {}
    for concept in concepts:
        if not concept:
            continue
        items = codings(concept)
        for _coding, match in match_codings(items):
            if match.kind == "bodysite":
                sites.setdefault(match.concept_id, None)
        for text in (concept.get("text"), *(c.get("display") for c in items)):
            if text:
                for site in find_bodysite_names(fold_text(text), locales):
                    sites.setdefault(site, None)
    return tuple(sites)


def _is_active(clinical: str | None, verification: str | None) -> bool:
    return verification not in _NOT_CONFIRMED and (clinical is None or clinical in _ACTIVE_CLINICAL)


def _abated(condition: Condition, now: datetime) -> bool:
    """An abatement[x] that has happened (a future abatement date is not an end yet)."""
    when = parse_datetime(condition.get("abatementDateTime")) or period_start(condition.get("abatementPeriod"))
    if when is not None:
        return when <= now
    return any(condition.get(key) for key in ("abatementString", "abatementAge", "abatementRange", "abatementPeriod"))


def _coded_finding(
    fact: ConditionFact, match_groups: tuple[str, ...], skin_scope: bool, collector: FindingsCollector,
    when: datetime | None, sites: tuple[str, ...],
) -> None:
    kind = FINDING_OF_CONCEPT.get(fact.concept)
    if kind is None:
        return
    if _NEEDS_SKIN_SITE in match_groups and not skin_scope:
        collector.set_aside(SetAsideFinding(kind, fact.provenance, fact.text or fact.provenance.display,
                                            "no-skin-site", fact.provenance.code))
        return
    collector.add_coded(kind, Finding(kind, fact.provenance, None, when, sites, fact.certainty))


def read_condition(
    condition: Condition, collector: FindingsCollector, locales: tuple[str, ...], now: datetime
) -> list[ConditionFact]:
    """ConditionFacts for every distinct concept the Condition is coded with; skin findings go to ``collector``."""
    clinical = first_code(condition.get("clinicalStatus"))
    verification = first_code(condition.get("verificationStatus"))
    if clinical is None and _abated(condition, now):
        # FHIR R4 con-4: a condition with an abatement is inactive, resolved or in remission.
        clinical = "resolved"
    onset = parse_datetime(condition.get("onsetDateTime")) or period_start(condition.get("onsetPeriod"))
    recorded = parse_datetime(condition.get("recordedDate"))
    sites = body_sites_of(condition.get("bodySite", []), locales)
    code = condition.get("code") or CodeableConcept()
    code_text = code.get("text")
    resource_id = condition.get("id")
    facts: dict[str, ConditionFact] = {}
    groups: dict[str, tuple[str, ...]] = {}
    for coding, match in match_codings(codings(code)):
        if match.kind != "condition" or match.concept_id in facts:
            continue
        facts[match.concept_id] = ConditionFact(
            concept=match.concept_id,
            provenance=provenance_for("Condition", resource_id, coding, match, code_text),
            clinical_status=clinical,
            verification_status=verification,
            onset=onset,
            recorded=recorded,
            body_sites=sites,
            text=code_text,
        )
        groups[match.concept_id] = match.groups
    texts = [code_text or "", notes_text(condition.get("note", []))]
    # Conditions the text names that the codes do not ("valve mécanique", "greffe rénale", FR Core R69).
    named = context_conditions_from_text(
        texts, resource_type="Condition", resource_id=resource_id, coded=facts, clinical_status=clinical,
        verification_status=verification, onset=onset, recorded=recorded,
    )
    if not _is_active(clinical, verification):
        return [*facts.values(), *named]
    when = onset or recorded
    certainty: Certainty = "suspected" if verification in {"provisional", "differential"} else "asserted"
    # A skin-specific code (L94.2, a skin ulcer) or a skin body site makes the whole Condition about the skin.
    coded_skin = any(c in FINDING_OF_CONCEPT and _NEEDS_SKIN_SITE not in groups[c] for c in facts)
    skin_scope = coded_skin or bool(sites) or any(text_names_skin(t) for t in texts)
    for fact in facts.values():
        _coded_finding(fact, groups[fact.concept], skin_scope, collector, when, sites)
    # FR Core sends R69 (or no code) with free text when CIM-10 has no code (§9.8); a coded lesion's text
    # often carries what the code cannot ("nodules fermes douloureux"), so code.text and notes are always read.
    provenance = Provenance("Condition", resource_id, display=code_text)
    for text in texts:
        found = read_skin_text(text, skin_context=coded_skin or bool(sites))
        collector.add_text(found, provenance, when, sites, certainty)
    return [*facts.values(), *named]


def add_calciphylaxis_proxies(conditions: Iterable[ConditionFact], collector: FindingsCollector) -> None:
    """E83.59 / WHO E83.5 become calciphylaxis evidence only beside an active ulcer or necrosis code."""
    active = [c for c in conditions if c.is_active]
    if not collector.coded_kinds & _CALCIPHYLAXIS_SKIN:
        return
    for fact in active:
        if (fact.provenance.system, fact.provenance.code) in _CALCIPHYLAXIS_PROXY:
            collector.add("calciphylaxis", Finding("calciphylaxis", fact.provenance, None, fact.onset, fact.body_sites,
                                                   fact.certainty))


def read_finding_observation(obs: Observation, collector: FindingsCollector, locales: tuple[str, ...]) -> None:
    """A non-laboratory Observation: coded skin findings (code or coded value) and its free text."""
    if obs.get("status") in {"entered-in-error", "cancelled"}:
        return
    effective = parse_datetime(obs.get("effectiveDateTime") or obs.get("effectiveInstant")) or period_start(
        obs.get("effectivePeriod")
    ) or parse_datetime(obs.get("issued"))
    sites = body_sites_of([obs.get("bodySite")], locales)
    resource_id = obs.get("id")
    code = obs.get("code")
    code_text = code.get("text") if code else None
    text = "\n".join(t for t in (code_text, obs.get("valueString"), notes_text(obs.get("note", []))) if t)
    coded: list[tuple[str, Provenance, bool]] = []
    for concept in (code, obs.get("valueCodeableConcept")):
        for coding, match in match_codings(codings(concept)):
            kind = FINDING_OF_CONCEPT.get(match.concept_id)
            if kind is not None:
                broad = _NEEDS_SKIN_SITE in match.groups
                coded.append((kind, provenance_for("Observation", resource_id, coding, match), broad))
    lesion = any(not broad for _, _, broad in coded)
    skin_scope = lesion or bool(sites) or text_names_skin(text)
    for kind, provenance, broad in coded:
        if broad and not skin_scope:
            collector.set_aside(SetAsideFinding(kind, provenance, code_text, "no-skin-site", provenance.code))
        else:
            collector.add_coded(kind, Finding(kind, provenance, None, effective, sites))
    if text:
        provenance = Provenance("Observation", resource_id, display=code_text)
        collector.add_text(read_skin_text(text, skin_context=lesion or bool(sites)), provenance, effective, sites)


def _ref(provenance: Provenance) -> str:
    return provenance.reference or f"{provenance.resource_type} (no id)"


def _condition_stage(conditions: Iterable[ConditionFact]) -> list[tuple[ConditionFact, GCategory | None, bool]]:
    """Every active renal condition with the stage it codes and whether it codes dialysis."""
    staged: list[tuple[ConditionFact, GCategory | None, bool]] = []
    for fact in conditions:
        if not fact.is_active:
            continue
        on_dialysis = fact.concept == "dialysis" or (
            (match := lookup(fact.provenance.system, fact.provenance.code)) is not None and "dialysis" in match.groups
        )
        fact_stage: GCategory | None = "G5" if on_dialysis else _STAGE_OF_CONCEPT.get(fact.concept)
        if fact_stage is not None or fact.concept in {"ckd", "kidney_transplant"}:
            staged.append((fact, fact_stage, on_dialysis))
    return staged


def _worst(stages: Iterable[GCategory | None]) -> GCategory | None:
    known = [s for s in stages if s is not None]
    return max(known, key=G_ORDER.index) if known else None


# A current eGFR at or above this contradicts a coded end-stage or dialysis status (a post-dialysis creatinine
# can give an eGFR of 15-29 in a patient who is still on dialysis, so the margin is wide).
_EGFR_CONTRADICTS_DIALYSIS: Final = 30.0


def _when_coded(fact: ConditionFact) -> str:
    moment = fact.recorded or fact.onset
    return f" {moment.date().isoformat()}" if moment else ""


def ckd_stage(
    conditions: Iterable[ConditionFact], reported: LabValue | None, computed: DerivedValue | None
) -> tuple[CkdStage | None, dict[int, str]]:
    """KDIGO G category, and the coded stages a current eGFR supersedes (by ``id()`` of the fact, with why).

    A current laboratory value beats an old coded stage (issue 10): the stage comes from the current eGFR
    (reported preferred, else computed); a coded stage more severe than it, or a coded ESRD/dialysis status
    with an eGFR of 30 or more, is superseded and shown as a discrepancy. Without a current eGFR the most
    severe active coded stage is used. A kidney transplant is never superseded.
    """
    staged = _condition_stage(conditions)
    evidence = [f"{_ref(f.provenance)} {f.provenance.code} ({f.concept})" for f, _, _ in staged]
    value: float | None = None
    if reported is not None and reported.value is not None and reported.comparator is None:
        value, source, when = reported.value, "egfr", reported.effective
        evidence.insert(0, f"{_ref(reported.provenance)} eGFR {reported.value:g} {reported.unit}")
    elif computed is not None:
        value, source, when = computed.value, "computed-egfr", computed.effective
        evidence.insert(0, f"eGFR {computed.value:.0f} {computed.unit} ({computed.method})")
    transplant = any(f.concept == "kidney_transplant" for f, _, _ in staged)
    superseded: dict[int, str] = {}
    contradicted_by: list[StageDiscrepancy] = []
    if value is None:
        if not staged:
            return None, superseded
        coded = _worst(stage for _, stage, _ in staged)
        dialysis = any(d for _, _, d in staged)
        return CkdStage(coded, dialysis, transplant, "condition" if coded else "none", tuple(evidence)), superseded
    stage = kdigo_g_category(value)
    on = f" on {when.date().isoformat()}" if when else ""
    for fact, fact_stage, on_dialysis in staged:
        if fact.concept == "kidney_transplant" or fact_stage is None:
            continue
        contradicted = (on_dialysis or fact.concept == "esrd") and value >= _EGFR_CONTRADICTS_DIALYSIS
        if contradicted or (not on_dialysis and fact.concept != "esrd"
                            and G_ORDER.index(fact_stage) > G_ORDER.index(stage)):
            label = fact.provenance.display or fact.concept
            superseded[id(fact)] = f"{label} coded{_when_coded(fact)}; eGFR {value:.0f}{on}"
            contradicted_by.append(StageDiscrepancy(fact.concept, label, fact.recorded or fact.onset, value, when))
    kept = [(f, st, d) for f, st, d in staged if id(f) not in superseded]
    dialysis = any(d for _, _, d in kept)
    coded = _worst(st for _, st, _ in kept)
    # Dialysis (or a coded end stage that still stands) is G5 whatever the eGFR; otherwise the eGFR decides.
    final: GCategory = "G5" if dialysis or coded == "G5" else stage
    notes = tuple(evidence) + tuple(f"discrepancy: {why}" for why in superseded.values())
    return CkdStage(final, dialysis, transplant, source, notes, tuple(contradicted_by)), superseded
