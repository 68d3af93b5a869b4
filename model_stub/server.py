"""Deterministic OpenAI-compatible model backend stub.

Run it as::

    python -m model_stub --host 127.0.0.1 --port 9100

Model API (namespace ``default`` when the ``/ns/{ns}`` prefix is absent)::

    POST /v1/chat/completions            POST /ns/{ns}/v1/chat/completions
    GET  /v1/models                      GET  /ns/{ns}/v1/models

Control API, per namespace::

    PUT    /_stub/{ns}/behaviour   {"mode": "ok"|"error"|"hang"|"drop", "status": 503,
                                    "body": <json>, "latency_ms": 0,
                                    "usage": {"prompt_tokens": n, "completion_tokens": n},
                                    "models": ["stub-model"]}
    GET    /_stub/{ns}/behaviour
    GET    /_stub/{ns}/calls       {"calls": [{"seq", "at", "method", "path", "query",
                                               "headers", "body"}]}  (arrival order)
    DELETE /_stub/{ns}             reset behaviour and calls of one namespace
    DELETE /_stub                  reset every namespace
    GET    /healthz                {"status": "ok"}

Answers are deterministic: the same request body gives the same response (id derived from
a hash of the canonical body, fixed ``created``). Token rule, shared with the gateway's
worst-case estimate::

    prompt_tokens     = ceil(sum(len(m["content"]) for string contents) / 4)
    completion_tokens = min(max_tokens if given else 16, ceil(len(reply_content) / 4))

The reply is ``"Echo: " + <last user message, stripped>``, cut to ``limit * 4`` characters
(``finish_reason`` ``length``) when longer than the limit allows, so the two lines above
always agree with the returned content. A behaviour's ``usage`` replaces both numbers.

Modes: ``ok`` answers after ``latency_ms``; ``error`` answers ``status`` (default 503) with
``body`` or an OpenAI error body after ``latency_ms``; ``hang`` never answers: it waits until
the client goes away, the namespace's behaviour is changed or reset, the server stops, or
``HANG_MAX_SECONDS`` pass, and then closes the connection; ``drop`` closes the connection
without sending any HTTP response. Behaviours apply to chat completions only; every model
call (chat and models) is recorded before the behaviour acts, at most ``MAX_CALLS`` per
namespace.

How ``drop`` works: ASGI has no message for "close without a response", and an app that
returns or raises before starting a response makes uvicorn send a 500. The stub therefore
runs uvicorn with a small subclass of its h11 protocol (:class:`StubH11Protocol`) that puts
the connection's transport into ``scope["extensions"]``; the app closes that transport and
waits for uvicorn's ``http.disconnect``, after which uvicorn sends nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import re
import socket
import sys
from collections import OrderedDict, deque
from datetime import datetime, timezone
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send
from uvicorn.protocols.http.h11_impl import H11Protocol

MODES = ("ok", "error", "hang", "drop")
DEFAULT_ERROR_STATUS = 503
DEFAULT_MAX_TOKENS = 16
DEFAULT_MODELS = ("stub-model",)
CREATED = 1_700_000_000
MAX_CALLS = 1000
MAX_NAMESPACES = 4096
MAX_LATENCY_MS = 300_000
HANG_MAX_SECONDS = 300.0
DISCONNECT_WAIT_SECONDS = 5.0
MAX_BODY_BYTES = 8 * 1024 * 1024
NAMESPACE_RE = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
TRANSPORT_EXTENSION = "model_stub.transport"

_BEHAVIOUR_KEYS = {"mode", "status", "body", "latency_ms", "usage", "models"}
_USAGE_KEYS = {"prompt_tokens", "completion_tokens", "total_tokens"}
_ERROR_TYPES = {
    400: ("invalid_request_error", "invalid_request"),
    401: ("authentication_error", "invalid_api_key"),
    403: ("permission_error", "permission_denied"),
    404: ("not_found_error", "model_not_found"),
    409: ("invalid_request_error", "conflict"),
    413: ("invalid_request_error", "request_too_large"),
    422: ("invalid_request_error", "unprocessable_entity"),
    429: ("rate_limit_error", "rate_limit_exceeded"),
}


# --------------------------------------------------------------------------- token rule


def prompt_tokens_for(messages: Any) -> int:
    """ceil(total_chars / 4) over the string contents of all messages."""
    total = 0
    if isinstance(messages, list):
        for message in messages:
            if isinstance(message, dict) and isinstance(message.get("content"), str):
                total += len(message["content"])
    return math.ceil(total / 4)


def completion_tokens_for(reply: str, max_tokens: int | None) -> int:
    limit = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    return min(limit, math.ceil(len(reply) / 4))


def reply_for(messages: Any, max_tokens: int | None) -> tuple[str, str]:
    """The deterministic reply text and its finish_reason."""
    last_user = ""
    if isinstance(messages, list):
        for message in reversed(messages):
            if (
                isinstance(message, dict)
                and message.get("role") == "user"
                and isinstance(message.get("content"), str)
            ):
                last_user = message["content"].strip()
                break
    text = f"Echo: {last_user}".strip()
    limit = DEFAULT_MAX_TOKENS if max_tokens is None else max_tokens
    if math.ceil(len(text) / 4) > limit:
        return text[: limit * 4], "length"
    return text, "stop"


def canonical_json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- state


class BehaviourError(ValueError):
    pass


def default_behaviour() -> dict[str, Any]:
    return {
        "mode": "ok",
        "status": DEFAULT_ERROR_STATUS,
        "body": None,
        "latency_ms": 0,
        "usage": None,
        "models": list(DEFAULT_MODELS),
    }


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def parse_behaviour(data: Any) -> dict[str, Any]:
    """Validate a behaviour document; returns the stored (normalised) form."""
    if not isinstance(data, dict):
        raise BehaviourError("behaviour must be a JSON object")
    unknown = sorted(set(data) - _BEHAVIOUR_KEYS)
    if unknown:
        raise BehaviourError(
            f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(sorted(_BEHAVIOUR_KEYS))}"
        )
    out = default_behaviour()
    mode = data.get("mode", "ok")
    if mode not in MODES:
        raise BehaviourError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    out["mode"] = mode
    if "status" in data:
        status = data["status"]
        if not _is_int(status) or not 400 <= status <= 599:
            raise BehaviourError(f"status must be an integer from 400 to 599, got {status!r}")
        out["status"] = status
    out["body"] = data.get("body")
    if "latency_ms" in data:
        latency = data["latency_ms"]
        if not _is_int(latency) or not 0 <= latency <= MAX_LATENCY_MS:
            raise BehaviourError(
                f"latency_ms must be an integer from 0 to {MAX_LATENCY_MS}, got {latency!r}"
            )
        out["latency_ms"] = latency
    usage = data.get("usage")
    if usage is not None:
        if not isinstance(usage, dict):
            raise BehaviourError("usage must be an object with prompt_tokens and completion_tokens")
        unknown = sorted(set(usage) - _USAGE_KEYS)
        if unknown:
            raise BehaviourError(f"unknown usage field(s) {', '.join(unknown)}")
        for key in ("prompt_tokens", "completion_tokens"):
            if key not in usage:
                raise BehaviourError(f"usage.{key} is required")
        for key, value in usage.items():
            if not _is_int(value) or value < 0:
                raise BehaviourError(f"usage.{key} must be a non-negative integer, got {value!r}")
        stored = {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage.get(
                "total_tokens", usage["prompt_tokens"] + usage["completion_tokens"]
            ),
        }
        out["usage"] = stored
    if "models" in data:
        models = data["models"]
        if (
            not isinstance(models, list)
            or not models
            or not all(isinstance(m, str) and m for m in models)
        ):
            raise BehaviourError("models must be a non-empty list of non-empty strings")
        out["models"] = list(models)
    return out


class Namespace:
    __slots__ = ("behaviour", "calls", "seq", "release")

    def __init__(self) -> None:
        self.behaviour = default_behaviour()
        self.calls: deque[dict[str, Any]] = deque(maxlen=MAX_CALLS)
        self.seq = 0
        self.release = asyncio.Event()

    def wake_hangers(self) -> None:
        """Release requests hanging under the old behaviour."""
        self.release.set()
        self.release = asyncio.Event()


class StubState:
    def __init__(self) -> None:
        self.namespaces: OrderedDict[str, Namespace] = OrderedDict()
        self.stopping = asyncio.Event()

    def get(self, name: str) -> Namespace:
        ns = self.namespaces.get(name)
        if ns is None:
            ns = self.namespaces[name] = Namespace()
            while len(self.namespaces) > MAX_NAMESPACES:
                _, evicted = self.namespaces.popitem(last=False)
                evicted.wake_hangers()
        else:
            self.namespaces.move_to_end(name)
        return ns

    def reset(self, name: str) -> None:
        ns = self.namespaces.pop(name, None)
        if ns is not None:
            ns.wake_hangers()

    def reset_all(self) -> None:
        for name in list(self.namespaces):
            self.reset(name)


# --------------------------------------------------------------------------- responses


def openai_error(status: int, message: str, code: str | None = None) -> JSONResponse:
    fallback = ("server_error" if status >= 500 else "invalid_request_error", f"http_{status}")
    kind, default_code = _ERROR_TYPES.get(status, fallback)
    error = {"message": message, "type": kind, "code": code or default_code, "param": None}
    return JSONResponse({"error": error}, status_code=status)


def control_error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": "invalid_request", "message": message}, status_code=status)


async def _wait_for_disconnect(receive: Receive) -> None:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return


class CloseConnection(Response):
    """Close the TCP connection without sending any HTTP response bytes."""

    def __init__(self) -> None:  # no body, no headers
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        transport = scope.get("extensions", {}).get(TRANSPORT_EXTENSION)
        if transport is None:
            raise RuntimeError(
                "drop needs the model stub's uvicorn protocol (run python -m model_stub)"
            )
        transport.close()
        try:
            await asyncio.wait_for(_wait_for_disconnect(receive), DISCONNECT_WAIT_SECONDS)
        except asyncio.TimeoutError:  # pragma: no cover - uvicorn always reports it
            transport.abort()


class Hang(Response):
    """Never answer: wait for the client to leave, a release, shutdown, or the bound."""

    def __init__(self, state: StubState, ns: Namespace) -> None:
        self.background = None
        self.state = state
        self.release = ns.release

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        waits = {
            asyncio.ensure_future(_wait_for_disconnect(receive)),
            asyncio.ensure_future(self.release.wait()),
            asyncio.ensure_future(self.state.stopping.wait()),
        }
        try:
            done, _ = await asyncio.wait(
                waits, timeout=HANG_MAX_SECONDS, return_when=asyncio.FIRST_COMPLETED
            )
        finally:
            for task in waits:
                task.cancel()
        # The client is gone, or we give up: end without an answer.
        await CloseConnection()(scope, receive, send)


# --------------------------------------------------------------------------- app


def _headers(request: Request) -> dict[str, str]:
    out: dict[str, str] = {}
    for raw_name, raw_value in request.scope["headers"]:
        name = raw_name.decode("latin-1").lower()
        value = raw_value.decode("latin-1")
        out[name] = f"{out[name]}, {value}" if name in out else value
    return out


async def _read_body(request: Request) -> bytes | None:
    """The body, or None when it exceeds MAX_BODY_BYTES."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def _parse_json(raw: bytes) -> tuple[bool, Any]:
    if not raw:
        return False, None
    try:
        return True, json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return False, None


