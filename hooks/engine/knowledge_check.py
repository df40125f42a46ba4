"""``calcinosis-cds knowledge check DIR``, part one: is an edited knowledge directory sound?

Checks what a reviewer would otherwise find at the bedside: files that do not load; predicates the engine
does not know, or that name concepts, body sites, rules, gates, flags, options or thresholds that do not
exist; codes that are not in the terminology tables or are UNVERIFIED (never emitted); display units that
are malformed; message keys the cards need and do not find; English or French missing, or placeholders
that differ between them; missing citations; content changed without a new version. Part two
(``hooks.engine.knowledge_diff``) shows what the edit does to the test patients' cards.
"""

from __future__ import annotations

import string
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, get_args

import yaml
from pydantic import ValidationError

from fhir_mappings.context import ValveKind
from fhir_mappings.facts import SkinFindings
from fhir_mappings.terminology import concept_groups, concept_ids, concept_rows, is_emittable, loinc_codes_for
from hooks.engine.knowledge import (
    SUBTYPES,
    FlagDefinition,
    Knowledge,
    RiskDefinition,
    load_knowledge,
    load_knowledge_from,
    parse_knowledge_yaml,
)
from hooks.engine.predicates import KNOWN_PREDICATES

__all__ = ["Problem", "check_knowledge", "predicate_nodes", "predicate_problems"]

Severity = Literal["error", "warning"]
_SKIN_KINDS = frozenset(name for name in SkinFindings.__dataclass_fields__ if name != "set_aside")
_AGE_BANDS = frozenset({"neonate", "child_under_8", "child", "adult", "unknown"})
_STATUSES = frozenset({"yes", "no", "unknown", "not-applicable"})
_CKD_STAGES = frozenset({"G1", "G2", "G3", "G3a", "G3b", "G4", "G5", "G5D"})
_DATA_KINDS = frozenset({"medications", "conditions", "observations", "patient"})
_VALVE_KINDS = frozenset(get_args(ValveKind))
# Predicates whose argument is a number or the name of a threshold of ruleset.yaml.
_THRESHOLD_ARGUMENTS = frozenset({"age_below_years", "age_above_years", "age_below_days", "age_at_most_days",
                                  "calcium_at_least", "ca_x_p_at_least", "egfr_below", "crcl_below"})
_UNIT_SYSTEMS = ("conventional", "si")
# Which file a model of hooks.engine.knowledge is read from (for "does not load" messages).
_MODEL_FILES = {"RuleDefinition": "rules.yaml", "FlagDefinition": "red_flags.yaml", "RiskDefinition": "red_flags.yaml",
                "RiskFactor": "red_flags.yaml", "HistoryAlert": "red_flags.yaml", "WorkupItem": "workup.yaml",
                "AdvisoryItem": "workup.yaml", "TherapyOption": "therapy.yaml", "Caution": "therapy.yaml",
                "Reference": "ruleset.yaml", "RouteVocabulary": "routes.yaml"}


@dataclass(frozen=True, slots=True)
class Problem:
    severity: Severity
    file: str
    where: str
    message: str

    def line(self) -> str:
        return f"{self.severity.upper():7} {self.file} {self.where}: {self.message}"


def predicate_nodes(node: Any) -> Iterator[tuple[str, Any]]:
    """Every (predicate name, argument) of a ``when``, combinators included, depth first."""
    if not isinstance(node, Mapping):
        return
    for key, value in node.items():
        yield str(key), value
        if key in {"all", "any"} and isinstance(value, list):
            for child in value:
                yield from predicate_nodes(child)
        elif key == "not":
            yield from predicate_nodes(value)


def predicate_problems(knowledge: Knowledge, file: str, predicates: Iterable[tuple[str, Any]]) -> list[Problem]:
    """The problems of these (owner, ``when``) pairs against ``knowledge`` and the code tables: the argument
    checks of ``check_knowledge`` (a misspelt concept, status, threshold, rule or flag), for another file."""
    checker = _Checker(knowledge)
    for owner, when in predicates:
        checker.predicate(file, owner, when)
    return checker.problems


