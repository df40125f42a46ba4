"""Operational logging: JSON lines on stderr, with a filter that drops tokens and JWTs.

Operational logs carry request ids, hookInstance, service id, iss, tenant, jti, status and latency; never
patient data, bodies, Authorization headers or access tokens (security brief §2.4).
"""

from __future__ import annotations

import logging
import re
import sys

import orjson

__all__ = ["RedactingFilter", "configure_logging", "redact"]

# A JWT (JWS compact form) is base64url segments starting with the encoded '{"'; bearer credentials follow
# the auth scheme; key=value / "key": "value" forms cover JSON, Python reprs (single quotes), query strings
# and header dumps. Values are cut at the first quote, space, comma, brace, bracket or ampersand.
_JWT = re.compile(r"eyJ[A-Za-z0-9_-]{2,}\.[A-Za-z0-9_-]{2,}(?:\.[A-Za-z0-9_-]*){1,3}")
_SCHEME = re.compile(r"(?i)\b((?:bearer|dpop|basic)\s+)[A-Za-z0-9._~+/=-]+")
_KEY_VALUE = re.compile(
    r"""(?i)(\b(?:authorization|access_token|refresh_token|id_token|token|client_secret|password)"""
    r"""['"]?\s*[:=]\s*(?:b?['"])?)(?:(?:bearer|dpop|basic)\s+)?[^\s'",}\]&]+"""
)


def redact(text: str) -> str:
    text = _JWT.sub("[redacted-jwt]", text)
    text = _KEY_VALUE.sub(lambda m: m.group(1) + "[redacted]", text)
    return _SCHEME.sub(lambda m: m.group(1) + "[redacted]", text)


class RedactingFilter(logging.Filter):
    """Rewrites every record so no token or JWT survives, whatever the code that logged it passed.

    Security brief §2.4: Authorization headers, access tokens and JWTs are never logged. Exception text
    is dropped (only the type is kept) because exception messages, e.g. pydantic's, quote request values.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except (TypeError, ValueError):
            # A bad format string would otherwise make the handler print the raw args to stderr.
            message = f"{record.msg!s} (unformattable log arguments)"
        if record.exc_info and record.exc_info[1] is not None:
            exc_type = record.exc_info[0]
            message = f"{message} [{exc_type.__name__ if exc_type else 'exception'}]"
        record.msg, record.args = redact(message), None
        record.exc_info, record.exc_text = None, None
        if record.stack_info:
            record.stack_info = redact(record.stack_info)
        return True


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        payload = {
            "ts": self.formatTime(record, "%Y-%m-%dT%H:%M:%S%z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "msg": record.getMessage(),
        }
        return orjson.dumps(payload).decode()


def configure_logging(level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactingFilter())
    root = logging.getLogger()
    root.handlers = [handler]
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access", "httpx", "httpcore"):
        logging.getLogger(name).addFilter(RedactingFilter())
    # httpx logs every request URL at INFO, and FHIR search URLs carry the patient id: operational logs
    # hold no patient data (security brief §2.4), so only its warnings and errors are kept.
    for name in ("httpx", "httpcore"):
        logging.getLogger(name).setLevel(max(level, logging.WARNING))
