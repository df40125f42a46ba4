"""Audit trail of every card response and feedback item (security brief §3)."""

from hooks.audit.records import FeedbackRecord, FhirQuery, HookCallRecord, PrefetchKeyState
from hooks.audit.store import AuditError, AuditStore, FeedbackResult, MemoryAuditStore

__all__ = [
    "AuditError",
    "AuditStore",
    "FeedbackRecord",
    "FeedbackResult",
    "FhirQuery",
    "HookCallRecord",
    "MemoryAuditStore",
    "PrefetchKeyState",
]
