"""Web pages the service serves: the full assessment behind each card and the knowledge browser (issue 12)."""
