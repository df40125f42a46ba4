"""Property tests of the red-flag logic (hypothesis; bounded example counts).

1. Adding a normal lab value never creates a red flag. Stated precisely: Ca x P is a product, so a normal
   calcium next to a high phosphate can reveal a product over the KDOQI target (10.5 x 5.3 = 55.6 in CKD);
   that is the brief's rule working, not a spurious flag. So the property is: a normal value of an analyte
   outside the Ca x P pair never creates a flag, and a normal calcium or phosphate never creates one when
   the patient's other value of the pair is normal or absent.
   A normal creatinine or eGFR is excluded when a CKD or dialysis code is present: a current eGFR supersedes
   an older coded stage (issue 10), which may remove a CKD-only risk card and bring back the flag it replaced.
2. Raising calcium x phosphate never lowers the red-flag severity.
"""

from __future__ import annotations

from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hooks.engine.assessment import Assessment
from hooks.engine.knowledge import load_knowledge
from tests.fhir_builders import condition, lab, medication, patient
from tests.hooks.engine.conftest import run

SEVERITY = {"info": 1, "warning": 2, "critical": 3}

# Normal values well inside the brief's default ranges (§4e), in both unit systems.
NORMAL_LABS = {
    "calcium": [("17861-6", 9.2, "mg/dL"), ("2000-8", 2.3, "mmol/L")],
    "phosphate": [("2777-1", 3.4, "mg/dL"), ("14879-1", 1.1, "mmol/L")],
    "albumin": [("1751-7", 4.3, "g/dL"), ("1751-7", 43, "g/L")],
    "pth": [("2731-8", 35, "pg/mL"), ("2731-8", 35, "ng/L")],
    "creatinine": [("2160-0", 0.8, "mg/dL"), ("14682-9", 70, "umol/L")],
    "vitamin-d": [("62292-8", 35, "ng/mL"), ("14635-7", 85, "nmol/L")],
    "egfr": [("98979-8", 95, "mL/min/{1.73_m2}")],
    "magnesium": [("19123-9", 2.0, "mg/dL")],
    "bicarbonate": [("1963-8", 25, "mmol/L")],
    "alp": [("6768-6", 80, "U/L")],
}

conditions = st.lists(
    st.sampled_from(
        [
            ("L94.2", "icd10cm"),
            ("N18.32", "icd10cm"),
            ("N18.4", "icd10cm"),
            ("Z99.2", "icd10cm"),
            ("M34.1", "icd10cm"),
            ("E11.9", "icd10cm"),
            ("301364008", "snomed"),
            ("46742003", "snomed"),
            ("237900002", "snomed"),
            ("E21.1", "icd10cm"),
        ]
    ),
    max_size=4,
    unique=True,
)
medications = st.lists(
    st.sampled_from([("B01AA03", "Warfarin"), ("A12AA04", "Calcium carbonate"), ("A11CC04", "Calcitriol")]),
    max_size=2,
    unique=True,
)
calcium_mg = st.floats(min_value=7.0, max_value=15.0, allow_nan=False)
phosphate_mg = st.floats(min_value=2.0, max_value=9.0, allow_nan=False)


def _base(conds: list[tuple[str, str]], meds: list[tuple[str, str]]) -> list[dict[str, Any]]:
    return [
        patient("p1", birth="1965-03-03"),
        *(condition(c, s) for c, s in conds),
        *(medication(code, text=text) for code, text in meds),
    ]


def _flag_ids(assessment: Assessment) -> set[str]:
    """Raised flags, counting a risk card as the flag it replaces (metastatic-calcification-risk stands for
    elevated-calcium-phosphate-product in CKD G4-5D): a normal eGFR that supersedes an old CKD code turns the
    risk card back into that flag, which is not a new finding."""
    replaced = {r.replaces_flag for r in load_knowledge().risks if r.replaces_flag}
    by_risk = {r.id: r.replaces_flag for r in load_knowledge().risks}
    ids = {f.id for f in assessment.flags}
    ids |= {flag for r in assessment.risks if (flag := by_risk.get(r.id)) in replaced and flag is not None}
    return ids


def _severity(assessment: Assessment) -> int:
    return max((SEVERITY[f.indicator] for f in (*assessment.flags, *assessment.risks)), default=0)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conds=conditions,
    meds=medications,
    calcium=st.one_of(st.none(), calcium_mg),
    phosphate=st.one_of(st.none(), phosphate_mg),
    added=st.sampled_from(sorted(NORMAL_LABS)),
    variant=st.integers(min_value=0, max_value=1),
)
def test_adding_a_normal_lab_never_creates_a_red_flag(
    conds: list[tuple[str, str]],
    meds: list[tuple[str, str]],
    calcium: float | None,
    phosphate: float | None,
    added: str,
    variant: int,
) -> None:
    base = _base(conds, meds)
    if calcium is not None:
        base += [lab("17861-6", calcium, "mg/dL", days_ago=10), lab("1751-7", 4.2, "g/dL", days_ago=10)]
    if phosphate is not None:
        base.append(lab("2777-1", phosphate, "mg/dL", days_ago=10))
    partner_abnormal = (added == "calcium" and phosphate is not None and not 2.5 <= phosphate <= 4.5) or (
        added == "phosphate" and calcium is not None and not 8.5 <= calcium <= 10.5
    )
    renal_coded = any(code in {"N18.32", "N18.4", "Z99.2"} for code, _ in conds)
    if partner_abnormal or (renal_coded and added in {"creatinine", "egfr"}):
        return
    code, value, unit = NORMAL_LABS[added][variant % len(NORMAL_LABS[added])]
    _, before = run(*base)
    _, after = run(*base, lab(code, value, unit, days_ago=20))
    assert _flag_ids(after) <= _flag_ids(before)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    conds=conditions,
    meds=medications,
    calcium=st.floats(min_value=8.0, max_value=11.5, allow_nan=False),
    phosphate=phosphate_mg,
    raise_by=st.floats(min_value=0.1, max_value=6.0, allow_nan=False),
    raise_calcium=st.booleans(),
)
def test_raising_calcium_phosphate_product_never_lowers_severity(
    conds: list[tuple[str, str]],
    meds: list[tuple[str, str]],
    calcium: float,
    phosphate: float,
    raise_by: float,
    raise_calcium: bool,
) -> None:
    def with_values(ca: float, p: float) -> Assessment:
        resources = [
            *_base(conds, meds),
            lab("17861-6", ca, "mg/dL"),
            lab("1751-7", 4.2, "g/dL"),
            lab("2777-1", p, "mg/dL"),
        ]
        return run(*resources)[1]

    before = with_values(calcium, phosphate)
    after = with_values(calcium + raise_by, phosphate) if raise_calcium else with_values(calcium, phosphate + raise_by)
    assert _severity(after) >= _severity(before)
