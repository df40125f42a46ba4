"""The floor of ``bench_service.py``: uvicorn (its default parser and loop) and orjson, one worker, parsing each
body and answering ``{"cards": []}``. Nothing a CDS service can skip: the HTTP round trip and one JSON parse.

    .venv/bin/python bench/floor_server.py PORT
"""

from __future__ import annotations

import sys
from typing import Any

import orjson
import uvicorn

_ANSWER = orjson.dumps({"cards": []})
_HEADERS = [(b"content-type", b"application/json"), (b"content-length", str(len(_ANSWER)).encode())]


async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    body = b""
    more = True
    while more:
        message = await receive()
        body += message.get("body", b"")
        more = message.get("more_body", False)
    orjson.loads(body or b"{}")
    await send({"type": "http.response.start", "status": 200, "headers": _HEADERS})
    await send({"type": "http.response.body", "body": _ANSWER})


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(sys.argv[1]), log_level="warning", access_log=False,
                lifespan="off")
