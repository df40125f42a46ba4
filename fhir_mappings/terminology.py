"""Code tables: which FHIR codings mean which clinical concept.

Implements the clinical brief §1 (LOINC analyte groups), §2a–§2d (ICD-10-CM, SNOMED CT, body sites),
§3a–§3b (drug codes and names), §9.5 (WHO ICD-10 / CIM-10 URIs and code normalisation) and §9.7 (ATC URIs,
matching order). The tables live in ``fhir_mappings/tables/*.csv``; every row keeps the status and source
column of ``knowledge/clinical_codes.tsv`` verbatim. UNVERIFIED rows may be read but are never emittable.
"""

from __future__ import annotations

import csv
import io
import re
import unicodedata
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from functools import lru_cache
from importlib import resources
from typing import Literal

__all__ = [
    "ATC",
    "ICD10",
    "ICD10_CM",
    "LOINC",
    "ORPHANET",
    "RXNORM",
    "SNOMED",
    "ConceptMatch",
    "ConceptRow",
    "atc_class_concept",
    "bodysite_name",
    "canonical_system",
    "concept_display",
    "concept_groups",
    "concept_ids",
    "concept_kind",
    "concept_rows",
    "find_bodysite_names",
    "find_medication_names",
    "fold_text",
    "is_emittable",
    "is_unmapped_drug_system",
    "loinc_codes_for",
    "lookup",
    "normalise_code",
    "observation_loinc_codes",
]

# "observation": a non-laboratory Observation the context reader uses (pregnancy status, gestational age);
# "answer": a coded Observation value (LOINC answer codes such as LA15173-0 "Pregnant").
Kind = Literal["lab", "condition", "medication", "bodysite", "observation", "answer"]
Locale = Literal["en", "fr"]

LOINC = "http://loinc.org"
SNOMED = "http://snomed.info/sct"
ICD10_CM = "http://hl7.org/fhir/sid/icd-10-cm"
ICD10 = "http://hl7.org/fhir/sid/icd-10"
RXNORM = "http://www.nlm.nih.gov/research/umls/rxnorm"
ATC = "http://www.whocc.no/atc"
ORPHANET = "https://www.orpha.net"
_CIP = "cip"
_UCD = "ucd"

# Keys are lower-cased and stripped of a trailing slash (§9.5: "with or without a trailing slash").
_SYSTEM_ALIASES: dict[str, str] = {
    "http://loinc.org": LOINC,
    "http://snomed.info/sct": SNOMED,
    "http://hl7.org/fhir/sid/icd-10-cm": ICD10_CM,
    "http://hl7.org/fhir/sid/icd-10": ICD10,
    "https://smt.esante.gouv.fr/terminologie-cim-10": ICD10,
    "https://mos.esante.gouv.fr/nos/tre_r310-cim10/fhir/tre-r310-cim10": ICD10,
    "https://mos.esante.gouv.fr/nos/tre_r311-cim10atih/fhir/tre-r311-cim10atih": ICD10,
    "http://hl7.org/fhir/sid/icd-10-fr": ICD10,
    "http://www.nlm.nih.gov/research/umls/rxnorm": RXNORM,
    "http://www.whocc.no/atc": ATC,
    "https://smt.esante.gouv.fr/terminologie-atc": ATC,
    "https://www.orpha.net": ORPHANET,
    # French presentation/dispensing codes: accepted, never mapped without the BDPM/UCD tables (§9.7).
    "https://smt.esante.gouv.fr/terminologie-bdpm": _CIP,
    "https://smt.esante.gouv.fr/terminologie-cip_ucd": _UCD,
    "http://data.esante.gouv.fr/ansm/medicament/ucd": _UCD,
    # Vendors send the https form of the LOINC URI, and OID URNs (issue 11). OIDs: HL7 Terminology (THO),
    # "External Code Systems" table (LOINC 6.1, SNOMED CT 6.96, RxNorm 6.88, ICD-10-CM 6.90, ATC 6.73);
    # ICD-10 (WHO) 6.3 is also in the clinical brief §9.5.
    "https://loinc.org": LOINC,
    "urn:oid:2.16.840.1.113883.6.1": LOINC,
    "urn:oid:2.16.840.1.113883.6.96": SNOMED,
    "https://snomed.info/sct": SNOMED,
    "urn:oid:2.16.840.1.113883.6.90": ICD10_CM,
    "urn:oid:2.16.840.1.113883.6.3": ICD10,
    "urn:oid:2.16.840.1.113883.6.88": RXNORM,
    "urn:oid:2.16.840.1.113883.6.73": ATC,
}
_ICD_SYSTEMS = frozenset({ICD10, ICD10_CM})


