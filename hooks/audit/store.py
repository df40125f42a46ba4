"""The ``AuditStore`` seam: every card response and feedback item goes through it.

A response that could not be audited is not sent (503), so ``append_call`` commits before it returns.
The JWT replay cache (``remember_jti``) lives in the same database (issue: trusting CDS clients).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from hooks.audit.records import FeedbackRecord, HookCallRecord

__all__ = ["AuditError", "AuditIntegrityError", "AuditStore", "FeedbackResult", "MemoryAuditStore"]


class AuditError(Exception):
    """The store could not durably record something; the caller must not send the response."""


class AuditIntegrityError(AuditError):
    """A stored record does not verify against the chain (edited, or another key): it is never shown."""


@dataclass(frozen=True, slots=True)
class FeedbackResult:
    stored: int
    duplicates: int


class AuditStore(Protocol):
    async def open(self) -> None:
        """Create or migrate the schema."""

    async def close(self) -> None: ...

    async def ping(self) -> None:
        """Raise AuditError when the store is unreachable (drives /readyz)."""

    async def append_call(self, record: HookCallRecord) -> None:
        """Commit one hook-call record durably, or raise AuditError."""

    async def append_feedback(self, records: Sequence[FeedbackRecord]) -> FeedbackResult:
        """Commit feedback items, skipping exact repeats; raise AuditError on failure."""

    async def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        """Store a JWT id; False when (iss, jti) was already seen and has not expired (a replay)."""

    async def find_calls(self, hook_instance: str, received_at: datetime) -> list[HookCallRecord]:
        """The call records of this hook instance received at this instant (several callers may reuse one
        hookInstance), each chain link checked (``AuditIntegrityError`` if one does not verify). For the
        assessment page, which keeps the one its link is bound to."""

    async def append_access(self, action: str, details: dict[str, Any]) -> None:
        """Record a read of PHI (the assessment page) before anything is shown; raise AuditError on failure.
        ``details`` may name ``patient`` and ``hook_instance`` (indexed) and never holds a token."""


class MemoryAuditStore:
    """In-process store for unit tests of the web layer. Not durable: never used by ``make run``."""

    def __init__(self) -> None:
        self.calls: list[HookCallRecord] = []
        self.feedback: list[FeedbackRecord] = []
        self._feedback_keys: set[tuple[str | None, str | None, str]] = set()
        self._jtis: dict[tuple[str, str], datetime] = {}
        self.accesses: list[tuple[str, dict[str, Any]]] = []
        self.fail_appends = False

    async def open(self) -> None:
        return None

    async def close(self) -> None:
        return None

    async def ping(self) -> None:
        if self.fail_appends:
            raise AuditError("memory store set to fail")

    async def append_call(self, record: HookCallRecord) -> None:
        if self.fail_appends:
            raise AuditError("memory store set to fail")
        self.calls.append(record)

    async def append_feedback(self, records: Sequence[FeedbackRecord]) -> FeedbackResult:
        if self.fail_appends:
            raise AuditError("memory store set to fail")
        stored = 0
        for record in records:
            key = (record.iss, record.tenant, record.dedupe_key())
            if key in self._feedback_keys:
                continue
            self._feedback_keys.add(key)
            self.feedback.append(record)
            stored += 1
        return FeedbackResult(stored=stored, duplicates=len(records) - stored)

    async def remember_jti(self, iss: str, jti: str, expires_at: datetime) -> bool:
        if (iss, jti) in self._jtis:
            return False
        self._jtis[(iss, jti)] = expires_at
        return True

    async def find_calls(self, hook_instance: str, received_at: datetime) -> list[HookCallRecord]:
        return [c for c in self.calls if c.hook_instance == hook_instance and c.received_at == received_at]

    async def append_access(self, action: str, details: dict[str, Any]) -> None:
        if self.fail_appends:
            raise AuditError("memory store set to fail")
        self.accesses.append((action, dict(details)))
