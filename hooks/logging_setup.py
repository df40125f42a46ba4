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

# A JWT is three base64url segments; bearer credentials follow "Bearer "; access_token appears in JSON.
_PATTERNS = (
    re.compile(r"eyJ[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]{5,}\.[A-Za-z0-9_-]*"),
    re.compile(r"(?i)(bearer\s+)[A-Za-z0-9._~+/=-]+"),
    re.compile(r'(?i)("?access_token"?\s*[:=]\s*"?)[^",\s}]+'),
    re.compile(r"(?i)(authorization\s*[:=]\s*)[^\s,}]+(\s+[^\s,}]+)?"),
)


def redact(text: str) -> str:
    text = _PATTERNS[0].sub("[redacted-jwt]", text)
    for pattern in _PATTERNS[1:]:
        text = pattern.sub(lambda m: m.group(1) + "[redacted]", text)
    return text


class RedactingFilter(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        cleaned = redact(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_info and record.exc_info[1] is not None:
            # Tracebacks can carry request values in exception messages; keep the type, drop the text.
            exc_type = record.exc_info[0]
            record.exc_info = None
            record.exc_text = None
            record.msg = f"{record.getMessage()} [{exc_type.__name__ if exc_type else 'exception'}]"
            record.args = None
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
