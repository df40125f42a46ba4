"""``calcinosis-cds assess BUNDLE.json``: the engine offline, for clinical reviewers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hooks.cli import main
from tests.hooks.engine.conftest import CALCINOSIS_FIXTURES


def test_assess_prints_the_cards_of_a_bundle(capsys: pytest.CaptureFixture[str]) -> None:
    bundle = CALCINOSIS_FIXTURES / "seed004_sle_universalis_dystrophic.json"
    assert main(["assess", str(bundle), "--now", "2026-11-21", "--locale", "fr"]) == 0
    cards = json.loads(capsys.readouterr().out)["cards"]
    subtype = next(c for c in cards if c["extension"]["calcinosis-cds"]["kind"] == "subtype-assessment")
    assert subtype["extension"]["calcinosis-cds"]["subtype"] == "dystrophic"
    assert "dystrophique" in subtype["summary"]


def test_assess_is_deterministic_for_a_file(capsys: pytest.CaptureFixture[str]) -> None:
    bundle = str(CALCINOSIS_FIXTURES / "calciphylaxis_dialysis_warfarin.json")
    main(["assess", bundle, "--now", "2026-11-21T09:00:00+00:00"])
    first = capsys.readouterr().out
    main(["assess", bundle, "--now", "2026-11-21T09:00:00+00:00"])
    assert capsys.readouterr().out == first


def test_now_changes_what_is_current(capsys: pytest.CaptureFixture[str]) -> None:
    # A year later every laboratory value is outside its look-back window (rule C1): no Ca x P flag.
    bundle = str(CALCINOSIS_FIXTURES / "risk_dialysis_raised_ca_x_p.json")
    main(["assess", bundle, "--now", "2026-11-21"])
    assert json.loads(capsys.readouterr().out)["cards"]
    main(["assess", bundle, "--now", "2027-11-21"])
    assert json.loads(capsys.readouterr().out)["cards"] == []


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("{not json", "error"),
        ('{"resourceType": "Patient", "id": "x"}', "not a FHIR Bundle"),
        ('{"resourceType": "Bundle", "entry": []}', "no Patient"),
    ],
)
def test_bad_files_exit_2_with_a_message(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str, message: str
) -> None:
    path = tmp_path / "bundle.json"
    path.write_text(content, encoding="utf-8")
    assert main(["assess", str(path)]) == 2
    assert message in capsys.readouterr().err


def test_transaction_bundle_referring_to_its_patient_by_urn_uuid(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Synthea-style bundles: fullUrl urn:uuid:<id>, and every subject points at that urn.
    bundle = json.loads((CALCINOSIS_FIXTURES / "seed000_heroin_injection_dystrophic.json").read_text(encoding="utf-8"))
    urn = "urn:uuid:5a1c7e36-3f7a-4c55-9d5e-2b8f0f4b6a11"
    for entry in bundle["entry"]:
        resource = entry["resource"]
        if resource["resourceType"] == "Patient":
            entry["fullUrl"] = urn
        elif "subject" in resource:
            resource["subject"] = {"reference": urn}
    path = tmp_path / "bundle.json"
    path.write_text(json.dumps(bundle), encoding="utf-8")
    assert main(["assess", str(path), "--now", "2026-11-21"]) == 0
    cards = json.loads(capsys.readouterr().out)["cards"]
    kinds = {c["extension"]["calcinosis-cds"].get("subtype") for c in cards}
    assert "dystrophic" in kinds


def test_resources_about_another_patient_are_dropped() -> None:
    from hooks.engine.service import facts_from_resources
    from tests.fhir_builders import NOW, condition, patient

    facts = facts_from_resources(
        [patient("p1"), condition("L94.2", pid="p1"), condition("M34.1", pid="someone-else")],
        patient_id="p1", now=NOW,
    )
    assert [c.concept for c in facts.conditions] == ["calcinosis_cutis"]
