"""``calcinosis-cds assess BUNDLE.json``: the engine on a FHIR Bundle file, for clinical reviewers.

Reads a Bundle (collection, searchset or transaction), assesses the first Patient in it at ``--now``
(default: the current time) and prints the cards as JSON, exactly as the service would return them.
"""

from __future__ import annotations

import hashlib
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TextIO

import orjson

from hooks.engine.cards import render_cards
from hooks.engine.service import assess_resources
from hooks.errors import CdsError
from hooks.models import CdsResponse

__all__ = ["BundleError", "assess_bundle_file", "bundle_patient", "parse_now"]


def parse_now(text: str | None) -> datetime:
    if not text:
        return datetime.now(UTC)
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class BundleError(ValueError):
    """The file is not a FHIR Bundle holding a Patient with an id."""


def bundle_patient(bundle: Any) -> tuple[str, list[dict[str, Any]], list[str]]:
    """(patient id, resources, aliases of the Patient) of the first Patient of a Bundle."""
    if not isinstance(bundle, dict) or bundle.get("resourceType") != "Bundle":
        raise BundleError("the file is not a FHIR Bundle")
    entries = [e for e in bundle.get("entry") or () if isinstance(e, dict) and isinstance(e.get("resource"), dict)]
    resources = [e["resource"] for e in entries]
    patient_entry = next((e for e in entries if e["resource"].get("resourceType") == "Patient"), None)
    if patient_entry is None or not patient_entry["resource"].get("id"):
        raise BundleError("the Bundle holds no Patient with an id")
    # Transaction bundles refer to their Patient by fullUrl (often urn:uuid:...).
    aliases = [patient_entry["fullUrl"]] if isinstance(patient_entry.get("fullUrl"), str) else []
    return str(patient_entry["resource"]["id"]), resources, aliases


def assess_bundle_file(path: str, *, now: str | None, locale: str, out: TextIO) -> int:
    raw = Path(path).read_bytes()
    try:
        bundle = orjson.loads(raw)
        when = parse_now(now)
        patient_id, resources, aliases = bundle_patient(bundle)
    except (orjson.JSONDecodeError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    try:
        facts, assessment = assess_resources(resources, patient_id=patient_id, now=when, patient_aliases=aliases)
    except CdsError as exc:
        print(f"error: {exc.diagnostics}", file=sys.stderr)
        return 2
    seed = hashlib.sha256(raw).hexdigest()
    cards = render_cards(assessment, facts, locale=locale, seed=seed)
    out.write(orjson.dumps(CdsResponse(cards=cards).to_json(), option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
