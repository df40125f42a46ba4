"""The service call, ``POST {base}/cds-services/{id}``, answered without FastAPI's routing and middleware stack.

Issue 14: every call crossed nine ASGI layers (error and exception middleware, FastAPI's telemetry, body limit
and exit-stack wrappers, routing, dependency solving), about 0.4 ms of a 4 ms call, for an endpoint that reads
its body by hand and answers a prebuilt Response. This lane does what those layers did for it, and no more:

- the streamed body limit and the security headers (the same functions as the two middlewares);
- the runtime read from ``app.state`` (what ``RuntimeDep`` reads);
- an exception that escapes the pipeline is the same logged, header-carrying 500 OperationOutcome as the
  app's last-resort handler (the pipeline itself audits and answers every error it can).

Everything else (feedback, discovery, pages, a trailing slash, another method, CORS when
``CDS_CORS_ORIGINS`` is set) goes through the full FastAPI stack, which still declares this route for the
OpenAPI document.
"""

from __future__ import annotations

import logging
import re

from fastapi import FastAPI
from starlette._utils import get_route_path
from starlette.requests import Request
from starlette.types import Message, Receive, Scope, Send

from hooks.errors import CdsError
from hooks.pipeline import handle_service_call
from hooks.runtime import Runtime
from hooks.web import error_response, internal_error_response, limited_receive, with_security_headers

__all__ = ["CdsApp"]

log = logging.getLogger("calcinosis_cds")

# The same path Starlette's "/cds-services/{service_id}" matches: one segment, no trailing slash.
_SERVICE_CALL = re.compile(r"/cds-services/(?P<service_id>[^/]+)")


class CdsApp(FastAPI):
    """FastAPI, with the service-call endpoint answered on its own lane (``hot_lane`` False turns it off)."""

    hot_lane: bool = True

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.hot_lane and scope["type"] == "http" and scope["method"] == "POST":
            if self.root_path:  # as FastAPI sets it, before any route is matched
                scope["root_path"] = self.root_path
            match = _SERVICE_CALL.fullmatch(get_route_path(scope))
            if match is not None:
                await self._service_call(match["service_id"], scope, receive, send)
                return
        await super().__call__(scope, receive, send)

    async def _service_call(self, service_id: str, scope: Scope, receive: Receive, send: Send) -> None:
        # What Starlette and the router set on the way: the app (read_json_body reads its state) and the path
        # parameter.
        scope["app"] = self
        scope["path_params"] = {"service_id": service_id}
        send = with_security_headers(send)
        started = False

        async def tracked_send(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            runtime: Runtime = self.state.runtime
            request = Request(scope, limited_receive(receive, runtime.settings.max_body_bytes))
            response = await handle_service_call(service_id, request, runtime)
            await response(scope, receive, tracked_send)
        except Exception as exc:
            if started:  # the answer is on its way: nothing more can be said on this connection
                raise
            if isinstance(exc, CdsError):  # as the app's CdsError handler answers it (the pipeline answers its own)
                refusal = error_response(exc)
            else:
                log.error("unhandled %s on %s", type(exc).__name__, scope["path"], exc_info=exc)
                refusal = internal_error_response()
            await refusal(scope, receive, send)
