"""The FHIR client used when prefetch is incomplete: allow-list, breaker, per-origin pools, queries, answers.

``client`` (``HttpxFhirFetcher``, the paging and retry), ``allowlist`` (SSRF), ``breaker`` (per origin),
``pool`` (bounded connections per origin, cancellation-safe), ``queries`` (URLs and audit names),
``responses`` (reading and checking one answer). Documented in docs/fhir-fallback.md.
"""
