"""Loads ``hooks/engine/knowledge/order_checks.yaml`` (issue 15), validated against the rest of the knowledge.

A check that names an unknown predicate, drug concept or class, threshold or reference, or an alternative
whose code is not VERIFIED in the terminology tables, refuses to load: the service does not start with it,
and ``load_order_checks_from`` tells the reviewer which check is wrong. The content hash covers this file and
every file of :func:`hooks.engine.knowledge.load_knowledge`, so the audit names the knowledge exactly.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from fhir_mappings.terminology import concept_groups, concept_ids, concept_rows, is_emittable, lookup
from hooks.engine.knowledge import Knowledge, Localized, Reference, load_knowledge, parse_knowledge_yaml

if TYPE_CHECKING:  # knowledge_check imports this module (at call time); the type only is needed here
    from hooks.engine.knowledge_check import Problem

__all__ = ["ORDER_CHECKS_FILE", "Alternative", "OrderCheck", "OrderKnowledge", "OrderPredicateError", "UnknownFact",
           "check_predicates", "load_order_checks", "load_order_checks_from"]

ORDER_CHECKS_FILE = "order_checks.yaml"
_COMBINATORS = frozenset({"all", "any"})


class OrderPredicateError(ValueError):
    """A predicate argument of the order checks is wrong (``problems``: each one, as ``knowledge check`` says it,
    warnings included)."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        errors = [p for p in problems if p.severity == "error"]
        super().__init__("; ".join(f"check {p.where}: {p.message}" for p in errors[:5]))
        self.problems = tuple(problems)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class WithDrug(_Strict):
    concepts: list[str] = Field(min_length=1)
    within_days: int | str
    # "intravenous": an order of these drugs recorded as oral does not count (brief §9.2: calcium-containing IV
    # solutions); an order whose route is not recorded counts, and the card says the route was not recorded.
    route: Literal["intravenous"] | None = None


class ExceptDrugs(_Strict):
    """Drafts of these classes the check is not about (IV calcium is no calcium supplement, S6)."""

    concepts: list[str] = Field(min_length=1)
    # "intravenous": excepted unless the order is recorded as oral (an oral calcium gluconate stays checked).
    route: Literal["intravenous"] | None = None


class Advice(_Strict):
    """A sentence added to the reason only for drafts of these classes (the binder advice on binders only)."""

    for_order: list[str] = Field(min_length=1)
    text: Localized


class WithoutPartner(_Strict):
    """What to say when the patient predicate holds but no `with` drug is recorded (a neonate's ceftriaxone
    with no IV calcium on record: the need may be expected, brief §9.2)."""

    indicator: Literal["warning", "info"] = "warning"
    summary: Localized
    reason: Localized
    basis: str = Field(min_length=1)


class UnknownFact(_Strict):
    """A fact the check needs that is not recorded: the card names it (``fact`` keys the message)."""

    when: dict[str, Any]
    fact: str
    indicator: Literal["warning", "info"] = "warning"
    # False: named even when the check's `with` drug is absent (gestational age: the EU rule needs no calcium).
    needs_partner: bool = True
    # This check's own words for the missing fact (else the shared `unknown_summary` / `unknown_reason`).
    summary: Localized | None = None
    reason: Localized | None = None


class Alternative(_Strict):
    concept: str
    system: str
    code: str
    # Only for drafts of these classes (a non-calcium binder replaces a calcium-based binder, not IV calcium).
    for_order: list[str] = Field(default_factory=list)
    # Offered only when this patient predicate holds (sevelamer: CKD G3-5D or dialysis, brief §6b).
    when: dict[str, Any] | None = None
    # Withheld when a current order of these classes exists (already on lanthanum: no sevelamer).
    unless_current: list[str] = Field(default_factory=list)
    basis: str = Field(min_length=1)


class Variant(_Strict):
    """Patient-specific wording: the first variant whose `when` holds (for a draft of `for_order`, if given)
    replaces the summary and/or the reason, and may withhold the delete and the alternative."""

    when: dict[str, Any]
    for_order: list[str] = Field(default_factory=list)
    summary: Localized | None = None
    reason: Localized | None = None
    # None: as the check says (``OrderCheck.suggest_delete``).
    suggest_delete: bool | None = None
    alternative: bool = True
    basis: str = Field(min_length=1)


