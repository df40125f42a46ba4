"""Loads the clinical knowledge files (``hooks/engine/knowledge/*.yaml``) once, validated.

The files are the rule table of brief §5c, the red flags of §5d, the work-up checklist of §5b, and the
therapy options and cautions of §6 with the §9.1 corrections. A clinician reviews them like code; the
service reports ``rulesetVersion`` (from ``ruleset.yaml``) and a SHA-256 content hash over every file, so
an audit can tell exactly which knowledge produced a card.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, Final, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from fhir_mappings.terminology import fold_text

__all__ = [
    "KNOWLEDGE_FILES",
    "PACKAGE_KNOWLEDGE_DIR",
    "Caution",
    "FlagDefinition",
    "Knowledge",
    "Localized",
    "RiskDefinition",
    "RuleDefinition",
    "TextVariant",
    "TherapyOption",
    "WorkupItem",
    "load_knowledge",
    "load_knowledge_from",
    "parse_knowledge_yaml",
]

SUBTYPES = ("dystrophic", "metastatic", "idiopathic", "iatrogenic", "calciphylaxis")
# Where the service's own knowledge files live (copy it to edit, then ``calcinosis-cds knowledge check``).
PACKAGE_KNOWLEDGE_DIR = Path(__file__).parent / "knowledge"
KNOWLEDGE_FILES = ("ruleset.yaml", "rules.yaml", "red_flags.yaml", "workup.yaml", "therapy.yaml", "messages.yaml",
                   "routes.yaml")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Localized(_Strict):
    en: str = Field(min_length=1)
    fr: str = Field(min_length=1)

    def get(self, locale: str) -> str:
        return self.fr if locale == "fr" else self.en


class RuleDefinition(_Strict):
    id: str
    finding: Localized
    when: dict[str, Any]
    points: dict[str, int]
    basis: str = Field(min_length=1)
    group: str | None = None

    @field_validator("points")
    @classmethod
    def _known_subtypes(cls, value: dict[str, int]) -> dict[str, int]:
        unknown = set(value) - set(SUBTYPES)
        if unknown:
            raise ValueError(f"unknown subtypes {sorted(unknown)}")
        return value


class ActionVariant(_Strict):
    """A patient-specific "Do" text: the first variant whose ``when`` holds replaces the flag's action."""

    when: dict[str, Any]
    action: Localized
    basis: str


class FlagDefinition(_Strict):
    id: str
    indicator: Literal["critical", "warning"]
    when: dict[str, Any]
    summary: Localized
    action: Localized
    action_variants: list[ActionVariant] = Field(default_factory=list)
    rule_text: Localized
    basis: str
    reference: str
    requires_calcinosis: bool = False
    group: str = "other"
    # Data kinds the flag needs ("medications"): when unreadable, the flag is not raised and the card says so.
    needs: list[str] = Field(default_factory=list)


class RiskDefinition(_Strict):
    id: str
    when: dict[str, Any]
    summary: Localized
    rule_text: Localized
    basis: str
    reference: str
    replaces_flag: str | None = None


class HistoryAlert(_Strict):
    analyte: str
    at_least: float | str
    basis: str


class RiskFactor(_Strict):
    id: str
    when: dict[str, Any]


class OrderCode(_Strict):
    code: str
    display: str


class WorkupItem(_Strict):
    id: str
    satisfied_by: list[str]
    # The test's name as a clinician orders it ("PTH", "25-OH vitamine D").
    name: Localized
    order: OrderCode
    order_fr: OrderCode | None = None
    why: Localized
    subtypes: list[str]
    priority: int = 50
    skip_age_bands: list[str] = Field(default_factory=list)
    needed_when: dict[str, Any] | None = None


class AdvisoryItem(_Strict):
    id: str
    text: Localized


class TextVariant(_Strict):
    """Patient-specific wording of an option (dialysis or not, a mechanical valve...)."""

    when: dict[str, Any]
    text: Localized
    # A few words for the card line ("no validated dose without dialysis"); the full text is on the page.
    short: Localized | None = None


OptionKind = Literal["drug", "action", "care", "procedure", "observation", "review"]