@dataclass(frozen=True, slots=True)
class ConceptRow:
    concept_id: str
    kind: Kind
    groups: tuple[str, ...]
    system: str
    code: str
    display: str
    status: str
    source: str


@dataclass(frozen=True, slots=True)
class ConceptMatch:
    concept_id: str
    kind: Kind
    groups: tuple[str, ...]
    status: str
    display: str
    system_uri: str
    # The normalised code that matched the table (for a WHO child code, the parent that was found).
    code: str

    @property
    def unverified(self) -> bool:
        return self.status == "UNVERIFIED"


@dataclass(frozen=True, slots=True)
class _Label:
    kind: Kind
    groups: tuple[str, ...]
    en: str
    fr: str


@dataclass(frozen=True, slots=True)
class _Tables:
    rows: tuple[ConceptRow, ...]
    by_key: dict[tuple[str, str], ConceptMatch]
    labels: dict[str, _Label]
    # (folded name, concept id, locale)
    medication_names: NameIndex
    bodysite_names: NameIndex
    atc_classes: tuple[tuple[str, str], ...]
    # (system URI, code prefix, concept id): code families the knowledge gives as a prefix ("O09.-").
    code_prefixes: tuple[tuple[str, str, str], ...]
    # (concept id, locale) -> first name as written (accents kept) for display.
    bodysite_display: dict[tuple[str, str], str]


def _read_csv(name: str) -> Iterator[dict[str, str]]:
    text = resources.files("fhir_mappings").joinpath("tables", name).read_text(encoding="utf-8")
    yield from csv.DictReader(io.StringIO(text))


def _groups(value: str) -> tuple[str, ...]:
    return tuple(g for g in value.split(";") if g)


_KINDS: dict[str, Kind] = {
    "lab": "lab",
    "condition": "condition",
    "medication": "medication",
    "bodysite": "bodysite",
    "observation": "observation",
    "answer": "answer",
}


@lru_cache(maxsize=1)
def _tables() -> _Tables:
    rows = tuple(
        ConceptRow(
            concept_id=r["concept_id"],
            kind=_KINDS[r["kind"]],
            groups=_groups(r["groups"]),
            system=r["system"],
            code=r["code"],
            display=r["display"],
            status=r["status"],
            source=r["source"],
        )
        for r in _read_csv("concepts.csv")
    )
    by_key = {
        (row.system, row.code): ConceptMatch(
            row.concept_id, row.kind, row.groups, row.status, row.display, row.system, row.code
        )
        for row in rows
    }
    labels = {
        r["concept_id"]: _Label(_KINDS[r["kind"]], _groups(r["groups"]), r["label_en"], r["label_fr"])
        for r in _read_csv("concept_labels.csv")
    }
    medication_names = NameIndex.of("medication_names.csv", _read_csv("medication_names.csv"))
    bodysite_names = NameIndex.of("bodysite_names.csv", _read_csv("bodysite_names.csv"))
    atc_classes = tuple((r["prefix"], r["concept_id"]) for r in _read_csv("atc_classes.csv"))
    prefixes = tuple((r["system"], r["prefix"], r["concept_id"]) for r in _read_csv("code_prefixes.csv"))
    display: dict[tuple[str, str], str] = {}
    for r in _read_csv("bodysite_names.csv"):
        display.setdefault((r["concept_id"], r["locale"]), r["name"])
    return _Tables(rows, by_key, labels, medication_names, bodysite_names, atc_classes, prefixes, display)


