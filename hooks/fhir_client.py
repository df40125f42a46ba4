"""The FHIR client's public surface (kept for importers); the code lives in ``hooks.fhir``."""

from __future__ import annotations

from hooks.fhir.allowlist import base_allowed, normalise_base, origin_of, within_base
from hooks.fhir.breaker import CircuitBreaker
from hooks.fhir.client import HttpxFhirFetcher

__all__ = ["CircuitBreaker", "HttpxFhirFetcher", "base_allowed", "normalise_base", "origin_of", "within_base"]