def create_app() -> Starlette:
    state = StubState()

    def namespace_of(request: Request) -> str | None:
        name = request.path_params.get("ns", "default")
        return name if NAMESPACE_RE.match(name) else None

    async def record(request: Request, ns: Namespace) -> tuple[bytes | None, bool, Any]:
        raw = await _read_body(request)
        ok, body = _parse_json(raw) if raw is not None else (False, None)
        ns.seq += 1
        ns.calls.append(
            {
                "seq": ns.seq,
                "at": datetime.now(timezone.utc).isoformat(timespec="microseconds"),
                "method": request.method,
                "path": request.url.path,
                "query": request.url.query,
                "headers": _headers(request),
                "body": body,
            }
        )
        return raw, ok, body

    async def chat_completions(request: Request) -> Response:
        name = namespace_of(request)
        if name is None:
            return openai_error(404, "invalid namespace", "namespace_not_found")
        ns = state.get(name)
        raw, parsed, body = await record(request, ns)
        behaviour = ns.behaviour
        mode = behaviour["mode"]
        if mode == "drop":
            return CloseConnection()
        if mode == "hang":
            return Hang(state, ns)
        if behaviour["latency_ms"]:
            await asyncio.sleep(behaviour["latency_ms"] / 1000)
        if mode == "error":
            status = behaviour["status"]
            if behaviour["body"] is not None:
                return JSONResponse(behaviour["body"], status_code=status)
            return openai_error(status, f"model stub: injected error {status}", None)
        # mode == "ok"
        if raw is None:
            return openai_error(413, f"request body exceeds {MAX_BODY_BYTES} bytes")
        if not parsed:
            return openai_error(400, "request body must be valid JSON", "invalid_json")
        if not isinstance(body, dict):
            return openai_error(400, "request body must be a JSON object", "invalid_request")
        model = body.get("model")
        messages = body.get("messages")
        max_tokens = body.get("max_tokens")
        if not isinstance(model, str) or not model:
            return openai_error(400, "model must be a non-empty string", "invalid_request")
        if not isinstance(messages, list) or not messages:
            return openai_error(400, "messages must be a non-empty list", "invalid_request")
        if max_tokens is not None and (not _is_int(max_tokens) or max_tokens < 1):
            return openai_error(400, "max_tokens must be a positive integer", "invalid_request")
        content, finish_reason = reply_for(messages, max_tokens)
        if behaviour["usage"] is not None:
            usage = dict(behaviour["usage"])
        else:
            prompt = prompt_tokens_for(messages)
            completion = completion_tokens_for(content, max_tokens)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
        digest = hashlib.sha256(canonical_json(body).encode("utf-8")).hexdigest()
        return JSONResponse(
            {
                "id": f"chatcmpl-{digest[:24]}",
                "object": "chat.completion",
                "created": CREATED,
                "model": model,
                "system_fingerprint": "model-stub",
                "choices": [
                    {
                        "index": 0,
                        "message": {"role": "assistant", "content": content},
                        "logprobs": None,
                        "finish_reason": finish_reason,
                    }
                ],
                "usage": usage,
            }
        )

    async def list_models(request: Request) -> Response:
        name = namespace_of(request)
        if name is None:
            return openai_error(404, "invalid namespace", "namespace_not_found")
        ns = state.get(name)
        await record(request, ns)
        return JSONResponse(
            {
                "object": "list",
                "data": [
                    {"id": m, "object": "model", "created": CREATED, "owned_by": "model-stub"}
                    for m in ns.behaviour["models"]
                ],
            }
        )

    def control_namespace(request: Request) -> str | None:
        name = request.path_params["ns"]
        return name if NAMESPACE_RE.match(name) else None

    async def put_behaviour(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        ok, data = _parse_json(await request.body())
        if not ok:
            return control_error(422, "behaviour must be a JSON object")
        try:
            behaviour = parse_behaviour(data)
        except BehaviourError as exc:
            return control_error(422, str(exc))
        ns = state.get(name)
        ns.behaviour = behaviour
        ns.wake_hangers()
        return JSONResponse(behaviour)

    async def get_behaviour(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        ns = state.namespaces.get(name)
        return JSONResponse(ns.behaviour if ns is not None else default_behaviour())

    async def get_calls(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        ns = state.namespaces.get(name)
        return JSONResponse({"calls": list(ns.calls) if ns is not None else []})

    async def reset_namespace(request: Request) -> Response:
        name = control_namespace(request)
        if name is None:
            return control_error(422, "namespace must be 1-128 characters of [A-Za-z0-9._:-]")
        state.reset(name)
        return JSONResponse({"namespace": name, "reset": True})

    async def reset_all(request: Request) -> Response:
        state.reset_all()
        return JSONResponse({"reset": True})

    async def healthz(request: Request) -> Response:
        return JSONResponse({"status": "ok"})

    async def not_found(request: Request, exc: HTTPException) -> Response:
        if request.url.path.startswith(("/v1/", "/ns/")):
            return openai_error(
                exc.status_code, f"{request.method} {request.url.path}: {exc.detail}", "unknown_route"
            )
        return JSONResponse({"error": "not_found", "message": exc.detail}, status_code=exc.status_code)

    routes = [
        Route("/healthz", healthz, methods=["GET"]),
        Route("/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/ns/{ns}/v1/chat/completions", chat_completions, methods=["POST"]),
        Route("/v1/models", list_models, methods=["GET"]),
        Route("/ns/{ns}/v1/models", list_models, methods=["GET"]),
        Route("/_stub/{ns}/behaviour", put_behaviour, methods=["PUT"]),
        Route("/_stub/{ns}/behaviour", get_behaviour, methods=["GET"]),
        Route("/_stub/{ns}/calls", get_calls, methods=["GET"]),
        Route("/_stub/{ns}", reset_namespace, methods=["DELETE"]),
        Route("/_stub", reset_all, methods=["DELETE"]),
    ]
    app = Starlette(routes=routes, exception_handlers={404: not_found, 405: not_found})
    app.state.stub = state
    return app


# --------------------------------------------------------------------------- server


class StubH11Protocol(H11Protocol):
    """uvicorn's h11 protocol, handing the connection's transport to the app.

    The transport goes into ``scope["extensions"]["model_stub.transport"]`` so that the
    ``drop`` and ``hang`` modes can close the connection without an HTTP response. On
    server shutdown, hanging requests are released so that the process stops at once.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        inner = self.app

        async def app(scope: Scope, receive: Receive, send: Send) -> None:
            if scope["type"] == "http":
                extensions = dict(scope.get("extensions") or {})
                extensions[TRANSPORT_EXTENSION] = self.transport
                scope["extensions"] = extensions
            await inner(scope, receive, send)

        self.app = app

    def shutdown(self) -> None:
        _STOPPING_HOOK()
        super().shutdown()


def _noop() -> None:
    pass


_STOPPING_HOOK = _noop


def build_server(host: str, port: int, log_level: str = "warning") -> tuple[uvicorn.Server, socket.socket]:
    """A uvicorn server for the stub, with its already bound listening socket."""
    global _STOPPING_HOOK
    app = create_app()
    _STOPPING_HOOK = app.state.stub.stopping.set
    config = uvicorn.Config(
        app,
        http=StubH11Protocol,
        lifespan="off",
        log_level=log_level,
        access_log=False,
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=2,
    )
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP: asyncio only sets TCP_NODELAY on accepted sockets whose proto
    # says TCP, and without it every response waits ~40 ms for a delayed ACK (Nagle).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return uvicorn.Server(config), sock


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m model_stub",
        description="Deterministic OpenAI-compatible model backend stub with a control API.",
    )
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    parser.add_argument(
        "--port", type=int, default=9100, help="port to bind; 0 picks a free one (default 9100)"
    )
    parser.add_argument(
        "--log-level",
        default="warning",
        choices=["critical", "error", "warning", "info", "debug", "trace"],
        help="uvicorn log level (default warning)",
    )
    args = parser.parse_args(argv)
    server, sock = build_server(args.host, args.port, args.log_level)
    host, port = sock.getsockname()[:2]
    shown = f"[{host}]" if ":" in host else host
    print(f"model_stub listening on http://{shown}:{port}", flush=True)
    server.run(sockets=[sock])
    return 0