class TherapyOption(_Strict):
    id: str
    subtypes: list[str]
    extent: Literal["any", "localized", "disseminated"]
    rank: int
    evidence: str
    text: Localized
    basis: str
    kind: OptionKind = "action"
    # Drug concepts or classes that give this option: a current one is "current since", a past one "tried".
    drugs: list[str] = Field(default_factory=list)
    needs_indication: bool = False
    rank_without_indication: int | None = None
    only_without_indication_in: list[str] = Field(default_factory=list)
    variants: list[TextVariant] = Field(default_factory=list)
    # Options of one group render together ("underlying-cause": treat the cause).
    group: str | None = None
    requires: dict[str, Any] | None = None


CautionLevel = Literal["contraindicated", "avoid", "caution", "info", "not-recorded"]
# Most severe first; an unknown fact a rule needs ("pregnancy status not recorded") outranks a plain caution.
LEVEL_ORDER: Final[tuple[CautionLevel, ...]] = ("contraindicated", "avoid", "not-recorded", "caution", "info")


class Caution(_Strict):
    id: str
    reason: str
    # One option, or several for a rule that applies alike to each (pregnancy not recorded).
    option: str | None = None
    options: list[str] = Field(default_factory=list)
    level: CautionLevel = "caution"
    contraindicates: bool
    when: dict[str, Any]
    text: Localized
    # The one-line caution a card shows next to its option ("with tacrolimus: check trough levels").
    short: Localized
    basis: str
    current_medication: bool = False
    # The therapy card is then a `warning` (addendum S27: pregnancy lines are shown as warnings, per C4).
    warns: bool = False
    # False for a reason that is not about this patient's safety ("no surgical indication"): the card's
    # "Not offered" line stays short; the caution is still in the card's extension and the full assessment.
    on_card: bool = True

    @model_validator(mode="after")
    def _consistent(self) -> Caution:
        if (self.option is None) == (not self.options):
            raise ValueError(f"caution {self.id}: give exactly one of option or options")
        if self.contraindicates != (self.level in {"contraindicated", "avoid"}):
            raise ValueError(f"caution {self.id}: contraindicates must match level {self.level!r}")
        return self

    @property
    def applies_to(self) -> tuple[str, ...]:
        return (self.option,) if self.option is not None else tuple(self.options)


class RouteVocabulary(_Strict):
    """routes.yaml: the words of each route, and the routes a card names beside a drug (with their words)."""

    routes: dict[str, list[str]]
    shown: dict[str, Localized] = {}

    @model_validator(mode="after")
    def _shown_routes_exist(self) -> RouteVocabulary:
        unknown = sorted(set(self.shown) - set(self.routes))
        if unknown:
            raise ValueError(f"shown names routes that `routes` does not define: {', '.join(unknown)}")
        return self


class Reference(_Strict):
    label: str
    url: str | None = None


@dataclass(frozen=True, slots=True)
class Knowledge:
    version: str
    content_hash: str
    min_score: int
    min_lead: int
    thresholds: Mapping[str, float]
    references: Mapping[str, Reference]
    gates: Mapping[str, dict[str, Any]]
    rules: tuple[RuleDefinition, ...]
    flags: tuple[FlagDefinition, ...]
    risks: tuple[RiskDefinition, ...]
    risk_factors_major: tuple[RiskFactor, ...]
    risk_factors_minor: tuple[RiskFactor, ...]
    history_alerts: tuple[HistoryAlert, ...]
    workup: tuple[WorkupItem, ...]
    advisory: tuple[AdvisoryItem, ...]
    options: tuple[TherapyOption, ...]
    cautions: tuple[Caution, ...]
    messages: Mapping[str, Any]
    # routes.yaml: the folded words of each route, and how a card names the routes it shows.
    routes: Mapping[str, tuple[str, ...]]
    shown_routes: Mapping[str, Localized]

    def threshold(self, value: float | int | str) -> float:
        """A number, or the name of a threshold in ruleset.yaml."""
        if isinstance(value, str):
            return float(self.thresholds[value])
        return float(value)

    def message(self, section: str, key: str, locale: str) -> str:
        entry = self.messages[section][key]
        return str(entry.get(locale) or entry["en"])

    def route_of(self, route: str | None, text: str | None) -> str | None:
        """The route ("ophthalmic", "oral", "intravenous") an order's route words say, else its drug's text."""
        for said in (route, text):
            if not said:
                continue
            padded = f" {fold_text(said).replace('/', ' ').replace('-', ' ')} "
            for kind, words in self.routes.items():
                if any(f" {word} " in padded for word in words):
                    return kind
        return None

    def route_shown(self, route: str | None, text: str | None, locale: str) -> str | None:
        """What a card puts after a drug's name for its route (its order's route words, else its own text),
        when routes.yaml shows that route."""
        names = self.shown_routes.get(self.route_of(route, text) or "")
        return None if names is None else names.get(locale)

    def option(self, option_id: str) -> TherapyOption:
        return next(o for o in self.options if o.id == option_id)

    def rule(self, rule_id: str) -> RuleDefinition:
        return next(r for r in self.rules if r.id == rule_id)


