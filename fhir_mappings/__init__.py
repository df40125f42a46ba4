"""FHIR R4 to clinical facts for the calcinosis cutis CDS service (no web imports).

Entry point: :func:`build_facts` (clinical brief §1–§5, §9.5–§9.8). The types it returns are in
:mod:`fhir_mappings.facts`; code tables in :mod:`fhir_mappings.terminology`; units in
:mod:`fhir_mappings.units`; prefetch parsing in :mod:`fhir_mappings.prefetch`.
"""

from __future__ import annotations

from fhir_mappings.extract import build_facts
from fhir_mappings.options import MappingOptions
from fhir_mappings.prefetch import PrefetchValue, classify_prefetch_value

__all__ = ["MappingOptions", "PrefetchValue", "build_facts", "classify_prefetch_value"]