class _Checker:
    def __init__(self, knowledge: Knowledge) -> None:
        self.k = knowledge
        self.problems: list[Problem] = []
        medications = set(concept_ids("medication"))
        self.vocabulary = {
            "condition": set(concept_ids("condition")),
            "medication": medications | {g for m in medications for g in concept_groups(m)},
            "lab": set(concept_ids("lab")) | set(concept_ids("observation")),
            "bodysite": set(concept_ids("bodysite")),
        }
        self.unverified = {row.concept_id for row in concept_rows() if row.status == "UNVERIFIED"}
        self.verified = {row.concept_id for row in concept_rows() if row.status != "UNVERIFIED"}

    def add(self, severity: Severity, file: str, where: str, message: str) -> None:
        self.problems.append(Problem(severity, file, where, message))

    # ------------------------------------------------------------------ predicates

    def concepts(self, file: str, owner: str, name: str, kind: str, values: Any) -> None:
        listed = values if isinstance(values, list) else [values]
        for value in listed:
            if value not in self.vocabulary[kind]:
                self.add("error", file, owner, f"{name}: '{value}' is not a {kind} concept of the code tables")
            elif value in self.unverified and value not in self.verified:
                self.add("warning", file, owner, f"{name}: '{value}' has only UNVERIFIED codes (never matched)")

    def threshold(self, file: str, owner: str, name: str, value: Any) -> None:
        if isinstance(value, str) and value not in self.k.thresholds:
            self.add("error", file, owner, f"{name}: '{value}' is not a threshold of ruleset.yaml")
        elif not isinstance(value, str | int | float) or isinstance(value, bool):
            self.add("error", file, owner, f"{name}: expected a number or a threshold name")

    def members(self, file: str, owner: str, name: str, values: Any, allowed: set[str] | frozenset[str]) -> None:
        listed = values if isinstance(values, list) else [values]
        unknown = [v for v in listed if v not in allowed]
        if unknown:
            hint = ("; true/false are YAML booleans: write the status as a word (\"yes\", no)"
                    if any(isinstance(v, bool) for v in unknown) else "")
            self.add("error", file, owner, f"{name}: unknown {', '.join(map(str, unknown))}{hint}")

    def predicate(self, file: str, owner: str, when: Any) -> None:
        if not isinstance(when, Mapping) or not when:
            self.add("error", file, owner, "a predicate must be a mapping with one key")
            return
        rules, options = {r.id for r in self.k.rules}, {o.id for o in self.k.options}
        groups = {r.group for r in self.k.rules if r.group}
        flags = {f.id for f in self.k.flags} | {r.id for r in self.k.risks}
        for name, argument in predicate_nodes(when):
            if name not in KNOWN_PREDICATES:
                self.add("error", file, owner, f"unknown predicate '{name}'")
                continue
            if name in {"condition"}:
                self.concepts(file, owner, name, "condition", argument)
            elif name in {"medication_current"}:
                self.concepts(file, owner, name, "medication", argument)
            elif name == "medication":
                self.concepts(file, owner, name, "medication", _get(argument, "concepts"))
                self.threshold(file, owner, name, _get(argument, "within_days"))
            elif name in {"present", "antibody_positive", "lab_high", "lab_low"}:
                self.concepts(file, owner, name, "lab", argument)
            elif name in {"lab_above", "lab_below", "lab_at_least"}:
                self.concepts(file, owner, name, "lab", _get(argument, "analyte"))
                self.threshold(file, owner, name, _get(argument, "value"))
            elif name == "lab_uln_multiple":
                self.concepts(file, owner, name, "lab", _get(argument, "analyte"))
            elif name in {"lesion_sites", "lesions_only_in"}:
                self.concepts(file, owner, name, "bodysite", argument)
            elif name == "lesion_sites_min":
                self.concepts(file, owner, name, "bodysite", _get(argument, "sites"))
            elif name in _THRESHOLD_ARGUMENTS:
                self.threshold(file, owner, name, argument)
            elif name == "skin":
                self.members(file, owner, name, argument, _SKIN_KINDS)
            elif name == "age_band":
                self.members(file, owner, name, argument, _AGE_BANDS)
            elif name in {"pregnancy", "breastfeeding"}:
                self.members(file, owner, name, argument, _STATUSES)
            elif name == "ckd_at_least":
                self.members(file, owner, name, argument, _CKD_STAGES)
            elif name == "data_unknown":
                self.members(file, owner, name, argument, _DATA_KINDS)
            elif name == "valve":
                self.members(file, owner, name, argument, _VALVE_KINDS)
            elif name == "rule":
                self.members(file, owner, name, argument, rules)
            elif name == "rule_group":
                self.members(file, owner, name, argument, groups)
            elif name == "gate":
                self.members(file, owner, name, argument, set(self.k.gates))
            elif name == "flag":
                self.members(file, owner, name, argument, flags)
            elif name == "offered":
                self.members(file, owner, name, argument, options)
            elif name == "focus":
                self.members(file, owner, name, argument, set(SUBTYPES))

    def predicates(self) -> None:
        k = self.k
        for rule in k.rules:
            self.predicate("rules.yaml", rule.id, rule.when)
        for gate, when in k.gates.items():
            self.predicate("rules.yaml", f"gate {gate}", when)
        definitions: list[FlagDefinition | RiskDefinition] = [*k.flags, *k.risks]
        for definition in definitions:
            self.predicate("red_flags.yaml", definition.id, definition.when)
        for factor in (*k.risk_factors_major, *k.risk_factors_minor):
            self.predicate("red_flags.yaml", f"risk factor {factor.id}", factor.when)
        for item in k.workup:
            self.concepts("workup.yaml", item.id, "satisfied_by", "lab", item.satisfied_by)
            if item.needed_when is not None:
                self.predicate("workup.yaml", item.id, item.needed_when)
        for option in k.options:
            if option.requires is not None:
                self.predicate("therapy.yaml", option.id, option.requires)
            for index, variant in enumerate(option.variants):
                self.predicate("therapy.yaml", f"{option.id} variant {index + 1}", variant.when)
        for caution in k.cautions:
            self.predicate("therapy.yaml", caution.id, caution.when)
            self.members("therapy.yaml", caution.id, "option", list(caution.applies_to), {o.id for o in k.options})

    # ------------------------------------------------------------------ codes, units, messages, citations

    def codes(self) -> None:
        for item in self.k.workup:
            for order in (item.order, item.order_fr):
                if order is None:
                    continue
                if not any(order.code in loinc_codes_for(a) for a in item.satisfied_by):
                    self.add("error", "workup.yaml", item.id, f"order code LOINC {order.code} is not a code of "
                             f"{', '.join(item.satisfied_by)} in the code tables")
                elif not is_emittable("http://loinc.org", order.code):
                    self.add("error", "workup.yaml", item.id, f"order code LOINC {order.code} is UNVERIFIED: "
                             "it would never be emitted")

    def units(self) -> None:
        for family, spec in (self.k.messages.get("units") or {}).items():
            for system in _UNIT_SYSTEMS:
                entry = spec.get(system) if isinstance(spec, Mapping) else None
                if entry is None and system == "si":
                    continue
                ok = (isinstance(entry, list) and len(entry) == 3 and isinstance(entry[0], str) and entry[0]
                      and isinstance(entry[1], int | float) and entry[1] > 0 and isinstance(entry[2], int)
                      and 0 <= entry[2] <= 3)
                if not ok:
                    self.add("error", "messages.yaml", f"units.{family}.{system}",
                             "expected [unit, factor > 0, decimals 0-3]")

    def messages(self, baseline: Knowledge) -> None:
        k = self.k
        needed = {
            "option_labels": {o.id for o in k.options} | {c.option for c in k.cautions if c.option},
            "reasons": {c.reason for c in k.cautions},
            "subtype_names": {*SUBTYPES, "indeterminate"},
            "subtype_titles": set(SUBTYPES),
            "extent_names": {o.extent for o in k.options if o.extent != "any"} | {"unknown"},
        }
        for section, keys in needed.items():
            for key in sorted(keys - set(k.messages.get(section) or {})):
                self.add("error", "messages.yaml", f"{section}.{key}", "missing: the cards need this text")
        for section, entries in baseline.messages.items():
            if isinstance(entries, Mapping):
                for key in sorted(set(entries) - set(k.messages.get(section) or {})):
                    self.add("error", "messages.yaml", f"{section}.{key}", "removed: the cards use this text")
        for section, entries in k.messages.items():
            if section == "units" or not isinstance(entries, Mapping):
                continue
            for key, entry in entries.items():
                self.translation(f"{section}.{key}", entry)
        for index, reason in enumerate(k.messages.get("override_reasons") or []):
            self.translation(f"override_reasons[{index}]", _get(reason, "display"))

    def translation(self, where: str, entry: Any) -> None:
        if not isinstance(entry, Mapping):
            self.add("error", "messages.yaml", where, "expected {en: ..., fr: ...}")
            return
        for locale in ("en", "fr"):
            if not isinstance(entry.get(locale), str) or not entry[locale].strip():
                self.add("error", "messages.yaml", where, f"no {'English' if locale == 'en' else 'French'} text")
        if isinstance(entry.get("en"), str) and isinstance(entry.get("fr"), str):
            english, french = _fields(entry["en"]), _fields(entry["fr"])
            if english != french:
                self.add("error", "messages.yaml", where,
                         f"placeholders differ: en {sorted(english)}, fr {sorted(french)}")

    def citations(self) -> None:
        k = self.k
        for rule in k.rules:
            if not rule.basis.strip():
                self.add("error", "rules.yaml", rule.id, "no citation (basis)")
        definitions: list[FlagDefinition | RiskDefinition] = [*k.flags, *k.risks]
        for definition in definitions:
            if not definition.basis.strip():
                self.add("error", "red_flags.yaml", definition.id, "no citation (basis)")
            if definition.reference not in k.references:
                self.add("error", "red_flags.yaml", definition.id,
                         f"reference '{definition.reference}' is not in ruleset.yaml")
        for caution in k.cautions:
            if not caution.basis.strip():
                self.add("error", "therapy.yaml", caution.id, "no citation (basis)")
        for option in k.options:
            if not option.basis.strip():
                self.add("error", "therapy.yaml", option.id, "no citation (basis)")
        for key, reference in k.references.items():
            if reference.url is not None and not reference.url.startswith("https://"):
                self.add("error", "ruleset.yaml", f"references.{key}", "a cited URL must be https")

    def version(self, baseline: Knowledge) -> None:
        if self.k.content_hash != baseline.content_hash and self.k.version == baseline.version:
            self.add("warning", "ruleset.yaml", "version", f"the content changed but the version is still "
                     f"{baseline.version}: bump it so the audit trail can tell the two apart")


