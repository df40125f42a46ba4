"""FHIR R4 to clinical facts (no web imports)."""
