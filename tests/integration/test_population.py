"""Population test (issue 11): 559 synthetic patients from PyPI packages through the real service.

Each patient of ``tests/integration/population.py`` (480 carebundle patients generated from fixed seeds, 74
trimmed PySynthea charts, the 5 PyPI-generated bundles of ``tests/fixtures/fhir-data``) becomes a
patient-view call with its full prefetch, sent to the FastAPI app in-process (httpx ASGI transport, the
app's lifespan, an in-memory audit store, the tests' fixed clock).
The answers must hold no server error, and every card must be justified by a current value in that
patient's own input, as ``tests/integration/card_justification.py`` re-reads it from the raw resources;
no card for a deceased patient; every summary under 140 characters. A call that gives cards is made again in
French and checked the same way.

Bounded: one pass over a fixed population (count fixed by the seeds and the fixtures), 35-70 s on the
shared 2-core machine (build and calls, printed by ``test_summary``), within the suite's per-test timeout.
"""

from __future__ import annotations

import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import pytest

from hooks.app import create_app
from hooks.audit import MemoryAuditStore
from tests.conftest import FIXED_NOW, running_client
from tests.conftest import test_settings as settings_for
from tests.integration.card_justification import CardProblem, InputRecord, check_cards
from tests.integration.population import PopulationPatient, population

pytestmark = pytest.mark.slow

URL = "/cds-services/calcinosis-assessment"
MIN_PATIENTS = 500


@dataclass
class Answer:
    patient: PopulationPatient
    status: int
    body: dict[str, Any]
    problems: list[CardProblem] = field(default_factory=list)
    french: list[dict[str, Any]] = field(default_factory=list)  # the same call in French, when it has cards

    @property
    def cards(self) -> list[dict[str, Any]]:
        cards: list[dict[str, Any]] = self.body.get("cards") or []
        return cards


@dataclass
class Run:
    answers: list[Answer]
    seconds: dict[str, float]


def _kind(card: dict[str, Any]) -> str:
    extension = card["extension"]["calcinosis-cds"]
    return "/".join(str(part) for part in (extension["kind"], extension.get("flag") or extension.get("risk")) if part)


@pytest.fixture(scope="module")
async def run() -> Run:
    started = time.perf_counter()
    patients = population()
    built = time.perf_counter()
    app = create_app(settings_for(), audit_store=MemoryAuditStore(), clock=lambda: FIXED_NOW)
    answers = []
    async with running_client(app) as client:
        for patient in patients:
            response = await client.post(URL, json=patient.request)
            body = response.json()
            answer = Answer(patient, response.status_code, body)
            if response.status_code == 200:
                answer.problems = check_cards(answer.cards, patient.prefetch, FIXED_NOW)
            if answer.cards:
                # French summaries are the longer ones: the budget and the justification are checked in both.
                french = await client.post(URL, json=patient.request, headers={"Accept-Language": "fr"})
                assert french.status_code == 200
                answer.french = french.json()["cards"]
                answer.problems += check_cards(answer.french, patient.prefetch, FIXED_NOW)
            answers.append(answer)
    return Run(answers, {"build": built - started, "calls": time.perf_counter() - built})


def test_population_is_500_distinct_patients_from_both_packages(run: Run) -> None:
    ids = Counter(a.patient.patient_id for a in run.answers)
    assert len(ids) >= MIN_PATIENTS
    assert max(ids.values()) == 1, "each patient is called once"
    sources = Counter(a.patient.source.split(":")[0] for a in run.answers)
    assert sources["carebundle"] >= 400
    assert sources["pysynthea"] >= 70
    records = [InputRecord(a.patient.prefetch, FIXED_NOW) for a in run.answers]
    # The population exercises what the checks are about: the dead, and current and stale chemistry.
    assert sum(r.deceased for r in records) >= 20
    assert sum(bool(r.current("calcium")) for r in records) >= 300
    assert sum(bool(r.labs) and not r.current("calcium") for r in records) >= 40


def test_no_server_error_and_only_documented_refusals(run: Run) -> None:
    statuses = Counter(a.status for a in run.answers)
    assert not [a for a in run.answers if a.status >= 500], statuses
    refused = [a for a in run.answers if a.status != 200]
    for answer in refused:
        # Documented 4xx: a clear OperationOutcome, and only for a feed carebundle broke on purpose.
        assert 400 <= answer.status < 500
        assert answer.body.get("resourceType") == "OperationOutcome", answer.body
        assert answer.patient.defects, f"{answer.patient.source} {answer.patient.patient_id} refused: {answer.body}"
    clean = [a for a in run.answers if not a.patient.defects]
    assert all(a.status == 200 for a in clean)


def test_every_card_is_justified_by_a_current_value_in_the_input(run: Run) -> None:
    unjustified = [(a.patient.source, a.patient.patient_id, p.card, p.problem) for a in run.answers for p in a.problems]
    assert unjustified == []


def test_french_cards_are_the_same_cards(run: Run) -> None:
    with_cards = [a for a in run.answers if a.cards]
    assert with_cards
    assert all([_kind(c) for c in a.french] == [_kind(c) for c in a.cards] for a in with_cards)


def test_cards_are_raised_where_the_data_call_for_them(run: Run) -> None:
    """The checker above is exercised on real cards, and stale values raise nothing."""
    kinds = Counter((a.patient.source, _kind(c)) for a in run.answers for c in a.cards)
    current = "carebundle: raised calcium (CKD 3), current"
    stale = "carebundle: raised calcium (CKD 3), stale (200 days)"
    assert kinds[(current, "red-flag/moderate-hypercalcemia")] + kinds[(current, "red-flag/severe-hypercalcemia")] >= 20
    assert not [kind for (source, kind) in kinds if source == stale]
    deceased = [a for a in run.answers if InputRecord(a.patient.prefetch, FIXED_NOW).deceased]
    assert deceased
    assert all(a.status == 200 and a.cards == [] for a in deceased)


def test_summary(run: Run, capsys: pytest.CaptureFixture[str]) -> None:
    resources = Counter(
        resource_type
        for a in run.answers
        for key, value in a.patient.prefetch.items()
        for resource_type in ([e["resource"]["resourceType"] for e in value.get("entry") or ()]
                              if isinstance(value, dict) and value.get("resourceType") == "Bundle"
                              else [value["resourceType"]] if isinstance(value, dict) else [])
    )
    cards = Counter(_kind(c) for a in run.answers for c in a.cards)
    statuses = Counter(a.status for a in run.answers)
    sources = Counter(a.patient.source.split(":")[0] for a in run.answers)
    lines = [
        f"population: {len(run.answers)} patients "
        f"({', '.join(f'{name} {count}' for name, count in sources.items())}), statuses {dict(statuses)}",
        f"resources sent: {sum(resources.values())} {dict(resources)}",
        f"cards: {sum(cards.values())} {dict(sorted(cards.items()))}",
        f"time: build {run.seconds['build']:.1f} s, {len(run.answers)} calls {run.seconds['calls']:.1f} s",
    ]
    with capsys.disabled():
        print("\n" + "\n".join(lines))
    assert sum(resources.values()) > 10 * len(run.answers)
