"""Errors: the OpenAI shape under /v1/, RFC 9457 problem+json everywhere else."""
from __future__ import annotations

import json
import logging

import psycopg
from fastapi import Request
from fastapi.exceptions import RequestValidationError
from sqlalchemy import exc as sa_exc
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse

from gateway import context

TITLES = {400: "Bad Request", 401: "Unauthorized", 402: "Payment Required", 403: "Forbidden", 404: "Not Found",
          405: "Method Not Allowed", 409: "Conflict", 413: "Content Too Large", 415: "Unsupported Media Type",
          422: "Unprocessable Content", 429: "Too Many Requests", 500: "Internal Server Error",
          502: "Bad Gateway", 503: "Service Unavailable", 504: "Gateway Timeout"}

OPENAI_TYPES = {400: "invalid_request_error", 401: "authentication_error", 402: "budget_exceeded",
                403: "permission_error", 404: "not_found_error", 409: "conflict_error",
                413: "invalid_request_error", 422: "invalid_request_error", 429: "rate_limit_error",
                502: "api_error", 503: "api_error", 504: "api_error"}


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, *, param: str | None = None,
                 error_type: str | None = None, headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.param = param
        self.error_type = error_type
        self.headers = headers or {}


class BodyTooLarge(Exception):
    """The body grew past the gateway's limit while it was read (a streamed body declares no length)."""


def error_response(path: str, status: int, code: str, message: str, *, param: str | None = None,
                   error_type: str | None = None, headers: dict | None = None) -> JSONResponse:
    request_id = context.current_request_id()
    if path.startswith("/v1/"):
        body = {"error": {"message": message, "type": error_type or OPENAI_TYPES.get(status, "api_error"),
                          "code": code, "param": param}}
        return JSONResponse(body, status_code=status, headers=headers)
    body = {"type": f"https://errors.ai-gateway.dev/{code}", "title": TITLES.get(status, "Error"),
            "status": status, "detail": message, "code": code, "request_id": request_id}
    if param:
        body["param"] = param
    return JSONResponse(body, status_code=status, headers=headers, media_type="application/problem+json")


def _describe_validation(exc: RequestValidationError) -> tuple[str, str | None, int]:
    errors = exc.errors()
    if not errors:
        return "The request is not valid.", None, 422
    first = errors[0]
    if first.get("type") == "json_invalid":
        return f"The request body is not valid JSON: {first.get('ctx', {}).get('error', 'parse error')}.", None, 400
    loc = [str(p) for p in first.get("loc", ()) if p not in ("body",)]
    field = ".".join(loc) or None
    msg = first.get("msg", "invalid value")
    if first.get("type") == "missing":
        text = f"Field '{field}' is required."
    elif first.get("type") == "extra_forbidden":
        text = f"Field '{field}' is not allowed here."
    else:
        text = f"Field '{field}' is invalid: {msg}." if field else f"The request body is invalid: {msg}."
    if len(errors) > 1:
        text += f" ({len(errors) - 1} more problem(s) in the request.)"
    return text, field, 422


log = logging.getLogger("gateway.errors")

# Driver errors that mean "the database cannot be reached or used right now", not "this request is wrong":
# SQLite busy past its timeout, a PostgreSQL server or database refusing or dropping connections, a full pool.
# psycopg's own errors come from the chat path's asyncio connections (gateway/services/chat_billing.py).
DATABASE_UNAVAILABLE = (sa_exc.OperationalError, sa_exc.InterfaceError, sa_exc.TimeoutError,
                        psycopg.OperationalError, psycopg.InterfaceError)


def database_unavailable(path: str, exc: Exception) -> JSONResponse:
    cause = type(getattr(exc, "orig", None) or exc).__name__
    log.warning("database unavailable on %s: %s [while running: %s]", path, str(exc).splitlines()[0][:300],
                str(getattr(exc, "statement", None) or "")[:120])
    return error_response(path, 503, "database_unavailable",
                          f"The gateway's database is unavailable right now ({cause}); the request was not "
                          f"completed. Retry shortly; the request id identifies the log lines.",
                          headers={"Retry-After": "1"})


def install(app) -> None:
    @app.exception_handler(sa_exc.DBAPIError)
    async def _database(request: Request, exc: sa_exc.DBAPIError):
        if isinstance(exc, DATABASE_UNAVAILABLE) or exc.connection_invalidated:
            return database_unavailable(request.url.path, exc)
        if isinstance(exc, sa_exc.DataError):  # a value the database cannot hold, say a NUL in PostgreSQL text
            reason = (str(exc.orig).splitlines() or ["invalid value"])[0][:200]
            return error_response(request.url.path, 400, "invalid_value",
                                  f"A value in the request cannot be stored or looked up: {reason}.")
        raise exc

    @app.exception_handler(psycopg.OperationalError)
    @app.exception_handler(psycopg.InterfaceError)
    async def _psycopg_unavailable(request: Request, exc: psycopg.Error):
        return database_unavailable(request.url.path, exc)

    @app.exception_handler(sa_exc.TimeoutError)
    async def _pool_timeout(request: Request, exc: sa_exc.TimeoutError):
        return database_unavailable(request.url.path, exc)

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error_response(request.url.path, exc.status, exc.code, exc.message, param=exc.param,
                              error_type=exc.error_type, headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError):
        message, field, status = _describe_validation(exc)
        code = "invalid_json" if status == 400 else "invalid_request"
        return error_response(request.url.path, status, code, message, param=field)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        detail = exc.detail if isinstance(exc.detail, str) else json.dumps(exc.detail)
        if exc.status_code == 404 and detail == "Not Found":
            detail = f"No route for {request.method} {request.url.path}."
        if isinstance(exc.__cause__, BodyTooLarge):  # FastAPI turns a failed body read into a 400
            return error_response(request.url.path, 413, "body_too_large", str(exc.__cause__))
        if exc.status_code == 400 and detail == "There was an error parsing the body":
            code, detail = "invalid_json", ("The request body could not be parsed: it is not UTF-8 JSON, or it is "
                                            "nested too deeply or holds a number too large to read.")
        return error_response(request.url.path, exc.status_code, code, detail, headers=getattr(exc, "headers", None))
