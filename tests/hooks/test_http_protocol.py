"""The request-head cap of hooks/http_protocol.py, on a real uvicorn server and real sockets.

A trivial ASGI app (it answers 200 with the number of request headers) is served on a free loopback port with
the service's protocol class; raw sockets then send heads under, over and around 16 KiB, whole and in pieces.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import orjson
import pytest
import uvicorn

from hooks.http_protocol import HEAD_LIMIT_BYTES, HeadCappedHttpToolsProtocol
from tests.support.service_process import free_port

REFUSED = b"HTTP/1.1 400 Bad Request"


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    while True:
        message = await receive()
        body += message.get("body", b"")
        if not message.get("more_body"):
            break
    answer = f"{len(scope['headers'])} headers, {len(body)} body bytes".encode()
    await send({"type": "http.response.start", "status": 200,
                "headers": [(b"content-length", str(len(answer)).encode())]})
    await send({"type": "http.response.body", "body": answer})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    config = uvicorn.Config(_app, host="127.0.0.1", port=chosen, http=HeadCappedHttpToolsProtocol,
                            log_config=None, lifespan="off", ws="none")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "the test server did not start"
        time.sleep(0.02)
    yield chosen
    server.should_exit = True
    thread.join(timeout=10)


def _exchange(port: int, pieces: list[bytes], pause_s: float = 0.0) -> bytes:
    """Send the pieces (pausing between them), then read until the server closes or answers."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        try:
            for piece in pieces:
                connection.sendall(piece)
                if pause_s:
                    time.sleep(pause_s)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server refused and closed mid-way: what it said is still readable or lost
        answer = b""
        try:
            # A refusal is read to the end (the server closes); an answer until its body is in.
            while not (answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"bytes")):
                chunk = connection.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except (ConnectionResetError, TimeoutError):
            pass
        return answer


def _head(header_bytes: int, body: bytes = b"") -> bytes:
    filler = b"x" * header_bytes
    return (b"POST /cds-services/x HTTP/1.1\r\nhost: test\r\nx-filler: " + filler
            + b"\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def test_an_ordinary_request_with_its_body_is_served(port: int) -> None:
    answer = _exchange(port, [_head(100, b"{}" * 5000)])
    assert answer.startswith(b"HTTP/1.1 200")
    assert answer.endswith(b"3 headers, 10000 body bytes")


def test_a_head_just_under_the_limit_is_served_even_in_pieces(port: int) -> None:
    request = _head(HEAD_LIMIT_BYTES - 200)
    pieces = [request[i:i + 1000] for i in range(0, len(request), 1000)]
    assert _exchange(port, pieces, pause_s=0.005).startswith(b"HTTP/1.1 200")


def test_a_head_over_the_limit_in_one_piece_is_refused(port: int) -> None:
    answer = _exchange(port, [_head(HEAD_LIMIT_BYTES + 10)])
    assert answer.startswith(REFUSED)
    head, _, body = answer.partition(b"\r\n\r\n")
    assert b"content-type: application/fhir+json" in head
    assert b"x-content-type-options: nosniff" in head
    assert orjson.loads(body)["resourceType"] == "OperationOutcome"


def test_a_request_that_is_not_http_gets_an_operation_outcome(port: int) -> None:
    answer = _exchange(port, [b"NOT HTTP AT ALL\r\n\r\n"])
    assert answer.startswith(REFUSED)
    assert orjson.loads(answer.partition(b"\r\n\r\n")[2])["issue"][0]["code"] == "structure"


def test_an_endless_head_is_refused_before_it_ends(port: int) -> None:
    # The head never completes: the server must answer and close once the limit is passed, not wait for it.
    start = b"POST /cds-services/x HTTP/1.1\r\nhost: test\r\nx-filler: "
    pieces = [start] + [b"x" * 4096] * 8
    answer = _exchange(port, pieces, pause_s=0.01)
    assert answer.startswith(REFUSED)


def test_many_small_headers_over_the_limit_are_refused(port: int) -> None:
    headers = b"".join(b"x-h%d: %s\r\n" % (i, b"v" * 90) for i in range(200))
    request = b"GET / HTTP/1.1\r\nhost: test\r\n" + headers + b"\r\n"
    assert _exchange(port, [request]).startswith(REFUSED)


def test_a_keep_alive_connection_counts_each_head_on_its_own(port: int) -> None:
    # Three requests of 10 KiB heads on one connection: 30 KiB in all, each head under the limit.
    with socket.create_connection(("127.0.0.1", port), timeout=5) as connection:
        for _ in range(3):
            connection.sendall(_head(10 * 1024))
            answer = b""
            while not answer.endswith(b"bytes"):
                chunk = connection.recv(65536)
                assert chunk, "the server closed a keep-alive connection"
                answer += chunk
            assert answer.startswith(b"HTTP/1.1 200")


def _chunked_start() -> bytes:
    return b"POST /cds-services/x HTTP/1.1\r\nhost: test\r\ntransfer-encoding: chunked\r\n\r\n"


def test_a_chunked_body_is_served_and_its_trailers_are_not_request_headers(port: int) -> None:
    request = _chunked_start() + b"3\r\nabc\r\n2\r\nde\r\n0\r\nauthorization: Bearer injected\r\nx-t: 1\r\n\r\n"
    answer = _exchange(port, [request])
    assert answer.startswith(b"HTTP/1.1 200")
    # Two headers in the head; the trailers did not join them (the app counts after reading the body).
    assert answer.endswith(b"2 headers, 5 body bytes")


def test_an_endless_trailer_is_refused_before_it_ends(port: int) -> None:
    pieces = [_chunked_start() + b"3\r\nabc\r\n0\r\nx-t: "] + [b"a" * 4096] * 8
    assert _exchange(port, pieces, pause_s=0.01).startswith(REFUSED)


def test_an_endless_chunk_size_line_is_refused_before_it_ends(port: int) -> None:
    pieces = [_chunked_start() + b"3;ext="] + [b"e" * 4096] * 8
    assert _exchange(port, pieces, pause_s=0.01).startswith(REFUSED)


def test_a_large_body_in_many_reads_is_served(port: int) -> None:
    body = b"x" * (256 * 1024)
    head = (b"POST /cds-services/x HTTP/1.1\r\nhost: test\r\ncontent-length: "
            + str(len(body)).encode() + b"\r\n\r\n")
    pieces = [head] + [body[i:i + 8192] for i in range(0, len(body), 8192)]
    answer = _exchange(port, pieces)
    assert answer.endswith(b"2 headers, 262144 body bytes")
