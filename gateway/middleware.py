"""ASGI middleware: correlation ids, body size limit, access log and metrics for every request."""
from __future__ import annotations

import logging
import time

from starlette.datastructures import Headers, MutableHeaders

from gateway import context, metrics
from gateway.errors import error_response
from gateway.logs import log as log_fields

log = logging.getLogger("gateway.access")


class BodyTooLarge(Exception):
    pass


class GatewayMiddleware:
    def __init__(self, app, max_body_bytes: int):
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        correlation = context.correlation_from_headers(headers.get("x-request-id"), headers.get("traceparent"))
        token = context.set_current(correlation)
        scope.setdefault("state", {})["request_id"] = correlation.request_id
        started = time.perf_counter()
        status_holder = {"status": 500, "started": False}
        path = scope["path"]

        async def send_with_ids(message):
            if message["type"] == "http.response.start":
                status_holder["status"] = message["status"]
                status_holder["started"] = True
                out = MutableHeaders(scope=message)
                out["X-Request-ID"] = correlation.request_id
                out["X-Trace-ID"] = correlation.trace_id
            await send(message)

        async def reply(response):
            await response(scope, receive, send_with_ids)

        try:
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > self.max_body_bytes):
                return await reply(self._too_large(path, declared))
            received = 0

            async def counting_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > self.max_body_bytes:
                        raise BodyTooLarge()
                return message

            try:
                await self.app(scope, counting_receive, send_with_ids)
            except BodyTooLarge:
                if not status_holder["started"]:
                    await reply(self._too_large(path, str(received)))
            except Exception:
                # Handled here, inside the correlation context, so the 500 and its log line carry the request id.
                log.exception("unhandled error on %s %s", scope["method"], path)
                if not status_holder["started"]:
                    await reply(error_response(path, 500, "internal_error", "The gateway failed unexpectedly; "
                                               "the request id identifies the log lines."))
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.observe(scope["method"], template, status_holder["status"], elapsed)
            log_fields(log, logging.INFO, f"{scope['method']} {path} {status_holder['status']}",
                       method=scope["method"], path=path, route=template, status=status_holder["status"],
                       elapsed_ms=round(elapsed * 1000, 2))
            context.reset_current(token)

    def _too_large(self, path: str, size: str):
        return error_response(path, 413, "body_too_large",
                              f"The request body ({size} bytes) is larger than the {self.max_body_bytes} bytes "
                              f"this gateway accepts.")
