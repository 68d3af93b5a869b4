"""ASGI middleware: correlation ids, the client's address, body size limit, security headers, access log and metrics
for every request."""
from __future__ import annotations

import hmac
import logging
import time

from starlette.datastructures import Headers, MutableHeaders

from gateway import context, metrics
from gateway.errors import DATABASE_UNAVAILABLE, BodyTooLarge, database_unavailable, error_response
from gateway.logs import log as log_fields, redact
from gateway.throttle import ClientAddresses

log = logging.getLogger("gateway.access")


class GatewayMiddleware:
    def __init__(self, app, max_body_bytes: int, max_platform_body_bytes: int = 64 * 1024,
                 addresses: ClientAddresses | None = None, metrics_token: str | None = None,
                 process_name: str | None = None):
        self.app = app
        self.process_name = process_name  # test mode: which process served, as X-Gateway-Process
        self.addresses = addresses or ClientAddresses(())
        self.metrics_token = metrics_token
        self.max_body_bytes = max_body_bytes
        # The platform API's bodies are a few fields; a large JSON document there (say 50,000 unknown keys) costs
        # the event loop seconds of validation. Only model traffic (/v1/) takes bodies up to max_body_bytes.
        self.max_platform_body_bytes = min(max_body_bytes, max_platform_body_bytes)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        headers = Headers(scope=scope)
        correlation = context.correlation_from_headers(headers.get("x-request-id"), headers.get("traceparent"))
        context.set_current(correlation)
        scope.setdefault("state", {})["request_id"] = correlation.request_id
        peer = scope.get("client")
        ClientAddresses.set_current(self.addresses.resolve(peer[0] if peer else None, headers.get("x-forwarded-for")))
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
                out["X-Content-Type-Options"] = "nosniff"
                if self.process_name:
                    out["X-Gateway-Process"] = self.process_name
                if "cache-control" not in out:  # tokens, keys and invitations must never sit in a cache
                    out["Cache-Control"] = "no-store"
            await send(message)

        async def reply(response):
            await response(scope, receive, send_with_ids)

        try:
            if path == "/metrics" and self.metrics_token and not self._metrics_caller(headers):
                return await reply(error_response(path, 401, "unauthorized", "Authentication failed: /metrics "
                                                  "wants the metrics token (Authorization: Bearer ...).",
                                                  headers={"WWW-Authenticate": "Bearer"}))
            limit = self.max_body_bytes if path.startswith("/v1/") else self.max_platform_body_bytes
            declared = headers.get("content-length")
            if declared is not None and (not declared.isdigit() or int(declared) > limit):
                return await reply(self._too_large(path, declared, limit))
            received = 0

            async def counting_receive():
                nonlocal received
                message = await receive()
                if message["type"] == "http.request":
                    received += len(message.get("body", b""))
                    if received > limit:
                        raise BodyTooLarge(self._too_large_message(str(received), limit))
                return message

            try:
                await self.app(scope, counting_receive, send_with_ids)
                if not status_holder["started"]:  # the app returned without answering: answer, with the ids
                    log.error("no response was produced for %s %s", scope["method"], redact(path))
                    await reply(error_response(path, 500, "internal_error", "The gateway produced no answer; "
                                               "the request id identifies the log lines."))
            except BodyTooLarge:
                if not status_holder["started"]:
                    await reply(self._too_large(path, str(received), limit))
            except DATABASE_UNAVAILABLE as exc:  # raised outside the routes' handlers (say while refusing)
                if not status_holder["started"]:
                    await reply(database_unavailable(path, exc))
            except Exception:
                # Handled here, inside the correlation context, so the 500 and its log line carry the request id.
                log.exception("unhandled error on %s %s", scope["method"], redact(path))
                if not status_holder["started"]:
                    await reply(error_response(path, 500, "internal_error", "The gateway failed unexpectedly; "
                                               "the request id identifies the log lines."))
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or "unmatched"
            metrics.observe(scope["method"], template, status_holder["status"], elapsed)
            shown = redact(path)  # an invitation's token is in its path
            log_fields(log, logging.INFO, f"{scope['method']} {shown} {status_holder['status']}",
                       method=scope["method"], path=shown, route=template, status=status_holder["status"],
                       elapsed_ms=round(elapsed * 1000, 2))
            # The correlation stays set on purpose: an ASGI server runs each request in a task of its own, so it
            # ends with that task, and the server's own lines about this request (uvicorn logs an unfinished
            # answer after the app returned) still carry its ids.

    def _metrics_caller(self, headers: Headers) -> bool:
        sent = headers.get("authorization", "")
        return hmac.compare_digest(sent.encode(), f"Bearer {self.metrics_token}".encode())

    @staticmethod
    def _too_large_message(size: str, limit: int) -> str:
        return f"The request body ({size} bytes) is larger than the {limit} bytes this route accepts."

    def _too_large(self, path: str, size: str, limit: int):
        return error_response(path, 413, "body_too_large", self._too_large_message(size, limit))
