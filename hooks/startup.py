"""Refusing to start: one line that names the setting and what to set, exit code 2, never a traceback.

Every refusal the service can meet before it serves is one of ``REFUSALS``: the settings (``SettingsError``,
or pydantic's ``ValidationError`` for a value of the wrong type or range), the trust file
(``TrustConfigError``) and the audit store that cannot be opened (``AuditError``). ``calcinosis-cds serve``
prints ``refusal_line(error)`` on stderr and exits with ``EXIT_REFUSED``. Values are never echoed: a
setting may be a secret (``CDS_AUDIT_KEY``, a DSN with a password).
"""

from __future__ import annotations

import sys
from typing import IO

from pydantic import ValidationError

from hooks.audit.store import AuditError
from hooks.auth.trust import TrustConfigError
from hooks.settings import SettingsError

__all__ = ["EXIT_REFUSED", "REFUSALS", "describe_validation", "refusal_line", "refuse"]

# 1 is Python's own "unhandled exception", 3 uvicorn's "startup failed" (for instance a port in use).
EXIT_REFUSED = 2
REFUSALS: tuple[type[Exception], ...] = (SettingsError, ValidationError, TrustConfigError, AuditError)


def _env_name(location: tuple[int | str, ...]) -> str:
    return "CDS_" + str(location[0]).upper()


def describe_validation(error: ValidationError) -> str:
    """``CDS_JWT_LEEWAY_S: Input should be less than or equal to 120``; never the rejected input."""
    parts: list[str] = []
    for item in error.errors(include_url=False, include_input=False, include_context=False):
        message = str(item.get("msg", "invalid")).removeprefix("Value error, ")
        location = tuple(item.get("loc", ()))
        parts.append(f"{_env_name(location)}: {message}" if location else message)
    return "; ".join(parts) or "invalid settings"


def refusal_line(error: BaseException) -> str:
    text = describe_validation(error) if isinstance(error, ValidationError) else str(error)
    if isinstance(error, AuditError) and "CDS_AUDIT" not in text:
        text = f"the audit store (CDS_AUDIT_DSN) cannot be used: {text}"
    # One line whatever the message holds.
    return " ".join(text.split())


def refuse(error: BaseException, out: IO[str] | None = None) -> int:
    print(f"calcinosis-cds: refusing to start: {refusal_line(error)}", file=out or sys.stderr)
    return EXIT_REFUSED