class _KnowledgeLoader(yaml.SafeLoader):
    """YAML with only ``true``/``false`` as booleans (YAML 1.2 core schema).

    Clinicians write ``pregnancy: [yes]``; the YAML 1.1 default would read that as ``[True]`` and the
    rule would silently never fire.
    """


_KnowledgeLoader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_KnowledgeLoader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _parse(raw: bytes) -> Any:
    return yaml.load(raw, Loader=_KnowledgeLoader)  # noqa: S506 - a SafeLoader subclass


# One knowledge file as the loader reads it (``knowledge check`` uses it to say which file does not parse).
parse_knowledge_yaml = _parse


def _read(name: str) -> bytes:
    return resources.files("hooks.engine").joinpath("knowledge", name).read_bytes()


@lru_cache(maxsize=1)
def load_knowledge() -> Knowledge:
    """The knowledge the service runs on: the package's own files, read and validated once."""
    return _build({name: _read(name) for name in KNOWLEDGE_FILES})


def load_knowledge_from(directory: Path) -> Knowledge:
    """An edited copy of the knowledge directory, read afresh (``calcinosis-cds knowledge check``).

    Not cached, and never seen by the service: ``load_knowledge`` keeps reading the package files. Raises
    ``OSError`` for a missing file and ``ValueError`` (pydantic's ``ValidationError`` included) for content
    that does not load.
    """
    return _build({name: (directory / name).read_bytes() for name in KNOWLEDGE_FILES})


def _build(raw: Mapping[str, bytes]) -> Knowledge:
    digest = hashlib.sha256()
    for name in KNOWLEDGE_FILES:
        digest.update(name.encode() + b"\0" + raw[name] + b"\0")
    docs = {name: _parse(raw[name]) for name in KNOWLEDGE_FILES}
    ruleset, rules, flags, workup, therapy = (
        docs["ruleset.yaml"],
        docs["rules.yaml"],
        docs["red_flags.yaml"],
        docs["workup.yaml"],
        docs["therapy.yaml"],
    )
    if tuple(rules["subtypes"]) != SUBTYPES:
        raise ValueError(f"rules.yaml subtypes must be {SUBTYPES} (the order ties are broken in)")
    factors = flags["calciphylaxis_risk_factors"]
    routes = RouteVocabulary.model_validate(docs["routes.yaml"])
    return Knowledge(
        version=str(ruleset["version"]),
        content_hash=digest.hexdigest(),
        min_score=int(ruleset["suggestion"]["min_score"]),
        min_lead=int(ruleset["suggestion"]["min_lead"]),
        thresholds={k: float(v) for k, v in ruleset["thresholds"].items()},
        references={k: Reference.model_validate(v) for k, v in ruleset["references"].items()},
        gates=dict(rules["gates"]),
        rules=tuple(RuleDefinition.model_validate(r) for r in rules["rules"]),
        flags=tuple(FlagDefinition.model_validate(f) for f in flags["flags"]),
        risks=tuple(RiskDefinition.model_validate(r) for r in flags["risks"]),
        risk_factors_major=tuple(RiskFactor.model_validate(f) for f in factors["major"]),
        risk_factors_minor=tuple(RiskFactor.model_validate(f) for f in factors["minor"]),
        history_alerts=tuple(HistoryAlert.model_validate(a) for a in flags.get("history_alerts", [])),
        workup=tuple(WorkupItem.model_validate(i) for i in workup["items"]),
        advisory=tuple(AdvisoryItem.model_validate(i) for i in workup["advisory"]),
        options=tuple(TherapyOption.model_validate(o) for o in therapy["options"]),
        cautions=tuple(Caution.model_validate(c) for c in therapy["cautions"]),
        messages=docs["messages.yaml"],
        routes={kind: tuple(fold_text(w) for w in words) for kind, words in routes.routes.items()},
        shown_routes=routes.shown,
    )
