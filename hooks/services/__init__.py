"""The CDS services this endpoint offers."""
