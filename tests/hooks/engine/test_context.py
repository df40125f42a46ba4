"""The shared readings of an evaluation context (issue 14: a memo per facts, never outliving them)."""

from __future__ import annotations

from dataclasses import replace

from fhir_mappings.facts import PatientFacts
from hooks.engine.context import EvalContext
from hooks.engine.knowledge import load_knowledge
from hooks.engine.service import facts_from_resources
from tests.fhir_builders import NOW, lab, patient


def facts_with_calcium(mg_dl: float, egfr: float) -> PatientFacts:
    resources = [patient("p1"), lab("17861-6", mg_dl, "mg/dL"), lab("98979-8", egfr, "mL/min/{1.73_m2}")]
    return facts_from_resources(resources, patient_id="p1", now=NOW)


def test_a_reading_is_worked_out_once_and_is_the_same_as_a_fresh_one() -> None:
    facts = facts_with_calcium(10.9, 25)
    ctx = EvalContext(facts=facts, knowledge=load_knowledge())
    first = ctx.calcium()
    assert ctx.calcium() is first  # the dozen rules reading calcium share one reading
    assert first == EvalContext(facts=facts, knowledge=load_knowledge()).calcium()
    assert first[0] == 10.9
    assert ctx.egfr()[0] == 25
    assert ctx.renal_for_dosing() is ctx.renal_for_dosing()


def test_a_context_on_other_facts_reads_those_facts() -> None:
    # The order checks evaluate some rules on the facts without the drafted drug's class (replace): a reading
    # of the first facts must never answer for the second.
    ctx = EvalContext(facts=facts_with_calcium(10.9, 25), knowledge=load_knowledge())
    assert ctx.calcium()[0] == 10.9
    other = replace(ctx, facts=facts_with_calcium(12.4, 70))
    assert other.calcium()[0] == 12.4
    renal = other.renal_for_dosing()
    assert renal is not None
    assert renal.value == 70
    ctx.facts = facts_with_calcium(8.1, 40)
    assert ctx.calcium()[0] == 8.1
    assert ctx.egfr()[0] == 40