def _get(argument: Any, key: str) -> Any:
    return argument.get(key) if isinstance(argument, Mapping) else None


def _fields(text: str) -> set[str]:
    return {name for _, name, _, _ in string.Formatter().parse(text) if name}


def _load_problems(directory: Path) -> list[Problem]:
    """Why the directory does not load, file by file (the loader stops at the first error)."""
    problems = []
    for path in sorted(directory.glob("*.yaml")) or [directory / "ruleset.yaml"]:
        try:
            parse_knowledge_yaml(path.read_bytes())
        except OSError as error:
            problems.append(Problem("error", path.name, "file", f"cannot be read ({error.strerror})"))
        except yaml.YAMLError as error:
            problems.append(Problem("error", path.name, "YAML", str(error).replace("\n", " ")))
    return problems


def check_knowledge(directory: Path, baseline: Knowledge | None = None) -> tuple[Knowledge | None, list[Problem]]:
    """The edited knowledge (None when it does not load) and every problem found, errors first."""
    baseline = baseline or load_knowledge()
    try:
        knowledge = load_knowledge_from(directory)
    except FileNotFoundError as error:
        return None, [Problem("error", Path(str(error.filename)).name, "file", "missing")]
    except ValidationError as error:
        file = _MODEL_FILES.get(error.title, "?")
        problems = _load_problems(directory) or [
            Problem("error", file, f"{error.title} {'.'.join(map(str, e['loc']))}", e["msg"])
            for e in error.errors()[:20]]
        return None, problems
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as error:
        detail = f"missing key {error}" if isinstance(error, KeyError) else str(error).replace("\n", " ")
        return None, _load_problems(directory) or [Problem("error", "?", "load", detail)]
    checker = _Checker(knowledge)
    checker.predicates()
    checker.codes()
    checker.units()
    checker.messages(baseline)
    checker.citations()
    checker.version(baseline)
    checker.problems += _order_check_problems(directory, knowledge)
    return knowledge, sorted(checker.problems, key=lambda p: (p.severity != "error", p.file, p.where))


def _order_check_problems(directory: Path, knowledge: Knowledge) -> list[Problem]:
    """The order checks of issue 15, validated against the edited knowledge (when the copy has the file): each
    predicate argument problem on its own line (warnings included), else whatever stops the file from loading."""
    from hooks.engine.order_knowledge import (
        ORDER_CHECKS_FILE,
        OrderPredicateError,
        check_predicates,
        load_order_checks_from,
    )

    path = directory / ORDER_CHECKS_FILE
    if not path.is_file():
        return []
    try:
        loaded = load_order_checks_from(path, knowledge)
    except OrderPredicateError as error:
        return list(error.problems)
    except (ValueError, KeyError, TypeError, yaml.YAMLError) as error:
        detail = f"missing key {error}" if isinstance(error, KeyError) else str(error).replace("\n", " ")[:300]
        return [Problem("error", ORDER_CHECKS_FILE, "load", detail)]
    # Loaded: only warnings can be left (a concept with UNVERIFIED codes only).
    return predicate_problems(knowledge, ORDER_CHECKS_FILE,
                              ((c.id, w) for c in loaded.checks for w in check_predicates(c)))
