"""A FHIR server on 127.0.0.1 (real sockets, no mocks) that hangs until told to answer: for pool and burst tests.

It reads each request head and, while ``hang`` is set, never answers; then it answers every request with a
Patient. ``open_sockets`` and ``peak_sockets`` count the connections the client holds to it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import orjson

PATIENT = orjson.dumps({"resourceType": "Patient", "id": "p1"})


class LoopbackFhir:
    def __init__(self, *, hang: bool = True) -> None:
        self._answering = asyncio.Event()
        self.hang = hang
        self.port = 0
        self.open_sockets = 0
        self.peak_sockets = 0
        self._server: asyncio.Server | None = None
        self._handlers: set[asyncio.Task[None]] = set()

    @property
    def hang(self) -> bool:
        return not self._answering.is_set()

    @hang.setter
    def hang(self, value: bool) -> None:
        if value:
            self._answering.clear()
        else:
            self._answering.set()

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}/fhir"

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._handlers.add(task)
        self.open_sockets += 1
        self.peak_sockets = max(self.peak_sockets, self.open_sockets)
        try:
            while True:
                await reader.readuntil(b"\r\n\r\n")
                await self._answering.wait()
                writer.write(
                    b"HTTP/1.1 200 OK\r\ncontent-type: application/fhir+json\r\n"
                    + f"content-length: {len(PATIENT)}\r\n\r\n".encode() + PATIENT
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError, asyncio.CancelledError):
            return
        finally:
            self.open_sockets -= 1
            writer.close()
            with contextlib.suppress(Exception, asyncio.CancelledError):
                await writer.wait_closed()
            if task is not None:
                self._handlers.discard(task)

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[LoopbackFhir]:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0, backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]
        try:
            yield self
        finally:
            self._server.close()
            # Server.close() leaves accepted connections open (Python 3.11): end their handlers too.
            handlers = list(self._handlers)
            for handler in handlers:
                handler.cancel()
            await asyncio.gather(*handlers, return_exceptions=True)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1)
