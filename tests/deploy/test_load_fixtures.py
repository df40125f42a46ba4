"""deploy/load_fixtures.py: fixture dates move to the load date (a loaded sandbox stays current), every
fixture patient has a name, and a sandbox loaded a year later gives the same cards a year later."""

from __future__ import annotations

import json
import uuid
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pytest

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from tests.conftest import FIXED_NOW, running_client
from tests.conftest import test_settings as settings_for
from tests.integration.conftest import loader, sandbox_runner
from tests.integration.prefetch_builder import build_prefetch

METASTATIC = Path(loader.ROOT) / "tests" / "fixtures" / "calcinosis" / "metastatic_ckd4_hyperparathyroidism.json"
LATER = 400  # days: past every look-back window (chemistry 90, serology 365)


def test_dates_move_by_whole_days_and_nothing_else_does() -> None:
    bundle = {
        "resourceType": "Bundle", "type": "transaction", "entry": [
            {"resource": {"resourceType": "Patient", "id": "p", "birthDate": "1956-09-09",
                          "identifier": [{"value": "2026-11-21"}]}},
            {"resource": {"resourceType": "Observation", "id": "o", "effectiveDateTime": "2026-11-17T08:30:00+01:00",
                          "issued": "2026-11-17T09:00:00.123Z", "code": {"coding": [{"code": "2026-11"}]},
                          "valueQuantity": {"value": 2026}, "subject": {"reference": "Patient/p"}}},
            {"resource": {"resourceType": "Condition", "id": "c", "onsetDateTime": "2019",
                          "recordedDate": "2020-02", "onsetPeriod": {"start": "2018-12-31", "end": "2019-01-01"},
                          "extension": [{"url": "x", "valueDate": "2026-02-28"}]}},
        ]}
    moved = loader.shift_dates(bundle, 2)
    patient, observation, condition = (entry["resource"] for entry in moved["entry"])
    assert patient["birthDate"] == "1956-09-11"
    assert patient["identifier"] == [{"value": "2026-11-21"}]  # not a date element: never touched
    assert observation["effectiveDateTime"] == "2026-11-19T08:30:00+01:00"  # time and offset as written
    assert observation["issued"] == "2026-11-19T09:00:00.123Z"
    assert observation["code"] == {"coding": [{"code": "2026-11"}]}
    assert observation["valueQuantity"] == {"value": 2026}
    assert condition["onsetPeriod"] == {"start": "2019-01-02", "end": "2019-01-03"}
    assert condition["extension"][0]["valueDate"] == "2026-03-02"
    assert (condition["onsetDateTime"], condition["recordedDate"]) == ("2019", "2020-02")  # precision kept
    a_year = loader.shift_dates(bundle, 365)["entry"][2]["resource"]
    assert (a_year["onsetDateTime"], a_year["recordedDate"]) == ("2020", "2021-02")
    assert bundle["entry"][0]["resource"]["birthDate"] == "1956-09-09"  # the input is not modified


def test_the_shift_is_counted_from_the_fixture_date() -> None:
    assert FIXED_NOW.date() == loader.FIXTURE_DATE
    assert loader.days_since_fixture_date(date(2027, 12, 26)) == 400
    assert loader.days_since_fixture_date(None) == 0


@pytest.mark.parametrize("path", loader.default_fixture_files(), ids=lambda p: p.stem)
def test_every_fixture_patient_has_a_name(path: Path) -> None:
    bundle = json.loads(path.read_text(encoding="utf-8"))
    patients = [e["resource"] for e in bundle["entry"] if e["resource"]["resourceType"] == "Patient"]
    assert patients
    for patient in patients:
        (name, *_) = patient["name"]
        assert name.get("family"), f"{path.name}: Patient/{patient.get('id')} has no family name"
        assert name.get("given"), f"{path.name}: Patient/{patient.get('id')} has no given name"


def _cards(response: Any) -> list[tuple[str, str, Any]]:
    # Detail text quotes the (moved) dates; what was concluded must be the same.
    return [(card["summary"], card["indicator"], card["extension"]) for card in response.json()["cards"]]


def _fallback_request(patient_id: str, base: str, token: str) -> dict[str, Any]:
    return {
        "hook": "patient-view", "hookInstance": str(uuid.uuid4()), "fhirServer": base,
        "context": {"userId": "Practitioner/example", "patientId": patient_id},
        "fhirAuthorization": {"access_token": token, "token_type": "Bearer", "expires_in": 300,
                              "scope": "patient/*.read", "subject": "calcinosis-cds", "patient": patient_id},
    }


@pytest.mark.sandbox
async def test_a_sandbox_loaded_later_gives_the_same_cards_later(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    later = FIXED_NOW + timedelta(days=LATER)
    written = json.loads(METASTATIC.read_text(encoding="utf-8"))
    with sandbox_runner.running_sandbox(tmp_path / "fhir", binary=sandbox_runner.sandbox_binary()) as sandbox:
        # The operator's command, a year and a month after the fixtures were written.
        code = loader.main(["--base", sandbox.base, "--token", sandbox.token, "--as-of", later.date().isoformat(),
                            str(METASTATIC)])
        assert code == 0
        assert f"dates moved by {LATER} day(s)" in capsys.readouterr().out
        settings = settings_for(fhir_allowed_bases=[sandbox.base], fhir_allow_loopback_http=True, fhir_deadline_s=5)
        async with running_client(create_app(settings, audit_store=MemoryAuditStore(),
                                             clock=lambda: FIXED_NOW)) as client:
            templates = (await client.get("/cds-services")).json()["services"][0]["prefetch"]
            context = {"userId": "Practitioner/example", "patientId": "cc-metastatic"}
            as_written = await client.post("/cds-services/calcinosis-assessment", json={
                "hook": "patient-view", "hookInstance": str(uuid.uuid4()), "context": context,
                "prefetch": build_prefetch(loader.rewrite_to_put(written), templates, context)})
        async with running_client(create_app(settings, audit_store=MemoryAuditStore(),
                                             clock=lambda: later)) as client:
            current = await client.post("/cds-services/calcinosis-assessment",
                                        json=_fallback_request("cc-metastatic", sandbox.base, sandbox.token))
            # The same data with its dates as written, a year later: the labs are history, the advice differs.
            assert loader.main(["--base", sandbox.base, "--token", sandbox.token, "--keep-dates",
                                str(METASTATIC)]) == 0
            stale = await client.post("/cds-services/calcinosis-assessment",
                                      json=_fallback_request("cc-metastatic", sandbox.base, sandbox.token))
    assert (as_written.status_code, current.status_code, stale.status_code) == (200, 200, 200)
    assert _cards(current) == _cards(as_written)
    # Not an empty answer equal to another: the metastatic subtype is recognised on the moved data.
    assert any(extension["calcinosis-cds"].get("subtype") == "metastatic" for _, _, extension in _cards(current))
    assert _cards(stale) != _cards(as_written)
