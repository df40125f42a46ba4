"""``calcinosis-cds assess BUNDLE --hook order-sign --draft-orders FILE`` (issue 15)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from hooks.cli import main
from tests.hooks.engine.conftest import CALCINOSIS_FIXTURES

NEONATE = str(CALCINOSIS_FIXTURES / "safety_neonate_ceftriaxone_calcium.json")
DRAFTS = Path(__file__).parents[2] / "fixtures" / "orders" / "draft_ceftriaxone_neonate.json"


@pytest.mark.parametrize("hook", ["order-sign", "order-select"])
def test_assess_checks_the_draft_orders_of_a_file(capsys: pytest.CaptureFixture[str], hook: str) -> None:
    assert main(["assess", NEONATE, "--hook", hook, "--draft-orders", str(DRAFTS), "--now", "2026-11-21T09:00Z",
                 "--locale", "fr"]) == 0
    cards = json.loads(capsys.readouterr().out)["cards"]
    # The neonate is also on ceftriaxone: the draft repeats it (duplicate-therapy), after the critical card.
    assert [c["extension"]["calcinosis-cds"]["check"] for c in cards] == ["neonatal-ceftriaxone-calcium",
                                                                         "duplicate-therapy"]
    card = cards[0]
    assert card["indicator"] == "critical"
    assert card["extension"]["calcinosis-cds"] == {
        "kind": "order-safety", "check": "neonatal-ceftriaxone-calcium", "order": "MedicationRequest/draft-ceftriaxone"}
    assert card["summary"].startswith("Ceftriaxone chez un nouveau-né")


def test_a_request_file_holding_the_draft_orders_is_read_too(tmp_path: Path,
                                                             capsys: pytest.CaptureFixture[str]) -> None:
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"hook": "order-sign", "context": {"draftOrders": json.loads(DRAFTS.read_text())}}))
    assert main(["assess", NEONATE, "--hook", "order-sign", "--draft-orders", str(request), "--now", "2026-11-21"]) == 0
    assert json.loads(capsys.readouterr().out)["cards"][0]["indicator"] == "critical"


def test_a_draft_for_another_patient_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bundle = json.loads(DRAFTS.read_text())
    bundle["entry"][0]["resource"]["subject"] = {"reference": "Patient/someone-else"}
    other = tmp_path / "other.json"
    other.write_text(json.dumps(bundle))
    assert main(["assess", NEONATE, "--hook", "order-sign", "--draft-orders", str(other)]) == 2
    assert "another patient" in capsys.readouterr().err


def test_an_order_hook_needs_draft_orders(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["assess", NEONATE, "--hook", "order-sign"]) == 2
    assert "--draft-orders" in capsys.readouterr().err
