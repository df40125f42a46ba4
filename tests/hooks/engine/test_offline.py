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
