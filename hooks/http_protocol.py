"""uvicorn's httptools protocol with the request-head cap that h11 enforced (issue 14).

h11 (``h11_max_incomplete_event_size``) refused a request whose incomplete head (request line and headers)
grew past 16 KiB: a client cannot make the server buffer an endless header. httptools parses faster
(dialysis call 3.98 → 3.91 ms of CPU) but has no such limit, so this subclass enforces it, a little more
strictly than h11 did:

- a head still incomplete after more than ``HEAD_LIMIT_BYTES`` have arrived is refused without waiting for
  its end (h11's rule; at most one socket read more than the limit is ever buffered);
- a head that arrives whole in one read is refused too when its URL and headers exceed the limit (h11
  accepted those);
- inside a body, the parser must make progress (body bytes, a chunk boundary) at least every
  ``HEAD_LIMIT_BYTES``: an endless chunk-size line or trailer section is refused the same way;
- trailers of a chunked body are counted against the same limit and dropped, as h11 dropped them (uvicorn's
  httptools protocol would add them to the request's headers, after the service read them).

The refusal is a 400 and the connection closed (a call whose body was being read then sees a disconnect,
audited as such). Its body is an OperationOutcome with the security headers, for this refusal and for every
request uvicorn cannot parse (uvicorn's own answer is plain text); it never reached the service, so it is
in the log, not the audit trail, like the proxy's refusals.
"""

from __future__ import annotations

from typing import Any

import orjson
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

from hooks.errors import operation_outcome
from hooks.web import SECURITY_HEADERS

__all__ = ["HEAD_LIMIT_BYTES", "HeadCappedHttpToolsProtocol"]

HEAD_LIMIT_BYTES = 16 * 1024
_REFUSAL = "Invalid HTTP request received."
_REFUSAL_BODY = orjson.dumps(operation_outcome(
    "the request is not valid HTTP/1.1, or its request line and headers (or a chunked body's framing and "
    "trailers) exceed 16 KiB", code="structure"))


class _HeadTooLarge(Exception):
    """Raised in a parser callback; httptools turns it into HttpParserCallbackError, which uvicorn answers 400."""


class HeadCappedHttpToolsProtocol(HttpToolsProtocol):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._reading_head = True  # from the first byte of a request until its headers are complete
        self._head_bytes = 0  # bytes received while reading the current head
        self._head_fields = 0  # bytes of the URL and header names and values parsed so far
        self._trailer_fields = 0  # bytes of the current body's trailers
        self._progressed = False  # the parser made progress in the body during the current read
        self._stalled_bytes = 0  # body phase: bytes received since the parser last made progress

    def data_received(self, data: bytes) -> None:
        counted = self._reading_head
        if counted:
            self._head_bytes += len(data)
        self._progressed = False
        super().data_received(data)
        if self._reading_head:
            # Started in a head that is still incomplete: every byte of this read belongs to that head.
            over = counted and self._head_bytes > HEAD_LIMIT_BYTES
        else:
            self._stalled_bytes = 0 if self._progressed else self._stalled_bytes + len(data)
            over = self._stalled_bytes > HEAD_LIMIT_BYTES
        if over and not self.transport.is_closing():
            self.logger.warning(_REFUSAL)
            self.send_400_response(_REFUSAL)

    def send_400_response(self, msg: str) -> None:
        """The refusal as an OperationOutcome (uvicorn's is plain text); ``msg`` is uvicorn's log line."""
        content = [STATUS_LINE[400]]
        for name, value in [*self.server_state.default_headers, *SECURITY_HEADERS]:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([
            b"content-type: application/fhir+json\r\n",
            b"content-length: " + str(len(_REFUSAL_BODY)).encode("ascii") + b"\r\n",
            b"connection: close\r\n",
            b"\r\n",
            _REFUSAL_BODY,
        ])
        self.transport.write(b"".join(content))
        self.transport.close()

    def on_message_begin(self) -> None:
        self._reading_head = True
        self._head_fields = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._count_fields(len(url))
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if not self._reading_head:  # a trailer of a chunked body: counted, never a request header
            self._trailer_fields += len(name) + len(value)
            if self._trailer_fields > HEAD_LIMIT_BYTES:
                raise _HeadTooLarge
            return
        self._count_fields(len(name) + len(value))
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._reading_head = False
        self._head_bytes = 0
        self._head_fields = 0
        self._trailer_fields = 0
        self._stalled_bytes = 0
        self._progressed = True
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._progressed = True
        super().on_body(body)

    def on_chunk_header(self) -> None:
        self._progressed = True

    def on_chunk_complete(self) -> None:
        self._progressed = True

    def on_message_complete(self) -> None:
        self._reading_head = True
        self._head_bytes = 0
        self._progressed = True
        super().on_message_complete()

    def _count_fields(self, size: int) -> None:
        self._head_fields += size
        if self._head_fields > HEAD_LIMIT_BYTES:
            raise _HeadTooLarge
