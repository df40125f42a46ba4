"""Full prefetch built from a fixture Bundle, as an EHR would send it (protocol brief §1.4, R45).

Evaluates the small query subset the services' templates use (instance read; type search by ``patient``
and by OR'd ``system|code`` or bare code tokens; ``_sort=-date``; ``_count``) against the resources of one
transaction Bundle, so a call with this prefetch must give the same cards as a call that fetches the same
data from a FHIR server.
An unknown search parameter raises: the comparison must never quietly diverge.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qsl

from fhir_mappings.prefetch import _dated
from hooks.data_access import fill_template

__all__ = ["build_prefetch"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _resources(bundle: Mapping[str, Any]) -> list[dict[str, Any]]:
    return [entry["resource"] for entry in bundle.get("entry") or () if isinstance(entry.get("resource"), dict)]


def _refers_to_patient(resource: Mapping[str, Any], patient_id: str) -> bool:
    wanted = {patient_id, f"Patient/{patient_id}"}
    return any(
        isinstance(resource.get(field), dict) and resource[field].get("reference") in wanted
        for field in ("subject", "patient")
    )


def _has_code(resource: Mapping[str, Any], tokens: list[tuple[str | None, str]]) -> bool:
    codings = (resource.get("code") or {}).get("coding") or ()
    return any(
        coding.get("code") == code and (system is None or coding.get("system") == system)
        for coding in codings
        for system, code in tokens
    )


def _search(resources: list[dict[str, Any]], query: str) -> dict[str, Any]:
    kind, _, params = query.partition("?")
    matches = [r for r in resources if r.get("resourceType") == kind]
    for name, value in parse_qsl(params, keep_blank_values=True):
        if name == "patient":
            matches = [r for r in matches if _refers_to_patient(r, value)]
        elif name == "code":
            parts = (token.partition("|") for token in value.split(","))
            tokens = [(system or None, code) if sep else (None, system) for system, sep, code in parts]
            matches = [r for r in matches if _has_code(r, tokens)]
        elif name == "_sort" and value == "-date":
            # Newest first by effective[x] (else issued), undated last, as a FHIR server sorts on ``date``.
            matches.sort(key=lambda r: (_dated(r) is not None, _dated(r) or _EPOCH), reverse=True)
        elif name != "_count":
            raise ValueError(f"prefetch_builder does not evaluate the search parameter {name!r}")
    return {
        "resourceType": "Bundle",
        "type": "searchset",
        "total": len(matches),
        "entry": [{"fullUrl": f"{r['resourceType']}/{r['id']}", "resource": r} for r in matches],
    }


def build_prefetch(
    bundle: Mapping[str, Any], templates: Mapping[str, str], context: Mapping[str, Any]
) -> dict[str, Any]:
    resources = _resources(bundle)
    prefetch: dict[str, Any] = {}
    for key, template in templates.items():
        query = fill_template(template, context)
        if query is None:
            raise ValueError(f"template for {key!r} cannot be filled from the context")
        if "?" not in query and query.count("/") == 1:
            kind, ident = query.split("/")
            found = [r for r in resources if r.get("resourceType") == kind and r.get("id") == ident]
            prefetch[key] = found[0] if found else None
        else:
            prefetch[key] = _search(resources, query)
    return prefetch