class OrderCheck(_Strict):
    id: str = Field(pattern=r"^[a-z0-9-]+$")
    # info: a limit of the service, not a hazard found (S27 "pregnancy data not checked by the service").
    indicator: Literal["critical", "warning", "info"] = "warning"
    order: list[str] = Field(min_length=1)
    except_: ExceptDrugs | None = Field(default=None, alias="except")
    with_: WithDrug | None = Field(default=None, alias="with")
    without_partner: WithoutPartner | None = None
    # The patient predicate ignores current orders of the drafted drug's own classes (a renewal of a calcium
    # binder does not count that binder as a calciphylaxis risk factor).
    discount_own_class: bool = False
    either_order: bool = False
    # None: as ``suggest_delete`` says (a caution offers no removal in either order of prescription).
    delete_reversed: bool | None = None
    duplicate: bool = False
    # False: a caution, not a contraindication; the card offers no removal of the draft (a variant may say again).
    suggest_delete: bool = True
    when: dict[str, Any] | None = None
    summary: Localized
    reason: Localized
    reason_reversed: Localized | None = None
    # Duplicate checks: the summary when the current order is another drug of the same class.
    summary_same_class: Localized | None = None
    advice: Advice | None = None
    variants: list[Variant] = Field(default_factory=list)
    unknown: list[UnknownFact] = Field(default_factory=list)
    alternative: Alternative | None = None
    basis: str = Field(min_length=1)
    reference: str

    @model_validator(mode="after")
    def _consistent(self) -> OrderCheck:
        if self.either_order and (self.with_ is None or self.reason_reversed is None):
            raise ValueError(f"check {self.id}: either_order needs `with` and `reason_reversed`")
        if self.when is None and self.with_ is None and not self.duplicate:
            raise ValueError(f"check {self.id}: give `when`, `with` or `duplicate`")
        if self.without_partner is not None and (self.with_ is None or self.when is None):
            raise ValueError(f"check {self.id}: without_partner needs `with` and `when`")
        for variant in self.variants:
            if variant.summary is None and variant.reason is None:
                raise ValueError(f"check {self.id}: a variant needs a summary or a reason")
        return self


@dataclass(frozen=True, slots=True)
class OrderKnowledge:
    checks: tuple[OrderCheck, ...]
    messages: Mapping[str, Any]
    references: Mapping[str, Reference]
    knowledge: Knowledge
    content_hash: str
    # Every drug concept or class a check is about: a signing with none of them needs no facts.
    drugs: frozenset[str] = frozenset()

    def concerns(self, concept: str, groups: tuple[str, ...]) -> bool:
        """A drug some check is about (as the draft, or as the other drug of an either-order check)."""
        return concept in self.drugs or any(g in self.drugs for g in groups)

    def message(self, key: str, locale: str, **values: str) -> str:
        entry = self.messages[key]
        return str(entry.get(locale) or entry["en"]).format(**values)

    def unknown_message(self, section: str, fact: str, locale: str, **values: str) -> str:
        entry = self.messages[section][fact]
        return str(entry.get(locale) or entry["en"]).format(**values)


def _checked_drugs(checks: tuple[OrderCheck, ...]) -> frozenset[str]:
    names: set[str] = set()
    for check in checks:
        names.update(check.order)
        if check.either_order and check.with_ is not None:
            names.update(check.with_.concepts)
    return frozenset(names)


def _predicate_names(predicate: Mapping[str, Any]) -> Iterator[str]:
    for name, argument in predicate.items():
        yield name
        if name in _COMBINATORS:
            for part in argument:
                yield from _predicate_names(part)
        elif name == "not":
            yield from _predicate_names(argument)


@lru_cache(maxsize=1)
def _drug_vocabulary() -> frozenset[str]:
    """Every medication concept and class, coded or known by name only (pristinamycin: names, no verified code)."""
    names: set[str] = set()
    for row in concept_rows():
        if row.kind == "medication":
            names.add(row.concept_id)
            names.update(row.groups)
    for concept_id in concept_ids("medication"):
        names.add(concept_id)
        names.update(concept_groups(concept_id))
    return frozenset(names)