@lru_cache(maxsize=512)
def canonical_system(system: str | None) -> str | None:
    """The one URI this project uses for a code system, or the input unchanged when it is not known."""
    if system is None:
        return None
    key = system.strip().rstrip("/").lower()
    return _SYSTEM_ALIASES.get(key, system.strip())


_ICD_SHAPE = re.compile(r"^([A-Z][0-9][0-9A-Z])\.?([0-9A-Z]{1,4})?$")


def normalise_code(system_uri: str | None, code: str) -> str:
    """Dotted upper-case ICD codes ("I841" -> "I84.1", §9.5), bare ORPHAcodes, upper-case ATC."""
    code = code.strip()
    if system_uri in _ICD_SYSTEMS:
        compact = code.upper().replace(" ", "")
        shape = _ICD_SHAPE.match(compact)
        if shape is None:
            return compact
        head, tail = shape.groups()
        return f"{head}.{tail}" if tail else head
    if system_uri == ORPHANET:
        return code[6:] if code.upper().startswith("ORPHA:") else code
    if system_uri == ATC:
        return code.upper()
    return code


@lru_cache(maxsize=4096)
def lookup(system: str | None, code: str | None) -> ConceptMatch | None:
    """The concept a coding stands for, or None. WHO/CIM-10 child codes fall back to their WHO parent (§9.5)."""
    if not system or not code:
        return None
    uri = canonical_system(system)
    normalised = normalise_code(uri, code)
    tables = _tables()
    by_key = tables.by_key
    found = by_key.get((uri or "", normalised))
    if found is None:
        found = _by_prefix(tables, uri, normalised)
    if found is not None or uri != ICD10:
        return found
    # National extensions (ATIH) add characters after the WHO code: "E83.58" -> "E83.5" -> "E83".
    parent = normalised
    while len(parent) > 3:
        parent = parent[:-1].rstrip(".")
        found = by_key.get((ICD10, parent))
        if found is not None:
            return found
    return None


def _by_prefix(tables: _Tables, uri: str | None, code: str) -> ConceptMatch | None:
    for system, prefix, concept_id in tables.code_prefixes:
        if system == uri and code.startswith(prefix):
            label = tables.labels[concept_id]
            return ConceptMatch(concept_id, label.kind, label.groups, "VERIFIED", label.en, system, code)
    return None


def atc_class_concept(code: str) -> str | None:
    """Concept for an ATC code that is not in the tables but sits in a class the brief names (§3b: M05BA, A11CC)."""
    upper = code.strip().upper()
    for prefix, concept_id in _tables().atc_classes:
        if upper.startswith(prefix):
            return concept_id
    return None


def is_unmapped_drug_system(system: str | None) -> bool:
    """CIP and UCD codes are accepted but never mapped from their digits (§9.7)."""
    return canonical_system(system) in {_CIP, _UCD}


def is_emittable(system: str | None, code: str | None) -> bool:
    """True only for codes in the tables whose status is VERIFIED or VERIFIED-secondary."""
    match = lookup(system, code)
    return match is not None and not match.unverified


def concept_rows() -> tuple[ConceptRow, ...]:
    return _tables().rows


def concept_ids(kind: Kind | None = None) -> tuple[str, ...]:
    labels = _tables().labels
    return tuple(cid for cid, label in labels.items() if kind is None or label.kind == kind)


def concept_kind(concept_id: str) -> Kind:
    return _tables().labels[concept_id].kind


def concept_groups(concept_id: str) -> tuple[str, ...]:
    label = _tables().labels.get(concept_id)
    return label.groups if label else ()


def concept_display(concept_id: str, locale: Locale = "en") -> str:
    label = _tables().labels[concept_id]
    return label.fr if locale == "fr" else label.en


@lru_cache(maxsize=64)
def loinc_codes_for(analyte: str) -> tuple[str, ...]:
    """Emittable LOINC codes of one analyte, in table order (the preferred code first)."""
    return tuple(
        row.code
        for row in _tables().rows
        if row.concept_id == analyte and row.system == LOINC and row.status != "UNVERIFIED"
    )


@lru_cache(maxsize=1)
def observation_loinc_codes() -> tuple[str, ...]:
    """Every emittable LOINC code of every analyte, deduplicated, for the Observation prefetch template."""
    seen: dict[str, None] = {}
    for row in _tables().rows:
        if row.kind == "lab" and row.system == LOINC and row.status != "UNVERIFIED":
            seen.setdefault(row.code, None)
    return tuple(seen)


_NON_WORD = re.compile(r"[^0-9a-z]+")


def fold_text(text: str) -> str:
    """Accent- and case-insensitive form: letters and digits only, single spaces ("Héparine" -> "heparine")."""
    if text.isascii():  # most text: no accents to strip (casefold and lower agree on ASCII)
        return _NON_WORD.sub(" ", text.lower()).strip()
    decomposed = unicodedata.normalize("NFKD", text)
    stripped = "".join(ch for ch in decomposed if not unicodedata.combining(ch))
    return _NON_WORD.sub(" ", stripped.casefold()).strip()


@dataclass(frozen=True, slots=True)
class NameIndex:
    """Folded names of a names table, by their first word: a text is checked only against the names whose
    first word it contains (issue 14: every text was checked against every name)."""

    # first word -> (row order, folded name, concept id, locale), in row order
    by_first_word: Mapping[str, tuple[tuple[int, str, str, str], ...]]

    @classmethod
    def of(cls, table: str, rows: Iterable[Mapping[str, str]]) -> NameIndex:
        grouped: dict[str, list[tuple[int, str, str, str]]] = {}
        for order, row in enumerate(rows):
            name = fold_text(row["name"])
            if not name:
                raise ValueError(f"{table}: the name {row['name']!r} has no letter or digit")
            grouped.setdefault(name.split(" ", 1)[0], []).append((order, name, row["concept_id"], row["locale"]))
        return cls({word: tuple(entries) for word, entries in grouped.items()})

    def find(self, folded: str, locales: tuple[str, ...]) -> tuple[str, ...]:
        """Concepts named as whole words in ``folded`` (already folded), first row first, each once."""
        candidates = sorted(entry for word in set(folded.split(" ")) for entry in self.by_first_word.get(word, ()))
        if not candidates:
            return ()
        padded = f" {folded} "
        found: dict[str, None] = {}
        for _, name, concept_id, locale in candidates:
            if locale in locales and f" {name} " in padded:
                found.setdefault(concept_id, None)
        return tuple(found)


def bodysite_name(concept_id: str, locale: Locale = "en") -> str | None:
    """The first name of a body site in ``locale`` ("knee", "genou"), as written in bodysite_names.csv."""
    return _tables().bodysite_display.get((concept_id, locale))


# Texts up to this length are cached, 8,192 (of both tables) at most: at most about 16 MB held.
_CACHED_TEXT_CHARS = 2000
_NamesTable = Literal["medication_names", "bodysite_names"]


@lru_cache(maxsize=8192)
def _find_cached(table: _NamesTable, folded_text: str, locales: tuple[str, ...]) -> tuple[str, ...]:
    index: NameIndex = getattr(_tables(), table)
    return index.find(folded_text, locales)


def _find(table: _NamesTable, folded_text: str, locales: tuple[str, ...]) -> tuple[str, ...]:
    # Short texts are cached: the same order and problem-list texts come back on every chart opening.
    if len(folded_text) > _CACHED_TEXT_CHARS:
        return _find_cached.__wrapped__(table, folded_text, locales)
    return _find_cached(table, folded_text, locales)


def find_medication_names(folded_text: str, locales: tuple[str, ...] = ("en", "fr")) -> tuple[str, ...]:
    """Medication concepts whose ingredient name (in ``locales``) appears as whole words in folded text."""
    return _find("medication_names", folded_text, locales)


def find_bodysite_names(folded_text: str, locales: tuple[str, ...] = ("en", "fr")) -> tuple[str, ...]:
    """Body-site concepts named (in ``locales``) as whole words in already-folded text."""
    return _find("bodysite_names", folded_text, locales)