def check_predicates(check: OrderCheck) -> list[dict[str, Any]]:
    """Every patient predicate of a check: its own, its variants', its unknown facts' and its alternative's."""
    return [p for p in (check.when, *(v.when for v in check.variants), *(u.when for u in check.unknown),
                        check.alternative.when if check.alternative else None) if p]


def _validate(check: OrderCheck, knowledge: Knowledge, references: Mapping[str, Reference],
              messages: Mapping[str, Any]) -> None:
    from hooks.engine.predicates import KNOWN_PREDICATES

    drugs = _drug_vocabulary()
    named = [*check.order, *(check.with_.concepts if check.with_ else ()),
             *(check.except_.concepts if check.except_ else ()), *(check.advice.for_order if check.advice else ()),
             *(n for v in check.variants for n in v.for_order)]
    if check.alternative:
        named += [*check.alternative.for_order, *check.alternative.unless_current]
    unknown_drugs = sorted(set(named) - drugs)
    if unknown_drugs:
        raise ValueError(f"check {check.id}: unknown drug concepts or classes {unknown_drugs}")
    for predicate in check_predicates(check):
        unknown = sorted(set(_predicate_names(predicate)) - KNOWN_PREDICATES)
        if unknown:
            raise ValueError(f"check {check.id}: unknown predicates {unknown}")
    if check.with_ and isinstance(check.with_.within_days, str) and check.with_.within_days not in knowledge.thresholds:
        raise ValueError(f"check {check.id}: unknown threshold {check.with_.within_days!r}")
    if check.reference not in references:
        raise ValueError(f"check {check.id}: unknown reference {check.reference!r}")
    for fact in check.unknown:
        for section, own in (("unknown_summary", fact.summary), ("unknown_reason", fact.reason)):
            if own is None and fact.fact not in messages[section]:
                raise ValueError(f"check {check.id}: no {section} message for {fact.fact!r}")
    alternative = check.alternative
    if alternative is not None:
        match = lookup(alternative.system, alternative.code)
        if match is None or match.concept_id != alternative.concept or not is_emittable(alternative.system,
                                                                                        alternative.code):
            raise ValueError(f"check {check.id}: the alternative's code is not a VERIFIED {alternative.concept} code")


def _build(raw: bytes, knowledge: Knowledge) -> OrderKnowledge:
    document = parse_knowledge_yaml(raw)
    own = {k: Reference.model_validate(v) for k, v in (document.get("references") or {}).items()}
    clash = sorted(set(own) & set(knowledge.references))
    if clash:
        raise ValueError(f"{ORDER_CHECKS_FILE}: references already in ruleset.yaml {clash}")
    references = {**knowledge.references, **own}
    messages = dict(document["messages"])
    checks = tuple(OrderCheck.model_validate(c) for c in document["checks"])
    ids = [c.id for c in checks]
    if len(set(ids)) != len(ids):
        raise ValueError(f"{ORDER_CHECKS_FILE}: duplicate check ids")
    for check in checks:
        _validate(check, knowledge, references, messages)
    # The arguments too, as `knowledge check` reads them in the other files: `pregnancy: [yse]` would silently
    # never hold, and the check it guards would never fire.
    from hooks.engine.knowledge_check import predicate_problems

    problems = predicate_problems(knowledge, ORDER_CHECKS_FILE,
                                  ((c.id, w) for c in checks for w in check_predicates(c)))
    if any(p.severity == "error" for p in problems):
        raise OrderPredicateError(problems)
    digest = hashlib.sha256(knowledge.content_hash.encode() + b"\0" + raw).hexdigest()
    return OrderKnowledge(checks, messages, references, knowledge, digest, _checked_drugs(checks))


@lru_cache(maxsize=1)
def load_order_checks() -> OrderKnowledge:
    raw = resources.files("hooks.engine").joinpath("knowledge", ORDER_CHECKS_FILE).read_bytes()
    return _build(raw, load_knowledge())


def load_order_checks_from(path: Path, knowledge: Knowledge | None = None) -> OrderKnowledge:
    """An edited copy of the order checks, read afresh (tests and reviewers); never seen by the service."""
    return _build(path.read_bytes(), knowledge or load_knowledge())
